"""Bead phantoms with a known transform: dense beads on a textured EM, a widefield LM with Poisson photons.

The EM (~10 nm/px) shows each 200 nm bead as the projection of an absorbing sphere on a textured
background (dark, or bright with ``polarity="bright"``), plus debris: bead-like spheres with no LM
counterpart and blobs of the wrong size or shape.  The LM (~65 nm/px) shows the beads as
pixel-integrated Gaussian spots (PSF ⊗ bead) with Poisson photons, a smooth autofluorescence background,
camera gain, offset and read noise; some EM beads are bleached (no LM spot) and some LM beads lie
outside the EM field.  The LM is rotated by any angle and optionally mirrored relative to the EM.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import erf

from ..transforms import apply_to_points


@dataclass
class BeadPhantom:
    """A simulated EM/LM bead pair; ``fixed_to_moving`` maps EM pixel → LM pixel (the truth)."""
    em: np.ndarray
    lm: np.ndarray
    fixed_to_moving: np.ndarray
    em_pixel_nm: float
    lm_pixel_nm: float
    em_beads: np.ndarray        # (N, 2) EM pixel centres of the beads in the EM field (bleached included)
    lm_beads: np.ndarray        # (M, 2) LM pixel centres of every visible LM spot
    rotation_deg: float
    mirror: bool
    polarity: str


def _spaced(rng, n, lo, hi, min_dist, existing=()) -> np.ndarray:
    """Up to ``n`` uniform points in the box [lo, hi] at least ``min_dist`` from each other and ``existing``."""
    pts = [np.asarray(p, float) for p in existing]
    out = []
    for _ in range(200 * max(n, 1)):
        if len(out) == n:
            break
        p = rng.uniform(lo, hi)
        if all(np.hypot(*(p - q)) >= min_dist for q in pts):
            pts.append(p)
            out.append(p)
    return np.asarray(out, float).reshape(-1, 2)


def _add_ellipsoid(thick: np.ndarray, centre, a: float, b: float, angle: float, ss: int = 4) -> None:
    """Add the projected thickness ``2·a·√(1 − (u/a)² − (v/b)²)`` of an ellipsoid (supersampled ``ss``×)."""
    h, w = thick.shape
    r = int(np.ceil(max(a, b))) + 2
    x0, y0 = int(round(centre[0])), int(round(centre[1]))
    xs, ys = np.arange(max(x0 - r, 0), min(x0 + r + 1, w)), np.arange(max(y0 - r, 0), min(y0 + r + 1, h))
    if xs.size == 0 or ys.size == 0:
        return
    off = (np.arange(ss) + 0.5) / ss - 0.5
    gx = (xs[:, None] + off[None, :]).ravel() - centre[0]
    gy = (ys[:, None] + off[None, :]).ravel() - centre[1]
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    t = 2 * a * np.sqrt(np.clip(1 - (u / a) ** 2 - (v / b) ** 2, 0, None))
    t = t.reshape(ys.size, ss, xs.size, ss).mean(axis=(1, 3))
    thick[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] += t


def _texture(rng, shape, scales=(3, 12, 48)) -> np.ndarray:
    t = sum(ndimage.gaussian_filter(rng.standard_normal(shape), s) * s for s in scales)
    return (t - t.mean()) / (t.std() + 1e-12)


def _gauss_spots(shape, centres, photons, sigma) -> np.ndarray:
    """Pixel-integrated isotropic Gaussian spots (expected photons per pixel)."""
    img = np.zeros(shape)
    h, w = shape
    r = int(np.ceil(5 * sigma))
    k = 1.0 / (np.sqrt(2) * sigma)
    for (cx, cy), n in zip(centres, photons):
        xs = np.arange(max(int(cx) - r, 0), min(int(cx) + r + 2, w))
        ys = np.arange(max(int(cy) - r, 0), min(int(cy) + r + 2, h))
        if xs.size == 0 or ys.size == 0:
            continue
        fx = 0.5 * (erf((xs + 0.5 - cx) * k) - erf((xs - 0.5 - cx) * k))
        fy = 0.5 * (erf((ys + 0.5 - cy) * k) - erf((ys - 0.5 - cy) * k))
        img[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] += n * fy[:, None] * fx[None, :]
    return img


def make_bead_phantom(seed: int = 0, *, em_shape=(1024, 1024), lm_shape=(240, 320), em_pixel_nm: float = 10.0,
                      lm_pixel_nm: float = 65.0, bead_nm: float = 200.0, n_beads=(10, 20), n_bleached: int = 2,
                      n_lm_only: int = 4, n_debris: int = 3, max_rotation_deg: float = 180.0, mirror=None,
                      polarity: str = "dark", photons=(800.0, 6000.0), background: float = 40.0,
                      psf_sigma_nm: float = 170.0, scale_error: float = 0.02, em_noise: float = 0.04,
                      em_dtype=np.uint8, lm_dtype=np.uint16, bead_positions=None) -> BeadPhantom:
    """Simulate one EM/LM bead pair (see the module docstring); ``n_beads`` is a count or a (lo, hi) range,
    ``bead_positions`` (N, 2) EM pixels replace the random bead positions."""
    rng = np.random.default_rng(seed)
    eh, ew = em_shape
    lh, lw = lm_shape
    n = int(rng.integers(n_beads[0], n_beads[1] + 1)) if np.ndim(n_beads) else int(n_beads)
    mirror = bool(rng.integers(2)) if mirror is None else bool(mirror)
    rot = float(rng.uniform(-max_rotation_deg, max_rotation_deg))
    scale = em_pixel_nm / lm_pixel_nm * (1 + rng.uniform(-scale_error, scale_error))
    t = np.deg2rad(rot)
    lin = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ np.diag([1.0, -1.0 if mirror else 1.0])
    em_c = np.array([(ew - 1) / 2, (eh - 1) / 2])
    lm_c = np.array([(lw - 1) / 2, (lh - 1) / 2]) + rng.uniform(-0.1, 0.1, 2) * [lw, lh]
    f2m = np.eye(3)
    f2m[:2, :2] = lin
    f2m[:2, 2] = lm_c - lin @ em_c

    radius = bead_nm / 2 / em_pixel_nm
    sep = max(1000.0 / em_pixel_nm, 6 * radius)
    margin = np.array([radius + 2, radius + 2])
    beads = (_spaced(rng, n, margin, np.array([ew, eh]) - 1 - margin, sep) if bead_positions is None
             else np.asarray(bead_positions, float).reshape(-1, 2))
    debris = _spaced(rng, n_debris, margin, np.array([ew, eh]) - 1 - margin, sep, beads)
    wrong = _spaced(rng, 3, 3 * margin, np.array([ew, eh]) - 1 - 3 * margin, sep, np.vstack([beads, debris]))

    thick = np.zeros(em_shape)
    for c in np.vstack([beads, debris]):
        _add_ellipsoid(thick, c, radius, radius, 0.0)
    for c, (a, b) in zip(wrong, [(2.5 * radius, 2.5 * radius), (2.0 * radius, 0.6 * radius),
                                 (0.35 * radius, 0.35 * radius)]):
        _add_ellipsoid(thick, c, a, b, rng.uniform(0, np.pi))
    mu = 1.2 / (2 * radius)                     # a bead transmits exp(-1.2) ≈ 30 % at its centre
    em = (0.6 + 0.08 * _texture(rng, em_shape)) * np.exp(-mu * thick)
    em = ndimage.gaussian_filter(em, 1.0) + em_noise * rng.standard_normal(em_shape)
    if polarity == "bright":
        em = 1.0 - em
    elif polarity != "dark":
        raise ValueError(f"polarity must be 'dark' or 'bright', got {polarity!r}")
    top = np.iinfo(em_dtype).max if np.issubdtype(em_dtype, np.integer) else 1.0
    em = (np.clip(em, 0, 1) * top).astype(em_dtype)

    bleached = rng.choice(len(beads), size=min(n_bleached, max(len(beads) - 3, 0)), replace=False)
    lm_pts = apply_to_points(f2m, np.delete(beads, bleached, axis=0))
    spot = np.sqrt(psf_sigma_nm ** 2 + (bead_nm / 2) ** 2 / 5) / lm_pixel_nm   # PSF ⊗ projected sphere
    edge = np.array([3 * spot, 3 * spot])
    extra = _spaced(rng, n_lm_only, edge, np.array([lw, lh]) - 1 - edge, sep * scale, lm_pts)
    lm_pts = np.vstack([lm_pts, extra])
    inside = np.all((lm_pts >= 0) & (lm_pts <= [lw - 1, lh - 1]), axis=1)
    lm_pts = lm_pts[inside]
    n_ph = np.exp(rng.uniform(np.log(photons[0]), np.log(photons[1]), len(lm_pts)))
    expected = background * (1 + 0.3 * np.clip(_texture(rng, lm_shape, (20,)), -1.5, 1.5))
    expected += _gauss_spots(lm_shape, lm_pts, n_ph, spot)
    gain, offset, read = 2.0, 100.0, 3.0
    lm = rng.poisson(expected) * gain + offset + read * rng.standard_normal(lm_shape)
    top = np.iinfo(lm_dtype).max if np.issubdtype(lm_dtype, np.integer) else np.inf
    lm = np.clip(np.round(lm), 0, top).astype(lm_dtype)
    return BeadPhantom(em=em, lm=lm, fixed_to_moving=f2m, em_pixel_nm=float(em_pixel_nm),
                       lm_pixel_nm=float(lm_pixel_nm), em_beads=beads, lm_beads=lm_pts, rotation_deg=rot,
                       mirror=mirror, polarity=polarity)
