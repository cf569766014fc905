"""Local refinements of a correlation; none returns a result that scores worse than its start.

:func:`refine_similarity` maximises :func:`.score.overlap_score` over rotation, log-scale and shift (Powell,
bounded to a local neighbourhood: the global part is the search's job); :func:`refine_ecc` runs OpenCV's
affine ECC and keeps its result only if the common score improves; :func:`refine_pyramid` refines over
several working sizes and at each level compares its current estimate with the original start on that
level's images, so a coarse level cannot drag the result away (a refinement that ended at NCC 0.00 from a
coarse NCC of 0.77 is what this prevents).  Given the searched scale range, no refinement leaves it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np
from scipy import optimize

from .. import transforms as T
from .score import overlap_score
from .search import binned

MAX_ROTATION_DEG = 10.0   # bounds of one local refinement (about its start)
MAX_LOG_SCALE = 0.15
MAX_SHIFT = 0.1           # fraction of the long side
XTOL, FTOL = 1e-2, 1e-5   # Powell: line-search tolerance (pixels at half the long side), relative score change


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing (``sigma`` 0: unchanged); both images are smoothed alike before scoring."""
    return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0 else img


def refine_similarity(fixed: np.ndarray, moving: np.ndarray, init: np.ndarray, *, sigma: float = 1.0,
                      max_evals: int = 1500, mask: Optional[np.ndarray] = None, fix_scale: bool = False,
                      scale_factors: Optional[tuple[float, float]] = None) -> tuple[np.ndarray, float]:
    """Similarity refinement of ``init`` (fixed→moving) maximising :func:`.score.overlap_score`.

    Parameters are scaled to pixels of displacement at half the long side; Powell's method (local line
    searches), confined to ±``MAX_ROTATION_DEG``, ±``MAX_LOG_SCALE`` and ±``MAX_SHIFT`` of the long side.
    Both images are smoothed with ``sigma``; ``mask`` (fixed grid) restricts the score; ``fix_scale``
    keeps the scale of ``init``; ``scale_factors`` (lo, hi) further confine the scale to that range of
    ``init``'s (the searched range: a refinement must not leave it).  Returns (matrix, score); ``init`` and
    its score when nothing better was found.
    """
    fs, ms = blur(fixed, sigma), blur(moving, sigma)
    h, w = fixed.shape
    c, r = T.center_of(fixed.shape), 0.5 * max(h, w)
    init = T.as_matrix(init)

    def mat(p):
        rot, log_scale, tx, ty = (p[0], 0.0, p[1], p[2]) if fix_scale else p
        return init @ T.from_params(rotation_deg=float(np.rad2deg(rot / r)), scale=float(np.exp(log_scale / r)),
                                    translation=(tx, ty), center=c)

    rot_b, scale_b, shift_b = r * np.deg2rad(MAX_ROTATION_DEG), r * MAX_LOG_SCALE, MAX_SHIFT * 2 * r
    s_lo, s_hi = -scale_b, scale_b
    if scale_factors is not None:   # never excluding the start itself
        s_lo = min(0.0, max(s_lo, r * np.log(scale_factors[0])))
        s_hi = max(0.0, min(s_hi, r * np.log(scale_factors[1])))
    upper = np.array([rot_b] + ([] if fix_scale else [s_hi]) + [shift_b] * 2)
    lower = -upper
    if not fix_scale:
        lower[1] = s_lo

    def cost(p):   # outside the box: worse than any score (Powell's own bounds search the whole box per line)
        return 2.0 if np.any(p > upper) or np.any(p < lower) else -overlap_score(fs, ms, mat(p), mask)

    start = -cost(np.zeros(len(upper)))
    res = optimize.minimize(cost, np.zeros(len(upper)), method="Powell",
                            options={"xtol": XTOL, "ftol": FTOL, "maxfev": max_evals})
    if not np.isfinite(res.fun) or -res.fun < start:
        return init, start
    return mat(res.x), float(-res.fun)


def refine_ecc(fixed: np.ndarray, moving: np.ndarray, init: np.ndarray, *, iterations: int = 200,
               levels: int = 2, sigma: float = 1.0) -> tuple[np.ndarray, float]:
    """Affine ECC refinement of ``init`` (fixed→moving) on a pyramid; returns (matrix, overlap score).

    The result is kept only when its :func:`.score.overlap_score` (images smoothed by ``sigma``) is at
    least that of ``init``; ECC drifts along shear and anisotropic scale where few nuclei are in view.
    """
    m = T.as_matrix(init)
    for lev in reversed(range(levels)):
        f = 0.5 ** lev
        fw, bf = binned(fixed, f) if lev else (fixed, np.eye(3))
        mw, bm = binned(moving, f) if lev else (moving, np.eye(3))
        w = (np.linalg.inv(bm) @ m @ bf)[:2].astype(np.float32)
        try:
            _, w = cv2.findTransformECC(fw, mw, w, cv2.MOTION_AFFINE,
                                        (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-6), None, 5)
        except cv2.error:
            continue  # ECC did not converge at this level: keep the current estimate
        m = bm @ T.as_matrix(w.astype(np.float64)) @ np.linalg.inv(bf)
    fs, ms = blur(fixed, sigma), blur(moving, sigma)
    start, end = overlap_score(fs, ms, init), overlap_score(fs, ms, m)
    return (m, end) if end >= start else (T.as_matrix(init), start)


def refine_pyramid(fixed: np.ndarray, moving: np.ndarray, init: np.ndarray, sizes: Sequence[int], *,
                   fix_scale: bool = False,
                   scale_range: Optional[tuple[float, float]] = None) -> tuple[np.ndarray, float]:
    """:func:`refine_similarity` at each working size in ``sizes`` (long side, coarse to fine).

    Each level starts from the better (on that level's score) of the current estimate and ``init``, and
    the result is never worse than ``init`` on the last level.  ``scale_range``: (lo, hi) bounds of the
    full-resolution scale (the searched range).  Returns (matrix in full pixels, last score).
    """
    init = T.as_matrix(init)
    m, score = init, -1.0
    for size in sizes:
        f = min(1.0, size / max(fixed.shape))
        (fw, bf), (mw, bm) = binned(fixed, f), binned(moving, f)
        to_level = lambda a: np.linalg.inv(bm) @ a @ bf   # noqa: E731
        start = max((to_level(init), to_level(m)), key=lambda a: overlap_score(blur(fw, 1.0), blur(mw, 1.0), a))
        factors = None
        if scale_range is not None:
            s0 = T.scale_of(bm @ start @ np.linalg.inv(bf))
            factors = (scale_range[0] / s0, scale_range[1] / s0)
        lm, score = refine_similarity(fw, mw, start, fix_scale=fix_scale, scale_factors=factors)
        m = bm @ lm @ np.linalg.inv(bf)
    return m, score
