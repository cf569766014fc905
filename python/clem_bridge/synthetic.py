"""Deterministic synthetic CLEM phantoms: EM-like and LM-like views of the same virtual cells.

A *scene* of Voronoi-packed cells (membranes, nuclei with peripheral and punctate
heterochromatin, mitochondria, a fine cytoplasmic texture) is rendered on a canvas in
EM pixel units that covers both the EM field and the LM field of view.  The EM is the
canvas crop rendered sharp, grey and noisy; each LM channel is the scene blurred by a
PSF and sampled through the known affine (LM pixel ``p_m`` shows the scene point
``moving_to_fixed(p_m)``), with its own contrast and noise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from scipy import ndimage

from . import transforms as T
from .intensity import percentile_normalise
from .schema import PixelSize

LM_CHANNELS = ("reflected", "chromatin", "fluorescence")
EM_PIXEL_UM = 0.01          # nominal EM pixel size of the phantom (10 nm)
PSF_SIGMA_LM_PX = 2.0       # LM blur, in LM pixels
_MAX_CANVAS_FACTOR = 64     # canvas may be at most this many times the EM area


@dataclass
class SyntheticPair:
    """A phantom pair: ``em`` (fixed) and ``lm`` channels (moving) under ``fixed_to_moving``.

    ``masks`` are the noise-free scene layers on the EM grid ('membrane', 'nucleus',
    'heterochromatin', 'mitochondria'; float32 in [0, 1]) for tests and training targets.
    """
    em: np.ndarray
    lm: dict[str, np.ndarray]
    fixed_to_moving: np.ndarray
    fixed_pixel_size: PixelSize
    moving_pixel_size: PixelSize
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def moving_to_fixed(self) -> np.ndarray:
        return np.linalg.inv(self.fixed_to_moving)


def centred_affine(fixed_shape, moving_shape, *, rotation_deg=0.0, scale=1.0, shear=0.0,
                   translation=(0.0, 0.0)) -> np.ndarray:
    """``fixed_to_moving`` that rotates/scales/shears about the EM centre, sends it to the LM centre + ``translation``."""
    cf, cm = T.center_of(fixed_shape), T.center_of(moving_shape)
    about_f = T.from_params(rotation_deg=rotation_deg, scale=scale, shear=shear, center=cf)
    shift = np.array([[1, 0, cm[0] - cf[0] + translation[0]], [0, 1, cm[1] - cf[1] + translation[1]], [0, 0, 1.0]])
    return shift @ about_f


def random_affine(rng: np.random.Generator, shape, max_rotation_deg: float = 30.0, max_shift_frac: float = 0.15,
                  scale_range: tuple[float, float] = (0.9, 1.1), max_shear: float = 0.05,
                  moving_shape=None) -> np.ndarray:
    """Random ``fixed_to_moving`` about the image centre (uniform rotation, shift as a fraction of the field, scale, shear)."""
    moving_shape = shape if moving_shape is None else moving_shape
    rot = rng.uniform(-max_rotation_deg, max_rotation_deg)
    sx, sy = rng.uniform(scale_range[0], scale_range[1], size=2)
    sh = rng.uniform(-max_shear, max_shear)
    tx = rng.uniform(-max_shift_frac, max_shift_frac) * moving_shape[1]
    ty = rng.uniform(-max_shift_frac, max_shift_frac) * moving_shape[0]
    return centred_affine(shape, moving_shape, rotation_deg=rot, scale=(sx, sy), shear=sh, translation=(tx, ty))


def default_affine(shape, moving_shape, lm_pixel_ratio: float = 1.0) -> np.ndarray:
    """A moderate known affine (7° rotation, slight anisotropic scale and shear, small shift)."""
    s = 1.0 / lm_pixel_ratio
    return centred_affine(shape, moving_shape, rotation_deg=7.0, scale=(1.04 * s, 0.97 * s), shear=0.03,
                          translation=(0.04 * moving_shape[1], -0.03 * moving_shape[0]))


# --- scene -----------------------------------------------------------------------------

def _ellipse(canvas: np.ndarray, centre, axes, angle_deg: float, value: float = 1.0) -> None:
    """Filled anti-aliased ellipse with sub-pixel precision (cv2, 4 fractional bits)."""
    f = 16
    cv2.ellipse(canvas, (int(round(centre[0] * f)), int(round(centre[1] * f))),
                (max(int(round(axes[0] * f)), 1), max(int(round(axes[1] * f)), 1)),
                float(angle_deg), 0, 360, float(value), -1, cv2.LINE_AA, 4)


def _render_scene(h: int, w: int, rng: np.random.Generator, cell_diameter: float) -> dict[str, np.ndarray]:
    """Scene layers (float32 in [0, 1]) on an ``h × w`` canvas."""
    n_cells = max(int(1.3 * h * w / cell_diameter ** 2), 2)
    seeds = rng.uniform([0, 0], [w, h], size=(n_cells, 2))
    seed_img = np.ones((h, w), np.uint8)
    ij = np.clip(seeds.astype(int), 0, [w - 1, h - 1])
    seed_img[ij[:, 1], ij[:, 0]] = 0
    _, labels = cv2.distanceTransformWithLabels(seed_img, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    # every seed pixel gets its own label (nearest-seed Voronoi); look up the label of each seed
    lab_of_seed = labels[ij[:, 1], ij[:, 0]]
    empty = rng.random(n_cells) < 0.12                                 # extracellular gaps
    lut = np.zeros(labels.max() + 1, bool)
    lut[lab_of_seed[empty]] = True
    extracellular = lut[labels]
    boundary = np.zeros((h, w), bool)
    boundary[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    boundary[1:, :] |= labels[1:, :] != labels[:-1, :]
    dist = cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2, 5)
    thick = 1.2 + cell_diameter / 120.0
    membrane = np.clip(1.0 - dist / thick, 0, 1) * (1.0 - 0.8 * extracellular)
    interior = (dist > 2 * thick) & ~extracellular

    nucleus = np.zeros((h, w), np.float32)
    envelope_band = np.zeros((h, w), np.float32)
    hetero = np.zeros((h, w), np.float32)
    mito = np.zeros((h, w), np.float32)
    r0 = cell_diameter / 2.0
    for k in np.flatnonzero(~empty):
        c = seeds[k] + rng.normal(0, 0.05 * r0, 2)
        a, b = r0 * rng.uniform(0.3, 0.45), r0 * rng.uniform(0.25, 0.38)
        ang = rng.uniform(0, 180)
        _ellipse(nucleus, c, (a, b), ang)
        _ellipse(envelope_band, c, (a, b), ang)
        _ellipse(envelope_band, c, (a - 0.08 * r0, b - 0.08 * r0), ang, 0.0)
        t = np.deg2rad(ang)
        for _ in range(rng.integers(4, 10)):                           # heterochromatin puncta
            rho, phi = np.sqrt(rng.uniform(0, 0.55)), rng.uniform(0, 2 * np.pi)
            u, v = rho * a * np.cos(phi), rho * b * np.sin(phi)
            p = c + [u * np.cos(t) - v * np.sin(t), u * np.sin(t) + v * np.cos(t)]
            rr = r0 * rng.uniform(0.03, 0.07)
            _ellipse(hetero, p, (rr, rr * rng.uniform(0.6, 1.0)), rng.uniform(0, 180))
        for _ in range(rng.integers(4, 9)):                            # mitochondria around the nucleus
            phi, rho = rng.uniform(0, 2 * np.pi), rng.uniform(1.25, 1.8)
            p = c + rho * np.array([a * np.cos(phi), b * np.sin(phi)]) @ np.array([[np.cos(t), np.sin(t)],
                                                                                    [-np.sin(t), np.cos(t)]])
            _ellipse(mito, p, (r0 * rng.uniform(0.09, 0.16), r0 * rng.uniform(0.035, 0.05)), rng.uniform(0, 180))
    inside = interior.astype(np.float32)
    nucleus *= inside
    hetero = np.maximum(hetero, 0.8 * envelope_band) * nucleus
    mito *= inside * (1.0 - nucleus)
    return {"membrane": membrane.astype(np.float32), "nucleus": nucleus, "heterochromatin": hetero,
            "mitochondria": mito, "extracellular": extracellular.astype(np.float32)}


def _em_from_scene(s: dict[str, np.ndarray], texture: np.ndarray) -> np.ndarray:
    em = 0.58 + 0.08 * texture
    em = em + 0.22 * s["extracellular"] - 0.05 * s["nucleus"]
    em = em * (1 - 0.6 * s["heterochromatin"]) * (1 - 0.5 * s["mitochondria"]) * (1 - 0.7 * s["membrane"])
    return em


def _lm_from_scene(s: dict[str, np.ndarray], texture: np.ndarray) -> dict[str, np.ndarray]:
    cell = 1.0 - s["extracellular"]
    return {
        # reflected/bright-field-like: shares the EM structure, partly inverted contrast
        "reflected": 0.25 + 0.25 * cell + 0.35 * s["membrane"] + 0.3 * s["mitochondria"]
        - 0.2 * s["nucleus"] + 0.35 * s["heterochromatin"] + 0.03 * texture,
        "chromatin": 0.04 + 0.12 * s["nucleus"] + 0.85 * s["heterochromatin"],
        "fluorescence": 0.04 + 0.9 * s["mitochondria"],
    }


def make_pair(shape=(512, 512), fixed_to_moving=None, seed: int = 0, moving_shape=None,
              lm_pixel_ratio: float = 1.0, *, cell_diameter: Optional[float] = None,
              em_noise: float = 0.04, lm_noise: float = 0.02) -> SyntheticPair:
    """Render an EM/LM phantom pair; the same arguments always give identical arrays.

    ``fixed_to_moving`` (EM pixel → LM pixel) defaults to :func:`default_affine`;
    ``moving_shape`` defaults to ``shape / lm_pixel_ratio``; ``lm_pixel_ratio`` is how many
    EM pixels one LM pixel spans (sets the nominal pixel sizes and the default affine's scale).
    """
    h, w = int(shape[0]), int(shape[1])
    if h < 16 or w < 16:
        raise ValueError(f"phantom shape must be at least 16x16, got {shape}")
    if lm_pixel_ratio <= 0:
        raise ValueError("lm_pixel_ratio must be positive")
    if moving_shape is None:
        moving_shape = (max(int(np.ceil(h / lm_pixel_ratio)), 8), max(int(np.ceil(w / lm_pixel_ratio)), 8))
    mh, mw = int(moving_shape[0]), int(moving_shape[1])
    f2m = default_affine((h, w), (mh, mw), lm_pixel_ratio) if fixed_to_moving is None else T.as_matrix(fixed_to_moving)
    m2f = np.linalg.inv(f2m)
    rng = np.random.default_rng(seed)
    if cell_diameter is None:
        cell_diameter = float(np.clip(min(h, w) / 4.0, 40.0, 160.0))

    # canvas (EM pixel units) covering the EM and the LM footprint, with a margin for the PSF
    lm_px = T.scale_of(m2f)                                           # LM pixel size in EM pixels
    psf = PSF_SIGMA_LM_PX * lm_px
    corners = np.array([[0, 0], [mw - 1, 0], [0, mh - 1], [mw - 1, mh - 1]], float)
    foot = T.apply_to_points(m2f, corners)
    margin = int(np.ceil(4 * psf + 0.5 * cell_diameter))
    x0 = int(np.floor(min(0, foot[:, 0].min()))) - margin
    y0 = int(np.floor(min(0, foot[:, 1].min()))) - margin
    x1 = int(np.ceil(max(w - 1, foot[:, 0].max()))) + margin
    y1 = int(np.ceil(max(h - 1, foot[:, 1].max()))) + margin
    ch, cw = y1 - y0 + 1, x1 - x0 + 1
    if ch * cw > _MAX_CANVAS_FACTOR * h * w + 4 * margin ** 2 + 1_000_000:
        raise ValueError("the LM field of view under this affine is far larger than the EM; phantom canvas too big")

    scene = _render_scene(ch, cw, rng, cell_diameter)
    texture = rng.standard_normal((ch, cw), dtype=np.float32)
    texture = cv2.GaussianBlur(texture, (0, 0), 1.0)
    texture /= max(float(texture.std()), 1e-6)

    crop = (slice(-y0, -y0 + h), slice(-x0, -x0 + w))
    em = _em_from_scene(scene, texture)[crop]
    em = cv2.GaussianBlur(em.astype(np.float32), (0, 0), 0.6)
    em = em + rng.normal(0, em_noise, em.shape).astype(np.float32)
    em = np.clip(em, 0, 1).astype(np.float32)

    # LM pixel (x, y) -> canvas (row, col) coordinates of the scene point it shows
    ys, xs = np.mgrid[0:mh, 0:mw].astype(np.float64)
    sx = m2f[0, 0] * xs + m2f[0, 1] * ys + m2f[0, 2] - x0
    sy = m2f[1, 0] * xs + m2f[1, 1] * ys + m2f[1, 2] - y0
    lm = {}
    for name, img in _lm_from_scene(scene, texture).items():
        blurred = cv2.GaussianBlur(img.astype(np.float32), (0, 0), max(psf, 0.5))
        sampled = ndimage.map_coordinates(blurred, [sy, sx], order=1, mode="nearest")
        sampled = sampled + rng.normal(0, lm_noise, sampled.shape)
        lm[name] = percentile_normalise(sampled, 0.1, 99.9)

    masks = {k: scene[k][crop].copy() for k in ("membrane", "nucleus", "heterochromatin", "mitochondria")}
    fpx = PixelSize(x=EM_PIXEL_UM, y=EM_PIXEL_UM, unit="um")
    mpx = PixelSize(x=EM_PIXEL_UM * lm_pixel_ratio, y=EM_PIXEL_UM * lm_pixel_ratio, unit="um")
    return SyntheticPair(em=em, lm=lm, fixed_to_moving=f2m, fixed_pixel_size=fpx, moving_pixel_size=mpx, masks=masks)


def save_pair(pair: SyntheticPair, out_dir, prefix: str = "phantom") -> tuple[Path, Path]:
    """Write ``<prefix>_em.tif`` (8-bit), ``<prefix>_lm.tif`` (16-bit CYX, channels in ``LM_CHANNELS`` order)
    as calibrated ImageJ TIFFs and ``<prefix>_truth.json`` (the true ``fixed_to_moving``); returns the TIFF paths."""
    from .io import write_tiff

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    em = write_tiff(out / f"{prefix}_em.tif", np.round(pair.em * 255).astype(np.uint8), pair.fixed_pixel_size)
    lm_stack = np.stack([np.round(pair.lm[k] * 65535).astype(np.uint16) for k in LM_CHANNELS])
    lm = write_tiff(out / f"{prefix}_lm.tif", lm_stack, pair.moving_pixel_size)
    (out / f"{prefix}_truth.json").write_text(json.dumps(
        {"fixed_to_moving": pair.fixed_to_moving.tolist(), "channels": list(LM_CHANNELS)}, indent=2))
    return em, lm
