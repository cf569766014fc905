"""``GET /v1/health``."""
from __future__ import annotations

import time

from fastapi import APIRouter, Request

from ... import __version__
from ...workflows import jobs as job_types
from ..schemas import Health

router = APIRouter()


@router.get("/health", response_model=Health,
            summary="Server version, device, queue, uptime, worker liveness and free disk")
def health(request: Request) -> Health:
    state = request.app.state
    queued, running = state.manager.counts()
    free, min_free = state.store.free_bytes(), state.settings.min_free_bytes
    alive = state.manager.worker_alive
    return Health(status="ok" if alive and free >= min_free else "degraded", version=__version__,
                  device=state.device_label, models=job_types.loaded_models(), job_types=sorted(state.manager.types),
                  queued=queued, running=running, uptime_s=time.monotonic() - state.started,
                  worker="alive" if alive else "stopped", disk_free_mb=round(free / 2**20, 1),
                  min_free_mb=state.settings.min_free_mb)
