"""Pydantic models of the HTTP API (requests, responses, the persisted ``job.json``)."""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..schema import PixelSize, Status


class ErrorBody(BaseModel):
    """Every error response: a machine code and one human sentence."""
    error: str
    detail: str


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"


TERMINAL = {JobState.done, JobState.failed, JobState.cancelled, JobState.interrupted}


class Job(BaseModel):
    """A job's status; also the content of ``<data-dir>/jobs/<id>/job.json``."""
    id: str
    type: str
    status: JobState = JobState.queued
    created: datetime
    started: Optional[datetime] = None
    finished: Optional[datetime] = None
    stage: Optional[str] = None
    iteration: Optional[int] = None
    total: Optional[int] = None
    progress: float = Field(0.0, ge=0.0, le=1.0)
    mi: Optional[float] = None
    params: dict[str, Any] = {}
    inputs: dict[str, str] = {}
    timings: dict[str, float] = {}
    error: Optional[ErrorBody] = None
    artifacts: list[str] = []
    result: Optional[dict[str, Any]] = Field(None, description="the job's result (transform record for "
                                             "'register') once done; omitted in listings")
    result_status: Optional[Status] = Field(None, description="the result's own status once done: ok, uncertain "
                                            "(see its warnings) or failed (the registration did not succeed)")


class JobList(BaseModel):
    jobs: list[Job]


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded: the worker is not running or the disk is "
                                              "nearly full (see worker, disk_free_mb)")
    version: str
    device: str
    models: list[str]
    job_types: list[str]
    queued: int
    running: int
    uptime_s: float
    worker: Literal["alive", "stopped"] = Field(description="the compute worker thread that runs the jobs")
    disk_free_mb: float = Field(description="free space under the data dir")
    min_free_mb: float = Field(description="uploads are refused (507) when less than this would remain")


class RegisterParams(BaseModel):
    """JSON ``params`` part of ``POST /v1/register``."""
    model_config = ConfigDict(extra="forbid")
    preset: Literal["fast", "thesis"] = "fast"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    reg_channel: int = Field(0, ge=0, le=1023, description="channel of the LM upload used for registration")
    channels: Optional[list[Annotated[int, Field(ge=0, le=1023)]]] = Field(
        None, max_length=1024, description="channels of the LM stack (LM upload channels, then extra uploads) "
        "to warp; default all")
    em_pixel_size: Optional[PixelSize] = Field(None, description="overrides the EM file's calibration")
    lm_pixel_size: Optional[PixelSize] = Field(None, description="overrides the LM file's calibration")
    prepare: bool = Field(False, description="first find the EM field of view in the LM (pixel-size ratio, crop, "
                          "rotation); the result still maps EM pixels to original LM pixels")
    psr: Optional[float] = Field(None, gt=0, le=1000, description="with prepare: LM/EM pixel size ratio used as "
                                 "is (default: the calibrations' ratio, refined automatically)")


_Voxel = Optional[list[Annotated[float, Field(gt=0, le=1e6)]]]


class Register3DParams(BaseModel):
    """JSON ``params`` part of ``POST /v1/register3d``."""
    model_config = ConfigDict(extra="forbid")
    method: Literal["mine", "mi"] = Field("mine", description="3-D refinement: MINE or classical histogram MI")
    tilt_search: bool = Field(True, description="coarse search of tilts about x and y in the pre-alignment")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    reg_channel: int = Field(0, ge=0, le=1023, description="channel of the LM stack used for registration")
    channels: Optional[list[Annotated[int, Field(ge=0, le=1023)]]] = Field(
        None, max_length=1024, description="channels of the LM stack to warp; default all")
    em_voxel: _Voxel = Field(None, min_length=3, max_length=3,
                             description="EM voxel size [x, y, z] in µm; overrides the file's calibration")
    lm_voxel: _Voxel = Field(None, min_length=3, max_length=3,
                             description="LM voxel size [x, y, z] in µm; overrides the file's calibration")


class ApplyParams(BaseModel):
    """JSON ``params`` part of ``POST /v1/apply``."""
    model_config = ConfigDict(extra="forbid")
    fixed_to_moving: list[list[float]] = Field(description="3x3 (or 2x3) matrix, fixed (EM) pixel -> moving (LM) pixel")
    fixed_shape: list[int] = Field(min_length=2, max_length=2, description="output canvas [height, width]")
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    pixel_size: Optional[PixelSize] = Field(None, description="calibration of the output TIFF (the EM pixel size)")
