"""Peaks: sub-pixel location in a response map (template matching, phase correlation) and the distinct
best candidates of a ranked list."""
from __future__ import annotations

from typing import Callable, Iterable, TypeVar

import numpy as np

Item = TypeVar("Item")


def subpixel_peak(resp: np.ndarray, loc: tuple[int, int]) -> tuple[float, float, float]:
    """Parabolic sub-pixel maximum near ``loc`` = (x, y) of ``resp``: (x, y, interpolated value)."""
    x, y = loc
    c = float(resp[y, x])
    dx = dy = 0.0
    val = c
    if 0 < x < resp.shape[1] - 1:
        l, r = float(resp[y, x - 1]), float(resp[y, x + 1])
        dx = parabola_vertex(l, c, r)
        val += 0.25 * (r - l) * dx
    if 0 < y < resp.shape[0] - 1:
        u, b = float(resp[y - 1, x]), float(resp[y + 1, x])
        dy = parabola_vertex(u, c, b)
        val += 0.25 * (b - u) * dy
    return x + dx, y + dy, val


def parabola_vertex(fm: float, f0: float, fp: float) -> float:
    """Offset (in steps, within ±0.5) of the vertex of a parabola through 3 equally spaced values."""
    d = fm - 2 * f0 + fp
    return float(np.clip(0.5 * (fm - fp) / d, -0.5, 0.5)) if d < 0 else 0.0


def distinct(ranked: Iterable[Item], keep: int, near: Callable[[Item, Item], bool]) -> list[Item]:
    """The first ``keep`` items of ``ranked`` (best first) that are not ``near`` one kept before them
    (greedy non-maximum suppression)."""
    out: list = []
    for item in ranked:
        if not any(near(item, kept) for kept in out):
            out.append(item)
            if len(out) >= keep:
                break
    return out
