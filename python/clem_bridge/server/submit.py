"""Submitting a job: save the uploads, run the job type's ``prepare`` (validation), enqueue."""
from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from fastapi import Request, Response, UploadFile
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from .errors import ApiError
from .manager import JobManager, QueueFull
from .schemas import TERMINAL, Job

P = TypeVar("P", bound=BaseModel)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def parse_params(model: type[P], text: str) -> P:
    """Validate the JSON ``params`` form part; a 422 naming the first problem otherwise."""
    try:
        return model.model_validate_json(text or "{}")
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ApiError(422, f"params: {where + ': ' if where else ''}{err['msg']}", "invalid_params") from None


def save_upload(upload: UploadFile, dest_dir: Path) -> Path:
    """Copy an upload into the new folder ``dest_dir`` under a sanitised form of its file name."""
    name = _UNSAFE.sub("_", Path(upload.filename or "").name)[-100:].lstrip(".") or "upload"
    dest_dir.mkdir(parents=True)
    dest = dest_dir / name
    upload.file.seek(0)
    with open(dest, "wb") as f:
        shutil.copyfileobj(upload.file, f, 1 << 20)
    return dest


def _create(request: Request, job_type: str, params: dict, uploads: dict[str, list[UploadFile]]) -> Job:
    state = request.app.state
    store, manager = state.store, state.manager
    job_id = store.new_id()
    store.create_dirs(job_id)
    try:
        raw = store.dir(job_id) / "uploads"
        saved = {field: [save_upload(f, raw / field / str(k)) for k, f in enumerate(files)]
                 for field, files in uploads.items()}
        inputs_dir = store.inputs_dir(job_id)
        inputs = manager.types[job_type].prepare(saved, params, inputs_dir, state.settings.max_pixels)
        shutil.rmtree(raw, ignore_errors=True)
        job = Job(id=job_id, type=job_type, created=datetime.now(timezone.utc), params=params,
                  inputs={k: str(p.relative_to(inputs_dir)) for k, p in inputs.items()})
        return manager.enqueue(job)
    except BaseException:
        store.delete(job_id)
        raise


async def submit_job(request: Request, job_type: str, params: BaseModel,
                     uploads: dict[str, list[UploadFile]]) -> Job:
    """Validate and queue a job; 422 for bad input, 429 (Retry-After) when the queue is full."""
    manager: JobManager = request.app.state.manager
    try:
        manager.check_capacity()
        return await run_in_threadpool(_create, request, job_type, params.model_dump(mode="json"), uploads)
    except QueueFull as e:
        raise ApiError(429, f"The job queue is full ({manager.max_queue} jobs waiting); retry in "
                       f"{e.retry_after} s.", headers={"Retry-After": str(e.retry_after)}) from None


async def wait_and_reply(request: Request, response: Response, job: Job, wait: float) -> Job:
    """Wait up to ``wait`` s (capped by the server) for the job; 200 when finished, else 202."""
    if wait > 0:
        job = await request.app.state.manager.wait(job.id, min(wait, request.app.state.settings.max_wait_s)) or job
    response.status_code = 200 if job.status in TERMINAL else 202
    return job
