"""Job types: one plain function per job type, used by the server's queue (and usable anywhere).

A job type is a :class:`JobType` in :data:`JOB_TYPES` with two functions:

* ``prepare(uploads, params, inputs_dir, max_pixels) -> dict[str, Path]`` runs when the job is
  submitted: it validates the uploaded files (``uploads`` maps a form-field name to the saved
  files), writes the job's inputs into ``inputs_dir`` and returns them by name.  It raises
  :class:`~clem_bridge.errors.InputError` for bad input, which the server answers with a 4xx
  before anything is queued.
* ``run(inputs, params, out_dir, progress, cancelled) -> dict`` does the work on the compute
  worker.  ``params`` is the validated JSON params plus ``"device"`` (set by the worker),
  ``progress`` takes the engine's :class:`~clem_bridge.register.Progress` and ``cancelled()``
  is the engine's cancellation hook (raise :class:`~clem_bridge.errors.Cancelled` when it
  returns True).  Every file written into ``out_dir`` becomes a downloadable artifact; the
  returned dict's ``"result"`` (JSON-able) is what ``GET /v1/jobs/{id}/result`` returns.

Adding a job type (e.g. ``predict_chromatin``) is: write ``prepare`` and ``run`` here (or in
your module) and add ``JOB_TYPES["predict_chromatin"] = JobType(prepare=..., run=...)``; then
add one route in ``server/routers/`` that validates the params with a pydantic model and calls
``submit_job(request, "predict_chromatin", params, uploads)`` (see ``routers/register.py``).
The queue, persistence, progress, cancellation and HTTP error handling need no change.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from . import io
from .errors import InputError
from .schema import PixelSize
from .transforms import as_matrix, warp_channels

ProgressFn = Callable[[Any], None]
CancelFn = Callable[[], bool]
PrepareFn = Callable[[dict[str, list[Path]], dict, Path, int], dict[str, Path]]
RunFn = Callable[[dict[str, Path], dict, Path, ProgressFn, CancelFn], dict]


@dataclass(frozen=True)
class JobType:
    prepare: PrepareFn
    run: RunFn


_MODELS: dict[str, Any] = {}


def cached_model(name: str, load: Callable[[], Any]) -> Any:
    """Load a model once per process and keep it (``GET /v1/health`` lists the loaded names)."""
    if name not in _MODELS:
        _MODELS[name] = load()
    return _MODELS[name]


def loaded_models() -> list[str]:
    return sorted(_MODELS)


def read_checked(path: Path, name: str, max_pixels: int, need_structure: bool = True) -> io.ImageData:
    """Read an image with the pixel-count guard and check every channel (finite, big enough, not constant)."""
    img = io.read_image(path, max_pixels=max_pixels)
    for c, chan in enumerate(img.data):
        io.check_image(chan, f"{name} channel {c}" if len(img.data) > 1 else name, need_structure=need_structure)
    return img


def _pixel_size(given: Optional[dict], found: Optional[PixelSize]) -> Optional[PixelSize]:
    """An explicit pixel size from the params wins over the file's calibration."""
    return PixelSize.model_validate(given) if given else found


def prepare_register(uploads: dict[str, list[Path]], params: dict, inputs_dir: Path,
                     max_pixels: int) -> dict[str, Path]:
    """Validate EM, LM and extra LM channel files; write them as calibrated TIFFs ``em/*.tif``, ``lm/*.tif`` (C,H,W)."""
    em = read_checked(uploads["em"][0], "the EM image", max_pixels)
    em_grey = io.select_channel(em)
    lm = read_checked(uploads["lm"][0], "the LM image", max_pixels, need_structure=False)
    stack = list(lm.data)
    for k, path in enumerate(uploads.get("extra", [])):
        extra = read_checked(path, f"extra LM image {k + 1}", max_pixels, need_structure=False)
        if extra.data.shape[1:] != lm.data.shape[1:]:
            raise InputError(f"extra LM image {k + 1} is {extra.data.shape[2]}x{extra.data.shape[1]} pixels "
                             f"but the LM image is {lm.data.shape[2]}x{lm.data.shape[1]}; all LM channels "
                             "must have the same size")
        stack.extend(extra.data)
    n = len(stack)
    if params["reg_channel"] >= len(lm.data):
        raise InputError(f"reg_channel {params['reg_channel']} does not exist: the LM image has "
                         f"{len(lm.data)} channel(s)")
    io.check_image(stack[params["reg_channel"]], f"the LM registration channel {params['reg_channel']}")
    bad = [c for c in params.get("channels") or [] if c >= n]
    if bad:
        raise InputError(f"channel {bad[0]} does not exist: the LM stack has {n} channel(s)")
    dtype = np.result_type(*[c.dtype for c in stack])
    out = {k: inputs_dir / k / (uploads[k][0].stem + ".tif") for k in ("em", "lm")}
    io.write_tiff(out["em"], em_grey, pixel_size=_pixel_size(params.get("em_pixel_size"), em.pixel_size))
    io.write_tiff(out["lm"], np.stack([c.astype(dtype, copy=False) for c in stack]),
                  pixel_size=_pixel_size(params.get("lm_pixel_size"), lm.pixel_size))
    return out


def run_register(inputs: dict[str, Path], params: dict, out_dir: Path, progress: ProgressFn,
                 cancelled: CancelFn) -> dict:
    """Register EM (fixed) and LM (moving) with the MINE engine; writes the CLI-contract outputs."""
    from .pipeline import TRANSFORM_JSON, register_files
    reg = register_files(inputs["em"], inputs["lm"], out_dir, reg_channel=params["reg_channel"],
                         channels=params.get("channels"), preset=params["preset"], seed=params["seed"],
                         device=params["device"], progress=progress, cancelled=cancelled,
                         prepare=params.get("prepare", False), psr=params.get("psr"))
    reg.params.update(em_file=inputs["em"].name, lm_file=inputs["lm"].name)   # no server paths in results
    reg.save_json(out_dir / TRANSFORM_JSON)
    return {"result": reg.to_record().model_dump(mode="json")}


def apply_transform(paths: list[Path], fixed_to_moving, fixed_shape, *, interpolation: str = "bilinear",
                    max_pixels: int) -> np.ndarray:
    """Warp every channel of the given LM images onto a ``fixed_shape`` canvas; returns (C,H,W)."""
    h, w = int(fixed_shape[0]), int(fixed_shape[1])
    if h < 1 or w < 1 or h * w > max_pixels:
        raise InputError(f"the output canvas {w}x{h} must have between 1 and {max_pixels} pixels")
    try:
        matrix = as_matrix(fixed_to_moving)
    except ValueError as e:
        raise InputError(f"invalid fixed_to_moving matrix: {e}") from None
    images = [read_checked(p, f"image {k + 1}", max_pixels, need_structure=False) for k, p in enumerate(paths)]
    if not images:
        raise InputError("no image was uploaded")
    chans = [c for img in images for c in img.data]
    if len(chans) * h * w > max_pixels:
        raise InputError(f"the output ({len(chans)} channels of {w}x{h}) exceeds the limit of {max_pixels} pixels")
    shapes = {c.shape for c in chans}
    if len(shapes) > 1:
        raise InputError(f"all uploaded images must have the same size, got {sorted(shapes)}")
    warped, _ = warp_channels(chans, matrix, (h, w), order=interpolation)
    return np.stack(warped)


JOB_TYPES: dict[str, JobType] = {
    "register": JobType(prepare=prepare_register, run=run_register),
}

# DeepCLEM job types (their module uses the helpers above, hence imported last)
from .chromatin_jobs import prepare_correlate, prepare_predict, run_correlate, run_predict  # noqa: E402

JOB_TYPES["predict_chromatin"] = JobType(prepare=prepare_predict, run=run_predict)
JOB_TYPES["correlate"] = JobType(prepare=prepare_correlate, run=run_correlate)
