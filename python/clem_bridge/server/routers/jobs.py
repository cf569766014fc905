"""``/v1/jobs``: list, status (with ``?wait``), result, artifacts, cancel/delete."""
from __future__ import annotations

import mimetypes
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from ..errors import ApiError
from ..schemas import ErrorBody, Job, JobList, JobState
from . import ERRORS

router = APIRouter()


class Deleted(BaseModel):
    id: str
    status: Literal["cancelled", "cancelling", "deleted"]


def _job(request: Request, job_id: str) -> Job:
    job = request.app.state.manager.get(job_id)
    if job is None:
        raise ApiError(404, f"There is no job {job_id!r} on this server.")
    return job


@router.get("/jobs", response_model=JobList, responses=ERRORS, summary="All jobs, oldest first")
def list_jobs(request: Request, status: Annotated[JobState | None, Query()] = None) -> JobList:
    return JobList(jobs=[j for j in request.app.state.manager.list() if status is None or j.status == status])


@router.get("/jobs/{job_id}", response_model=Job, responses=ERRORS,
            summary="Job status, progress and (when done) result")
async def get_job(request: Request, job_id: str,
                  wait: Annotated[float, Query(ge=0, le=86400, description="seconds to wait for the end")] = 0):
    job = _job(request, job_id)
    if wait > 0:
        job = await request.app.state.manager.wait(job_id, min(wait, request.app.state.settings.max_wait_s)) or job
    return job


@router.get("/jobs/{job_id}/result", response_model=dict[str, Any],
            responses={409: {"model": ErrorBody}, **ERRORS},
            summary="The job's result (for 'register': the transform JSON of the CLI contract)")
def get_result(request: Request, job_id: str) -> dict[str, Any]:
    job = _job(request, job_id)
    if job.status != JobState.done or job.result is None:
        why = f": {job.error.detail}" if job.error else ""
        raise ApiError(409, f"Job {job_id} is {job.status.value}, so it has no result{why}", "not_done")
    return job.result


@router.get("/jobs/{job_id}/artifacts/{name}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, **ERRORS},
            summary="Download an output file (warped TIFF, overlay PNG, MI-curve PNG, transform files)")
def get_artifact(request: Request, job_id: str, name: str) -> FileResponse:
    _job(request, job_id)
    path = request.app.state.store.artifact_path(job_id, name)
    if path is None:
        raise ApiError(404, f"Job {job_id} has no artifact {name!r}.")
    return FileResponse(path, media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
                        filename=name)


@router.delete("/jobs/{job_id}", response_model=Deleted, responses=ERRORS,
               summary="Cancel a queued or running job (between iterations); delete a finished one")
def delete_job(request: Request, job_id: str) -> Deleted:
    _job(request, job_id)
    job = request.app.state.manager.cancel_or_delete(job_id)
    if job is None:
        return Deleted(id=job_id, status="deleted")
    return Deleted(id=job_id, status="cancelled" if job.status == JobState.cancelled else "cancelling")
