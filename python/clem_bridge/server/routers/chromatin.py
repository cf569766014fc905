"""``POST /v1/predict/chromatin`` and ``POST /v1/correlate``: DeepCLEM jobs (chromatin prediction, correlation)."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from ...insilico import DEFAULT_MODEL
from ...schema import PixelSize
from ..schemas import ErrorBody, Job
from ..submit import parse_params, submit_job, wait_and_reply
from . import ERRORS

router = APIRouter()
_MODEL = Field(DEFAULT_MODEL, min_length=1, max_length=100, description="model name under the server's models/")
_RESPONSES = {200: {"model": Job, "description": "finished within `wait` seconds"}, 429: {"model": ErrorBody},
              **ERRORS}


class PredictChromatinParams(BaseModel):
    """JSON ``params`` part of ``POST /v1/predict/chromatin``."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str = _MODEL
    em_pixel_size: Optional[PixelSize] = Field(None, description="overrides the EM file's calibration")


class CorrelateParams(BaseModel):
    """JSON ``params`` part of ``POST /v1/correlate``."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str = _MODEL
    chromatin_channel: Optional[int] = Field(None, ge=0, le=1023, description="channel of the chromatin upload "
                                             "holding the chromatin stain; default blue of RGB, or the only one")
    channels: Optional[list[Annotated[int, Field(ge=0, le=1023)]]] = Field(
        None, max_length=1024, description="channels (chromatin upload, then extra uploads) to warp; default all")
    max_rotation: float = Field(180.0, ge=0, le=180, description="rotation search range, ± degrees")
    transform: Literal["similarity", "affine"] = Field("similarity", description="refined transform model")
    nuclei_refinement: bool = Field(True, description="finish by aligning the chromatin with the EM's dense "
                                    "heterochromatin inside the nuclei")
    scale_from_pixel_size: bool = Field(True, description="with both images calibrated, use the pixel sizes' "
                                        "ratio as the scale when the fitted scale is within 6 % of it")
    em_pixel_size: Optional[PixelSize] = Field(None, description="overrides the EM file's calibration")
    chromatin_pixel_size: Optional[PixelSize] = Field(None, description="overrides the chromatin file's calibration")


@router.post("/predict/chromatin", status_code=202, response_model=Job, responses=_RESPONSES,
             summary="Predict the chromatin stain of an EM image (artifact predicted_chromatin.tif)")
async def predict_chromatin(request: Request, response: Response,
                            em: Annotated[UploadFile, File(description="EM image, one channel")],
                            params: Annotated[str, Form(description="JSON object, see PredictChromatinParams")] = "{}",
                            wait: Annotated[float, Query(ge=0, le=86400, description="seconds to wait")] = 0):
    p = parse_params(PredictChromatinParams, params)
    job = await submit_job(request, "predict_chromatin", p, {"em": [em]})
    return await wait_and_reply(request, response, job, wait)


@router.post("/correlate", status_code=202, response_model=Job, responses=_RESPONSES,
             summary="DeepCLEM: predict chromatin from the EM, register it to the measured chromatin, warp channels")
async def correlate(request: Request, response: Response,
                    em: Annotated[UploadFile, File(description="EM image (fixed), one channel")],
                    chromatin: Annotated[UploadFile, File(description="measured chromatin (moving); RGB → blue")],
                    extra: Annotated[Optional[list[UploadFile]], File(description="extra LM channels on the "
                                                                      "chromatin grid")] = None,
                    params: Annotated[str, Form(description="JSON object, see CorrelateParams")] = "{}",
                    wait: Annotated[float, Query(ge=0, le=86400, description="seconds to wait")] = 0):
    p = parse_params(CorrelateParams, params)
    job = await submit_job(request, "correlate", p, {"em": [em], "chromatin": [chromatin], "extra": extra or []})
    return await wait_and_reply(request, response, job, wait)
