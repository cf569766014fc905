"""MINE registration engine (TFUDL-CLEM / DRMIME) — being written."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Progress:
    """One progress report: ``stage`` name, iteration in that stage, MI estimate, overall fraction 0–1."""
    stage: str
    iteration: int
    total: Optional[int]
    mi: Optional[float]
    fraction: float


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]


@dataclass
class MineParams:
    pass


def register_mine(fixed, moving, **kw):
    raise NotImplementedError
