"""Progress reports and cancellation hooks shared by the engines, workflows, server and client (no torch)."""
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
