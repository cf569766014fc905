"""Intensity scaling shared by every module: one percentile normaliser (array in, array out)."""
from __future__ import annotations

from typing import Optional

import numpy as np
from skimage import exposure


def percentile_normalise(img, low: float = 1.0, high: float = 99.5, *, mask: Optional[np.ndarray] = None,
                         clip: bool = True, max_samples: Optional[int] = None) -> np.ndarray:
    """float32 ``img`` with its ``low``/``high`` percentiles mapped to 0/1.

    Percentiles are taken inside ``mask`` when it selects anything, on a strided subsample of at most
    about ``max_samples`` pixels when given (big images).  ``clip`` limits the result to [0, 1];
    without it values outside the percentiles extrapolate linearly (network inputs).  A flat image
    maps to 0, never to NaN.
    """
    a = np.asarray(img, dtype=np.float32)
    vals = a[mask] if mask is not None and mask.any() else a
    if max_samples and vals.size > max_samples:
        vals = vals.ravel()[:: int(np.ceil(vals.size / max_samples))]
    lo, hi = (float(v) for v in np.percentile(vals, [low, high]))
    if hi - lo < 1e-6:
        hi = lo + max(float(vals.max()) - lo, 1e-6)
    if clip:
        out = exposure.rescale_intensity(a, in_range=(lo, hi), out_range=(0.0, 1.0)).astype(np.float32)
        return np.clip(out, 0.0, 1.0, out=out)      # float32 rounding may overshoot 1 by an ulp
    return ((a - lo) / (hi - lo)).astype(np.float32)
