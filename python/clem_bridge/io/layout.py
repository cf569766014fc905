"""The pixel array a reader found, checked and brought to channels-first (C, H, W) the same way for every format."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

_MAX_UNNAMED_CHANNELS = 8
_STACK_AXES = {"Z": "a Z stack", "T": "a time series", "I": "a stack", "Q": "a stack", "R": "a tile set",
               "O": "a multi-image stack", "H": "a lifetime/phase stack", "E": "a lambda stack", "L": "a lambda stack",
               "A": "an angle stack", "P": "a phase stack", "V": "a multi-view stack", "M": "a mosaic"}


def check_size(n: int, path: Path, max_pixels: int) -> None:
    """Refuse an empty image, or one with more than ``max_pixels`` values, naming the file."""
    if n == 0:
        raise InputError(f"{path.name} contains an empty image (0 pixels)")
    if n > max_pixels:
        raise InputError(f"{path.name} holds {n:,} pixel values, more than the limit of {max_pixels:,}; "
                         f"crop or bin it first")


def to_cyx(data: np.ndarray, axes: str, shape, p: Path, rgb: bool) -> np.ndarray:
    """Squeeze singleton axes and bring the (single) channel axis first; stacks are refused."""
    data = data.reshape(shape)
    keep = [i for i, (a, n) in enumerate(zip(axes, shape)) if n > 1 or a in "YX"]
    data = data.reshape([shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{p.name} is not a 2-D image (axes {axes})")
    extra = [a for a in axes if a not in "YX"]
    for a in extra:
        n = data.shape[axes.index(a)]
        if a in "CS" or (a in "IQ" and n <= _MAX_UNNAMED_CHANNELS and len(extra) == 1):
            continue
        kind = _STACK_AXES.get(a, f"an image with a '{a}' axis")
        raise InputError(f"{p.name} is {kind} of {n} planes; clem-bridge registers 2-D images - pick one plane "
                         f"or make a projection first (Fiji: Image > Stacks > Z Project)")
    if len(extra) > 1:
        if set(extra) == {"C", "S"}:
            raise InputError(f"{p.name} has both channels and RGB samples; save the channels as grey images")
        raise InputError(f"{p.name} has {len(extra)} non-spatial axes ({''.join(extra)}); expected a 2-D image "
                         f"with at most one channel axis")
    if not extra:
        return data[None]
    ch = axes.index(extra[0])
    order = [ch] + [axes.index("Y"), axes.index("X")]
    return np.transpose(data, order)
