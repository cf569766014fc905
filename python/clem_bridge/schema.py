"""The transform JSON (CLI contract), defined once and used by CLI, server and tests."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, Field, model_serializer

from . import __version__

CONVENTION = ("pixel coordinates, x right, y down (z down the stack in 3-D), origin at the centre of the "
              "top-left pixel; fixed_to_moving maps fixed (EM) pixel -> moving (LM) pixel")

Status = Literal["ok", "uncertain", "failed"]
STATUSES = ("ok", "uncertain", "failed")


class PixelSize(BaseModel):
    """Physical size of one pixel (x, y and, for stacks, z) in ``unit`` (e.g. 'um', 'nm')."""
    x: float = Field(gt=0)
    y: float = Field(gt=0)
    z: Optional[float] = Field(default=None, gt=0)
    unit: str = "um"

    @model_serializer(mode="wrap")
    def _drop_missing_z(self, handler):
        data = handler(self)
        if data.get("z") is None:
            data.pop("z", None)
        return data


class PixelSizes(BaseModel):
    fixed: Optional[PixelSize] = None
    moving: Optional[PixelSize] = None


class TransformRecord(BaseModel):
    """Content of ``transform.json``; shapes are ``[height, width]`` (``[depth, height, width]`` when
    ``ndim`` is 3, with 4×4 matrices).  ``status`` is ``ok``, ``uncertain`` (see ``warnings``) or
    ``failed``; ``error_budget`` holds the fiducial error report when there is one (nm)."""
    fixed_to_moving: list[list[float]]
    moving_to_fixed: list[list[float]]
    fixed_shape: list[int]
    moving_shape: list[int]
    pixel_size: PixelSizes = PixelSizes()
    method: str
    params: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    timings: dict[str, float] = {}
    iterations: int = 0
    device: str = "cpu"
    mi_curve: list[float] = []
    warnings: list[str] = []
    status: Status = "ok"
    ndim: int = 2
    error_budget: Optional[dict[str, Any]] = None
    convention: str = CONVENTION
    version: str = __version__
