"""3-D CLEM registration: an LM stack (moving) onto an EM volume (fixed), arrays in, ``Registration`` out.

``register_volumes`` = :func:`~clem_bridge.volume.prealign.prealign` (slice search over rotation about z,
mirror and translation at a common physical resolution, z offset, coarse tilt) then
:func:`~clem_bridge.volume.mine3d.refine` (12-parameter 3-D affine by MINE, or classical histogram MI).
The result follows :mod:`clem_bridge.transforms3d`: a 4×4 ``fixed_to_moving`` from EM voxel (x, y, z) to
LM voxel, ``ndim = 3``; shapes are (depth, height, width).
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import Cancelled, InputError
from ..io import convert_length, normalize_unit
from ..progress import CancelFn, Progress, ProgressFn
from ..quality import histogram_mi, ncc
from ..result import Registration
from ..schema import PixelSize
from ..transforms3d import apply_to_points3d, as_matrix4, center_of3d, valid_mask3d, warp_volume
from .mine3d import Mine3DParams, refine
from .prealign import blur_physical, lm_resolution, prealign, resample

VoxelLike = Union[PixelSize, Sequence[float]]
LOW_MI = 0.05          # final MINE estimate (nats): phantom successes end at 0.15-0.35, an unrelated LM at 0.026
LOW_HIST_MI = 0.15     # final histogram MI (method 'mi'): phantom successes 0.44, unrelated volumes 0.10
LOW_SEARCH = 0.2       # slice-search correlation below which the pre-alignment is a guess
MIN_OVERLAP = 0.5      # fraction of the EM volume that must map inside the LM stack
METRICS_GRID = 64      # long side of the grid the final overlap metrics are computed on


def check_volume(vol, name: str, *, min_side: int = 16) -> np.ndarray:
    """Validate a 3-D (z, y, x) volume; returns it as float32 or raises :class:`InputError`."""
    a = np.asarray(vol)
    if a.ndim == 2:
        raise InputError(f"{name} is a 2-D image; 3-D registration needs a Z stack (use 'clem-bridge register' "
                         "for 2-D images)")
    if a.ndim != 3:
        raise InputError(f"{name} must be a 3-D volume (z, y, x), got an array of shape {a.shape}")
    if a.shape[0] < 2:
        raise InputError(f"{name} has a single slice; 3-D registration needs at least 2 slices")
    if min(a.shape[1:]) < min_side:
        raise InputError(f"{name} is too small ({a.shape[1]}x{a.shape[2]} pixels per slice); need at least "
                         f"{min_side} pixels per side")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InputError(f"{name} has unsupported voxel type {a.dtype}; expected real numbers")
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or infinite voxels; replace them before registering")
    if float(np.ptp(a)) == 0.0:
        raise InputError(f"{name} is constant; registration needs image structure")
    return a


def voxel_size(v: VoxelLike, name: str, unit: str = "um") -> tuple[tuple[float, float, float], Optional[str]]:
    """``(x, y, z)`` in ``unit`` from a PixelSize or a 3-sequence, and a warning when z was assumed = x."""
    warning = None
    if isinstance(v, PixelSize):
        u = normalize_unit(v.unit)
        if u is None:
            raise InputError(f"{name} voxel size has an unknown unit {v.unit!r}")
        z = v.z
        if z is None:
            z = v.x
            warning = (f"{name} has no z spacing; assumed isotropic voxels (z = x = {v.x:g} {u}); set the stack's "
                       "voxel depth if that is wrong")
        vals = tuple(convert_length(float(c), u, unit) for c in (v.x, v.y, z))
    else:
        vals = tuple(float(c) for c in v)
        if len(vals) != 3:
            raise InputError(f"{name} voxel size must be (x, y, z), got {v!r}")
    if not all(np.isfinite(c) and c > 0 for c in vals):
        raise InputError(f"{name} voxel size must be positive, got {vals}")
    return vals, warning


def _overlap_metrics(em, lm, em_v, lm_v, a) -> dict[str, float]:
    """Histogram MI, NCC and overlap fraction of the EM (blurred to the LM's resolution) and the warped LM
    on a coarse grid."""
    g = max(np.array(em.shape[::-1]) * np.asarray(em_v)) / METRICS_GRID
    em_c, em_cv, em_cm = resample(blur_physical(em, em_v, lm_resolution(lm_v)), em_v,
                                  (max(g, em_v[0]), max(g, em_v[1]), max(g, em_v[2])))
    m = a @ em_cm
    w = warp_volume(lm, m, em_c.shape)
    ok = valid_mask3d(m, em_c.shape, lm.shape)
    frac = float(ok.mean())
    if ok.sum() < 64:
        return {"overlap_fraction": frac, "mi_histogram": 0.0, "ncc": 0.0}
    return {"overlap_fraction": frac, "mi_histogram": histogram_mi(em_c[ok], w[ok], bins=32),
            "ncc": ncc(em_c[ok], w[ok])}


def register_volumes(em, lm, *, em_voxel: VoxelLike, lm_voxel: VoxelLike, method: str = "mine",
                     params: Optional[Mine3DParams] = None, tilt_search: bool = True, init=None, seed: int = 0,
                     progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> Registration:
    """Register the LM registration channel ``lm`` (z, y, x) onto the EM volume ``em`` (z, y, x).

    ``em_voxel`` / ``lm_voxel``: PixelSize (z may be None: isotropic assumed, with a warning) or
    ``(x, y, z)`` in µm.  ``method``: ``'mine'`` (default) or ``'mi'`` (classical histogram MI).
    ``init``: a 4×4 EM voxel → LM voxel start (skips the pre-alignment).
    """
    t0 = time.perf_counter()
    em_a, lm_a = check_volume(em, "EM volume"), check_volume(lm, "LM stack")
    (em_v, w_em), (lm_v, w_lm) = voxel_size(em_voxel, "the EM volume"), voxel_size(lm_voxel, "the LM stack")
    if method not in ("mine", "mi"):
        raise InputError(f"unknown 3-D method {method!r}; use 'mine' or 'mi'")
    warnings = [w for w in (w_em, w_lm) if w]
    report = progress or (lambda _p: None)
    stop = cancelled or (lambda: False)
    if stop():
        raise Cancelled("registration cancelled")
    timings: dict[str, float] = {}
    metrics: dict[str, float] = {}
    out_params: dict = {"seed": seed, "method": method, "tilt_search": tilt_search}
    if init is None:
        report(Progress("prealign", 0, None, None, 0.0))
        pa = prealign(em_a, lm_a, em_v, lm_v, tilt_search=tilt_search)
        start = pa.fixed_to_moving
        timings.update(pa.timings)
        metrics.update({f"prealign_{k}": v for k, v in pa.scores.items()})
        out_params.update(prealign_rotation_deg=pa.rotation_deg, prealign_mirror=pa.mirror,
                          prealign_z_slice=pa.z_slice, prealign_tilt_deg=list(pa.tilt_deg))
        if pa.scores["search_xy"] < LOW_SEARCH:
            warnings.append(f"the pre-alignment slice search found no clear match (correlation "
                            f"{pa.scores['search_xy']:.2f}); the EM may lie outside the LM stack or the "
                            "registration channel may not show the EM's structures")
    else:
        start = as_matrix4(init)
    report(Progress("refine", 0, None, None, 0.3))
    p = params or Mine3DParams()
    a, info = refine(em_a, lm_a, em_v, lm_v, start, method=method, params=p, seed=seed, progress=report,
                     cancelled=stop)
    timings.update(info["timings"])
    tq = time.perf_counter()
    metrics.update(_overlap_metrics(em_a, lm_a, em_v, lm_v, a))
    timings["metrics_s"] = time.perf_counter() - tq
    if "mi_estimate" in info:
        metrics["mi_estimate"] = info["mi_estimate"]
        if info["mi_estimate"] < LOW_MI:
            warnings.append(f"low mutual information after registration ({info['mi_estimate']:.3f} nats): the LM "
                            "registration channel may not share structure with the EM; check the overlay")
    elif metrics["mi_histogram"] < LOW_HIST_MI:
        warnings.append(f"low mutual information after registration ({metrics['mi_histogram']:.3f} nats, "
                        "histogram): the LM registration channel may not share structure with the EM")
    if metrics["overlap_fraction"] < MIN_OVERLAP:
        warnings.append(f"only {100 * metrics['overlap_fraction']:.0f} % of the EM volume maps inside the LM stack")
    zc = float(apply_to_points3d(a, [center_of3d(em_a.shape)])[0, 2])
    metrics["em_centre_lm_slice"] = zc
    timings["total_s"] = time.perf_counter() - t0
    report(Progress("done", info["iterations"], info["iterations"], metrics.get("mi_estimate"), 1.0))
    out_params.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(p).items()})
    out_params.update(levels_voxel_um=info["levels"], stage_iterations=info["stage_iterations"])
    status = "failed" if metrics["overlap_fraction"] == 0.0 else None
    return Registration(fixed_to_moving=a, fixed_shape=tuple(int(n) for n in em_a.shape),
                        moving_shape=tuple(int(n) for n in lm_a.shape), method=f"{method}3d", params=out_params,
                        metrics={k: float(v) for k, v in metrics.items()}, timings=timings,
                        mi_curve=[float(x) for x in info["mi_curve"]], iterations=int(info["iterations"]),
                        fixed_pixel_size=PixelSize(x=em_v[0], y=em_v[1], z=em_v[2], unit="um"),
                        moving_pixel_size=PixelSize(x=lm_v[0], y=lm_v[1], z=lm_v[2], unit="um"),
                        warnings=warnings, status=status, ndim=3)
