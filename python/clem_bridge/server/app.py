"""The FastAPI application factory."""
from __future__ import annotations

import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from .. import __version__
from ..device import device_label, select_device
from . import errors
from .guard import Guard
from .manager import JobManager
from .routers import apply, chromatin, health, jobs, register
from .settings import Settings, check
from .store import JobStore

DESCRIPTION = """Registration of correlative light and electron microscopy images (EM = fixed, LM = moving).

Matrices follow one convention: pixel coordinates, x right, y down, origin at the centre of the
top-left pixel; `fixed_to_moving` maps an EM pixel to an LM pixel. Every error is JSON
`{"error": code, "detail": sentence}`. When the server has a token, every `/v1` route except
`/v1/health` needs the header `Authorization: Bearer <token>`.

Jobs live under the data dir and survive restarts: a job that was running when the server stopped
is reported `interrupted`; queued jobs are queued again. `DELETE /v1/jobs/{id}` cancels a queued or
running job (between iterations) and deletes a finished one.

Error codes: 401 `unauthorized` (missing/wrong token), 404 `not_found` (job, artifact or route),
409 `not_done` (result of an unfinished job), 413 `payload_too_large` (`--max-upload-mb`),
422 `invalid_input` (unreadable, truncated, empty, constant or NaN image, mismatched channel sizes,
more pixels than `--max-pixels`), `invalid_params` (the JSON `params` part), `invalid_request`
(missing or malformed form fields), 429 `queue_full` (with `Retry-After`), 500 `internal_error`."""


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


def create_app(settings: Settings) -> FastAPI:
    """Build the app: checks settings, selects the device and recovers jobs from ``settings.data_dir``."""
    check(settings)
    device = select_device(settings.device)
    store = JobStore(settings.data_dir)
    manager = JobManager(store, device=str(device), max_queue=settings.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.start()
        yield
        manager.stop()

    app = FastAPI(title="clem-bridge", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.store, app.state.manager = settings, store, manager
    app.state.device_label, app.state.started = device_label(device), time.monotonic()
    app.state.tmp_dir = Path(settings.data_dir) / "tmp"        # /v1/apply scratch; leftovers of a crash go
    shutil.rmtree(app.state.tmp_dir, ignore_errors=True)
    app.state.tmp_dir.mkdir(parents=True)
    errors.install(app)
    for module in (health, register, jobs, apply, chromatin):
        app.include_router(module.router, prefix="/v1")
    app.add_middleware(Guard, token=settings.token, max_body=settings.max_upload_bytes)
    if settings.token:
        _document_bearer(app)
    return app
