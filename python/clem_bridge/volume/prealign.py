"""Automatic pre-alignment of an LM stack to an EM volume (no user parameters).

1. Common representation: the EM is blurred to the LM's resolution (the LM cannot see finer detail; the
   axial blur makes an EM plane look like one optical section) and both volumes are brought to one lateral
   physical resolution.  Structure is compared as gradient magnitude (inside the 2-D search), which does
   not care whether membranes are dark (EM) or bright (LM).  On the phantoms this correlates 0.79 at the
   true pose, against 0.2 for scale-normalised |LoG| at twice the common pixel size.
2. Stack search (the biggest misalignment is lateral): up to 3 EM planes a whole number of LM z-steps
   apart are matched together in the LM stack as one 3-D template (:mod:`clem_bridge.volume.stack_search`:
   rotation about z over the full circle, mirrored and not, z direction, LM slice of the first plane,
   translation; scale from the calibration), every hypothesis at ``COARSE_SIZE``, the ``N_REFINED`` best
   again at ``SEARCH_SIZE`` with the scale free (±5 %).  Two such plane sets, a quarter z-step either side
   of the centred positions, are searched (one lies within a quarter step of the LM slices).  Matching
   (plane, slice) pairs one at a time, as before, ranked a wrong pair above the right one on small EM
   fields of a few cells (a mirrored, z-reversed 1:8 phantom at scale 0.96: every pair scored 0.27-0.34,
   the right one among them); the joint score puts the right pose at 0.49 against 0.25 for the next.
   Each match fixes x, y and z.
3. The best matches are judged in 3-D by histogram mutual information between the blurred EM and the LM
   warped onto a coarse EM grid, each over a range of z offsets (±1 slice) and both z directions (an LM
   stack imaged from the other side runs the opposite way); then an optional coarse tilt
   search about x and y.  On the phantoms the right pose scores 0.18-0.29 nats, wrong ones below 0.07.

The result is a 4×4 ``fixed_to_moving`` (EM voxel → LM voxel, :mod:`clem_bridge.transforms3d`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..quality import histogram_mi
from ..transforms3d import (apply_to_points3d, center_of3d, from_params3d, resize_matrix3d, translation,
                            voxel_matrix, warp_volume)
from .stack_search import StackMatcher, plane_positions, stack_search

SEARCH_SIZE = 128          # long side (px) of the EM planes in the fine stack search
MI_GRID = 48               # long side (voxels) of the coarse grid scored in the z / tilt search
N_CANDIDATES = 6           # best stack-search results judged by 3-D MI
COARSE_SIZE = 52           # long side (px) of the EM planes in the sweep over every hypothesis
N_REFINED = 6              # best distinct hypotheses of the COARSE_SIZE sweep refined at SEARCH_SIZE


@dataclass
class Prealignment:
    """Pre-alignment result; ``scores``: 2-D search correlation and MI of each later stage."""
    fixed_to_moving: np.ndarray
    rotation_deg: float
    mirror: bool                    # det < 0: the LM is a mirror image of the EM
    z_slice: float                  # LM slice (voxel z) the EM centre maps to
    tilt_deg: tuple[float, float]   # about x, about y
    scores: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def resample(volume: np.ndarray, voxel, target_voxel) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Resample ``volume`` (z, y, x) with voxel ``(x, y, z)`` to about ``target_voxel``, Gaussian
    anti-aliased where it shrinks; returns the volume, its exact voxel size and the 4×4 matrix mapping its
    voxel coordinates to those of the input (pixel-area convention of ``resize_matrix3d``)."""
    v, tv = np.asarray(voxel, float), np.asarray(target_voxel, float)
    src = tuple(int(n) for n in volume.shape)
    dst = tuple(max(1, int(round(n * v[2 - i] / tv[2 - i]))) for i, n in enumerate(src))
    factor = np.array(src, float) / np.array(dst, float)                     # (z, y, x)
    sigma = np.where(factor > 1, 0.5 * np.sqrt(np.maximum(factor ** 2 - 1, 0)), 0)
    src_vol = ndimage.gaussian_filter(volume.astype(np.float32), sigma, mode="nearest") if np.any(sigma) else volume
    m = resize_matrix3d(src, dst)
    out = ndimage.affine_transform(np.asarray(src_vol, np.float32), np.diag(factor),
                                   offset=0.5 * factor - 0.5, output_shape=dst, order=1, mode="nearest")
    return out, tuple(float(x) for x in v * factor[::-1]), m


def blur_physical(volume: np.ndarray, voxel, sigma_um) -> np.ndarray:
    """Gaussian blur with a physical ``sigma_um`` (x, y, z) on a volume of voxel size ``voxel``."""
    s = np.asarray(sigma_um, float) / np.asarray(voxel, float)
    return ndimage.gaussian_filter(volume.astype(np.float32), s[::-1], mode="nearest")


def lm_resolution(lm_voxel) -> np.ndarray:
    """Physical blur (σ, µm, x, y, z) taken as the LM's resolution: half its voxel size laterally; axially
    half the z-step but at most 4× the lateral σ (a confocal's axial/lateral resolution ratio is ~3-4)."""
    v = np.asarray(lm_voxel, float)
    sxy = 0.5 * min(v[0], v[1])
    return np.array([0.5 * v[0], 0.5 * v[1], min(0.5 * v[2], 4.0 * sxy)])


def _planes(volume: np.ndarray, zs) -> np.ndarray:
    """Planes of ``volume`` (z, y, x) at fractional z positions, linearly interpolated."""
    i = np.clip(np.floor(zs).astype(int), 0, volume.shape[0] - 1)
    j = np.minimum(i + 1, volume.shape[0] - 1)
    w = (np.asarray(zs, float) - i)[:, None, None]
    return ((1 - w) * volume[i] + w * volume[j]).astype(np.float32)


def _lift(m2: np.ndarray) -> np.ndarray:
    """3×3 2-D matrix over (x, y) → 4×4 acting on (x, y) only."""
    m = np.eye(4)
    m[np.ix_([0, 1, 3], [0, 1, 3])] = m2
    return m


def prealign(em: np.ndarray, lm: np.ndarray, em_voxel, lm_voxel, *, tilt_search: bool = True,
             tilt_deg: float = 3.0) -> Prealignment:
    """Pre-align ``lm`` (z, y, x) to ``em`` (z, y, x) from scratch; voxel sizes (x, y, z) in one unit."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    em_v, lm_v = np.asarray(em_voxel, float), np.asarray(lm_voxel, float)
    em_ext = np.array(em.shape[::-1]) * em_v
    lm_ext = np.array(lm.shape[::-1]) * lm_v
    res = lm_resolution(lm_v)
    r = max(em_v[0], em_v[1], max(em_ext[:2]) / SEARCH_SIZE)

    # 1. common representation: EM blurred to the LM's resolution, both at lateral resolution r
    em_b = blur_physical(em, em_v, res)
    em_r, em_rv, em_rm = resample(em_b, em_v, (r, r, em_v[2]))
    lm_r, lm_rv, lm_rm = resample(lm, lm_v, (r, r, lm_v[2]))
    timings["structure_s"] = time.perf_counter() - t0

    # 2. two sets of EM planes whole LM z-steps apart (a quarter step either side of the centred positions; a
    # shallow EM has one plane per set), each matched as one template in the LM stack: every hypothesis at
    # COARSE_SIZE, the N_REFINED best again at SEARCH_SIZE with the scale free
    ts = time.perf_counter()
    step = lm_v[2] / em_v[2]
    zs, spacing = plane_positions(em.shape[0], step)
    plane_sets = [np.clip(zs + d, 0, em.shape[0] - 1) for d in (-step / 4, step / 4)]
    shift_frac = float(np.clip(0.5 * max(lm_ext[:2]) / max(em_ext[:2]) + 0.1, 0.25, 2.0))
    rc = max(r, max(em_ext[:2]) / COARSE_SIZE)
    lm_s, to_fine = lm_r, np.eye(3)
    if rc > 1.2 * r:
        lm_s, _, lm_sm = resample(lm_r, lm_rv, (rc, rc, lm_rv[2]))
        to_fine = lm_sm[np.ix_([0, 1, 3], [0, 1, 3])]
    ranked = []
    for z_set in plane_sets:
        planes = _planes(em_r, z_set)
        em_s = resample(planes, (r, r, 1.0), (rc, rc, 1.0))[0] if rc > 1.2 * r else planes
        found = stack_search(StackMatcher(em_s, lm_s, spacing), StackMatcher(planes, lm_r, spacing), to_fine,
                             max_shift_frac=shift_frac, keep=N_REFINED)
        ranked += [(float(z_set[0]), f) for f in found]
    ranked.sort(key=lambda zf: -zf[1].score)
    timings["search_xy_s"] = time.perf_counter() - ts

    # 3. the best candidates judged in 3-D: z offset by histogram MI on a coarse EM grid, then tilt
    tz = time.perf_counter()
    g = max(em_ext) / MI_GRID
    grid_v = np.array([max(g, em_v[0]), max(g, em_v[1]), max(g / 2, em_v[2])])
    em_c, em_cv, em_cm = resample(em_b, em_v, grid_v)
    lm_n = lm.astype(np.float32)

    def score_of(a: np.ndarray) -> float:
        w = warp_volume(lm_n, a @ em_cm, em_c.shape, fill=np.nan)
        ok = np.isfinite(w)
        return histogram_mi(em_c[ok], w[ok], bins=24) if ok.mean() > 0.2 else 0.0

    def shifted(a, dz):
        return translation((0.0, 0.0, dz)) @ a

    mi, a, sr = -1.0, None, None
    dzs = np.arange(-1.0, 1.0001, 0.25)
    for ze, cand in ranked[:N_CANDIDATES]:
        # EM full voxel → EM r-grid voxel → (plane search) LM r-grid voxel → LM full voxel; plane ze ↔ slice k,
        # the stacks running the same way or opposite ways in z (LM imaged from the other side)
        xy = lm_rm @ _lift(cand.fixed_to_moving) @ np.linalg.inv(em_rm)
        k = cand.slices[0]
        for sign in ((cand.direction,) if len(zs) > 1 else (1.0, -1.0)):
            a0 = np.eye(4)
            a0[:2] = xy[:2]
            a0[2] = [0.0, 0.0, sign * em_v[2] / lm_v[2], k - sign * ze * em_v[2] / lm_v[2]]
            for dz in dzs:
                s = score_of(shifted(a0, dz))
                if s > mi:
                    mi, a, sr = s, shifted(a0, dz), cand
    timings["search_z_s"] = time.perf_counter() - tz
    tilt = (0.0, 0.0)
    if tilt_search and tilt_deg > 0:
        tt = time.perf_counter()
        centre = center_of3d(em.shape) * em_v
        to_phys = voxel_matrix(em_v)
        for ax in (-tilt_deg, 0.0, tilt_deg):
            for ay in (-tilt_deg, 0.0, tilt_deg):
                if ax == ay == 0.0:
                    continue
                rot = np.linalg.inv(to_phys) @ from_params3d(rot_x_deg=ax, rot_y_deg=ay, center=centre) @ to_phys
                for dz in (-0.25, 0.0, 0.25):
                    cand = shifted(a, dz) @ rot
                    s = score_of(cand)
                    if s > mi:
                        mi, best, tilt = s, cand, (ax, ay)
        if tilt != (0.0, 0.0):
            a = best
        timings["search_tilt_s"] = time.perf_counter() - tt
    timings["prealign_s"] = time.perf_counter() - t0
    z_slice = float(apply_to_points3d(a, [center_of3d(em.shape)])[0, 2])
    return Prealignment(fixed_to_moving=a, rotation_deg=float(sr.rotation_deg), mirror=bool(np.linalg.det(a) < 0),
                        z_slice=z_slice, tilt_deg=tilt, scores={"search_xy": float(sr.score), "search_mi": mi},
                        timings=timings)

