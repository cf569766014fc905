"""A registration's inputs as the workflows read them: the EM, the LM channels (file + extra files),
the channel selection and the output folder.  Shared by the CLI, batch and server workflows."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from .images import MAX_PIXELS, ImageData, check_image, read_image, select_channel


def output_dir(path) -> Path:
    """``path`` as a Path, refusing an existing non-folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder")
    return out


def read_checked(path, name: str, max_pixels: int = MAX_PIXELS, need_structure: bool = True) -> ImageData:
    """Read an image with the pixel-count guard and check every channel (finite, big enough, not constant)."""
    img = read_image(path, max_pixels=max_pixels)
    for c, chan in enumerate(img.data):
        check_image(chan, f"{name} channel {c}" if len(img.data) > 1 else name, need_structure=need_structure)
    return img


def read_em(path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, ImageData]:
    """The EM file as a checked 2-D image (RGB → grey); multi-channel EMs are refused."""
    img = read_image(path, max_pixels=max_pixels)
    if img.data.shape[0] > 1 and not img.rgb:
        raise InputError(f"EM file {img.path.name} has {img.data.shape[0]} channels; give a single-channel EM")
    return check_image(select_channel(img), f"EM image {img.path.name}"), img


def load_lm_channels(lm_path, extra_channel_paths: Optional[Sequence] = None, max_pixels: int = MAX_PIXELS
                     ) -> tuple[list[np.ndarray], ImageData]:
    """All channels of the LM file followed by those of each extra file; all must share one grid."""
    lm = read_checked(lm_path, f"LM image {Path(lm_path).name}", max_pixels, need_structure=False)
    chans = list(lm.data)
    for extra in extra_channel_paths or []:
        img = read_checked(extra, f"LM channel file {Path(extra).name}", max_pixels, need_structure=False)
        if img.shape != lm.shape:
            raise InputError(f"LM channel file {img.path.name} is {img.shape[1]}x{img.shape[0]} pixels but "
                             f"{lm.path.name} is {lm.shape[1]}x{lm.shape[0]}; LM channels must share one grid "
                             "(same size)")
        chans.extend(img.data)
    return chans, lm


def pick_channels(n: int, reg_channel: Optional[int], channels: Optional[Sequence[int]]) -> list[int]:
    """Check the registration channel (if any) and the channels to write (None = all of the ``n``)."""
    if reg_channel is not None and not 0 <= reg_channel < n:
        raise InputError(f"registration channel {reg_channel} does not exist; the LM has {n} channel(s) "
                         f"(0-{n - 1})")
    picked = list(range(n)) if channels is None else [int(c) for c in channels]
    bad = [c for c in picked if not 0 <= c < n]
    if bad:
        raise InputError(f"LM channel(s) {bad} do not exist; the LM has {n} channel(s) (0-{n - 1})")
    if not picked:
        raise InputError("no LM channels selected for output")
    return picked


def stack_dtype(channels: Sequence[np.ndarray]) -> np.dtype:
    """The channels' dtype when they share one that ImageJ holds (uint8/uint16/float32), else float32."""
    dtypes = {np.dtype(c.dtype) for c in channels}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)
    return dtype if dtype in (np.uint8, np.uint16, np.float32) else np.dtype(np.float32)


def as_stack(channels: Sequence[np.ndarray]) -> np.ndarray:
    """``(C, H, W)`` in :func:`stack_dtype`."""
    dtype = stack_dtype(channels)
    return np.stack([c.astype(dtype, copy=False) for c in channels])
