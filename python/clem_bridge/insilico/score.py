"""The one criterion every correlation stage is judged by: overlap-aware normalised cross-correlation.

:func:`overlap_score` is the NCC between the fixed image and the warped moving image over the pixels where
both exist (inside ``mask`` when given), times the square root of the fraction of the fixed pixels (of
``mask``) that the moving image covers.  Shrinking the overlap therefore cannot raise the score unless the
correlation rises more, and a negative correlation is never improved by a smaller overlap.  The coarse
search ranks its candidates with the same formula evaluated by FFT (:mod:`.search`), the refinements
maximise it and may only return a result scoring at least as well as their start (:mod:`.refine`), and
hypotheses are chosen by it (:mod:`.correlate`).
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

MIN_OVERLAP_PX = 64   # fewer overlapping pixels: the score is -1 (nothing to correlate)


def ncc(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Zero-normalised cross-correlation of two images (inside ``mask`` when given)."""
    x, y = (a[mask], b[mask]) if mask is not None else (a.ravel(), b.ravel())
    x = x.astype(np.float64) - x.mean()
    y = y.astype(np.float64) - y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else 0.0


def weighted(correlation, coverage):
    """Overlap weighting (scalars or arrays): a positive correlation times √coverage; a negative one is kept."""
    c = np.asarray(correlation, dtype=np.float64)
    out = np.where(c > 0, c * np.sqrt(np.clip(coverage, 0.0, 1.0)), c)
    return float(out) if out.ndim == 0 else out


def warp_inverse(moving: np.ndarray, fixed_to_moving: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """``moving`` resampled on a grid of ``shape`` (bilinear, zero outside) and the mask of pixels inside it."""
    h, w = shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    m = np.asarray(fixed_to_moving, np.float64)[:2]
    warped = cv2.warpAffine(moving, m, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    inside = cv2.warpAffine(np.ones(moving.shape, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return warped, inside


def overlap_score(fixed: np.ndarray, moving: np.ndarray, fixed_to_moving: np.ndarray,
                  mask: Optional[np.ndarray] = None) -> float:
    """NCC of ``fixed`` and ``moving`` warped by ``fixed_to_moving`` over their overlap (∩ ``mask``),
    weighted by √(overlap / fixed pixels in ``mask``); -1 when under ``MIN_OVERLAP_PX`` pixels overlap."""
    warped, inside = warp_inverse(moving, fixed_to_moving, fixed.shape)
    region = inside if mask is None else inside & mask
    n = int(region.sum())
    if n < MIN_OVERLAP_PX:
        return -1.0
    total = fixed.size if mask is None else int(mask.sum())
    return weighted(ncc(fixed, warped, region), n / total)
