"""The FastAPI application factory."""
from __future__ import annotations

import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Mapping, Optional

from fastapi import FastAPI

from .. import __version__
from ..device import device_label, select_device
from . import errors
from .guard import Guard
from .manager import JobManager
from .pool import BoundedWorker
from .routers import apply, chromatin, fiducials, health, jobs, register, register3d
from .settings import Settings, check
from .store import JobStore

DESCRIPTION = """Registration of correlative light and electron microscopy images (EM = fixed, LM = moving).

Matrices follow one convention: pixel coordinates, x right, y down, origin at the centre of the
top-left pixel; `fixed_to_moving` maps an EM pixel to an LM pixel. Every error is JSON
`{"error": code, "detail": sentence}`. When the server has a token, every `/v1` route except
`/v1/health` needs the header `Authorization: Bearer <token>`; without a token the server answers
only requests whose `Host` header is `127.0.0.1`, `localhost` or `[::1]` (DNS-rebinding protection).

Jobs live under the data dir and survive restarts: a job that was running when the server stopped
is reported `interrupted`; queued jobs are queued again; finished jobs older than `--keep-days` are
deleted at start-up. `DELETE /v1/jobs/{id}` cancels a queued or running job (between iterations) and
deletes a finished one. A registration that ran but did not succeed is a `done` job whose result (and
`result_status`) says `failed`; a job `failed` means it could not run (bad input, full disk, error).

Error codes: 401 `unauthorized` (missing/wrong token), 403 `forbidden_host` (Host header not loopback
on a server without token), 404 `not_found` (job, artifact or route),
409 `not_done` (result of an unfinished job), 413 `payload_too_large` (`--max-upload-mb`),
422 `invalid_input` (unreadable, truncated, empty, constant or NaN image, mismatched channel sizes,
more pixels than `--max-pixels`), `invalid_params` (the JSON `params` part), `invalid_request`
(missing or malformed form fields), 429 `queue_full` (with `Retry-After`), 500 `internal_error`,
507 `insufficient_storage` (the data dir's disk is full or below `--min-free-mb`)."""


def _document_bearer(app: FastAPI) -> None:
    """Declare the bearer token (enforced by :class:`Guard`) in the OpenAPI schema, so ``/docs`` can send it."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, operations in schema["paths"].items():
                for op in operations.values():
                    op["security"] = [] if path == "/v1/health" else [{"bearer": []}]
        return app.openapi_schema

    app.openapi = openapi


def create_app(settings: Settings, extra_job_types: Optional[Mapping] = None) -> FastAPI:
    """Build the app: checks settings, selects the device and recovers jobs from ``settings.data_dir``
    (deleting finished ones older than ``settings.keep_days``).  ``extra_job_types`` (name →
    :class:`~clem_bridge.workflows.jobs.JobType`) adds job types to the built-in ones (plug-ins, tests)."""
    check(settings)
    device = select_device(settings.device)
    store = JobStore(settings.data_dir)
    manager = JobManager(store, device=str(device), max_queue=settings.max_queue, keep_days=settings.keep_days,
                         extra_types=extra_job_types)
    apply_worker = BoundedWorker(1, settings.max_queue, "clem-bridge-apply")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.start()
        yield
        manager.stop()
        apply_worker.shutdown()
        store.close()

    app = FastAPI(title="clem-bridge", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.store, app.state.manager = settings, store, manager
    app.state.apply_worker = apply_worker
    app.state.device_label, app.state.started = device_label(device), time.monotonic()
    app.state.tmp_dir = Path(settings.data_dir) / "tmp"        # /v1/apply scratch; leftovers of a crash go
    shutil.rmtree(app.state.tmp_dir, ignore_errors=True)
    app.state.tmp_dir.mkdir(parents=True)
    errors.install(app)
    for module in (health, register, jobs, apply, chromatin, fiducials, register3d):
        app.include_router(module.router, prefix="/v1")
    app.add_middleware(Guard, token=settings.token, max_body=settings.max_upload_bytes, free_bytes=store.free_bytes,
                       min_free=settings.min_free_bytes)
    if settings.token:
        _document_bearer(app)
    return app
