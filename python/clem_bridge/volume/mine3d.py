"""3-D affine refinement of an LM stack onto an EM volume: MINE in 3-D, and a classical MI comparison.

MINE (as :mod:`clem_bridge.register.mine`, in 3-D): the affine is ``M0 · expm(Σ vᵢ Bᵢ)`` over 12 basis
matrices (3 translations, 3 rotations, isotropic scale, 5 traceless symmetric stretches/shears) in a
centred *physical* frame (one unit = half the EM's longest physical side), so the parameters are
isotropic whatever the voxel anisotropy.  ``M0`` is the pre-alignment and carries the reflection of a
mirrored LM (``det < 0``), which the exponential never has to reach.  Mutual information between the EM
at structure samples and the LM at the mapped points is estimated by the same Donsker–Varadhan MLP
(:class:`~clem_bridge.register.mine.MineNet`, :func:`~clem_bridge.register.mine.dv_bound`), trained jointly
with ``v``; the LM is read with 3-D ``grid_sample``.  Pyramid levels are physical and near isotropic
(voxel r, r, max(r, native z)) from coarse to fine, each stopping on a plateau of the MI estimate and of
the parameters, the result averaged over the last iterations.

Classical option (``method='mi'``): the same parameterisation and levels, histogram MI on the same
samples maximised by Powell's method (deterministic).

Matrices follow :mod:`clem_bridge.transforms3d` (EM voxel → LM voxel).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, optimize

from ..errors import Cancelled
from ..intensity import percentile_normalise
from ..progress import Progress
from ..quality import histogram_mi
from ..register.mine import AmsGrad, MineNet, Plateau, dv_bound
from ..transforms3d import center_of3d, voxel_matrix, voxel_to_normalized
from .prealign import blur_physical, lm_resolution, resample


@dataclass
class Mine3DParams:
    """Refinement settings (``fast``); override fields with ``dataclasses.replace``."""
    levels: int = 3
    hidden: int = 32                  # MINE network width (as the 2-D engine's fast preset)
    finest_size: int = 96             # EM long side (voxels) at the finest level at most
    coarsest_size: int = 24           # EM long side (voxels) at the coarsest level at least
    lr_mine: float = 3e-3
    lr_transform: float = 3e-3
    lr_decay: float = 0.5
    max_iterations: int = 150         # per level (the coarsest rarely plateaus; 250 gave the same errors)
    min_iterations: int = 75
    samples_per_step: int = 2048
    max_samples: int = 200_000
    structure_fraction: float = 0.3   # EM voxels with the strongest gradient used as samples
    check_every: int = 25
    tol_vox: float = 0.25             # parameter plateau: corner motion in level voxels
    mi_tol: float = 5e-3
    average_last: int = 50


def _basis() -> np.ndarray:
    """12 generators of the 3-D affine group in the centred frame (4×4, homogeneous)."""
    out = []
    for i in range(3):                                    # translations
        b = np.zeros((4, 4))
        b[i, 3] = 1
        out.append(b)
    for i, j in ((1, 0), (2, 1), (0, 2)):                 # rotations about z, x, y
        b = np.zeros((4, 4))
        b[i, j], b[j, i] = 1, -1
        out.append(b)
    out.append(np.diag([1.0, 1, 1, 0]))                   # isotropic scale
    out.append(np.diag([1.0, -1, 0, 0]))                  # stretches (traceless)
    out.append(np.diag([1.0, 1, -2, 0]) / np.sqrt(3))
    for i, j in ((0, 1), (1, 2), (0, 2)):                 # symmetric shears
        b = np.zeros((4, 4))
        b[i, j] = b[j, i] = 1
        out.append(b)
    return np.stack(out)


BASIS = _basis()


def frame(shape, voxel, radius: float) -> np.ndarray:
    """Voxel → centred physical frame (origin at the volume centre, unit ``radius``)."""
    m = voxel_matrix(voxel)
    m[:3, 3] = -center_of3d(shape) * np.asarray(voxel, float)
    return np.diag([1 / radius] * 3 + [1.0]) @ m


@dataclass
class _Level:
    fixed_values: torch.Tensor     # (N,) EM intensities at the samples
    frame_points: torch.Tensor     # (N, 4) homogeneous frame coordinates of the samples
    moving: torch.Tensor           # (1, 2, D, H, W): LM and a validity channel
    moving_grey: float
    frame_to_grid: torch.Tensor    # (4, 4) moving frame → grid_sample coordinates
    voxels_per_unit: float         # level voxels per frame unit (plateau test)


def _levels(em_b, lm, em_v, lm_v, ff, fm, radius, p: Mine3DParams, rng) -> list[_Level]:
    em_ext = np.array(em_b.shape[::-1]) * em_v
    r_fine = max(em_v[0], em_v[1], max(em_ext) / p.finest_size)
    sizes = [r_fine * 2.0 ** k for k in range(p.levels)]
    sizes = [r for r in sizes if max(em_ext) / r >= p.coarsest_size] or [r_fine]
    out = []
    for r in reversed(sizes):
        f_l, f_v, f_m = resample(em_b, em_v, (r, r, max(r, em_v[2])))
        m_l, m_v, m_m = resample(lm, lm_v, (max(r, lm_v[0]), max(r, lm_v[1]), max(r, lm_v[2])))
        f_l, m_l = percentile_normalise(f_l, 0.5, 99.5), percentile_normalise(m_l, 0.5, 99.5)
        grad = np.sqrt(sum((ndimage.sobel(ndimage.gaussian_filter(f_l, 1.0), axis=a) / f_v[2 - a]) ** 2
                           for a in range(3) if f_l.shape[a] > 2))
        mask = grad >= np.quantile(grad, 1.0 - p.structure_fraction)
        zs, ys, xs = np.nonzero(mask)
        if zs.size > p.max_samples:
            keep = rng.choice(zs.size, p.max_samples, replace=False)
            zs, ys, xs = zs[keep], ys[keep], xs[keep]
        pts = np.stack([xs, ys, zs, np.ones_like(xs)], 1).astype(np.float64) @ (ff @ f_m).T
        to_grid = voxel_to_normalized(m_l.shape) @ np.linalg.inv(m_m) @ np.linalg.inv(fm)
        mt = torch.from_numpy(m_l)[None, None]
        out.append(_Level(fixed_values=torch.from_numpy(f_l[zs, ys, xs]),
                          frame_points=torch.from_numpy(pts.astype(np.float32)),
                          moving=torch.cat([mt, torch.ones_like(mt)], 1), moving_grey=float(np.median(m_l)),
                          frame_to_grid=torch.from_numpy(to_grid.astype(np.float32)),
                          voxels_per_unit=radius / r))
    return out


def _sample(level: _Level, mat: torch.Tensor, idx: Optional[torch.Tensor]):
    pts = level.frame_points if idx is None else level.frame_points[idx]
    f = level.fixed_values if idx is None else level.fixed_values[idx]
    g = (pts @ (level.frame_to_grid @ mat).T)[:, :3].reshape(1, 1, 1, -1, 3)
    s = F.grid_sample(level.moving, g, mode="bilinear", padding_mode="zeros", align_corners=True)[0, :, 0, 0]
    return f, s[0] + (1.0 - s[1]) * level.moving_grey, s[1]


def _expm(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_exp((v[:, None, None] * basis).sum(0))


def refine(em: np.ndarray, lm: np.ndarray, em_voxel, lm_voxel, init: np.ndarray, *, method: str = "mine",
           params: Optional[Mine3DParams] = None, seed: int = 0,
           progress: Optional[Callable[[Progress], None]] = None,
           cancelled: Optional[Callable[[], bool]] = None) -> tuple[np.ndarray, dict]:
    """Refine the EM voxel → LM voxel matrix ``init``; returns ``(fixed_to_moving, info)``.

    ``info`` holds ``mi_curve``, ``mi_estimate`` (MINE, nats) or ``mi_histogram``, ``iterations``,
    ``stage_iterations``, ``levels`` (level voxel sizes) and ``timings``.
    """
    p = params or Mine3DParams()
    report = progress or (lambda _p: None)
    stop = cancelled or (lambda: False)
    em_v, lm_v = np.asarray(em_voxel, float), np.asarray(lm_voxel, float)
    radius = float(max(np.array(em.shape[::-1]) * em_v)) / 2.0
    ff, fm = frame(em.shape, em_v, radius), frame(lm.shape, lm_v, radius)
    m0 = fm @ np.asarray(init, float) @ np.linalg.inv(ff)
    t0 = time.perf_counter()
    em_b = blur_physical(em, em_v, lm_resolution(lm_v))      # the EM as the LM could see it
    levels = _levels(em_b, lm.astype(np.float32), em_v, lm_v, ff, fm, radius, p, np.random.default_rng(seed))
    timings = {"pyramid_s": time.perf_counter() - t0}
    t1 = time.perf_counter()
    if method == "mine":
        v, info = _optimise_mine(levels, m0, p, seed, report, stop)
    elif method == "mi":
        v, info = _optimise_mi(levels, m0, report, stop)
    else:
        raise ValueError(f"method must be 'mine' or 'mi', got {method!r}")
    timings["optimise_s"] = time.perf_counter() - t1
    frame_mat = m0 @ _expm(torch.from_numpy(v), torch.from_numpy(BASIS)).numpy()
    out = np.linalg.inv(fm) @ frame_mat @ ff
    out[3] = (0.0, 0.0, 0.0, 1.0)
    info.update(timings=timings, levels=[radius / lv.voxels_per_unit for lv in levels])
    return out, info


def _optimise_mine(levels, m0, p: Mine3DParams, seed, report, stop):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    basis = torch.from_numpy(BASIS.astype(np.float32))
    m0_t = torch.from_numpy(m0.astype(np.float32))
    v = torch.zeros(len(BASIS), requires_grad=True)
    net = MineNet(hidden=p.hidden)
    opt_net = AmsGrad([{"params": list(net.parameters()), "lr": p.lr_mine}])
    corners = torch.tensor([[x, y, z, 1.0] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    mi_curve, stage_iters, iterations = [], [], 0
    budget = p.max_iterations * len(levels)
    for si, level in enumerate(levels):
        lr = p.lr_transform * p.lr_decay ** si
        opt_v = AmsGrad([{"params": [v], "lr": lr}])
        ema, window = None, []
        plateau = Plateau(p.tol_vox, p.mi_tol, p.min_iterations, lr, dims=3)
        n = level.fixed_values.numel()
        for it in range(p.max_iterations):
            if stop():
                raise Cancelled("registration cancelled")
            k = min(p.samples_per_step, n)
            idx = torch.randint(n, (k,), generator=gen) if k < n else None
            perm = torch.randperm(k, generator=gen)
            f, m, _ = _sample(level, m0_t @ _expm(v, basis), idx)
            mi = dv_bound(net, f, m, perm)
            opt_net.zero_grad()
            opt_v.zero_grad()
            (-mi).backward()
            opt_net.step()
            opt_v.step()
            iterations += 1
            val = float(mi.detach())
            mi_curve.append(val)
            ema = val if ema is None else 0.95 * ema + 0.05 * val
            window = (window + [v.detach().clone()])[-max(p.average_last, p.check_every):]
            if (it + 1) % p.check_every:
                continue
            report(Progress(f"level {si + 1}/{len(levels)}", it + 1, p.max_iterations, ema,
                            0.3 + 0.65 * min(1.0, iterations / budget)))
            with torch.no_grad():
                c = corners @ (m0_t @ _expm(torch.stack(window[-p.check_every:]).mean(0), basis)).T
            if plateau.stop(it + 1, c, ema, level.voxels_per_unit, opt_v.param_groups[0]):
                break
        stage_iters.append(it + 1)
        if p.average_last:
            with torch.no_grad():
                v.copy_(torch.stack(window[-p.average_last:]).mean(0))
    est = float(np.mean(mi_curve[-p.check_every:])) if mi_curve else 0.0
    return v.detach().double().numpy(), {"mi_curve": mi_curve, "mi_estimate": est, "iterations": iterations,
                                         "stage_iterations": stage_iters}


def _optimise_mi(levels, m0, report, stop, samples: int = 20_000):
    basis = torch.from_numpy(BASIS)
    v = np.zeros(len(BASIS))
    curve, evals = [], 0
    for si, level in enumerate(levels):
        n = level.fixed_values.numel()
        idx = torch.from_numpy(np.random.default_rng(si).choice(n, min(n, samples), replace=False))
        lv = _Level(level.fixed_values[idx].double(), level.frame_points[idx].double(), level.moving.double(),
                    level.moving_grey, level.frame_to_grid.double(), level.voxels_per_unit)
        m0_t = torch.from_numpy(m0)
        scale = np.r_[[1.0 / level.voxels_per_unit] * 3, [0.5 / level.voxels_per_unit] * 9] * 4.0

        def cost(u):
            nonlocal evals
            if stop():
                raise Cancelled("registration cancelled")
            evals += 1
            with torch.no_grad():
                f, m, valid = _sample(lv, m0_t @ _expm(torch.from_numpy(v + u * scale), basis), None)
            ok = (valid > 0.99).numpy()
            return -histogram_mi(f.numpy()[ok], m.numpy()[ok], bins=32) if ok.mean() > 0.2 else 0.0

        res = optimize.minimize(cost, np.zeros(len(BASIS)), method="Powell",
                                options={"xtol": 0.05, "ftol": 1e-4, "maxfev": 600})
        v = v + res.x * scale
        curve.append(-float(res.fun))
        report(Progress(f"level {si + 1}/{len(levels)}", si + 1, len(levels), curve[-1],
                        0.3 + 0.65 * (si + 1) / len(levels)))
    return v, {"mi_curve": curve, "mi_histogram": curve[-1] if curve else 0.0, "iterations": evals,
               "stage_iterations": []}
