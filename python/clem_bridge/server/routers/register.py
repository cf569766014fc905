"""``POST /v1/register``: queue a registration job (EM = fixed, LM = moving)."""
from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile

from ..schemas import ErrorBody, Job, RegisterParams
from ..submit import parse_params, submit_job, wait_and_reply
from . import ERRORS

router = APIRouter()


@router.post("/register", status_code=202, response_model=Job,
             responses={200: {"model": Job, "description": "finished within `wait` seconds"},
                        429: {"model": ErrorBody}, **ERRORS},
             summary="Register an LM image (moving) onto an EM image (fixed)")
async def register(request: Request, response: Response,
                   em: Annotated[UploadFile, File(description="EM image (fixed), one channel")],
                   lm: Annotated[UploadFile, File(description="LM image (moving), one or more channels")],
                   extra: Annotated[Optional[list[UploadFile]], File(description="extra LM channels, "
                                                                      "same size as the LM image")] = None,
                   params: Annotated[str, Form(description="JSON object, see RegisterParams")] = "{}",
                   wait: Annotated[float, Query(ge=0, le=86400, description="seconds to wait for the result")] = 0):
    p = parse_params(RegisterParams, params)
    job = await submit_job(request, "register", p, {"em": [em], "lm": [lm], "extra": extra or []})
    return await wait_and_reply(request, response, job, wait)
