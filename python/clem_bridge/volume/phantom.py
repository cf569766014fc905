"""Synthetic 3-D CLEM phantoms: a tissue of cells with nuclei, mitochondria and membranes, seen as an
EM-like volume (fine, near-isotropic voxels, dark membranes/organelles, grain) and an LM-like stack
(coarse z-step, anisotropic Gaussian PSF, two channels) related by a known 4×4 ``fixed_to_moving``.

The scene is analytic (Voronoi cells, ellipsoidal nuclei, capsule mitochondria) and is evaluated at the
physical position of every voxel, so both views are rendered without resampling one from the other.
World coordinates are the LM's physical coordinates (µm).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..transforms3d import apply_to_points3d, center_of3d, from_params3d, voxel_matrix


@dataclass
class Phantom3D:
    """``em`` (Z, Y, X) and ``lm`` (C, Z, Y, X) float32; voxel sizes ``(x, y, z)`` in µm;
    ``fixed_to_moving`` the true EM voxel → LM voxel 4×4 matrix.  LM channel 0 shows membranes,
    nuclear envelopes and mitochondria (the registration channel), channel 1 mitochondria only."""
    em: np.ndarray
    lm: np.ndarray
    em_voxel: tuple[float, float, float]
    lm_voxel: tuple[float, float, float]
    fixed_to_moving: np.ndarray


class _Scene:
    """Voronoi tissue in a box: membrane, nucleus, nuclear envelope and mitochondria fields at points."""

    def __init__(self, extent: np.ndarray, cell_size: float, rng: np.random.Generator):
        margin = cell_size
        n = np.maximum(np.ceil((extent + 2 * margin) / cell_size).astype(int), 1)
        grid = np.stack(np.meshgrid(*(np.arange(k) for k in n), indexing="ij"), -1).reshape(-1, 3)
        self.seeds = (grid + 0.5 + rng.uniform(-0.3, 0.3, grid.shape)) * cell_size - margin
        self.tree = cKDTree(self.seeds)
        k = len(self.seeds)
        self.axes = cell_size * 0.28 * rng.uniform(0.8, 1.2, (k, 3))
        self.rot = np.stack([_random_rotation(rng) for _ in range(k)])
        self.width = 0.06
        # mitochondria: capsules of 3 spheres in the cytoplasm of every cell
        centres = []
        for s in self.seeds:
            for _ in range(8):
                d = rng.normal(size=3)
                d /= np.linalg.norm(d)
                c = s + d * cell_size * rng.uniform(0.32, 0.42)
                u = rng.normal(size=3)
                u /= np.linalg.norm(u)
                centres += [c + u * o for o in (-0.3, 0.0, 0.3)]
        self.mito = cKDTree(np.array(centres))
        self.mito_radius = 0.2

    def fields(self, pts: np.ndarray) -> dict[str, np.ndarray]:
        d, i = self.tree.query(pts, k=2)
        s1, s2 = self.seeds[i[:, 0]], self.seeds[i[:, 1]]
        bisector = (d[:, 1] ** 2 - d[:, 0] ** 2) / (2.0 * np.linalg.norm(s2 - s1, axis=1))
        membrane = np.exp(-(bisector / self.width) ** 2)
        q = np.einsum("nij,nj->ni", self.rot[i[:, 0]].transpose(0, 2, 1), pts - s1) / self.axes[i[:, 0]]
        r = np.linalg.norm(q, axis=1)
        nucleus = 1.0 / (1.0 + np.exp((r - 1.0) / 0.03))
        envelope = np.exp(-((r - 1.0) * self.axes[i[:, 0]].mean(1) / self.width) ** 2)
        dm, _ = self.mito.query(pts)
        mito = (1.0 / (1.0 + np.exp((dm - self.mito_radius) / 0.03))) * (1.0 - nucleus)
        return {"membrane": membrane, "nucleus": nucleus, "envelope": envelope, "mito": mito}


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _voxel_points(shape) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def make_phantom3d(*, em_shape=(24, 96, 96), em_voxel=(0.1, 0.1, 0.2), lm_shape=(12, 96, 96),
                   lm_voxel=(0.2, 0.2, 1.6), rot_z_deg: float = 0.0, mirror: bool = False,
                   tilt_x_deg: float = 0.0, tilt_y_deg: float = 0.0, shift_frac=(0.0, 0.0, 0.0),
                   scale: float = 1.0, psf_sigma_um=(0.12, 0.12, 0.4), cell_size: float = 4.5,
                   em_noise: float = 0.06, lm_noise: float = 0.03, seed: int = 0) -> Phantom3D:
    """Render an EM volume and an LM stack of one random tissue with a known relation.

    The EM's centre sits at the LM's centre plus ``shift_frac`` × the LM's extent; the EM is rotated by
    ``rot_z_deg`` (then tilted about x and y, mirrored in x) and its true voxel size is ``scale`` × the
    stated ``em_voxel`` (a calibration error).  Shapes are (z, y, x), voxel sizes (x, y, z) in µm.
    """
    rng = np.random.default_rng(seed)
    em_v, lm_v = np.asarray(em_voxel, float), np.asarray(lm_voxel, float)
    lm_extent = np.array(lm_shape[::-1]) * lm_v
    scene = _Scene(lm_extent, cell_size, rng)
    c_lm = center_of3d(lm_shape) * lm_v
    c_em = center_of3d(em_shape) * em_v
    em_to_world = (from_params3d(rot_z_deg=rot_z_deg, rot_x_deg=tilt_x_deg, rot_y_deg=tilt_y_deg,
                                 mirror=mirror, scale=scale, center=c_em,
                                 translation_xyz=c_lm - c_em + np.asarray(shift_frac) * lm_extent)
                   @ voxel_matrix(em_v))
    f2m = np.linalg.inv(voxel_matrix(lm_v)) @ em_to_world

    # EM: point-sampled, dark membranes / envelopes / mitochondria, a slightly darker nucleus, grain
    f = scene.fields(apply_to_points3d(em_to_world, _voxel_points(em_shape)))
    em = (0.75 - 0.45 * f["membrane"] - 0.35 * f["envelope"] - 0.4 * f["mito"] - 0.12 * f["nucleus"])
    em = em.reshape(em_shape)
    grain = ndimage.gaussian_filter(rng.normal(size=em_shape), 1.0)
    em = em + em_noise * (rng.normal(size=em_shape) + 2.0 * grain)

    # LM: rendered on a finer grid, blurred by the PSF and sampled at the LM voxel centres
    ss = np.maximum(np.ceil(lm_v / (np.asarray(psf_sigma_um, float) * 1.5)).astype(int), 1)   # (x, y, z)
    fine_shape = (lm_shape[0] * ss[2], lm_shape[1] * ss[1], lm_shape[2] * ss[0])
    fine_v = lm_v / ss
    f = scene.fields(_voxel_points(fine_shape) * fine_v)
    sigma_fine = (np.asarray(psf_sigma_um, float) / fine_v)[::-1]
    chans = [0.1 + 0.9 * f["membrane"] + 0.7 * f["envelope"] + 0.6 * f["mito"] + 0.15 * f["nucleus"],
             0.05 + f["mito"]]
    lm = np.stack([ndimage.gaussian_filter(c.reshape(fine_shape), sigma_fine, mode="nearest")
                   [::ss[2], ::ss[1], ::ss[0]] for c in chans])
    lm = np.clip(lm + lm_noise * rng.normal(size=lm.shape), 0.0, None)
    return Phantom3D(em=em.astype(np.float32), lm=lm.astype(np.float32), em_voxel=tuple(float(v) for v in em_v),
                     lm_voxel=tuple(float(v) for v in lm_v), fixed_to_moving=f2m)
