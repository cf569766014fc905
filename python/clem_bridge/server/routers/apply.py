"""``POST /v1/apply``: warp uploaded LM image(s) onto an EM canvas with a given matrix; returns a TIFF.

The warp runs on the app's bounded apply worker (``app.state.apply_worker``), never on the request
thread pool; when all its slots are taken the answer is 429 with ``Retry-After``.  The TIFF is
streamed from a scratch file that is removed once sent.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from ... import io
from ...workflows.jobs import apply_transform
from ..errors import ApiError
from ..pool import Busy
from ..schemas import ApplyParams, ErrorBody
from ..submit import parse_params, save_upload
from . import ERRORS

router = APIRouter()


def _warp(images: list[UploadFile], p: ApplyParams, tmp: Path, max_pixels: int) -> Path:
    paths = [save_upload(f, tmp / str(k)) for k, f in enumerate(images)]
    warped = apply_transform(paths, p.fixed_to_moving, p.fixed_shape, interpolation=p.interpolation,
                             max_pixels=max_pixels)
    return io.write_tiff(tmp / "warped.tif", warped, pixel_size=p.pixel_size)


@router.post("/apply", response_class=FileResponse,
             responses={200: {"content": {"image/tiff": {}}}, 429: {"model": ErrorBody}, **ERRORS},
             summary="Apply a fixed_to_moving matrix to LM image(s); returns a calibrated (C,H,W) TIFF")
async def apply(request: Request,
                images: Annotated[list[UploadFile], File(description="LM image(s); all channels are warped")],
                params: Annotated[str, Form(description="JSON object, see ApplyParams")]) -> FileResponse:
    p = parse_params(ApplyParams, params)
    state = request.app.state
    tmp = Path(tempfile.mkdtemp(dir=state.tmp_dir))
    try:
        out = await state.apply_worker.run(_warp, images, p, tmp, state.settings.max_pixels)
    except Busy:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ApiError(429, "The server is busy applying other transforms; retry in 1 s.", "queue_full",
                       headers={"Retry-After": "1"}) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FileResponse(out, media_type="image/tiff", filename="warped.tif",
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))
