"""Independent accuracy of any registration (MINE, DeepCLEM, …) measured at fiducial beads it never used."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..result import Registration
from ..transforms import apply_to_points, as_matrix
from .budget import rms
from .register import tre_grid


def validate_transform(fixed_to_moving, beads: Registration, *, grid: int = 32) -> dict:
    """Error of ``fixed_to_moving`` (EM px → LM px) at the beads matched by :func:`register_fiducials`.

    ``bead_rms``: RMS distance (budget unit, EM frame) between each EM bead and its LM bead mapped back
    by the tested transform, next to ``bead_localisation`` (the beads' own √(σ_EM² + σ_LM²)), which bounds
    how small it can be.  ``field_rms``: RMS difference over the EM field between the tested transform and
    the bead transform (EM frame), whose own uncertainty is ``field_uncertainty`` (its σ_alignment).
    """
    b = beads.error_budget
    if not b or not b.get("pairs"):
        raise InputError("the bead registration has no matched beads to validate against")
    if beads.method not in ("fiducials", "landmarks"):
        raise InputError("validation needs a fiducial or landmark registration")
    try:
        f2m = as_matrix(fixed_to_moving)
    except ValueError as e:
        raise InputError(f"invalid transform to validate: {e}") from None
    unit = b["unit"]
    scale = b["fit"]["fixed_unit_per_px"]
    em = np.array([p["fixed_px"] for p in b["pairs"]])
    lm = np.array([p["moving_px"] for p in b["pairs"]])
    per_bead = np.linalg.norm(apply_to_points(np.linalg.inv(f2m), lm) - em, axis=1) * scale
    h, w = beads.fixed_shape
    xs, ys = np.meshgrid(np.linspace(0, w - 1, grid), np.linspace(0, h - 1, grid))
    pts = np.stack([xs.ravel(), ys.ravel()], 1)
    field = np.linalg.norm(apply_to_points(beads.moving_to_fixed, apply_to_points(f2m, pts)) - pts, axis=1) * scale
    sig = [np.hypot(p.get("sigma_em") or 0.0, p.get("sigma_lm") or 0.0) for p in b["pairs"]]
    return {"unit": unit, "n_beads": len(em), "bead_rms": rms(per_bead), "bead_max": float(per_bead.max()),
            "bead_localisation": rms(sig), "field_rms": rms(field), "field_max": float(field.max()),
            "field_uncertainty": float(np.sqrt(np.mean(tre_grid(b, beads.fixed_shape, n=grid) ** 2))),
            "per_bead": [round(float(v), 3) for v in per_bead]}
