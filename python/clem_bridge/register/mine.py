"""MINE registration engine (TFUDL-CLEM, built on DRMIME).

The affine is ``R · expm(Σ vᵢ Bᵢ)`` over 6 basis matrices (x/y translation, rotation, isotropic scale,
stretch, shear) in a centred frame where one unit is half the long side of the fixed image; ``R`` is
the fixed start (global search or ``init``), which may be mirrored (det < 0: the LM seen from the other
side of the section), so the optimiser works in the handedness the search chose.
Mutual information between the fixed (EM) intensities at sample points and the moving (LM)
intensities at the mapped points is estimated by MINE: a 3-layer MLP (2 → h → h → 1, ReLU)
trained jointly with the transform on the Donsker–Varadhan bound
``MI ≥ E_joint[T] − log E_marginal[eᵀ]`` (marginal = moving samples shuffled).  Samples are taken
where the EM has structure (dilated Canny edges of the blurred EM) on a Gaussian pyramid.  Where the
mapped point leaves the moving image the value is the moving image's median grey (never zero).

Two presets:

* ``thesis`` — the published settings: 6 pyramid levels optimised jointly each iteration
  (loss = Σ_levels MINE(v) + MINE(finest, v + v′)), h = 100, learning rates α = 1e-5 (MINE network),
  β = 5e-4 (coarse parameters v), γ = 1e-5 (finest-level parameters v′), AMSGrad Adam,
  87,000 iterations, up to 1e6 samples per level, no initial search.
* ``fast`` (default) — the same estimator and parameterisation with a smaller network, a global
  initial search over both handednesses, the full circle and LM/EM scales 0.5–2 (:mod:`.search`),
  a short coarse-to-fine schedule (one level at a time), a random subset of edge samples per step,
  stopping each level on a plateau of the MI estimate and of the parameters, and the final
  parameters averaged over the last iterations (Polyak averaging).  Two consistency checks guard against
  a refinement that drifts off the search's start: the result must match the image gradients (the search's
  criterion) at least about as well as the start, and for small images (where MINE's optimum can be
  ambiguous) refinements with other seeds must confirm it; otherwise the status is ``uncertain``.

Randomness comes only from generators local to the call (no global torch state is touched), so
concurrent calls in threads give the same result as sequential ones.
The result follows :mod:`clem_bridge.transforms`: ``fixed_to_moving`` maps EM pixel → LM pixel.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..device import device_label, select_device
from ..errors import Cancelled, InputError
from ..progress import CancelFn, Progress, ProgressFn
from ..result import Registration
from ..transforms import as_matrix, center_of, pixel_to_normalized, rescale, resize_matrix, tre
from .search import alignment_optimum, alignment_score, global_search


@dataclass
class MineParams:
    """Engine settings; build with :meth:`preset`, override fields with ``dataclasses.replace``."""
    name: str = "fast"
    levels: int = 2                   # pyramid levels (finest = working resolution)
    level_step: int = 2               # fast: each coarser level is binned up to 2**level_step more
    coarsest_size: int = 96           # fast: no level where the smaller image's long side is below this
    finest_size: int = 640            # fast: finest optimised level long side (the LM is blurred anyway)
    hidden: int = 32                  # MINE network width
    joint_levels: bool = False        # thesis: all levels in one loss every iteration
    fine_params: bool = False         # thesis: extra parameter set v′ for the finest level
    lr_mine: float = 3e-3             # α
    lr_coarse: float = 3e-3           # β (per-level decay by ``lr_decay`` in the fast schedule)
    lr_fine: float = 1e-5             # γ
    lr_decay: float = 0.5
    max_iterations: int = 50          # per level (fast) or total (thesis)
    max_iterations_large: Optional[int] = 40   # fast: per level when neither image is below ``verify_below`` px
    min_iterations: int = 30          # per level (fast)
    samples_per_step: int = 1024      # 0 = all edge samples (capped by max_samples)
    max_samples: int = 1_000_000
    check_every: int = 20
    tol_px: float = 0.25              # parameter plateau: motion of window-averaged corners, level px
    mi_tol: float = 5e-3              # MI plateau: gain of the window mean per check
    average_last: int = 20            # Polyak window (0 = off)
    global_search: bool = True
    mirror_search: bool = True        # also try the mirrored LM (det < 0)
    rotation_range_deg: float = 180.0  # ≥ 180: the full circle
    rotation_step_deg: float = 3.0
    search_scales: tuple = tuple(float(x) for x in np.geomspace(0.42, 2.38, 11))   # LM/EM pixel-scale guesses
    max_shift_frac: float = 0.25
    search_size: int = 128
    max_working_size: int = 2048      # larger inputs are registered binned and the matrix rescaled
    check_size: int = 256             # search criterion compared at the start and the result at this long side
    verify_below: int = 400           # smaller image's long side below this: other refinements confirm the first
    verify_px: float = 2.0            # ... agreeing within this mean distance (LM px over the EM field)
    metrics_size: int = 512           # quality metrics on the images binned to this long side (0 = full)
    canny_sigma: float = 1.5
    edge_dilation: int = 2

    @classmethod
    def preset(cls, name: str) -> "MineParams":
        if name == "fast":
            return cls()
        if name == "thesis":
            return cls(name="thesis", levels=6, level_step=1, hidden=100, joint_levels=True, fine_params=True,
                       lr_mine=1e-5, lr_coarse=5e-4, lr_fine=1e-5, lr_decay=1.0, max_iterations=87_000,
                       min_iterations=87_000, samples_per_step=0, average_last=0, global_search=False,
                       metrics_size=0)
        raise InputError(f"unknown preset {name!r}; use 'fast' or 'thesis'")


# --- the 6 affine basis matrices (centred frame) --------------------------------------------
_BASIS = np.array([
    [[0, 0, 1], [0, 0, 0], [0, 0, 0]],    # x translation
    [[0, 0, 0], [0, 0, 1], [0, 0, 0]],    # y translation
    [[0, -1, 0], [1, 0, 0], [0, 0, 0]],   # rotation
    [[1, 0, 0], [0, 1, 0], [0, 0, 0]],    # isotropic scale
    [[1, 0, 0], [0, -1, 0], [0, 0, 0]],   # stretch
    [[0, 1, 0], [1, 0, 0], [0, 0, 0]],    # shear
], dtype=np.float64)


class _UninitialisedLinear(torch.nn.Linear):
    """A Linear layer whose constructor draws nothing from the global RNG (MineNet initialises it)."""

    def reset_parameters(self) -> None:
        pass


class MineNet(torch.nn.Module):
    """T(fixed, moving): 2 → h → h → 1 with ReLU, initialised from ``generator`` (PyTorch's default scheme)."""

    def __init__(self, hidden: int = 100, generator: Optional[torch.Generator] = None):
        super().__init__()
        linear = _UninitialisedLinear
        self.net = torch.nn.Sequential(linear(2, hidden), torch.nn.ReLU(), linear(hidden, hidden), torch.nn.ReLU(),
                                       linear(hidden, 1))
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, torch.nn.Linear):
                    bound = 1.0 / np.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.net(torch.stack([f, m], dim=1)).squeeze(1)


class AmsGrad:
    """Adam with AMSGrad (the update of ``torch.optim.Adam(amsgrad=True)``, betas 0.9/0.999, eps 1e-8) over a
    few small parameter groups; ``param_groups`` and ``state`` as in torch.optim.  Written out because
    torch.optim's first use imports torch._dynamo, seconds of a command-line run's start-up."""

    def __init__(self, groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param_groups = [dict(g) for g in groups]
        self.betas, self.eps = betas, eps
        self.state: dict[torch.Tensor, dict] = {}

    def zero_grad(self) -> None:
        for g in self.param_groups:
            for q in g["params"]:
                q.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        for g in self.param_groups:
            for q in g["params"]:
                if q.grad is None:
                    continue
                st = self.state.get(q)
                if st is None:
                    st = self.state[q] = {"step": 0, "m": torch.zeros_like(q), "v": torch.zeros_like(q),
                                          "v_max": torch.zeros_like(q)}
                st["step"] += 1
                st["m"].lerp_(q.grad, 1 - b1)
                st["v"].mul_(b2).addcmul_(q.grad, q.grad, value=1 - b2)
                torch.maximum(st["v_max"], st["v"], out=st["v_max"])
                denom = (st["v_max"] / (1 - b2 ** st["step"])).sqrt_().add_(self.eps)
                q.addcdiv_(st["m"], denom, value=-g["lr"] / (1 - b1 ** st["step"]))


def dv_bound(net: MineNet, f: torch.Tensor, m: torch.Tensor, perm) -> torch.Tensor:
    """Donsker–Varadhan MI lower bound: mean T(joint) − log mean exp T(marginal) (one batched pass).

    The marginal pairs the fixed values with ``m[perm]`` (``perm`` an index tensor) or, when ``perm`` is
    an int and the samples are in random order, with the fixed values cyclically shifted by ``perm``
    (no gather in the backward pass).
    """
    n = f.numel()
    if isinstance(perm, int):
        t = net(torch.cat([f, f.roll(perm)]), torch.cat([m, m]))
    else:
        t = net(torch.cat([f, f]), torch.cat([m, m[perm]]))
    return t[:n].mean() - (torch.logsumexp(t[n:], 0) - np.log(n))


class Plateau:
    """The stopping rule of 2-D and 3-D MINE, checked every ``check_every`` iterations on the window-averaged
    transform (``corners``: the field's corners under it, in normalised units) and the MI.

    A check is calm when the corners moved by under ``tol`` (pixels or voxels) and the MI rose by under
    ``mi_tol``; two calm checks in a row, or a step size down to 1/16 of ``lr``, stop the level.  A flat MI
    halves the transform's step size.  Checks before ``min_iterations`` only record the state."""

    def __init__(self, tol: float, mi_tol: float, min_iterations: int, lr: float, dims: int):
        self.tol, self.mi_tol, self.min_iterations, self.lr, self.dims = tol, mi_tol, min_iterations, lr, dims
        self.prev: Optional[torch.Tensor] = None
        self.last_mi, self.calm = 0.0, 0

    def stop(self, iteration: int, corners: torch.Tensor, mi: float, units_per_normalised: float,
             group: dict) -> bool:
        """True when the level has converged; halves ``group["lr"]`` (the transform's step) on a flat MI."""
        if self.prev is not None and iteration >= self.min_iterations:
            moved = float((corners - self.prev)[:, :self.dims].norm(dim=1).max()) * units_per_normalised
            flat = mi - self.last_mi < self.mi_tol
            self.calm = self.calm + 1 if (moved < self.tol and flat) else 0
            if self.calm >= 2 or group["lr"] <= self.lr / 16:
                return True
            if flat:
                group["lr"] *= 0.5
        self.prev, self.last_mi = corners, mi
        return False


# --- input handling ------------------------------------------------------------------------

def _check(img, name: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4:
        raise InputError(f"{name} image is RGB; pass a single channel")
    if a.ndim != 2:
        raise InputError(f"{name} image must be 2-D (height, width), got shape {a.shape}")
    if a.size == 0 or min(a.shape) < 16:
        raise InputError(f"{name} image is too small ({a.shape[0]}x{a.shape[1]}); need at least 16x16 pixels")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise InputError(f"{name} image has a non-numeric pixel type {a.dtype}")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} image contains NaN or infinite pixels")
    step = max(1, int(np.sqrt(a.size / 250_000)))   # percentiles from a regular subsample of large images
    lo, hi = np.percentile(a[::step, ::step], [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        raise InputError(f"{name} image is constant (no structure to register)")
    a -= np.float32(lo)                        # in place, in float32 (``a`` is this function's own copy)
    a *= np.float32(1.0 / (hi - lo))
    return np.clip(a, 0.0, 1.0, out=a)


def _downscale(img: np.ndarray, factor: float) -> np.ndarray:
    """Gaussian-filtered resize by 1/``factor`` (pixel-area convention of transforms.resize_matrix)."""
    if factor <= 1.0:
        return img
    h, w = img.shape
    out_shape = (max(int(round(h / factor)), 8), max(int(round(w / factor)), 8))
    blurred = cv2.GaussianBlur(img, (0, 0), 0.5 * factor)
    return cv2.resize(blurred, (out_shape[1], out_shape[0]), interpolation=cv2.INTER_LINEAR)


def edge_mask(img: np.ndarray, sigma: float = 1.5, dilation: int = 2) -> np.ndarray:
    """Dilated Canny edges of the blurred image (where the EM has structure)."""
    blurred = cv2.GaussianBlur(img, (0, 0), sigma)
    u8 = np.clip(blurred * 255.0, 0, 255).astype(np.uint8)
    gx = cv2.Sobel(u8, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(u8, cv2.CV_32F, 0, 1)
    mag = np.abs(gx) + np.abs(gy)
    lo, hi = np.percentile(mag, [70, 90])
    edges = cv2.Canny(u8, float(lo), float(max(hi, lo + 1)), L2gradient=False)
    if dilation > 0:
        edges = cv2.dilate(edges, np.ones((2 * dilation + 1, 2 * dilation + 1), np.uint8))
    return edges > 0


@dataclass
class _Level:
    fixed_values: torch.Tensor     # (N,) fixed intensities at sample pixels
    frame_points: torch.Tensor     # (N, 3) homogeneous fixed-frame coordinates of the samples
    moving: torch.Tensor           # (1, 2, H, W) moving image at this level and its coverage (ones)
    moving_grey: float
    frame_to_grid: torch.Tensor    # (3, 3) moving frame → grid_sample coords of this level
    fixed_px_per_unit: float       # level pixels per frame unit (for the plateau test)


def _build_level(fixed: np.ndarray, moving: np.ndarray, factor: float, fixed_frame: np.ndarray,
                 moving_frame: np.ndarray, p: MineParams, dev: torch.device) -> _Level:
    f_l, m_l = _downscale(fixed, factor), _downscale(moving, factor)
    mask = edge_mask(f_l, p.canny_sigma if factor <= 1 else 1.0, p.edge_dilation)
    if mask.sum() < 256:
        mask = np.ones_like(mask)
    ys, xs = np.nonzero(mask)
    if p.max_samples and ys.size > p.max_samples:
        keep = np.random.default_rng(0).choice(ys.size, p.max_samples, replace=False)
        ys, xs = ys[keep], xs[keep]
    # level px → full px → frame
    lvl_to_frame = fixed_frame @ resize_matrix(fixed.shape, f_l.shape)
    pts = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float64) @ lvl_to_frame.T
    # moving frame → full moving px → level px → normalised (align_corners=True)
    frame_to_grid = (pixel_to_normalized(m_l.shape) @ np.linalg.inv(resize_matrix(moving.shape, m_l.shape))
                     @ np.linalg.inv(moving_frame))
    both = np.stack([m_l, np.ones_like(m_l)])[None]
    return _Level(fixed_values=torch.from_numpy(f_l[ys, xs].astype(np.float32)).to(dev),
                  frame_points=torch.from_numpy(pts.astype(np.float32)).to(dev),
                  moving=torch.from_numpy(both).to(dev),
                  moving_grey=float(np.median(m_l)),
                  frame_to_grid=torch.from_numpy(frame_to_grid.astype(np.float32)).to(dev),
                  fixed_px_per_unit=1.0 / abs(lvl_to_frame[0, 0]))


def _sample_moving(level: _Level, mat: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Moving intensities at the frame points ``pts`` mapped by ``mat`` (grey where the moving image has no data)."""
    grid = pts @ (level.frame_to_grid @ mat)[:2].T
    s = F.grid_sample(level.moving, grid.reshape(1, 1, -1, 2), mode="bilinear", padding_mode="zeros",
                      align_corners=True)[0, :, 0]
    return s[0] + (1.0 - s[1]) * level.moving_grey


def _batches(level: _Level, n: int, gen: torch.Generator):
    """Endless (fixed values, frame points) mini-batches of ``n`` samples: consecutive slices of a shuffled
    copy of the level's samples, reshuffled after each pass (all samples, shuffled once, when ``n`` ≤ 0 or
    covers them)."""
    total = level.fixed_values.numel()
    n = total if n <= 0 or n >= total else n
    while True:
        order = torch.randperm(total, generator=gen, device=gen.device)
        f, pts = level.fixed_values[order], level.frame_points[order]
        if n == total:
            while True:
                yield f, pts
        for a in range(0, total - n + 1, n):
            yield f[a:a + n], pts[a:a + n]


def _expm(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_exp((v[:, None, None] * basis).sum(0))


def _frames(fixed_shape, moving_shape) -> tuple[np.ndarray, np.ndarray]:
    """Pixel → centred frame matrices (unit = half the fixed long side, same scale for both)."""
    r = max(fixed_shape) / 2.0
    cf, cm = center_of(fixed_shape), center_of(moving_shape)
    ff = np.array([[1 / r, 0, -cf[0] / r], [0, 1 / r, -cf[1] / r], [0, 0, 1.0]])
    fm = np.array([[1 / r, 0, -cm[0] / r], [0, 1 / r, -cm[1] / r], [0, 0, 1.0]])
    return ff, fm


def _pyramid_factors(fixed_shape, moving_shape, p: MineParams) -> list[float]:
    """Binning factors of the optimised levels, finest first (relative to the working images).

    Fast preset: each coarser level is binned up to ``2**level_step`` more, less where the smaller
    image would drop below ``coarsest_size`` (a tiny coarse LM biases the MI optimum).
    """
    if p.joint_levels:
        return [2.0 ** k for k in range(p.levels)]
    first = 0
    while max(fixed_shape) / 2.0 ** first > p.finest_size:
        first += 1
    factors = [2.0 ** first]
    side = min(max(fixed_shape), max(moving_shape))
    while len(factors) < p.levels:
        step = next((k for k in range(p.level_step, 0, -1) if side / (factors[-1] * 2.0 ** k) >= p.coarsest_size), 0)
        if not step:
            break
        factors.append(factors[-1] * 2.0 ** step)
    return factors


def _optimise(levels: list[_Level], m0: np.ndarray, p: MineParams, seed: int, dev: torch.device,
              report: ProgressFn, stop: CancelFn, timings: dict[str, float]):
    """The MINE optimisation from the frame → frame start ``m0``: (frame matrix as float64 numpy, MI curve,
    iterations per stage, total iterations).  Per-stage seconds go into ``timings``."""
    gen = torch.Generator(device=dev).manual_seed(seed)
    net_gen = torch.Generator().manual_seed(seed)
    basis = torch.from_numpy(_BASIS.astype(np.float32)).to(dev)
    m0_t = torch.from_numpy(m0.astype(np.float32)).to(dev)
    v = torch.zeros(6, device=dev, requires_grad=True)
    v_fine = torch.zeros(6, device=dev, requires_grad=True)
    mi_curve: list[float] = []
    level_iters: list[int] = []
    iterations = 0
    corners = torch.tensor([[-1, -1, 1], [1, -1, 1], [-1, 1, 1], [1, 1, 1]], dtype=torch.float32, device=dev)

    batches = [_batches(level, p.samples_per_step, gen) for level in levels]
    shifts = np.random.default_rng(seed)    # marginal: the batch's fixed values shifted by a random offset

    def draw(k: int):
        f, pts = next(batches[k])
        return f, pts, int(shifts.integers(1, f.numel()))

    if p.joint_levels:
        stages = [list(range(len(levels)))]
    else:
        # a single level (small images) runs twice: the first stage trains the network from scratch
        stages = [[k] for k in reversed(range(len(levels)))] * (2 if len(levels) == 1 else 1)
    budget = p.max_iterations * len(stages)
    # fast: one network carried through the levels; thesis: one per level (+ one for the v + v′ term)
    n_nets = len(levels) + int(p.fine_params) if p.joint_levels else 1
    nets = [MineNet(p.hidden, net_gen).to(dev) for _ in range(n_nets)]
    net_params = [q for n_ in nets for q in n_.parameters()]

    for si, stage in enumerate(stages):
        tl = time.perf_counter()
        lr = p.lr_coarse * (p.lr_decay ** si)   # same step in level pixels at every level
        if si == 0:   # one optimiser: network, transform (and v′ in the thesis preset)
            groups = [{"params": net_params, "lr": p.lr_mine}, {"params": [v], "lr": lr}]
            if p.fine_params:
                groups.append({"params": [v_fine], "lr": p.lr_fine})
            opt = AmsGrad(groups)
        else:         # next level: keep the network's optimiser state, restart the transform's
            opt.param_groups[1]["lr"] = lr
            opt.state.pop(v, None)
        name = "optimise" if p.joint_levels else f"level {si + 1}/{len(stages)}"
        finest = levels[stage[0]] if not p.joint_levels else levels[0]
        plateau = Plateau(p.tol_px, p.mi_tol, p.min_iterations, lr, dims=2)
        window: list[torch.Tensor] = []
        mis: list[torch.Tensor] = []
        for it in range(p.max_iterations):
            if stop():
                raise Cancelled("registration cancelled")
            mat = m0_t @ _expm(v, basis)
            loss = torch.zeros((), device=dev)
            for li, k in enumerate(stage):
                f, pts, shift = draw(k)
                m = _sample_moving(levels[k], mat, pts)
                loss = loss - dv_bound(nets[li if p.joint_levels else 0], f, m, shift)
            mis.append(-loss.detach() / len(stage))
            if p.fine_params:
                f, pts, shift = draw(0)
                m = _sample_moving(levels[0], m0_t @ _expm(v + v_fine, basis), pts)
                loss = loss - dv_bound(nets[-1], f, m, shift)
            opt.zero_grad()
            loss.backward()
            opt.step()
            iterations += 1
            window.append(v.detach().clone())
            window = window[-max(p.average_last, p.check_every):]
            if (it + 1) % p.check_every == 0:
                recent = torch.stack(mis[-p.check_every:]).cpu().numpy()    # one device sync per check
                mi_curve.extend(float(x) for x in recent)
                mean = float(recent.mean())
                report(Progress(name, it + 1, p.max_iterations, mean,
                                0.05 + 0.9 * min(1.0, iterations / budget)))
                # plateau test on window-averaged parameters (robust to the stochastic jitter)
                with torch.no_grad():
                    c = corners @ (m0_t @ _expm(torch.stack(window[-p.check_every:]).mean(0), basis)).T
                if plateau.stop(it + 1, c, mean, finest.fixed_px_per_unit, opt.param_groups[1]):
                    break
        rest = len(mis) % p.check_every
        if rest:
            mi_curve.extend(float(x) for x in torch.stack(mis[-rest:]).cpu().numpy())
        level_iters.append(it + 1)
        if p.average_last:
            with torch.no_grad():
                v.copy_(torch.stack(window[-p.average_last:]).mean(0))
        timings[f"level{si + 1}_s"] = time.perf_counter() - tl

    with torch.no_grad():
        frame_mat = m0_t.double() @ torch.linalg.matrix_exp(
            ((v + v_fine if p.fine_params else v).double()[:, None, None] * basis.double()).sum(0))
    return frame_mat.cpu().numpy(), mi_curve, level_iters, iterations


def register_mine(fixed, moving, *, preset: str = "fast", params: Optional[MineParams] = None, seed: int = 0,
                  device: str = "auto", progress: Optional[ProgressFn] = None,
                  cancelled: Optional[CancelFn] = None, init=None) -> Registration:
    """Register ``moving`` (LM registration channel) onto ``fixed`` (EM) with MINE.

    ``init`` is an optional 3×3 ``fixed_to_moving`` starting guess (skips the global search; may be
    mirrored).  ``progress(Progress)`` is called during the run; ``cancelled()`` returning True raises
    :class:`~clem_bridge.errors.Cancelled`.  Same inputs + seed + device give the same matrix, also
    when several calls run at once in threads.  ``Registration.timings`` holds per-stage seconds.
    Torch's CPU thread count is the caller's: the per-step tensors are small, so one thread
    (``torch.set_num_threads(1)`` once at start-up) is fastest, by far on a busy CPU.
    """
    t0 = time.perf_counter()
    p = params or MineParams.preset(preset)
    fixed_n, moving_n = _check(fixed, "fixed (EM)"), _check(moving, "moving (LM)")
    full_fixed_shape, full_moving_shape = fixed_n.shape, moving_n.shape
    dev = select_device(device)
    report = progress or (lambda _p: None)
    stop = cancelled or (lambda: False)

    # working resolution (binned; matrix rescaled exactly at the end)
    work = max(1.0, max(fixed_n.shape) / p.max_working_size)
    fixed_w, moving_w = _downscale(fixed_n, work), _downscale(moving_n, work)
    ff, fm = _frames(fixed_w.shape, moving_w.shape)
    factors = _pyramid_factors(fixed_w.shape, moving_w.shape, p)
    small = min(max(fixed_w.shape), max(moving_w.shape)) < p.verify_below
    if not small and not p.joint_levels and p.max_iterations_large:   # larger images converge in fewer steps
        p = replace(p, max_iterations=p.max_iterations_large, min_iterations=min(p.min_iterations,
                                                                                 p.max_iterations_large))

    timings: dict[str, float] = {}
    init_w = None
    if init is not None:
        init_w = rescale(as_matrix(init), fixed_w.shape, fixed_n.shape, moving_w.shape, moving_n.shape)
    search_info, start = {}, None
    if init_w is None and p.global_search:
        if stop():
            raise Cancelled("registration cancelled")
        report(Progress("search", 0, None, None, 0.0))
        ts = time.perf_counter()
        s = max(1.0, max(fixed_w.shape) / p.search_size)
        fs, ms = _downscale(fixed_w, s), _downscale(moving_w, s)
        # the sweep bins the search images by 2 (64 px), less when the inputs were not reduced that much
        # (small images are blurry at their native size: binning them more loses the structure it needs)
        res = global_search(fs, ms, rotation_range_deg=p.rotation_range_deg, rotation_step_deg=p.rotation_step_deg,
                            scales=p.search_scales, mirror=p.mirror_search, max_shift_frac=p.max_shift_frac,
                            coarse_factor=min(2.0, s))
        init_w = rescale(res.fixed_to_moving, fixed_w.shape, fs.shape, moving_w.shape, ms.shape)
        search_info = {"rotation_deg": res.rotation_deg, "scale": res.scale, "score": res.score,
                       "mirrored": float(res.mirrored)}
        start = init_w
        timings["search_s"] = time.perf_counter() - ts
        report(Progress("search", 1, 1, None, 0.05))
    m0 = np.eye(3) if init_w is None else fm @ init_w @ np.linalg.inv(ff)   # frame → frame start

    tb = time.perf_counter()
    levels = [_build_level(fixed_w, moving_w, fct, ff, fm, p, dev) for fct in factors]
    timings["pyramid_s"] = time.perf_counter() - tb

    def to_work(frame_m: np.ndarray) -> np.ndarray:       # frame → frame matrix as working-size fixed_to_moving
        return np.linalg.inv(fm) @ frame_m @ ff

    def to_full(work_m: np.ndarray) -> np.ndarray:        # working size → the inputs' full size
        return rescale(work_m, full_fixed_shape, fixed_w.shape, full_moving_shape, moving_w.shape)

    tm = time.perf_counter()
    frame_mat, mi_curve, level_iters, iterations = _optimise(levels, m0, p, seed, dev, report, stop, timings)
    timings["optimise_s"] = time.perf_counter() - tm
    disagreement = None
    if start is not None and small:
        # small images: more refinements from the same start (other seeds) must land on the same matrix;
        # the first result that another one confirms is kept, none confirmed gives a warning
        tv = time.perf_counter()
        runs = [(frame_mat, mi_curve, level_iters, iterations)]
        mats = [to_full(to_work(frame_mat))]
        confirmed = None
        for extra in (1, 2):
            runs.append(_optimise(levels, m0, p, seed + extra, dev, lambda _p: None, stop, {}))
            mats.append(to_full(to_work(runs[-1][0])))
            gaps = [(tre(mats[i], mats[-1], full_fixed_shape), i) for i in range(len(mats) - 1)]
            disagreement, i = min(gaps)
            if disagreement <= p.verify_px:
                confirmed = i
                break
        if confirmed is not None:
            frame_mat, mi_curve, level_iters, iterations = runs[confirmed]
        timings["verify_s"] = time.perf_counter() - tv
    a_work = to_work(frame_mat)
    a_full = to_full(a_work)
    a_full[2] = (0.0, 0.0, 1.0)

    report(Progress("metrics", 0, None, None, 0.96))
    tq = time.perf_counter()
    metrics = registration_metrics(fixed_n, moving_n, a_full, p.metrics_size)
    metrics.update({f"search_{k}": float(val) for k, val in search_info.items()})
    if start is not None:   # the search's criterion at its start and at the refined result (consistency check)
        c = max(1.0, max(fixed_w.shape) / p.check_size)
        fc, mc = _downscale(fixed_w, c), _downscale(moving_w, c)
        to_check = lambda a: rescale(a, fc.shape, fixed_w.shape, mc.shape, moving_w.shape)  # noqa: E731
        metrics["search_start_alignment"] = alignment_score(fc, mc, to_check(start))
        metrics["search_refined_alignment"] = alignment_score(fc, mc, to_check(a_work))
        if disagreement is not None:   # small images: where does the criterion itself peak near the result?
            opt, metrics["search_optimum_alignment"] = alignment_optimum(fc, mc, to_check(a_work))
            metrics["search_optimum_distance_px"] = tre(
                a_full, rescale(opt, full_fixed_shape, fc.shape, full_moving_shape, mc.shape), full_fixed_shape)
    if disagreement is not None:
        metrics["verify_disagreement_px"] = disagreement
    metrics["mi_estimate"] = float(np.mean(mi_curve[-p.check_every:])) if mi_curve else 0.0
    timings["metrics_s"] = time.perf_counter() - tq
    timings["total_s"] = time.perf_counter() - t0
    report(Progress("done", iterations, iterations, metrics["mi_estimate"], 1.0))
    params_out = {k: (list(val) if isinstance(val, tuple) else val) for k, val in asdict(p).items()}
    params_out.update(seed=seed, working_scale=work, levels_used=len(levels), stage_iterations=level_iters)
    return Registration(fixed_to_moving=a_full, fixed_shape=tuple(full_fixed_shape), warnings=assess(metrics, p),
                        moving_shape=tuple(full_moving_shape), method=f"mine-{p.name}", params=params_out,
                        metrics=metrics, timings=timings, mi_curve=mi_curve, iterations=iterations,
                        device=device_label(dev))


LOW_MI = 0.02   # final MINE estimate (nats); failures on real EM vs chromatin end at 0.003–0.017, successes ≥ 0.04


def assess(metrics: dict, p: MineParams) -> list[str]:
    """Human warnings for a result that is likely wrong (shown by the CLI, returned by the server)."""
    out = []
    if metrics.get("mi_estimate", 1.0) < LOW_MI:
        out.append(f"low mutual information after registration ({metrics['mi_estimate']:.3f} nats): the LM "
                   "registration channel may not share structure with the EM; check the overlay (for EM vs a "
                   "chromatin stain use 'clem-bridge correlate')")
    start, refined = metrics.get("search_start_alignment"), metrics.get("search_refined_alignment")
    if start is not None and refined is not None and refined < start - 0.05 * abs(start):
        out.append(f"the refined result matches the image gradients worse than the global search's start "
                   f"(correlation {refined:.3f} vs {start:.3f}): the optimisation may have drifted; check the overlay")
    best = metrics.get("search_optimum_alignment")
    if (refined is not None and best is not None and best > refined + 0.05 * abs(refined)
            and metrics.get("search_optimum_distance_px", 0.0) > p.verify_px / 2):
        out.append(f"the image gradients match clearly better {metrics['search_optimum_distance_px']:.1f} LM px away "
                   f"from the result (correlation {best:.3f} vs {refined:.3f}): the optimum is ambiguous (small or "
                   "low-contrast images); check the overlay or calibrate the pixel sizes")
    if metrics.get("verify_disagreement_px", 0.0) > p.verify_px:
        out.append(f"three refinements from the global search's start disagree (by at least "
                   f"{metrics['verify_disagreement_px']:.1f} LM px): the optimum is ambiguous (small or "
                   "low-contrast images); check the overlay or calibrate the pixel sizes")
    scale = metrics.get("search_scale")
    if scale is not None and p.search_scales and not (min(p.search_scales) < scale < max(p.search_scales)):
        out.append(f"the global search ended at the edge of its scale range (LM/EM scale {scale:.3f}); "
                   "calibrate the pixel sizes or use --prepare")
    return out


def registration_metrics(fixed: np.ndarray, moving: np.ndarray, fixed_to_moving, max_size: int = 0) -> dict[str, float]:
    """NCC, histogram MI and MS-SSIM between the EM and the warped LM on their overlap.

    ``max_size`` > 0 computes them on both images binned so the EM's long side is at most that.
    """
    from ..quality import overlap_metrics
    from ..transforms import valid_mask
    a = as_matrix(fixed_to_moving)
    f = max(1.0, max(fixed.shape) / max_size) if max_size else 1.0
    if f > 1.0:
        fixed_s, moving_s = _downscale(fixed, f), _downscale(moving, f)
        a = rescale(a, fixed_s.shape, fixed.shape, moving_s.shape, moving.shape)
        fixed, moving = fixed_s, moving_s
    warped = cv2.warpAffine(moving.astype(np.float32), a[:2], (fixed.shape[1], fixed.shape[0]),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    mask = valid_mask(a, fixed.shape, moving.shape)
    return overlap_metrics(fixed, warped, mask)
