"""Sub-pixel bead centres with a precision per bead.

:func:`localise_quadratic` is the seed method: a paraboloid fitted (weighted least squares) to the
log of the background-subtracted intensity around a peak, which is exact for a Gaussian spot; the
window is re-centred on the estimate by spline resampling so symmetric non-Gaussian profiles
(discs) are not biased by the integer window.  :func:`localise_gaussian` fits a 2-D Gaussian with
``scipy.optimize.least_squares``.  Both give the precision from the fit covariance (residual
variance × (JᵀWJ)⁻¹ propagated to the centre), as a 2-D RMS distance in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares


@dataclass
class Localisations:
    """Sub-pixel centres ``xy`` (N, 2) as (x, y), precision ``sigma`` (N,) (2-D RMS, px), spot ``width``
    (N,) (Gaussian σ, px) and ``ok`` (N,) for fits that converged inside their window."""
    xy: np.ndarray
    sigma: np.ndarray
    width: np.ndarray
    ok: np.ndarray


def _window(img: np.ndarray, cx: float, cy: float, half: int):
    """Values on the (2·half+1)² grid centred on (cx, cy) (spline-resampled when not integer), the offsets
    of that grid, and the median of a ring at twice that distance (local background)."""
    pad = half + 2
    r = half + pad
    off = np.arange(-r, r + 1, dtype=np.float64)
    yy, xx = np.meshgrid(cy + off, cx + off, indexing="ij")
    if float(cx).is_integer() and float(cy).is_integer():
        v = ndimage.map_coordinates(img, [yy, xx], order=0, mode="nearest")
    else:
        x0, y0 = int(np.floor(cx)) - r - 3, int(np.floor(cy)) - r - 3
        sub = img[max(y0, 0):y0 + 2 * r + 8, max(x0, 0):x0 + 2 * r + 8]
        v = ndimage.map_coordinates(sub.astype(np.float64), [yy - max(y0, 0), xx - max(x0, 0)], order=3,
                                    mode="nearest")
    ring = np.ones(v.shape, bool)
    ring[pad:-pad, pad:-pad] = False
    return v[pad:-pad, pad:-pad], off[pad:-pad], float(np.median(v[ring]))


def _paraboloid(values: np.ndarray, off: np.ndarray, noise_factor: float):
    """Centre offset (2,), its covariance (2, 2) and spot width of a log-paraboloid fit, or None."""
    peak = values.max()
    if not peak > 0:
        return None
    use = values > 0.1 * peak
    if use.sum() < 8:
        return None
    vv, uu = np.meshgrid(off, off, indexing="ij")
    u, v, y, w = uu[use], vv[use], np.log(values[use]), values[use]   # var(log I) ≈ 1/I
    X = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)
    sw = np.sqrt(w)
    beta, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    _, b, c, d, e, f = beta
    H = np.array([[2 * d, e], [e, 2 * f]])
    if not np.all(np.linalg.eigvalsh(H) < 0):
        return None
    Hi = np.linalg.inv(H)
    o = -Hi @ np.array([b, c])
    dof = len(y) - 6
    res = y - X @ beta
    s2 = float(np.sum(w * res * res) / dof) if dof > 0 else np.inf
    cov_beta = s2 * np.linalg.pinv((X * w[:, None]).T @ X) * noise_factor
    J = np.zeros((2, 6))
    J[:, 1:3] = -Hi
    for k, dH in ((3, [[2, 0], [0, 0]]), (4, [[0, 1], [1, 0]]), (5, [[0, 0], [0, 2]])):
        J[:, k] = -Hi @ np.asarray(dH, float) @ o
    width = float(np.sqrt(np.sqrt(np.linalg.det(-Hi))))
    return o, J @ cov_beta @ J.T, width


def localise_quadratic(img: np.ndarray, peaks: np.ndarray, *, half: int = 3, iterations: int = 3,
                       noise_factor: float = 1.0) -> Localisations:
    """Fit a paraboloid to log(intensity − local background) in a (2·half+1)² window at each peak.

    ``peaks`` are (x, y) starting points (integers); bright spots on a darker background are expected.
    ``noise_factor`` multiplies the fit variance when ``img`` was smoothed before (correlated noise:
    about 4π·σ_smooth² for a Gaussian of σ_smooth pixels).
    """
    img = np.asarray(img, dtype=np.float64)
    pk = np.asarray(peaks, dtype=np.float64).reshape(-1, 2)
    xy, sig, width, ok = pk.copy(), np.full(len(pk), np.inf), np.full(len(pk), np.nan), np.zeros(len(pk), bool)
    for i, (cx, cy) in enumerate(pk):
        cur, fit = np.array([cx, cy]), None
        for it in range(iterations):
            vals, off, bg = _window(img, *(np.round(cur) if it == 0 else cur), half)
            fit = _paraboloid(vals - bg, off, noise_factor)
            if fit is None or np.any(np.abs(fit[0]) > half):
                fit = None
                break
            cur = (np.round(cur) if it == 0 else cur) + fit[0]
            if np.all(np.abs(fit[0]) < 1e-3):
                break
        if fit is not None and np.all(np.abs(cur - pk[i]) <= half + 1):
            xy[i], sig[i], width[i], ok[i] = cur, np.sqrt(np.trace(fit[1])), fit[2], True
    return Localisations(xy, sig, width, ok)


def _gauss(p, u, v):
    a, x0, y0, s, b = p
    return a * np.exp(-((u - x0) ** 2 + (v - y0) ** 2) / (2 * s * s)) + b


def localise_gaussian(img: np.ndarray, peaks: np.ndarray, *, half: int = 3, width: float = 1.5,
                      noise_factor: float = 1.0) -> Localisations:
    """Least-squares fit of an isotropic 2-D Gaussian plus constant in a (2·half+1)² window at each peak."""
    img = np.asarray(img, dtype=np.float64)
    pk = np.asarray(peaks, dtype=np.float64).reshape(-1, 2)
    xy, sig, wid, ok = pk.copy(), np.full(len(pk), np.inf), np.full(len(pk), np.nan), np.zeros(len(pk), bool)
    for i, (cx, cy) in enumerate(np.round(pk)):
        vals, off, bg = _window(img, cx, cy, half)
        vv, uu = np.meshgrid(off, off, indexing="ij")
        p0 = [vals.max() - bg, 0.0, 0.0, width, bg]
        lo, hi = [0, -half, -half, 0.3, -np.inf], [np.inf, half, half, 3 * half, np.inf]
        try:
            r = least_squares(lambda p: (_gauss(p, uu, vv) - vals).ravel(), p0,
                              bounds=(lo, np.maximum(hi, np.array(p0) + 1e-9)))
        except ValueError:
            continue
        dof = vals.size - 5
        if not r.success or dof <= 0:
            continue
        s2 = float(np.sum(r.fun ** 2) / dof)
        cov = np.linalg.pinv(r.jac.T @ r.jac) * s2 * noise_factor
        xy[i] = [cx + r.x[1], cy + r.x[2]]
        sig[i], wid[i], ok[i] = np.sqrt(cov[1, 1] + cov[2, 2]), r.x[3], True
    return Localisations(xy, sig, wid, ok)
