"""Pre-processing of a CLEM pair (array in, array out): pixel-size ratio (PSR), field-of-view crop, grey padding.

The LM image usually has a larger pixel size and field of view than the EM image.
:func:`estimate_psr` finds the PSR (LM pixel size / EM pixel size), the position and a
small rotation of the EM field of view inside the LM image by template matching (the
EM binned by a candidate PSR and Gaussian-filtered is the template, the LM the source),
coarse to fine over scale and angle.  :func:`prepare_pair` resamples the LM channels
onto the (optionally binned) EM grid with a grey fill outside the LM field of view, and
:func:`final_fixed_to_moving` composes a registration found on that grid into ONE matrix
from full-resolution EM pixels to ORIGINAL LM pixels (convention of :mod:`.transforms`).
"""
from .prepare import Prepared, final_fixed_to_moving, grey_fill, prepare_pair, register_prepared
from .psr import PSREstimate, estimate_psr, psr_from_pixel_sizes

__all__ = ["PSREstimate", "Prepared", "estimate_psr", "final_fixed_to_moving", "grey_fill", "prepare_pair",
           "psr_from_pixel_sizes", "register_prepared"]
