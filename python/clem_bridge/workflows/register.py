"""MINE registration on files (``clem-bridge register``) and its server job types ``register`` and ``apply``.

:func:`register_files` reads the EM and LM files, registers the chosen LM channel onto the EM with MINE,
warps the LM channels onto the EM grid and writes ``transform.json``, ``lm_warped.tif`` (CYX,
calibrated with the EM pixel size), ``overlay.png``, ``mi_curve.png`` and the Fiji transform files of
:func:`clem_bridge.export.write_all`.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .. import io
from ..errors import InputError
from ..export import write_all
from ..progress import CancelFn, ProgressFn
from ..quality import save_mi_curve_png, save_overlay_png
from ..result import Registration
from ..schema import PixelSize
from ..tiled import preview, warp_to_tiff
from ..transforms import as_matrix, warp_channels
from .outputs import MI_CURVE_PNG, OVERLAY_PNG, TRANSFORM_JSON, WARPED_TIFF


def register_files(em_path, lm_path, out_dir, *, reg_channel: int = 0, channels: Optional[Sequence[int]] = None,
                   extra_channel_paths: Optional[Sequence] = None, preset: str = "fast", seed: int = 0,
                   device: str = "auto", progress: Optional[ProgressFn] = None,
                   cancelled: Optional[CancelFn] = None, init=None, prepare: bool = False,
                   psr: Optional[float] = None) -> Registration:
    """Register LM file onto EM file and write the CLI-contract outputs into ``out_dir``.

    ``reg_channel`` indexes the LM channels (file channels first, then those of
    ``extra_channel_paths``); ``channels`` picks which are warped and written (None = all).
    ``prepare``: first match the EM field of view in the LM (pixel-size ratio ``psr``, else the
    files' calibration refined, see :mod:`clem_bridge.preprocess`); the matrix still maps EM → original LM pixels.
    """
    from ..register import register_mine

    t0 = time.perf_counter()
    out = io.output_dir(out_dir)
    em, em_img = io.read_em(em_path)
    lm_chans, lm_img = io.load_lm_channels(lm_path, extra_channel_paths)
    picked = io.pick_channels(len(lm_chans), reg_channel, channels)
    moving = io.check_image(lm_chans[reg_channel], f"LM registration channel {reg_channel} of {lm_img.path.name}")
    t_read = time.perf_counter() - t0

    engine = partial(register_mine, preset=preset, seed=seed, device=device, progress=progress, cancelled=cancelled)
    if prepare:
        from ..preprocess import register_prepared
        reg = register_prepared(em, moving, engine, psr=psr, em_pixel_size=em_img.pixel_size,
                                lm_pixel_size=lm_img.pixel_size)
    else:
        reg = engine(em, moving, init=init)

    t1 = time.perf_counter()
    reg.fixed_pixel_size, reg.moving_pixel_size = em_img.pixel_size, lm_img.pixel_size
    reg.params = {**reg.params, "em_file": str(em_img.path), "lm_file": str(lm_img.path),
                  "extra_channel_files": [str(p) for p in extra_channel_paths or []],
                  "reg_channel": reg_channel, "channels": picked}
    selected = [lm_chans[i] for i in picked]
    out.mkdir(parents=True, exist_ok=True)
    # full-resolution channels streamed in strips into the TIFF; the overlay from a binned preview
    warp_to_tiff(out / WARPED_TIFF, selected, reg.fixed_to_moving, em.shape, pixel_size=em_img.pixel_size,
                 dtype=io.stack_dtype(selected))
    em_small, warped, valid = preview(em, selected, reg.fixed_to_moving)
    save_overlay_png(out / OVERLAY_PNG, em_small, warped, mask=valid)
    save_mi_curve_png(out / MI_CURVE_PNG, reg.mi_curve)
    t2 = time.perf_counter()
    reg.timings = {**reg.timings, "read_s": t_read, "warp_write_s": t2 - t1, "pipeline_total_s": t2 - t0}
    reg.save_json(out / TRANSFORM_JSON)
    write_all(reg, out, moving_file=lm_img.path.name)  # BigWarp CSV/XML + mpicbg XML for Fiji
    return reg


# --- server job types ------------------------------------------------------------------

def pixel_size_param(given: Optional[dict], found: Optional[PixelSize]) -> Optional[PixelSize]:
    """An explicit pixel size from the job's params wins over the file's calibration."""
    return PixelSize.model_validate(given) if given else found


def prepare_register(uploads: dict[str, list[Path]], params: dict, inputs_dir: Path,
                     max_pixels: int) -> dict[str, Path]:
    """Validate EM, LM and extra LM channel files; write them as calibrated TIFFs ``em/*.tif``, ``lm/*.tif`` (C,H,W)."""
    em, em_img = io.read_em(uploads["em"][0], max_pixels)
    chans, lm_img = io.load_lm_channels(uploads["lm"][0], uploads.get("extra", []), max_pixels)
    if params["reg_channel"] >= len(lm_img.data):
        raise InputError(f"reg_channel {params['reg_channel']} does not exist: the LM image has "
                         f"{len(lm_img.data)} channel(s)")
    io.pick_channels(len(chans), params["reg_channel"], params.get("channels"))
    io.check_image(chans[params["reg_channel"]], f"the LM registration channel {params['reg_channel']}")
    out = {k: inputs_dir / k / (uploads[k][0].stem + ".tif") for k in ("em", "lm")}
    io.write_tiff(out["em"], em, pixel_size=pixel_size_param(params.get("em_pixel_size"), em_img.pixel_size))
    io.write_tiff(out["lm"], io.as_stack(chans),
                  pixel_size=pixel_size_param(params.get("lm_pixel_size"), lm_img.pixel_size))
    return out


def run_register(inputs: dict[str, Path], params: dict, out_dir: Path, progress: ProgressFn,
                 cancelled: CancelFn) -> dict:
    """Register EM (fixed) and LM (moving) with the MINE engine; writes the CLI-contract outputs."""
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
    if not paths:
        raise InputError("no image was uploaded")
    chans, _ = io.load_lm_channels(paths[0], paths[1:], max_pixels)
    if len(chans) * h * w > max_pixels:
        raise InputError(f"the output ({len(chans)} channels of {w}x{h}) exceeds the limit of {max_pixels} pixels")
    warped, _ = warp_channels(chans, matrix, (h, w), order=interpolation)
    return np.stack(warped)
