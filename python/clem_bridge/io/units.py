"""Length units of image calibrations: one ASCII spelling per unit and conversions between them."""
from __future__ import annotations

from typing import Optional

from ..errors import InputError

_UNITS = {"um": "um", "µm": "um", "μm": "um", "micron": "um", "microns": "um", "micrometer": "um",
          "micrometre": "um", "\\u00b5m": "um", "nm": "nm", "nanometer": "nm", "nanometre": "nm",
          "mm": "mm", "millimeter": "mm", "cm": "cm", "m": "m", "pm": "pm", "å": "A", "angstrom": "A"}


def normalize_unit(unit) -> Optional[str]:
    """ASCII spelling of a length unit ('µm', 'micron', '\\u00B5m' → 'um'); None when uncalibrated/unknown."""
    if unit is None:
        return None
    u = str(unit).strip()
    key = u.lower()
    if key in ("", "pixel", "pixels", "px", "none", "reference frame"):
        return None
    return _UNITS.get(key, _UNITS.get(u, None))


_TO_UM = {"pm": 1e-6, "A": 1e-4, "nm": 1e-3, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


def convert_length(value: float, unit: str, to: str) -> float:
    """Convert a length between the units known to :func:`normalize_unit` (ASCII spellings)."""
    try:
        return value * _TO_UM[unit] / _TO_UM[to]
    except KeyError:
        raise InputError(f"unknown length unit {unit!r} or {to!r}") from None
