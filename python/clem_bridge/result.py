"""The ``Registration`` result object returned by every registration function."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .schema import PixelSize, PixelSizes, TransformRecord
from .transforms import as_matrix


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

    @property
    def moving_to_fixed(self) -> np.ndarray:
        return np.linalg.inv(self.fixed_to_moving)

    def to_record(self) -> TransformRecord:
        return TransformRecord(
            fixed_to_moving=self.fixed_to_moving.tolist(),
            moving_to_fixed=self.moving_to_fixed.tolist(),
            fixed_shape=list(self.fixed_shape), moving_shape=list(self.moving_shape),
            pixel_size=PixelSizes(fixed=self.fixed_pixel_size, moving=self.moving_pixel_size),
            method=self.method, params=self.params, metrics=self.metrics, timings=self.timings,
            iterations=self.iterations, device=self.device, mi_curve=[float(v) for v in self.mi_curve],
            warnings=list(self.warnings))

    @classmethod
    def from_record(cls, rec: TransformRecord) -> "Registration":
        return cls(fixed_to_moving=as_matrix(rec.fixed_to_moving), fixed_shape=tuple(rec.fixed_shape),
                   moving_shape=tuple(rec.moving_shape), method=rec.method, params=rec.params,
                   metrics=rec.metrics, timings=rec.timings, mi_curve=rec.mi_curve,
                   iterations=rec.iterations, device=rec.device,
                   fixed_pixel_size=rec.pixel_size.fixed, moving_pixel_size=rec.pixel_size.moving,
                   warnings=list(rec.warnings))

    def save_json(self, path) -> Path:
        p = Path(path)
        p.write_text(self.to_record().model_dump_json(indent=2))
        return p


def load_transform_json(path) -> Registration:
    """Read a ``transform.json`` written by the CLI or the server."""
    return Registration.from_record(TransformRecord.model_validate(json.loads(Path(path).read_text())))
