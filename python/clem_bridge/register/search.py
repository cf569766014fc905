"""Coarse global initialisation: handedness × rotation × scale sweep with translation by template matching.

Both images are reduced to the gradient magnitude of a blurred copy (invariant to contrast inversion,
which is common between EM and LM).  For every candidate (mirrored or not, rotation, scale) the moving
gradient is resampled onto an enlarged fixed grid and ``cv2.matchTemplate`` (normalised correlation
coefficient) finds the best translation; both handednesses are scored on that same criterion.

Coarse to fine: every candidate over the full circle is tried on reduced copies, the best few
distinct ones are refined at the given size, then the winner's rotation and scale are polished.
Matrices follow :mod:`clem_bridge.transforms` (fixed pixel → moving pixel); a mirrored result has
``det < 0`` (the LM seen from the other side of the section).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from ..peaks import distinct, subpixel_peak
from ..transforms import area_resize, center_of, from_params


@dataclass(frozen=True)
class SearchResult:
    fixed_to_moving: np.ndarray
    rotation_deg: float
    scale: float
    mirrored: bool
    translation: tuple[float, float]
    score: float


def gradient_magnitude(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gradient magnitude of a Gaussian-blurred float32 copy of ``image``."""
    img = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma) if sigma > 0 else image.astype(np.float32)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def candidate(fixed_shape, moving_shape, angle, scale, mirrored) -> np.ndarray:
    """fixed px → moving px: (mirror x about the fixed centre,) rotate/scale about it, land on the moving centre.

    Scalars give one 3×3 matrix; arrays (broadcast together) give a stack of them, shape (..., 3, 3).
    """
    cf, cm = center_of(fixed_shape), center_of(moving_shape)
    t, s, h = np.broadcast_arrays(np.deg2rad(np.asarray(angle, float)), np.asarray(scale, float),
                                  np.where(np.asarray(mirrored), -1.0, 1.0))
    c, sn = np.cos(t) * s, np.sin(t) * s
    m = np.zeros(t.shape + (3, 3))
    m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1], m[..., 2, 2] = c * h, -sn, sn * h, c, 1.0
    m[..., 0, 2] = cm[0] - m[..., 0, 0] * cf[0] - m[..., 0, 1] * cf[1]
    m[..., 1, 2] = cm[1] - m[..., 1, 0] * cf[0] - m[..., 1, 1] * cf[1]
    return m


def mapped_canvas(moving: np.ndarray, fixed_to_moving: np.ndarray, fixed_shape, margin: tuple[int, int]) -> np.ndarray:
    """``moving`` resampled onto the fixed grid enlarged by ``margin`` (x, y) px on every side (0 outside the
    moving image): canvas px (mx + x, my + y) is fixed px (x, y) mapped by ``fixed_to_moving``."""
    h, w = fixed_shape
    mx, my = margin
    shift = np.array([[1, 0, -mx], [0, 1, -my], [0, 0, 1.0]])  # canvas px → fixed px
    return cv2.warpAffine(moving, (np.asarray(fixed_to_moving, float) @ shift)[:2], (w + 2 * mx, h + 2 * my),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0.0)


class _Matcher:
    """Gradient images of one fixed/moving pair and the translation search for a candidate."""

    def __init__(self, fixed: np.ndarray, moving: np.ndarray, max_shift_frac: float, sigma: float):
        self.fixed_shape, self.moving_shape = fixed.shape, moving.shape
        self.fg, self.mg = gradient_magnitude(fixed, sigma), gradient_magnitude(moving, sigma)
        side = int(np.ceil(max_shift_frac * max(fixed.shape)))   # same in x and y: the LM may be rotated 90°
        self.margin = (side, side)

    def response(self, fixed_to_moving: np.ndarray, margin: tuple[int, int]) -> np.ndarray:
        """Correlation of the fixed gradient with the mapped moving gradient for every shift within ``margin``
        (x, y) px: entry [my + dy, mx + dx] is for ``fixed_to_moving`` composed with a fixed-grid shift (dx, dy)."""
        return cv2.matchTemplate(mapped_canvas(self.mg, fixed_to_moving, self.fg.shape, margin), self.fg,
                                 cv2.TM_CCOEFF_NORMED)

    def rank(self, angles: np.ndarray, scales: np.ndarray, mirrored: np.ndarray) -> list[tuple[float, float, float, bool]]:
        """(score, angle, scale, mirrored) for each candidate: its best correlation over the translations."""
        mats = candidate(self.fixed_shape, self.moving_shape, angles, scales, mirrored)
        return [(cv2.minMaxLoc(self.response(m, self.margin))[1], float(a), float(s), bool(h))
                for m, a, s, h in zip(mats, angles, scales, mirrored)]

    def score(self, angle: float, scale: float, mirrored: bool) -> tuple[float, float, float, bool, np.ndarray]:
        """(score, angle, scale, mirrored, fixed_to_moving) with the best (sub-pixel) translation for this candidate."""
        base = candidate(self.fixed_shape, self.moving_shape, angle, scale, mirrored)
        resp = self.response(base, self.margin)
        _, best, _, loc = cv2.minMaxLoc(resp)
        u, v, _ = subpixel_peak(resp, loc)
        mx, my = self.margin
        t = np.array([[1, 0, u - mx], [0, 1, v - my], [0, 0, 1.0]])
        return float(best), float(angle), float(scale), bool(mirrored), base @ t

    def correlation(self, fixed_to_moving: np.ndarray) -> float:
        """The criterion at zero shift: correlation of the fixed gradient with the mapped moving gradient
        (zero where the moving image has no data), over the fixed grid."""
        warped = mapped_canvas(self.mg, fixed_to_moving, self.fg.shape, (0, 0)).ravel()
        f = self.fg.ravel() - self.fg.mean()
        m = warped - warped.mean()
        den = float(np.sqrt(np.dot(f, f) * np.dot(m, m)))
        return float(np.dot(f, m)) / den if den > 0 else 0.0


def alignment_score(fixed: np.ndarray, moving: np.ndarray, fixed_to_moving: np.ndarray, sigma: float = 1.0) -> float:
    """The search's criterion for one matrix: correlation of the fixed gradient with the mapped moving gradient."""
    return _Matcher(fixed, moving, 0.0, sigma).correlation(fixed_to_moving)


def alignment_optimum(fixed: np.ndarray, moving: np.ndarray, fixed_to_moving: np.ndarray, sigma: float = 1.0,
                      max_evals: int = 600) -> tuple[np.ndarray, float]:
    """The criterion's local optimum near ``fixed_to_moving`` and its value: Powell over an affine perturbation
    (translation px, rotation °, log scale, log stretch, shear) about the fixed centre.  A consistency check:
    a registration that the criterion would move far, for a clearly better score, sits on an ambiguous optimum."""
    from scipy.optimize import minimize
    matcher = _Matcher(fixed, moving, 0.0, sigma)
    a = np.asarray(fixed_to_moving, float)
    centre = center_of(fixed.shape)

    def mat(p):
        tx, ty, rot, log_s, log_st, shear = p
        return a @ from_params(rotation_deg=rot, scale=(np.exp(log_s + log_st), np.exp(log_s - log_st)), shear=shear,
                               center=centre, translation=(tx, ty))

    res = minimize(lambda p: -matcher.correlation(mat(p)), np.zeros(6), method="Powell",
                   options={"xtol": 1e-3, "ftol": 1e-4, "maxfev": max_evals})
    return mat(res.x), float(-res.fun)


def _in_threads(fn, items: list) -> list:
    """``[fn(x) for x in items]`` in OpenCV's number of threads (results in order): the warps and
    template matches release the GIL, and ``cv2.setNumThreads(1)`` (batch workers, tests) keeps it to one."""
    n = min(cv2.getNumThreads(), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    chunks = [items[i::n] for i in range(n)]   # interleaved: neighbouring candidates cost alike
    with ThreadPoolExecutor(n) as pool:
        done = list(pool.map(lambda chunk: [fn(x) for x in chunk], chunks))
    out = [None] * len(items)
    for i, part in enumerate(done):
        out[i::n] = part
    return out


def _neighbours(angle_tol: float, scale_ratio: float):
    """Same handedness, angles within ``angle_tol`` and scales within ``scale_ratio``: one candidate."""
    return lambda r, o: (r[3] == o[3] and abs((r[1] - o[1] + 180) % 360 - 180) <= angle_tol
                         and max(r[2] / o[2], o[2] / r[2]) <= scale_ratio)


def global_search(fixed: np.ndarray, moving: np.ndarray, *, rotation_range_deg: float = 180.0,
                  rotation_step_deg: float = 3.0, scales=(1.0,), mirror: bool = True,
                  max_shift_frac: float = 0.25, sigma: float = 1.0, keep: int = 6,
                  coarse_factor: float = 1.25) -> SearchResult:
    """Search handedness, rotation (about the image centres), scale and translation; return the best candidate.

    ``fixed`` and ``moving`` are small (about 100–200 px) images with pixel sizes within the ``scales``
    range (moving px per fixed px).  ``rotation_range_deg`` ≥ 180 searches the full circle; the sweep
    runs on copies binned by ``coarse_factor`` in steps of 3 × ``rotation_step_deg`` and over ``scales``,
    the ``keep`` best distinct candidates are refined at full size in ``rotation_step_deg`` steps and
    half scale steps.
    Translations of up to ``max_shift_frac`` of the fixed long side are searched in every candidate.
    """
    scales = sorted(float(s) for s in scales)
    ratio = (scales[-1] / scales[0]) ** (1.0 / (len(scales) - 1)) if len(scales) > 1 else 1.0
    coarse_step = 3.0 * rotation_step_deg
    if rotation_range_deg >= 180.0:
        angles = list(np.arange(-180.0, 180.0, coarse_step))
    else:
        n = int(np.ceil(rotation_range_deg / coarse_step))
        angles = [k * coarse_step for k in range(-n, n + 1)]
    hands = (False, True) if mirror else (False,)

    small = lambda img: area_resize(img, (max(int(img.shape[0] / coarse_factor), 8),  # noqa: E731
                                          max(int(img.shape[1] / coarse_factor), 8)))[0]
    coarse = _Matcher(small(fixed), small(moving), max_shift_frac, sigma)
    grid = [g.ravel() for g in np.meshgrid(angles, scales, hands, indexing="ij")]   # neighbours: other hand/scale
    blocks = np.array_split(np.arange(grid[0].size), max(1, min(8, grid[0].size // 64)))
    ranked = sorted((r for part in _in_threads(lambda i: coarse.rank(*(g[i] for g in grid)), blocks) for r in part),
                    key=lambda r: -r[0])
    seeds = distinct(ranked, keep, _neighbours(coarse_step, ratio ** 0.5))

    full = _Matcher(fixed, moving, max_shift_frac, sigma)
    score = lambda c: full.score(*c)  # noqa: E731
    best = max(_in_threads(score, [(r[1] + k * rotation_step_deg, r[2] * ratio ** (j / 2.0), r[3]) for r in seeds
                                   for k in range(-2, 3) for j in ((-1, 0, 1) if len(scales) > 1 else (0,))]),
               key=lambda r: r[0])
    # polish: rotation in sixths of the step, then scale in eighths of the sweep's ratio
    fine = _in_threads(score, [(best[1] + k * rotation_step_deg / 6.0, best[2], best[3]) for k in range(-5, 6)])
    best = max([best, *fine], key=lambda r: r[0])
    if len(scales) > 1:
        fine = _in_threads(score, [(best[1], best[2] * ratio ** (k / 8.0), best[3]) for k in range(-3, 4)])
        best = max([best, *fine], key=lambda r: r[0])
    score, angle, scale, mirrored, mat = best
    return SearchResult(fixed_to_moving=mat, rotation_deg=float((angle + 180.0) % 360.0 - 180.0), scale=scale,
                        mirrored=mirrored, translation=(float(mat[0, 2]), float(mat[1, 2])), score=score)
