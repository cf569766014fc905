"""The ``Registration`` result object returned by every registration function."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .schema import STATUSES, PixelSize, PixelSizes, TransformRecord
from .transforms import as_matrix


def _matrix(m, ndim: int) -> np.ndarray:
    """A finite, invertible homogeneous matrix of size ``ndim + 1`` (3×3 in 2-D, 4×4 in 3-D)."""
    if ndim == 2:
        return as_matrix(m)
    a = np.asarray(m, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)) or not np.allclose(a[3], [0, 0, 0, 1]):
        raise ValueError(f"expected a finite 4x4 affine matrix with last row [0, 0, 0, 1], got shape {a.shape}")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise ValueError("the affine matrix is singular")
    return a


@dataclass
class Registration:
    """Outcome of a registration, in the convention of :mod:`clem_bridge.transforms`."""
    fixed_to_moving: np.ndarray
    fixed_shape: tuple[int, int]
    moving_shape: tuple[int, int]
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    mi_curve: list[float] = field(default_factory=list)
    iterations: int = 0
    device: str = "cpu"
    fixed_pixel_size: Optional[PixelSize] = None
    moving_pixel_size: Optional[PixelSize] = None
    warnings: list[str] = field(default_factory=list)
    status: Optional[str] = None            # None: derived from the warnings (see :attr:`outcome`)
    error_budget: Optional[dict[str, Any]] = None
    ndim: int = 2

    @property
    def outcome(self) -> str:
        """``ok``, ``uncertain`` (there are warnings) or ``failed``; an explicit :attr:`status` wins."""
        if self.status is not None:
            if self.status not in STATUSES:
                raise ValueError(f"unknown status {self.status!r}")
            return self.status
        return "uncertain" if self.warnings else "ok"

    @property
    def moving_to_fixed(self) -> np.ndarray:
        return np.linalg.inv(self.fixed_to_moving)

    def to_record(self) -> TransformRecord:
        """The JSON record; a metric or timing that is NaN/inf (e.g. a failed ECC) is left out with a
        warning, so the file always reads back and nobody mistakes a missing number for a good one."""
        metrics, timings = _finite(self.metrics), _finite(self.timings)
        curve = [float(v) for v in self.mi_curve if np.isfinite(v)]
        dropped = sorted(set(self.metrics) - set(metrics)) + sorted(set(self.timings) - set(timings))
        dropped += ["mi_curve values"] if len(curve) < len(self.mi_curve) else []
        warnings = list(self.warnings)
        if dropped:
            warnings.append(f"could not compute {', '.join(dropped)} (not a finite number; left out)")
        return TransformRecord(
            fixed_to_moving=self.fixed_to_moving.tolist(),
            moving_to_fixed=self.moving_to_fixed.tolist(),
            fixed_shape=list(self.fixed_shape), moving_shape=list(self.moving_shape),
            pixel_size=PixelSizes(fixed=self.fixed_pixel_size, moving=self.moving_pixel_size),
            method=self.method, params=self.params, metrics=metrics, timings=timings,
            iterations=self.iterations, device=self.device,
            mi_curve=curve,
            warnings=warnings, status=self.status or ("uncertain" if warnings else "ok"), ndim=self.ndim,
            error_budget=self.error_budget)

    @classmethod
    def from_record(cls, rec: TransformRecord) -> "Registration":
        return cls(fixed_to_moving=_matrix(rec.fixed_to_moving, rec.ndim), fixed_shape=tuple(rec.fixed_shape),
                   moving_shape=tuple(rec.moving_shape), method=rec.method, params=rec.params,
                   metrics=rec.metrics, timings=rec.timings, mi_curve=rec.mi_curve,
                   iterations=rec.iterations, device=rec.device,
                   fixed_pixel_size=rec.pixel_size.fixed, moving_pixel_size=rec.pixel_size.moving,
                   warnings=list(rec.warnings), status=rec.status, error_budget=rec.error_budget, ndim=rec.ndim)

    def save_json(self, path) -> Path:
        p = Path(path)
        p.write_text(self.to_record().model_dump_json(indent=2))
        return p


def _finite(values: dict) -> dict:
    return {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}


def load_transform_json(path) -> Registration:
    """Read a ``transform.json`` written by the CLI or the server."""
    return Registration.from_record(TransformRecord.model_validate(json.loads(Path(path).read_text())))
