"""DeepCLEM correlation on files (``clem-bridge correlate``) and its server job type ``correlate``."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .. import io
from ..insilico import DEFAULT_MODEL
from ..insilico.correlate import SearchParams, chromatin_channel, correlate
from ..progress import CancelFn, ProgressFn
from ..quality import DEFAULT_COLOURS, save_overlay_png
from ..result import Registration
from ..transforms import warp_channels
from .outputs import OVERLAY_PNG, PREDICTED_TIFF, TRANSFORM_JSON, WARPED_TIFF
from .predict import check_model_name, server_model, write_em_input
from .register import pixel_size_param


def correlate_files(em_path, chromatin_path, out_dir, *, chromatin_channel_index: Optional[int] = None,
                    channels: Optional[list[int]] = None, extra_channel_paths=None, model=DEFAULT_MODEL,
                    params: SearchParams = SearchParams(), device="auto", progress: Optional[ProgressFn] = None,
                    cancelled: Optional[CancelFn] = None) -> Registration:
    """DeepCLEM on files; writes ``transform.json``, ``predicted_chromatin.tif``, ``lm_warped.tif``, ``overlay.png``.

    ``channels`` index the chromatin file's channels followed by those of ``extra_channel_paths``
    (None = all); they are warped onto the EM grid.  The overlay shows the chromatin in blue.
    """
    t0 = time.perf_counter()
    out = io.output_dir(out_dir)
    em, em_img = io.read_em(em_path)
    chans, lm_img = io.load_lm_channels(chromatin_path, extra_channel_paths)
    ci = chromatin_channel(lm_img.data.shape[0], lm_img.rgb, chromatin_channel_index, lm_img.path.name)
    chrom = io.check_image(chans[ci], f"chromatin channel {ci} of {lm_img.path.name}")
    picked = io.pick_channels(len(chans), None, channels)
    reg, pred = correlate(em, chrom, model=model, params=params, em_pixel_size=em_img.pixel_size,
                          chromatin_pixel_size=lm_img.pixel_size, device=device, progress=progress,
                          cancelled=cancelled)
    t1 = time.perf_counter()
    reg.params.update(em_file=em_img.path.name, chromatin_file=lm_img.path.name, chromatin_channel=ci,
                      channels=picked)
    order = [ci] + [c for c in picked if c != ci]
    warped, valid = warp_channels([chans[i] for i in order], reg.fixed_to_moving, em.shape)
    by_index = dict(zip(order, warped))
    out.mkdir(parents=True, exist_ok=True)
    io.write_tiff(out / PREDICTED_TIFF, pred.astype(np.float32), em_img.pixel_size)
    io.write_tiff(out / WARPED_TIFF, io.as_stack([by_index[c] for c in picked]), em_img.pixel_size)
    others = [by_index[c] for c in picked if c != ci]
    save_overlay_png(out / OVERLAY_PNG, em, [by_index[ci]] + others,
                     colours=["blue"] + [DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)] for i in range(len(others))],
                     mask=valid)
    reg.timings = {**reg.timings, "write_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0}
    reg.save_json(out / TRANSFORM_JSON)
    return reg


def prepare_correlate(uploads: dict[str, list[Path]], params: dict, inputs_dir: Path,
                      max_pixels: int) -> dict[str, Path]:
    """Validate EM, chromatin (+ extra channels); writes ``em.tif``, ``lm.tif`` (C,H,W) and ``meta.json``.

    The chromatin channel is resolved here (blue of an RGB upload unless named) because the
    RGB flag does not survive the TIFF written for the worker.
    """
    check_model_name(params["model"])
    em = write_em_input(uploads, params, inputs_dir, max_pixels)
    chans, lm = io.load_lm_channels(uploads["chromatin"][0], uploads.get("extra", []), max_pixels)
    ci = chromatin_channel(lm.data.shape[0], lm.rgb, params.get("chromatin_channel"), "the chromatin image")
    io.check_image(chans[ci], f"chromatin channel {ci}")
    io.pick_channels(len(chans), None, params.get("channels"))
    lm_path = io.write_tiff(inputs_dir / "lm.tif", io.as_stack(chans),
                            pixel_size=pixel_size_param(params.get("chromatin_pixel_size"), lm.pixel_size))
    meta = inputs_dir / "meta.json"
    meta.write_text(json.dumps({"chromatin_channel": ci}))
    return {"em": em, "lm": lm_path, "meta": meta}


def run_correlate(inputs: dict[str, Path], params: dict, out_dir: Path, progress: ProgressFn,
                  cancelled: CancelFn) -> dict:
    """DeepCLEM correlation; writes transform.json, lm_warped.tif, overlay.png, predicted_chromatin.tif."""
    ci = json.loads(Path(inputs["meta"]).read_text())["chromatin_channel"]
    search = SearchParams(max_rotation=params["max_rotation"], model=params.get("transform", "similarity"),
                          nuclei_refinement=params.get("nuclei_refinement", True),
                          scale_from_pixel_size=params.get("scale_from_pixel_size", True))
    reg = correlate_files(inputs["em"], inputs["lm"], out_dir, chromatin_channel_index=ci,
                          channels=params.get("channels"), model=server_model(params["model"], params["device"]),
                          params=search, device=params["device"], progress=progress, cancelled=cancelled)
    reg.params["model"] = params["model"]
    reg.save_json(out_dir / TRANSFORM_JSON)
    return {"result": reg.to_record().model_dump(mode="json")}
