"""Chromatin prediction on files (``clem-bridge predict-chromatin``), the server job ``predict_chromatin``,
and the per-process model cache shared with the DeepCLEM correlation job."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .. import io
from ..errors import InputError
from ..progress import CancelFn, ProgressFn
from .outputs import PREDICTED_TIFF
from .register import pixel_size_param

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_MODELS: dict[str, Any] = {}


def cached_model(name: str, load: Callable[[], Any]) -> Any:
    """Load a model once per process and keep it (``GET /v1/health`` lists the loaded names)."""
    if name not in _MODELS:
        _MODELS[name] = load()
    return _MODELS[name]


def loaded_models() -> list[str]:
    return sorted(_MODELS)


def check_model_name(name: str) -> None:
    """A server model is named, never given as a path (clients must not reach the server's files), and must exist."""
    from ..insilico.predict import resolve_model
    if not _MODEL_NAME.match(name) or ".." in name:
        raise InputError(f"model must be the name of a model under models/ (got {name!r})")
    resolve_model(name)


def server_model(name: str, device: str):
    """The named model on ``device``, loaded once per server process."""
    from ..insilico.predict import load_model
    check_model_name(name)
    return cached_model(f"{name}@{device}", lambda: load_model(name, device=device))


def predict_file(em_path, out_path, *, model="chromatin-v2", device: str = "auto",
                 progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> np.ndarray:
    """Predict the chromatin of an EM file; writes a float32 TIFF with the EM calibration; returns the prediction."""
    from ..insilico.predict import predict_chromatin
    em, img = io.read_em(em_path)
    pred = predict_chromatin(em, model, device=device, progress=progress, cancelled=cancelled)
    io.write_tiff(out_path, pred, img.pixel_size)
    return pred


def write_em_input(uploads, params, inputs_dir: Path, max_pixels: int) -> Path:
    """The uploaded EM checked and written as ``em.tif`` (params' ``em_pixel_size`` wins over the file's)."""
    em, img = io.read_em(uploads["em"][0], max_pixels)
    return io.write_tiff(inputs_dir / "em.tif", em,
                         pixel_size=pixel_size_param(params.get("em_pixel_size"), img.pixel_size))


def prepare_predict(uploads: dict[str, list[Path]], params: dict, inputs_dir: Path, max_pixels: int) -> dict[str, Path]:
    """Validate the EM upload and the model name; writes ``em.tif``."""
    check_model_name(params["model"])
    return {"em": write_em_input(uploads, params, inputs_dir, max_pixels)}


def run_predict(inputs: dict[str, Path], params: dict, out_dir: Path, progress: ProgressFn,
                cancelled: CancelFn) -> dict:
    """Predict chromatin from the EM; writes ``predicted_chromatin.tif`` (float32, EM calibration)."""
    pred = predict_file(inputs["em"], out_dir / PREDICTED_TIFF, model=server_model(params["model"], params["device"]),
                        device=params["device"], progress=progress, cancelled=cancelled)
    return {"result": {"model": params["model"], "shape": list(pred.shape),
                       "percentiles_1_50_99": [float(v) for v in np.percentile(pred, [1, 50, 99])]}}
