"""The error budget of a fiducial registration, as in the seed method: σT = √(σX² + σF² + σA²).

Every σ is a 2-D RMS distance in the EM frame: ``sigma_em`` and ``sigma_lm`` are the median
localisation precisions of the matched beads (each bead's fit precision, scaled up by √χ² of the
transform fit when the residuals show them too small), ``sigma_alignment`` is the RMS over the EM field of the
predicted target registration error (the fit's parameter covariance propagated to each EM position,
Fitzpatrick–West style), ``fre`` the RMS residual at the beads and ``tre_loo`` the RMS error at each
bead of the fit made without it (an independent check of the prediction).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .match import fit_points, map_points

CONVENTION = "2-D RMS distances in the EM frame"


def total_sigma(*sigmas: Optional[float]) -> float:
    """√ of the sum of squares of the given (independent) σ; None entries are skipped.

    The seed's numbers: ``total_sigma(31, 42, 85)`` = 99.7 ≈ 100 nm.
    """
    return float(np.sqrt(sum(float(s) ** 2 for s in sigmas if s is not None)))


def leave_one_out(src: np.ndarray, dst: np.ndarray, sigma: np.ndarray, *, model: str,
                  mirrored: bool) -> np.ndarray:
    """Distance at each pair between ``dst`` and the mapping of ``src`` fitted without that pair (NaN
    where too few pairs remain)."""
    out = np.full(len(src), np.nan)
    for i in range(len(src)):
        rest = np.delete(np.arange(len(src)), i)
        try:
            fit = fit_points(src[rest], dst[rest], sigma[rest], model=model, mirrored=mirrored, reject=False)
        except ValueError:
            continue
        out[i] = float(np.linalg.norm(map_points(fit.matrix, src[i:i + 1])[0] - dst[i]))
    return out


def rms(values) -> Optional[float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.sqrt(np.mean(v * v))) if v.size else None


def error_budget(*, sigma_em: Optional[float], sigma_lm: Optional[float], sigma_alignment: float, fre: float,
                 tre_loo: Optional[float], pairs: Sequence[dict], unit: str = "nm", **extra) -> dict:
    """The ``error_budget`` dict of ``transform.json`` (keys ``sigma_em_nm``, … with ``unit`` as suffix)."""
    def r(v):
        return None if v is None else round(float(v), 3)
    out = {f"sigma_em_{unit}": r(sigma_em), f"sigma_lm_{unit}": r(sigma_lm),
           f"sigma_alignment_{unit}": r(sigma_alignment),
           f"sigma_total_{unit}": r(total_sigma(sigma_em, sigma_lm, sigma_alignment)),
           f"fre_{unit}": r(fre), f"tre_loo_{unit}": r(tre_loo), "n_matched": len(pairs), "unit": unit,
           "convention": CONVENTION}
    out.update({k: (r(v) if isinstance(v, (float, np.floating)) else v) for k, v in extra.items()})
    out["pairs"] = list(pairs)
    return out
