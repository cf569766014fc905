"""Fiducial beads and landmarks: detection, sub-pixel localisation, correspondence-free matching, a
weighted fit and an error budget (σ_EM, σ_LM, σ_alignment, σ_total, FRE, leave-one-out TRE).

``register_fiducials(em, lm, em_pixel_size=…, lm_pixel_size=…)`` and ``fit_landmarks(fixed, moving)``
return a :class:`~clem_bridge.result.Registration` whose ``error_budget`` holds the report.
"""
from .budget import total_sigma
from .register import fit_landmarks, predicted_tre, register_fiducials, tre_grid

__all__ = ["register_fiducials", "fit_landmarks", "predicted_tre", "tre_grid", "total_sigma"]
