"""``POST /v1/register3d``: queue a 3-D registration job (EM volume = fixed, LM Z stack = moving)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile

from ..schemas import ErrorBody, Job, Register3DParams
from ..submit import parse_params, submit_job, wait_and_reply
from . import ERRORS

router = APIRouter()


@router.post("/register3d", status_code=202, response_model=Job,
             responses={200: {"model": Job, "description": "finished within `wait` seconds"},
                        429: {"model": ErrorBody}, **ERRORS},
             summary="Register an LM Z stack (moving) onto an EM volume (fixed) in 3-D (artifacts: transform.json "
                     "with ndim 3, lm_warped.tif hyperstack, overlay.png, mi_curve.png, bigwarp_landmarks3d.csv, "
                     "moving-bigWarp.xml)")
async def register3d(request: Request, response: Response,
                     em: Annotated[UploadFile, File(description="EM volume (fixed): ImageJ hyperstack or OME-TIFF, "
                                                               "one channel")],
                     lm: Annotated[UploadFile, File(description="LM Z stack (moving), one or more channels")],
                     params: Annotated[str, Form(description="JSON object, see Register3DParams")] = "{}",
                     wait: Annotated[float, Query(ge=0, le=86400, description="seconds to wait for the result")] = 0):
    p = parse_params(Register3DParams, params)
    job = await submit_job(request, "register3d", p, {"em": [em], "lm": [lm]})
    return await wait_and_reply(request, response, job, wait)
