"""Input/target normalisation used for training and prediction (DeepCLEM: histogram equalisation of the EM)."""
from __future__ import annotations

import numpy as np
from skimage import exposure

from ..intensity import percentile_normalise


EM_METHODS = ("equalize_hist", "clahe")
CLAHE_KERNEL = 64   # pixels at the network's (binned) resolution


def normalize_em(em: np.ndarray, method: str = "equalize_hist") -> np.ndarray:
    """EM → network input, then percentile normalisation (float32).

    ``equalize_hist``: global histogram equalisation (DeepCLEM's choice); depends on the whole field, so a
    crop of an EM is normalised differently from the full image.  ``clahe``: contrast-limited *adaptive*
    equalisation over ``CLAHE_KERNEL``-pixel tiles, which is local and therefore nearly the same for a crop.
    """
    a = np.asarray(em, dtype=np.float64)
    if method == "equalize_hist":
        eq = exposure.equalize_hist(a)
    elif method == "clahe":
        eq = exposure.equalize_adapthist(np.clip(percentile_normalise(a, 0.1, 99.9, clip=False), 0, 1),
                                         kernel_size=CLAHE_KERNEL, clip_limit=0.01)
    else:
        raise ValueError(f"unknown EM normalisation {method!r}; use one of {EM_METHODS}")
    return percentile_normalise(eq, 1.0, 99.8, clip=False)


def normalize_chromatin(chrom: np.ndarray) -> np.ndarray:
    """Measured chromatin → training target / correlation input: percentile normalisation (float32)."""
    return percentile_normalise(chrom, 1.0, 99.8, clip=False)


SATURATION_PERCENTILE = 97.0   # correlation inputs are clipped here: a few very bright spots must not decide


def correlation_input(chrom: np.ndarray) -> np.ndarray:
    """Chromatin (predicted or measured) → correlation input: :func:`normalize_chromatin`, then clipped to
    [0, its ``SATURATION_PERCENTILE`` percentile], so the pattern of blobs counts rather than the few brightest
    (a prediction's strongest spots are often false positives: dense cytoplasmic granules)."""
    a = normalize_chromatin(chrom)
    return np.clip(a, 0.0, max(float(np.percentile(a, SATURATION_PERCENTILE)), 1e-6))
