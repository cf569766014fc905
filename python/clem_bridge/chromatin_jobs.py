"""Server job types ``predict_chromatin`` and ``correlate`` (DeepCLEM), in the pattern of :mod:`clem_bridge.jobs`."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from . import io
from .errors import InputError
from .jobs import CancelFn, ProgressFn, _pixel_size, cached_model, read_checked

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _check_model(name: str) -> None:
    """A model is named, never given as a path (clients must not reach the server's files), and must exist."""
    from .insilico.predict import resolve_model
    if not _MODEL_NAME.match(name) or ".." in name:
        raise InputError(f"model must be the name of a model under models/ (got {name!r})")
    resolve_model(name)


def _model(name: str, device: str):
    """The named model on ``device``, loaded once per server process."""
    from .insilico.predict import load_model
    _check_model(name)
    return cached_model(f"{name}@{device}", lambda: load_model(name, device=device))


def _em(uploads, params, inputs_dir: Path, max_pixels: int) -> Path:
    em = read_checked(uploads["em"][0], "the EM image", max_pixels)
    if em.data.shape[0] > 1 and not em.rgb:
        raise InputError(f"the EM image has {em.data.shape[0]} channels; upload a single-channel EM")
    return io.write_tiff(inputs_dir / "em.tif", io.select_channel(em),
                         pixel_size=_pixel_size(params.get("em_pixel_size"), em.pixel_size))


def prepare_predict(uploads: dict[str, list[Path]], params: dict, inputs_dir: Path, max_pixels: int) -> dict[str, Path]:
    """Validate the EM upload and the model name; writes ``em.tif``."""
    _check_model(params["model"])
    return {"em": _em(uploads, params, inputs_dir, max_pixels)}


def run_predict(inputs: dict[str, Path], params: dict, out_dir: Path, progress: ProgressFn,
                cancelled: CancelFn) -> dict:
    """Predict chromatin from the EM; writes ``predicted_chromatin.tif`` (float32, EM calibration)."""
    from .insilico.predict import predict_chromatin
    img = io.read_image(inputs["em"])
    pred = predict_chromatin(img.data[0], _model(params["model"], params["device"]), device=params["device"],
                             progress=progress, cancelled=cancelled)
    io.write_tiff(out_dir / "predicted_chromatin.tif", pred, img.pixel_size)
    return {"result": {"model": params["model"], "shape": list(pred.shape),
                       "percentiles_1_50_99": [float(v) for v in np.percentile(pred, [1, 50, 99])]}}


def prepare_correlate(uploads: dict[str, list[Path]], params: dict, inputs_dir: Path,
                      max_pixels: int) -> dict[str, Path]:
    """Validate EM, chromatin (+ extra channels); writes ``em.tif``, ``lm.tif`` (C,H,W) and ``meta.json``.

    The chromatin channel is resolved here (blue of an RGB upload unless named) because the
    RGB flag does not survive the TIFF written for the worker.
    """
    from .insilico.correlate import chromatin_channel
    _check_model(params["model"])
    em = _em(uploads, params, inputs_dir, max_pixels)
    lm = read_checked(uploads["chromatin"][0], "the chromatin image", max_pixels, need_structure=False)
    ci = chromatin_channel(lm.data.shape[0], lm.rgb, params.get("chromatin_channel"), "the chromatin image")
    io.check_image(lm.data[ci], f"chromatin channel {ci}")
    stack = list(lm.data)
    for k, path in enumerate(uploads.get("extra", [])):
        extra = read_checked(path, f"extra LM image {k + 1}", max_pixels, need_structure=False)
        if extra.data.shape[1:] != lm.data.shape[1:]:
            raise InputError(f"extra LM image {k + 1} is {extra.data.shape[2]}x{extra.data.shape[1]} pixels but "
                             f"the chromatin image is {lm.data.shape[2]}x{lm.data.shape[1]}; they must match")
        stack.extend(extra.data)
    bad = [c for c in params.get("channels") or [] if c >= len(stack)]
    if bad:
        raise InputError(f"channel {bad[0]} does not exist: the LM stack has {len(stack)} channel(s)")
    dtype = np.result_type(*[c.dtype for c in stack])
    lm_path = io.write_tiff(inputs_dir / "lm.tif", np.stack([c.astype(dtype, copy=False) for c in stack]),
                            pixel_size=_pixel_size(params.get("chromatin_pixel_size"), lm.pixel_size))
    meta = inputs_dir / "meta.json"
    meta.write_text(json.dumps({"chromatin_channel": ci}))
    return {"em": em, "lm": lm_path, "meta": meta}


def run_correlate(inputs: dict[str, Path], params: dict, out_dir: Path, progress: ProgressFn,
                  cancelled: CancelFn) -> dict:
    """DeepCLEM correlation; writes transform.json, lm_warped.tif, overlay.png, predicted_chromatin.tif."""
    from .insilico.correlate import SearchParams, correlate_files
    ci = json.loads(Path(inputs["meta"]).read_text())["chromatin_channel"]
    search = SearchParams(max_rotation=params["max_rotation"], model=params.get("transform", "similarity"),
                          nuclei_refinement=params.get("nuclei_refinement", True),
                          scale_from_pixel_size=params.get("scale_from_pixel_size", True))
    reg = correlate_files(inputs["em"], inputs["lm"], out_dir, chromatin_channel_index=ci,
                          channels=params.get("channels"), model=_model(params["model"], params["device"]),
                          params=search, device=params["device"], progress=progress, cancelled=cancelled)
    reg.params["model"] = params["model"]
    reg.save_json(out_dir / "transform.json")
    return {"result": reg.to_record().model_dump(mode="json")}
