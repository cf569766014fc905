"""File-to-files registration used by the CLI and the server (the CLI contract's outputs).

``register_files`` reads the EM and LM files, registers the chosen LM channel onto the EM
with MINE, warps the LM channels onto the EM grid and writes into ``out_dir``:
``transform.json``, ``lm_warped.tif`` (CYX, calibrated with the EM pixel size),
``overlay.png``, ``mi_curve.png`` and the Fiji transform files of :func:`clem_bridge.export.write_all`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import InputError
from .export import write_all
from .io import ImageData, check_image, read_image, select_channel
from .quality import save_mi_curve_png, save_overlay_png
from .result import Registration
from .tiled import preview, warp_to_tiff

TRANSFORM_JSON = "transform.json"
WARPED_TIFF = "lm_warped.tif"
OVERLAY_PNG = "overlay.png"
MI_CURVE_PNG = "mi_curve.png"


def output_dir(path) -> Path:
    """``path`` as a Path, refusing an existing non-folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder")
    return out


def read_em(em_path) -> tuple[np.ndarray, ImageData]:
    """The EM file as a checked 2-D image (RGB → grey); multi-channel EMs are refused."""
    em_img = read_image(em_path)
    if em_img.data.shape[0] > 1 and not em_img.rgb:
        raise InputError(f"EM file {em_img.path.name} has {em_img.data.shape[0]} channels; give a single-channel EM")
    return check_image(select_channel(em_img), f"EM image {em_img.path.name}"), em_img


def load_lm_channels(lm_path, extra_channel_paths: Optional[Sequence] = None
                     ) -> tuple[list[np.ndarray], ImageData]:
    """All channels of the LM file followed by those of each extra file; sizes must agree."""
    lm = read_image(lm_path)
    chans = list(lm.data)
    for extra in extra_channel_paths or []:
        img = read_image(extra)
        if img.shape != lm.shape:
            raise InputError(f"LM channel file {img.path.name} is {img.shape[0]}x{img.shape[1]} pixels but "
                             f"{lm.path.name} is {lm.shape[0]}x{lm.shape[1]}; channels must share one grid")
        chans.extend(img.data)
    return chans, lm


def _pick(n: int, reg_channel: int, channels: Optional[Sequence[int]]) -> list[int]:
    if not 0 <= reg_channel < n:
        raise InputError(f"registration channel {reg_channel} does not exist; the LM has {n} channel(s) "
                         f"(0-{n - 1})")
    picked = list(range(n)) if channels is None else [int(c) for c in channels]
    bad = [c for c in picked if not 0 <= c < n]
    if bad:
        raise InputError(f"LM channel(s) {bad} do not exist; the LM has {n} channel(s) (0-{n - 1})")
    if not picked:
        raise InputError("no LM channels selected for output")
    return picked


def register_files(em_path, lm_path, out_dir, *, reg_channel: int = 0, channels: Optional[Sequence[int]] = None,
                   extra_channel_paths: Optional[Sequence] = None, preset: str = "fast", seed: int = 0,
                   device: str = "auto", progress=None, cancelled=None, init=None, prepare: bool = False,
                   psr: Optional[float] = None) -> Registration:
    """Register LM file onto EM file and write the CLI-contract outputs into ``out_dir``.

    ``reg_channel`` indexes the LM channels (file channels first, then those of
    ``extra_channel_paths``); ``channels`` picks which are warped and written (None = all).
    ``prepare``: first match the EM field of view in the LM (pixel-size ratio ``psr``, else the
    files' calibration refined, see :mod:`.preprocess`); the matrix still maps EM → original LM pixels.
    """
    from .register import register_mine

    t0 = time.perf_counter()
    out = output_dir(out_dir)
    em, em_img = read_em(em_path)
    lm_chans, lm_img = load_lm_channels(lm_path, extra_channel_paths)
    picked = _pick(len(lm_chans), reg_channel, channels)
    moving = check_image(lm_chans[reg_channel], f"LM registration channel {reg_channel} of {lm_img.path.name}")
    t_read = time.perf_counter() - t0

    if prepare:
        from functools import partial

        from .preprocess import register_prepared
        reg = register_prepared(em, moving, partial(register_mine, preset=preset, seed=seed, device=device,
                                                    progress=progress, cancelled=cancelled),
                                psr=psr, em_pixel_size=em_img.pixel_size, lm_pixel_size=lm_img.pixel_size)
    else:
        reg = register_mine(em, moving, preset=preset, seed=seed, device=device, progress=progress,
                            cancelled=cancelled, init=init)

    t1 = time.perf_counter()
    reg.fixed_pixel_size, reg.moving_pixel_size = em_img.pixel_size, lm_img.pixel_size
    reg.params = {**reg.params, "em_file": str(em_img.path), "lm_file": str(lm_img.path),
                  "extra_channel_files": [str(p) for p in extra_channel_paths or []],
                  "reg_channel": reg_channel, "channels": picked}
    selected = [lm_chans[i] for i in picked]
    dtypes = {c.dtype for c in selected}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    # full-resolution channels streamed in strips into the TIFF; the overlay from a binned preview
    warp_to_tiff(out / WARPED_TIFF, selected, reg.fixed_to_moving, em.shape, pixel_size=em_img.pixel_size,
                 dtype=dtype if dtype in (np.uint8, np.uint16, np.float32) else np.float32)
    em_small, warped, valid = preview(em, selected, reg.fixed_to_moving)
    save_overlay_png(out / OVERLAY_PNG, em_small, warped, mask=valid)
    save_mi_curve_png(out / MI_CURVE_PNG, reg.mi_curve)
    t2 = time.perf_counter()
    reg.timings = {**reg.timings, "read_s": t_read, "warp_write_s": t2 - t1, "pipeline_total_s": t2 - t0}
    reg.save_json(out / TRANSFORM_JSON)
    write_all(reg, out, moving_file=lm_img.path.name)  # BigWarp CSV/XML + mpicbg XML for Fiji
    return reg
