"""Input/target normalisation used for training and prediction (DeepCLEM: histogram equalisation of the EM)."""
from __future__ import annotations

import numpy as np
from skimage import exposure


def percentile_normalize(img: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of ``img`` to 0/1 (float32, not clipped)."""
    a = np.asarray(img, dtype=np.float32)
    lo, hi = np.percentile(a, [low, high])
    if hi - lo < 1e-6:
        hi = lo + max(float(a.max() - lo), 1e-6)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def normalize_em(em: np.ndarray) -> np.ndarray:
    """EM → network input: ``skimage.exposure.equalize_hist`` then percentile normalisation (float32)."""
    return percentile_normalize(exposure.equalize_hist(np.asarray(em, dtype=np.float64)), 1.0, 99.8)


def normalize_chromatin(chrom: np.ndarray) -> np.ndarray:
    """Measured chromatin → training target / correlation input: percentile normalisation (float32)."""
    return percentile_normalize(chrom, 1.0, 99.8)
