"""Warping LM channels onto a very large EM grid in horizontal strips.

Only one strip of the output is in memory at a time; the result goes into a
tifffile memory-mapped ImageJ hyperstack (C, H, W) on disk, so a 12,000² EM grid
needs a few hundred MiB of RAM.  Each strip is computed with
:func:`clem_bridge.transforms.warp_image` and its ``offset``, so the result equals the
in-memory warp exactly.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import tifffile

from . import transforms as T
from .errors import InputError
from .io import normalize_unit
from .schema import PixelSize


def _strip_rows(height: int, width: int, strip_bytes: int) -> int:
    return max(1, min(height, strip_bytes // max(1, 4 * width)))


def warp_tiled(channels: Sequence[np.ndarray], fixed_to_moving, out_shape, *, out: Optional[np.ndarray] = None,
               order: str = "bilinear", fill: float | Sequence[float] = 0.0, strip_bytes: int = 64 << 20,
               progress: Optional[Callable[[float], None]] = None) -> np.ndarray:
    """Warp 2-D LM ``channels`` onto the EM grid ``out_shape`` strip by strip.

    ``out``: a (C, H, W) array to fill (e.g. a memory map), allocated when None with the
    channels' dtype.  ``fill``: one value or one per channel.  ``strip_bytes`` bounds the
    float32 working memory of one strip.  ``progress(fraction)`` is called after each strip.
    """
    chans = list(channels)
    if not chans or any(c.ndim != 2 or c.shape != chans[0].shape for c in chans):
        raise InputError("the LM channels must be 2-D images of one size.")
    h, w = int(out_shape[0]), int(out_shape[1])
    fills = [float(fill)] * len(chans) if np.isscalar(fill) else [float(f) for f in fill]
    if len(fills) != len(chans):
        raise InputError(f"got {len(fills)} fill values for {len(chans)} channels.")
    if out is None:
        out = np.empty((len(chans), h, w), dtype=np.result_type(*[c.dtype for c in chans]))
    elif out.shape != (len(chans), h, w):
        raise InputError(f"the output has shape {out.shape}, expected {(len(chans), h, w)}.")
    rows = _strip_rows(h, w, strip_bytes)
    done, total = 0, len(chans) * h
    for k, (c, f) in enumerate(zip(chans, fills)):
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            out[k, r0:r1] = T.warp_image(c, fixed_to_moving, (r1 - r0, w), order=order, fill=f, offset=(r0, 0))
            done += r1 - r0
            if progress is not None:
                progress(done / total)
    return out


def warp_to_tiff(path, channels: Sequence[np.ndarray], fixed_to_moving, out_shape, *,
                 pixel_size: Optional[PixelSize] = None, order: str = "bilinear",
                 fill: float | Sequence[float] = 0.0, dtype=None, strip_bytes: int = 64 << 20,
                 progress: Optional[Callable[[float], None]] = None) -> Path:
    """Warp ``channels`` onto ``out_shape`` straight into an ImageJ hyperstack TIFF (C, H, W) at ``path``.

    The file is memory-mapped, so RAM use is one strip plus the LM channels.
    ``pixel_size`` (the EM's) is written as the ImageJ calibration.
    """
    chans = list(channels)
    if not chans:
        raise InputError("no LM channels to warp.")
    dtype = np.dtype(dtype or np.result_type(*[c.dtype for c in chans]))
    h, w = int(out_shape[0]), int(out_shape[1])
    extra = {"metadata": {"axes": "CYX"}}
    if pixel_size is not None:
        unit = normalize_unit(pixel_size.unit) or re.sub(r"[^\x20-\x7e]", "", pixel_size.unit) or "um"
        extra = {"resolution": (1.0 / pixel_size.x, 1.0 / pixel_size.y), "metadata": {"axes": "CYX", "unit": unit}}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    mm = tifffile.memmap(str(p), shape=(len(chans), h, w), dtype=dtype, imagej=True, **extra)
    try:
        warp_tiled([c.astype(dtype, copy=False) for c in chans], fixed_to_moving, (h, w), out=mm, order=order,
                   fill=fill, strip_bytes=strip_bytes, progress=progress)
        mm.flush()
    finally:
        del mm
    return p


def preview(em: np.ndarray, channels: Sequence[np.ndarray], fixed_to_moving, max_side: int = 4096
            ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """EM binned to ``max_side`` and the LM channels warped onto that grid (with its validity mask).

    For overlays of very large EMs; at or below ``max_side`` this is the full-resolution warp.
    """
    shape = T.working_shape(em.shape, max_side)
    small, small_to_em = T.area_resize(em, shape)
    warped, valid = T.warp_channels(channels, T.as_matrix(fixed_to_moving) @ small_to_em, shape)
    return small, warped, valid
