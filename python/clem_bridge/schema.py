"""The transform JSON (CLI contract), defined once and used by CLI, server and tests."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field

from . import __version__

CONVENTION = ("pixel coordinates, x right, y down, origin at the centre of the top-left pixel; "
              "fixed_to_moving maps fixed (EM) pixel -> moving (LM) pixel")


class PixelSize(BaseModel):
    """Physical size of one pixel (x and y) in ``unit`` (e.g. 'um', 'nm')."""
    x: float = Field(gt=0)
    y: float = Field(gt=0)
    unit: str = "um"


class PixelSizes(BaseModel):
    fixed: Optional[PixelSize] = None
    moving: Optional[PixelSize] = None


class TransformRecord(BaseModel):
    """Content of ``transform.json``; shapes are ``[height, width]``."""
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
    convention: str = CONVENTION
    version: str = __version__
