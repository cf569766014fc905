"""``GET /v1/health``."""
from __future__ import annotations

import time

from fastapi import APIRouter, Request

from ... import __version__
from ... import jobs as job_types
from ..schemas import Health

router = APIRouter()


@router.get("/health", response_model=Health, summary="Server version, device, queue and uptime")
def health(request: Request) -> Health:
    state = request.app.state
    queued, running = state.manager.counts()
    return Health(version=__version__, device=state.device_label, models=job_types.loaded_models(),
                  job_types=sorted(job_types.JOB_TYPES), queued=queued, running=running,
                  uptime_s=time.monotonic() - state.started)
