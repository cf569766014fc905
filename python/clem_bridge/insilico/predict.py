"""Model lookup/loading (never from the network) and tiled chromatin prediction on any image size."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
import yaml

from ..device import select_device
from ..errors import Cancelled, InputError
from ..io import MAX_PIXELS, check_image
from ..progress import CancelFn, Progress, ProgressFn
from ..transforms import area_resize
from . import DEFAULT_MODEL
from .normalize import normalize_em
from .unet import UNet

WEIGHTS = "weights.pt"
CARD = "model.yaml"


def models_root() -> Path:
    """``$CLEM_BRIDGE_MODELS`` if set, else the models shipped in the package (``clem_bridge.models``)."""
    env = os.environ.get("CLEM_BRIDGE_MODELS")
    return Path(env) if env else Path(str(resources.files("clem_bridge.models")))


def resolve_model(name) -> Path:
    """A model folder given as a path, or as a name under :func:`models_root`."""
    for p in (Path(name), models_root() / str(name)):
        if (p / WEIGHTS).is_file() and (p / CARD).is_file():
            return p
    raise InputError(f"model {str(name)!r} not found (looked for {WEIGHTS} + {CARD} in {name} "
                     f"and in {models_root() / str(name)})")


@dataclass
class ChromatinModel:
    """A loaded network with its model card; ``bin`` = EM binning the network works at."""
    net: UNet
    card: dict
    path: Optional[Path] = None

    @property
    def bin(self) -> int:
        return int(self.card["architecture"].get("bin", 1))

    @property
    def em_normalisation(self) -> str:
        """EM normalisation the network was trained with (cards without the field: ``equalize_hist``)."""
        return str((self.card.get("normalisation") or {}).get("em_method", "equalize_hist"))


def load_model(name=DEFAULT_MODEL, device="cpu") -> ChromatinModel:
    """Load ``models/<name>`` (or a folder path) onto ``device``."""
    path = resolve_model(name)
    try:
        card = yaml.safe_load((path / CARD).read_text())
        arch = card["architecture"]
        net = UNet(base=int(arch["base"]), depth=int(arch["depth"]))
        net.load_state_dict(torch.load(path / WEIGHTS, map_location="cpu", weights_only=True))
    except Exception as e:   # damaged or foreign files: one sentence, no traceback
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InputError(f"model folder {path} could not be loaded: {reason}") from None
    return ChromatinModel(net.to(select_device(str(device))).eval(), card, path)


def _window(n: int, overlap: int) -> np.ndarray:
    """1-D blending weights: linear ramps of length ``overlap`` at both ends, never zero."""
    w = np.ones(n, np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
        w[:overlap], w[n - overlap:] = ramp, ramp[::-1]
    return w


def _starts(length: int, tile: int, step: int) -> list[int]:
    s = list(range(0, max(length - tile, 0) + 1, step))
    if s[-1] + tile < length:
        s.append(length - tile)
    return s


def predict_tiles(net: UNet, x: np.ndarray, *, tile: int = 256, overlap: int = 32, batch: int = 4,
                  progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> np.ndarray:
    """Run ``net`` on a normalised 2-D float image of any size by overlapping, blended tiles."""
    m = net.multiple
    tile = max(m, tile // m * m)
    h, w = x.shape
    th, tw = min(tile, -(-h // m) * m), min(tile, -(-w // m) * m)
    ph, pw = max(th - h, 0), max(tw - w, 0)
    xp = np.pad(np.asarray(x, np.float32), ((0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")
    H, W = xp.shape
    ov = min(overlap, th // 2, tw // 2)
    boxes = [(r, c) for r in _starts(H, th, th - ov) for c in _starts(W, tw, tw - ov)]
    win = np.outer(_window(th, ov), _window(tw, ov))
    out = np.zeros((H, W), np.float32)
    wsum = np.zeros((H, W), np.float32)
    dev = next(net.parameters()).device
    with torch.no_grad():
        for i in range(0, len(boxes), batch):
            if cancelled is not None and cancelled():
                raise Cancelled("chromatin prediction was cancelled")
            chunk = boxes[i:i + batch]
            t = torch.from_numpy(np.stack([xp[r:r + th, c:c + tw] for r, c in chunk])[:, None]).to(dev)
            y = net(t)[:, 0].float().cpu().numpy()
            for (r, c), yi in zip(chunk, y):
                out[r:r + th, c:c + tw] += yi * win
                wsum[r:r + th, c:c + tw] += win
            if progress is not None:
                done = min(i + batch, len(boxes))
                progress(Progress("predict", done, len(boxes), None, done / len(boxes)))
    return (out / wsum)[:h, :w]


def check_em(em) -> np.ndarray:
    """Validate an EM image for prediction (:func:`clem_bridge.io.check_image` + size limit); float32 2-D."""
    a = check_image(em, "the EM image")
    if a.size > MAX_PIXELS:
        raise InputError(f"the EM image is too large ({a.shape[1]}x{a.shape[0]} pixels); crop or bin it first")
    return a.astype(np.float32, copy=False)


def predict_chromatin(em, model: ChromatinModel | str = DEFAULT_MODEL, *, device="auto", tile: int = 256,
                      overlap: int = 32, batch: int = 4, progress: Optional[ProgressFn] = None,
                      cancelled: Optional[CancelFn] = None) -> np.ndarray:
    """Predict the chromatin stain of a 2-D EM image; float32 on the EM grid (≈0 background, ≈1 bright)."""
    a = check_em(em)
    if not isinstance(model, ChromatinModel):
        model = load_model(model, device=select_device(str(device)))
    b = model.bin
    h, w = a.shape
    small = area_resize(a, (max(1, round(h / b)), max(1, round(w / b))))[0]
    y = predict_tiles(model.net, normalize_em(small, model.em_normalisation), tile=tile, overlap=overlap, batch=batch,
                      progress=progress, cancelled=cancelled)
    return y if y.shape == (h, w) else cv2.resize(y, (w, h), interpolation=cv2.INTER_LINEAR)
