"""``POST /v1/apply``: warp uploaded LM image(s) onto an EM canvas with a given matrix; returns a TIFF."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from ... import io
from ...jobs import apply_transform
from ..schemas import ApplyParams
from ..submit import parse_params, save_upload
from . import ERRORS

router = APIRouter()


@router.post("/apply", response_class=Response, responses={200: {"content": {"image/tiff": {}}}, **ERRORS},
             summary="Apply a fixed_to_moving matrix to LM image(s); returns a calibrated (C,H,W) TIFF")
def apply(request: Request,
          images: Annotated[list[UploadFile], File(description="LM image(s); all channels are warped")],
          params: Annotated[str, Form(description="JSON object, see ApplyParams")]) -> Response:
    p = parse_params(ApplyParams, params)
    settings = request.app.state.settings
    with tempfile.TemporaryDirectory(dir=request.app.state.tmp_dir) as tmp:
        paths = [save_upload(f, Path(tmp) / str(k)) for k, f in enumerate(images)]
        warped = apply_transform(paths, p.fixed_to_moving, p.fixed_shape, interpolation=p.interpolation,
                                    max_pixels=settings.max_pixels)
        out = Path(tmp) / "warped.tif"
        io.write_tiff(out, warped, pixel_size=p.pixel_size)
        return Response(out.read_bytes(), media_type="image/tiff",
                        headers={"Content-Disposition": 'attachment; filename="warped.tif"'})
