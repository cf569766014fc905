"""``POST /v1/fiducials``: register an LM image onto an EM image by fiducial beads, with an error budget;
``POST /v1/landmarks``: fit clicked landmark pairs (e.g. ImageJ multi-point ROIs) with the same report."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from fastapi.concurrency import run_in_threadpool

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from ...schema import PixelSize, TransformRecord
from ...workflows.fiducials import landmarks_record
from ..schemas import ErrorBody, Job
from ..submit import parse_params, submit_job, wait_and_reply
from . import ERRORS

router = APIRouter()


class FiducialsParams(BaseModel):
    """JSON ``params`` part of ``POST /v1/fiducials``."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    bead_nm: float = Field(200.0, gt=0, le=100000, description="bead diameter (nm)")
    model: Optional[Literal["rigid", "similarity", "affine"]] = Field(None, description="fitted transform "
                                                                      "(default similarity)")
    polarity: Literal["auto", "dark", "bright"] = Field("auto", description="EM beads dark, bright or auto")
    lm_channel: int = Field(0, ge=0, le=1023, description="LM channel with the fluorescent beads")
    localisation: Literal["quadratic", "gaussian"] = Field("quadratic", description="sub-pixel bead fit")
    em_pixel_size: Optional[PixelSize] = Field(None, description="overrides the EM file's calibration")
    lm_pixel_size: Optional[PixelSize] = Field(None, description="overrides the LM file's calibration")


@router.post("/fiducials", status_code=202, response_model=Job,
             responses={200: {"model": Job, "description": "finished within `wait` seconds"},
                        429: {"model": ErrorBody}, **ERRORS},
             summary="Register by fiducial beads (artifacts: transform.json with error_budget, lm_warped.tif, "
                     "overlay.png, tre_map.png, fusion.png, bead_landmarks.csv)")
async def fiducials(request: Request, response: Response,
                    em: Annotated[UploadFile, File(description="EM/SXT image (fixed) with beads")],
                    lm: Annotated[UploadFile, File(description="LM image (moving) with the beads fluorescent")],
                    params: Annotated[str, Form(description="JSON object, see FiducialsParams")] = "{}",
                    wait: Annotated[float, Query(ge=0, le=86400, description="seconds to wait for the result")] = 0):
    p = parse_params(FiducialsParams, params)
    job = await submit_job(request, "fiducials", p, {"em": [em], "lm": [lm]})
    return await wait_and_reply(request, response, job, wait)


_Point = Annotated[list[float], Field(min_length=2, max_length=2)]


class LandmarksParams(BaseModel):
    """JSON body of ``POST /v1/landmarks``: point pairs in pixels (x right, y down, centre of the top-left pixel
    at 0, 0), ``fixed`` on the EM and ``moving`` on the LM, in the same order."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    fixed: list[_Point] = Field(min_length=3, max_length=10000, description="EM points [[x, y], ...]")
    moving: list[_Point] = Field(min_length=3, max_length=10000, description="LM points [[x, y], ...]")
    model: Literal["rigid", "similarity", "affine"] = "affine"
    fixed_shape: Optional[list[Annotated[int, Field(gt=0)]]] = Field(None, min_length=2, max_length=2,
                                                                     description="EM [height, width]")
    moving_shape: Optional[list[Annotated[int, Field(gt=0)]]] = Field(None, min_length=2, max_length=2,
                                                                      description="LM [height, width]")
    fixed_pixel_size: Optional[PixelSize] = None
    moving_pixel_size: Optional[PixelSize] = None


@router.post("/landmarks", response_model=TransformRecord, responses=ERRORS,
             summary="Fit landmark pairs (affine/similarity/rigid) and return the transform with its error budget")
async def landmarks(p: LandmarksParams):
    return await run_in_threadpool(landmarks_record, p.fixed, p.moving, model=p.model, fixed_shape=p.fixed_shape,
                                   moving_shape=p.moving_shape, fixed_pixel_size=p.fixed_pixel_size,
                                   moving_pixel_size=p.moving_pixel_size)
