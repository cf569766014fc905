"""Correspondence-free point matching and weighted transform fits with outlier rejection.

:func:`match_points` pairs two point sets related by an unknown similarity (any rotation, optional
mirror, scale near a prior) when each holds points the other lacks: every non-degenerate triangle of
each set gets a rotation-, scale- and mirror-invariant key (its two shorter sides over the longest);
triangles with close keys (a k-d tree query) propose a similarity from their three vertex pairs, the
proposal explaining most points wins (RANSAC-style consensus) and is refined on mutual nearest
neighbours.  :func:`fit_points` then fits rigid, similarity or affine by weighted least squares, drops
outliers one at a time, and returns the parameter covariance used by the error budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError

MODELS = ("rigid", "similarity", "affine")
N_PARAMS = {"rigid": 3, "similarity": 4, "affine": 6}


@dataclass
class Match:
    """Index pairs ``pairs`` (K, 2) into (fixed, moving), the similarity ``moving_to_fixed`` (3×3) that
    explains them, whether it is ``mirrored`` and how many hypotheses were scored."""
    pairs: np.ndarray
    moving_to_fixed: np.ndarray
    mirrored: bool
    hypotheses: int


def _triangles(pts: np.ndarray, gap: float, min_side: float):
    """Invariant keys (T, 2), vertex triples ordered by opposite side (longest first), orientation, longest side."""
    n = len(pts)
    if n < 3:
        return np.zeros((0, 2)), np.zeros((0, 3), int), np.zeros(0), np.zeros(0)
    tri = np.array(list(combinations(range(n), 3)))
    p = pts[tri]                                                     # (T, 3, 2)
    opp = np.stack([np.linalg.norm(p[:, 1] - p[:, 2], axis=1), np.linalg.norm(p[:, 0] - p[:, 2], axis=1),
                    np.linalg.norm(p[:, 0] - p[:, 1], axis=1)], axis=1)
    order = np.argsort(-opp, axis=1)
    sides = np.take_along_axis(opp, order, 1)
    tri = np.take_along_axis(tri, order, 1)
    keys = sides[:, 1:] / sides[:, :1]
    q = pts[tri]
    u, v = q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]
    cross = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    ok = ((sides[:, 0] - sides[:, 1] > gap * sides[:, 0]) & (sides[:, 1] - sides[:, 2] > gap * sides[:, 0])
          & (sides[:, 2] > min_side) & (np.abs(cross) > 0.05 * sides[:, 0] ** 2))
    return keys[ok], tri[ok], np.sign(cross[ok]), sides[ok, 0]


def _similarity(zm: np.ndarray, zf: np.ndarray):
    """Least-squares complex similarity ``zf ≈ a·zm + b`` along the last axis (batched)."""
    mm, mf = zm.mean(-1, keepdims=True), zf.mean(-1, keepdims=True)
    cm, cf = zm - mm, zf - mf
    a = (np.conj(cm) * cf).sum(-1) / np.maximum((np.abs(cm) ** 2).sum(-1), 1e-300)
    return a, mf[..., 0] - a * mm[..., 0]


def _matrix(a: complex, b: complex, mirrored: bool) -> np.ndarray:
    m = np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag], [0, 0, 1.0]])
    return m @ np.diag([1.0, -1.0, 1.0]) if mirrored else m


def _mutual_pairs(fixed: np.ndarray, mapped: np.ndarray, radius: float) -> np.ndarray:
    d = np.linalg.norm(fixed[:, None] - mapped[None], axis=2)
    i, j = np.arange(len(fixed)), d.argmin(1)
    keep = (d.argmin(0)[j] == i) & (d[i, j] <= radius)
    return np.stack([i[keep], j[keep]], axis=1)


def match_points(fixed: np.ndarray, moving: np.ndarray, *, radius: float, scale=None, scale_tol: float = 0.15,
                 allow_mirror: bool = True, key_tol: float = 0.02, max_points: int = 40,
                 max_hypotheses: int = 40000, seed: int = 0) -> Match:
    """Pair points of ``fixed`` (N, 2) and ``moving`` (M, 2) without known correspondences.

    ``radius``: distance (fixed units) within which a mapped point counts as matched.  ``scale``: prior
    fixed-per-moving scale (e.g. 1.0 for two point sets in nm) kept within ``scale_tol``; None = any.
    The first ``max_points`` points of each set are used for triangles (pass them strongest first).
    """
    f, m = np.asarray(fixed, float).reshape(-1, 2), np.asarray(moving, float).reshape(-1, 2)
    empty = Match(np.zeros((0, 2), int), np.eye(3), False, 0)
    if len(f) < 3 or len(m) < 3:
        return empty
    kf, tf, of, sf = _triangles(f[:max_points], key_tol, 2 * radius)
    km, tm, om, sm = _triangles(m[:max_points], key_tol,
                                2 * radius / (scale * (1 + scale_tol)) if scale else 0.0)
    if len(kf) == 0 or len(km) == 0:
        return empty
    hits = cKDTree(km).query_ball_point(kf, key_tol)
    i = np.repeat(np.arange(len(kf)), [len(h) for h in hits])
    j = np.concatenate([np.asarray(h, int) for h in hits]) if len(i) else np.zeros(0, int)
    mirror = of[i] != om[j]
    keep = np.ones(len(i), bool) if allow_mirror else ~mirror
    if scale:
        ratio = sf[i] / sm[j] / scale
        keep &= (ratio > 1 / (1 + scale_tol)) & (ratio < 1 + scale_tol)
    i, j, mirror = i[keep], j[keep], mirror[keep]
    if len(i) > max_hypotheses:
        sel = np.random.default_rng(seed).choice(len(i), max_hypotheses, replace=False)
        i, j, mirror = i[sel], j[sel], mirror[sel]
    if len(i) == 0:
        return empty
    zf_all, zm_all = f[:, 0] + 1j * f[:, 1], m[:, 0] + 1j * m[:, 1]
    zm_tri = zm_all[tm[j]]
    zm_tri = np.where(mirror[:, None], np.conj(zm_tri), zm_tri)
    a, b = _similarity(zm_tri, zf_all[tf[i]])
    best, best_key = None, (-1, 0.0)
    for s in range(0, len(a), 2000):
        sl = slice(s, s + 2000)
        zm = np.where(mirror[sl, None], np.conj(zm_all)[None], zm_all[None])
        mapped = a[sl, None] * zm + b[sl, None]                       # (H, M)
        d = np.abs(mapped[:, :, None] - zf_all[None, None, :]).min(2)
        inl = d <= radius
        count = inl.sum(1)
        spread = np.where(inl, d, 0).sum(1)
        k = int(np.lexsort((spread, -count))[0])
        key = (int(count[k]), -float(spread[k]))
        if key > best_key:
            best_key, best = key, (a[s + k], b[s + k], bool(mirror[s + k]))
    a0, b0, mir = best
    T = _matrix(a0, b0, mir)
    pairs = np.zeros((0, 2), int)
    for _ in range(10):
        mapped = m @ T[:2, :2].T + T[:2, 2]
        new = _mutual_pairs(f, mapped, radius)
        if len(new) < 2 or (len(new) == len(pairs) and np.array_equal(new, pairs)):
            pairs = new if len(new) >= 2 else pairs
            break
        pairs = new
        zm = m[pairs[:, 1], 0] + 1j * m[pairs[:, 1], 1]
        a0, b0 = _similarity(np.conj(zm) if mir else zm, zf_all[pairs[:, 0]])
        T = _matrix(a0, b0, mir)
    return Match(pairs, T, mir, int(len(a)))


# --- weighted fits ----------------------------------------------------------------------

def _design(src: np.ndarray, model: str, mirrored: bool, theta: float = 0.0) -> np.ndarray:
    """Jacobian (2N, p) of the mapped points (x0, y0, x1, y1, …) with respect to the model parameters."""
    n = len(src)
    x, y = src[:, 0], -src[:, 1] if mirrored else src[:, 1]
    one, zero = np.ones(n), np.zeros(n)
    if model == "affine":
        x, y = src[:, 0], src[:, 1]
        rows_x = np.stack([x, y, one, zero, zero, zero], 1)
        rows_y = np.stack([zero, zero, zero, x, y, one], 1)
    elif model == "similarity":                            # x' = a·x − b·y + tx, y' = b·x + a·y + ty
        rows_x = np.stack([x, -y, one, zero], 1)
        rows_y = np.stack([y, x, zero, one], 1)
    else:                                                   # rigid: derivative at angle theta
        c, s = np.cos(theta), np.sin(theta)
        rows_x = np.stack([-s * x - c * y, one, zero], 1)
        rows_y = np.stack([c * x - s * y, zero, one], 1)
    J = np.empty((2 * n, rows_x.shape[1]))
    J[0::2], J[1::2] = rows_x, rows_y
    return J


def _solve(src, dst, w, model, mirrored):
    """Weighted least-squares matrix (3×3) mapping src → dst and the design at the solution."""
    if model == "rigid":                                    # weighted Procrustes (Kabsch), fixed handedness
        s = src * [1, -1] if mirrored else src
        cs, cd = (w[:, None] * s).sum(0) / w.sum(), (w[:, None] * dst).sum(0) / w.sum()
        h = ((s - cs) * w[:, None]).T @ (dst - cd)
        theta = np.arctan2(h[0, 1] - h[1, 0], h[0, 0] + h[1, 1])
        r = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        lin = r @ np.diag([1.0, -1.0]) if mirrored else r
        M = np.eye(3)
        M[:2, :2], M[:2, 2] = lin, cd - r @ cs
        return M, _design(src, model, mirrored, theta)
    J = _design(src, model, mirrored)
    ww = np.repeat(w, 2)
    p, *_ = np.linalg.lstsq(J * np.sqrt(ww)[:, None], dst.ravel() * np.sqrt(ww), rcond=None)
    if model == "affine":
        M = np.array([[p[0], p[1], p[2]], [p[3], p[4], p[5]], [0, 0, 1.0]])
    else:
        M = np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]], [0, 0, 1.0]])
        if mirrored:
            M = M @ np.diag([1.0, -1.0, 1.0])
    return M, J


@dataclass
class PointFit:
    """A weighted fit ``src → dst``: ``matrix`` (3×3), kept point indices ``inliers``, the parameter
    covariance ``cov`` (scaled by the observed χ² when that is larger or well determined), the reduced
    ``chi2``, the applied variance ``factor``, and what :meth:`predicted_sigma` needs (model, mirror, angle)."""
    matrix: np.ndarray
    inliers: np.ndarray
    cov: np.ndarray
    chi2: float
    model: str
    mirrored: bool
    theta: float
    factor: float = 1.0         # the variance scale applied to the prior covariance

    def predicted_sigma(self, pts: np.ndarray) -> np.ndarray:
        """2-D RMS error (dst units) of the mapped position of each source point ``pts`` (N, 2)."""
        J = _design(np.asarray(pts, float).reshape(-1, 2), self.model, self.mirrored, self.theta)
        var = np.einsum("ij,jk,ik->i", J, self.cov, J)
        return np.sqrt(np.maximum(var[0::2] + var[1::2], 0.0))


def map_points(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, float) @ M[:2, :2].T + M[:2, 2]


def check_spread(pts: np.ndarray, what: str = "the matched beads") -> None:
    """InputError when the points are (nearly) on one line: no 2-D transform can be fitted from them."""
    c = np.asarray(pts, float) - np.mean(pts, axis=0)
    sv = np.linalg.svd(c, compute_uv=False)
    if len(pts) < 3 or sv[0] == 0 or sv[1] / sv[0] < 0.05:
        raise InputError(f"{what} lie (almost) on one line; a 2-D transform needs points spread in two "
                         "directions (add or pick beads off that line)")


def fit_points(src: np.ndarray, dst: np.ndarray, sigma: np.ndarray, *, model: str = "similarity",
               mirrored: bool = False, reject: bool = True, z_max: float = 3.5) -> PointFit:
    """Weighted fit of ``model`` mapping ``src`` (N, 2) onto ``dst`` with per-pair 2-D RMS ``sigma`` (dst
    units); with ``reject``, the worst pair is dropped while its normalised residual exceeds ``z_max``
    (after robust rescaling) and more than the minimum number of pairs remain."""
    if model not in MODELS:
        raise InputError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    src, dst = np.asarray(src, float).reshape(-1, 2), np.asarray(dst, float).reshape(-1, 2)
    sig = np.maximum(np.asarray(sigma, float).reshape(-1), 1e-12)
    p = N_PARAMS[model]
    need = (p + 1) // 2
    if len(src) < need:
        raise InputError(f"a {model} fit needs at least {need} point pairs, got {len(src)}")
    keep = np.arange(len(src))
    while True:
        w = 2.0 / sig[keep] ** 2                              # per-axis weight 1/σ_axis²
        M, J = _solve(src[keep], dst[keep], w, model, mirrored)
        res = np.linalg.norm(map_points(M, src[keep]) - dst[keep], axis=1)
        u = res / sig[keep]
        dof = 2 * len(keep) - p
        if not reject or len(keep) <= need + 1 or dof <= 0:
            break
        robust = max(1.0, np.median(u) / 0.8326)              # median radial error of a 2-D normal, σ_rad = 1
        k = int(np.argmax(u))
        if u[k] <= z_max * robust:
            break
        keep = np.delete(keep, k)
    chi2 = float(2 * np.sum(u ** 2) / dof) if dof > 0 else 1.0    # σ are 2-D RMS: σ_axis² = σ²/2
    ww = np.repeat(w, 2)
    cov = np.linalg.pinv((J * ww[:, None]).T @ J)
    factor = chi2 if dof >= 8 else max(chi2, 1.0)
    theta = float(np.arctan2(M[1, 0], M[0, 0])) if model == "rigid" else 0.0
    return PointFit(M, keep, cov * factor, chi2, model, mirrored, theta, factor)
