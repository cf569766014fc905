"""Resample the LM channels onto the EM grid (crop, grey padding) and compose the final matrix.

:func:`prepare_pair` resamples the LM channels onto the (optionally binned) EM grid with a grey fill
outside the LM field of view, and :func:`final_fixed_to_moving` composes a registration found on that
grid into ONE matrix from full-resolution EM pixels to ORIGINAL LM pixels (see :mod:`..transforms`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from .. import transforms as T
from ..errors import InputError
from ..io import check_image
from ..result import Registration
from ..schema import PixelSize
from .psr import PSREstimate, estimate_psr, psr_from_pixel_sizes


@dataclass
class Prepared:
    """LM channels resampled onto the EM grid (full or binned to a working size).

    ``prep_fixed_to_moving``: grid pixel → ORIGINAL LM pixel; ``grid_to_em``: grid pixel →
    full-resolution EM pixel; ``mask``: True where the LM has data; ``fill``: grey value
    used outside the LM field of view, per channel.
    """
    em: np.ndarray
    channels: list[np.ndarray]
    mask: np.ndarray
    prep_fixed_to_moving: np.ndarray
    grid_to_em: np.ndarray
    em_shape: tuple[int, int]
    lm_shape: tuple[int, int]
    fill: list[float] = field(default_factory=list)
    estimate: Optional[PSREstimate] = None


def _as_channels(lm_channels) -> list[np.ndarray]:
    if isinstance(lm_channels, np.ndarray):
        chans = [lm_channels] if lm_channels.ndim == 2 else list(lm_channels) if lm_channels.ndim == 3 else []
    else:
        chans = [np.asarray(c) for c in lm_channels]
    if not chans or any(c.ndim != 2 or c.shape != chans[0].shape for c in chans):
        raise InputError("the LM channels must be 2-D images of one size (a (C, H, W) stack or a list).")
    return chans


def grey_fill(channel: np.ndarray) -> float:
    """Grey value for LM areas outside the field of view: the median, or mid-range if that is black."""
    a = channel[:: max(1, channel.shape[0] // 512), :: max(1, channel.shape[1] // 512)].astype(np.float64)
    med, lo, hi = float(np.median(a)), float(a.min()), float(a.max())
    return med if med > lo else 0.5 * (lo + hi)


def prepare_pair(em, lm_channels, *, psr: Optional[float] = None, em_pixel_size: Optional[PixelSize] = None,
                 lm_pixel_size: Optional[PixelSize] = None, reg_channel: int = 0, search: float = 0.1,
                 rotations: float = 8.0, work_size: Optional[int] = None, **match_options) -> Prepared:
    """Crop the EM field of view out of the LM and resample the LM channels onto the EM grid.

    The PSR is ``psr`` when given (then trusted, only position and rotation are searched),
    else the metadata ratio of ``lm_pixel_size``/``em_pixel_size`` refined within
    ``± search``, else searched over a wide range.  ``work_size`` bins the output grid
    to that long side (registration of very large images); ``reg_channel`` is the LM
    channel used for matching.  Areas outside the LM field of view get a grey value
    (:func:`grey_fill`, never black) and are False in ``mask``.
    """
    em = check_image(em, "the EM image")
    chans = _as_channels(lm_channels)
    if not 0 <= reg_channel < len(chans):
        raise InputError(f"reg_channel {reg_channel} does not exist (the LM has {len(chans)} channel(s)).")
    hint = psr if psr is not None else psr_from_pixel_sizes(em_pixel_size, lm_pixel_size)
    est = estimate_psr(em, chans[reg_channel], psr_hint=hint, search=0.0 if psr is not None else search,
                       rotations=rotations, **match_options)
    grid = T.working_shape(em.shape, work_size)
    grid_to_em = T.resize_matrix(em.shape, grid)
    em_grid, _ = T.area_resize(em, grid)
    prep = est.fixed_to_moving @ grid_to_em
    fills = [grey_fill(c) for c in chans]
    warped = [T.warp_image(c.astype(np.float32, copy=False), prep, grid, fill=f) for c, f in zip(chans, fills)]
    return Prepared(em=em_grid, channels=warped, mask=T.valid_mask(prep, grid, chans[0].shape),
                    prep_fixed_to_moving=prep, grid_to_em=grid_to_em, em_shape=tuple(em.shape),
                    lm_shape=tuple(chans[0].shape), fill=fills, estimate=est)


def final_fixed_to_moving(prepared: Prepared, registration_fixed_to_moving) -> np.ndarray:
    """ONE matrix: full-resolution EM pixel → ORIGINAL LM pixel.

    ``registration_fixed_to_moving`` maps prepared-grid pixels (the EM at ``prepared.em``)
    to prepared-LM pixels, as returned by registering ``prepared.em`` against a prepared
    channel.
    """
    return T.compose(prepared.prep_fixed_to_moving, registration_fixed_to_moving,
                     np.linalg.inv(prepared.grid_to_em))


def register_prepared(em, moving, register: Callable, *, psr: Optional[float] = None,
                      em_pixel_size: Optional[PixelSize] = None, lm_pixel_size: Optional[PixelSize] = None,
                      work_size: Optional[int] = 1024, **match_options) -> Registration:
    """Prepare the pair, register on the prepared grid, return ONE matrix full EM px → original LM px.

    ``register(fixed, moving, init=...)`` is the registration function (e.g. ``register_mine``
    with its options bound); it runs on the EM binned to ``work_size`` against the prepared LM,
    starting from the identity.  The result carries the full EM and original LM shapes and the
    pre-processing parameters under ``params['prepare']``.
    """
    t0 = time.perf_counter()
    prep = prepare_pair(em, [moving], psr=psr, em_pixel_size=em_pixel_size, lm_pixel_size=lm_pixel_size,
                        work_size=work_size, **match_options)
    t1 = time.perf_counter()
    reg = register(prep.em, prep.channels[0], init=np.eye(3))
    est = prep.estimate
    info = {"psr": est.psr, "psr_given": psr is not None, "rotation_deg": est.rotation_deg, "match_score": est.score,
            "match_sharpness": est.sharpness, "work_shape": list(prep.em.shape),
            "prep_fixed_to_moving": prep.prep_fixed_to_moving.tolist(),
            "registration_on_prepared_grid": np.asarray(reg.fixed_to_moving).tolist()}
    return replace(reg, fixed_to_moving=final_fixed_to_moving(prep, reg.fixed_to_moving),
                   fixed_shape=tuple(prep.em_shape), moving_shape=tuple(prep.lm_shape),
                   params={**reg.params, "prepare": info}, timings={**reg.timings, "prepare_s": t1 - t0})
