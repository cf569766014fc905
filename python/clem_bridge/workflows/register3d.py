"""3-D CLEM on files (``clem-bridge register3d``): an EM volume and an LM Z stack in, the CLI-contract
outputs out.

:func:`register_volume_files` reads both stacks (ImageJ hyperstack / OME-TIFF, voxel sizes from the files
unless given), registers the chosen LM channel onto the EM with
:func:`clem_bridge.volume.register3d.register_volumes` and writes ``transform.json`` (``ndim`` 3, 4×4
matrices), ``lm_warped.tif`` (the LM channels on the EM grid, a calibrated ImageJ hyperstack ZCYX, written
slab by slab so a 500×1024×1024 EM grid never sits in memory twice), ``overlay.png`` (EM mean projection
with the warped channels' maximum projections), ``mi_curve.png`` and the 3-D BigWarp files of
:func:`clem_bridge.export3d.write_all3d`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import tifffile

from .. import io
from ..errors import InputError
from ..export3d import write_all3d
from ..progress import CancelFn, ProgressFn
from ..quality import save_mi_curve_png, save_overlay_png
from ..result import Registration
from ..schema import PixelSize
from ..transforms3d import translation, valid_mask3d, warp_volume_tiled
from ..volume.register3d import check_volume, register_volumes
from ..volume.stack_io import MAX_VOXELS, read_stack, write_stack
from .outputs import MI_CURVE_PNG, OVERLAY_PNG, TRANSFORM_JSON, WARPED_TIFF

SLAB = 16      # EM slices warped and written at a time


def _voxel(given: Optional[PixelSize], found: Optional[PixelSize], name: str) -> PixelSize:
    """An explicit voxel size wins over the file's; none at all is an error (3-D needs physical units)."""
    v = given or found
    if v is None:
        raise InputError(f"{name} has no voxel size in its metadata; give it (x,y,z in µm, e.g. --em-voxel "
                         "0.01,0.01,0.05 / --lm-voxel 0.2,0.2,0.6)")
    return v


def warp_to_stack(path, channels: Sequence[np.ndarray], fixed_to_moving, out_shape, *,
                  voxel: Optional[PixelSize], dtype, slab: int = SLAB) -> tuple[np.ndarray, np.ndarray]:
    """Warp LM volumes onto the EM grid slab by slab into a calibrated ImageJ hyperstack (ZCYX) at ``path``.

    Returns the per-channel maximum projections along z ``(C, H, W)`` and the projected validity mask.
    """
    d, h, w = (int(n) for n in out_shape)
    mips = np.zeros((len(channels), h, w), np.float32)
    seen = np.zeros((h, w), bool)

    def pages():
        for z0 in range(0, d, slab):
            n = min(slab, d - z0)
            a = np.asarray(fixed_to_moving) @ translation((0.0, 0.0, float(z0)))
            block = [warp_volume_tiled(c, a, (n, h, w), slab=n, dtype=dtype) for c in channels]
            seen[:] |= valid_mask3d(a, (n, h, w), channels[0].shape).any(0)
            for i, b in enumerate(block):
                np.maximum(mips[i], b.max(0), out=mips[i])
            for k in range(n):
                for b in block:
                    yield b[k]

    meta = {"axes": "ZCYX"}
    kw = {}
    if voxel is not None:
        meta["unit"] = io.normalize_unit(voxel.unit) or "um"
        if voxel.z is not None:
            meta["spacing"] = float(voxel.z)
        kw["resolution"] = (1.0 / voxel.x, 1.0 / voxel.y)
    tifffile.imwrite(path, pages(), shape=(d, len(channels), h, w), dtype=dtype, imagej=True, metadata=meta, **kw)
    return mips, seen


def register_volume_files(em_path, lm_path, out_dir, *, reg_channel: int = 0,
                          channels: Optional[Sequence[int]] = None, method: str = "mine",
                          em_voxel: Optional[PixelSize] = None, lm_voxel: Optional[PixelSize] = None,
                          max_voxels: int = MAX_VOXELS, tilt_search: bool = True, seed: int = 0,
                          progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> Registration:
    """Register LM stack onto EM volume and write the outputs into ``out_dir`` (see the module docstring)."""
    t0 = time.perf_counter()
    out = io.output_dir(out_dir)
    em, lm = read_stack(em_path, max_voxels=max_voxels), read_stack(lm_path, max_voxels=max_voxels)
    if em.data.shape[0] > 1:
        raise InputError(f"EM stack {em.path.name} has {em.data.shape[0]} channels; give a single-channel EM")
    picked = io.pick_channels(len(lm.data), reg_channel, channels)
    ev = _voxel(em_voxel, em.voxel, f"EM stack {em.path.name}")
    lv = _voxel(lm_voxel, lm.voxel, f"LM stack {lm.path.name}")
    notes = [w for s, given in ((em, em_voxel), (lm, lm_voxel)) if given is None for w in s.warnings]
    t_read = time.perf_counter() - t0

    reg = register_volumes(em.data[0], lm.data[reg_channel], em_voxel=ev, lm_voxel=lv, method=method,
                           tilt_search=tilt_search, seed=seed, progress=progress, cancelled=cancelled)
    t1 = time.perf_counter()
    reg.warnings = notes + reg.warnings
    reg.params = {**reg.params, "em_file": str(em.path), "lm_file": str(lm.path), "reg_channel": reg_channel,
                  "channels": picked}
    out.mkdir(parents=True, exist_ok=True)
    selected = [lm.data[i] for i in picked]
    mips, seen = warp_to_stack(out / WARPED_TIFF, selected, reg.fixed_to_moving, reg.fixed_shape,
                               voxel=reg.fixed_pixel_size, dtype=io.stack_dtype(selected))
    save_overlay_png(out / OVERLAY_PNG, em.data[0].mean(0), list(mips), mask=seen)
    save_mi_curve_png(out / MI_CURVE_PNG, reg.mi_curve,
                      title="MINE mutual-information estimate (3-D)" if method == "mine" else "histogram MI per level")
    t2 = time.perf_counter()
    reg.timings = {**reg.timings, "read_s": t_read, "warp_write_s": t2 - t1, "pipeline_total_s": t2 - t0}
    reg.save_json(out / TRANSFORM_JSON)
    write_all3d(reg, out, moving_file=lm.path.name)
    return reg


def _voxel_param(given: Optional[Sequence[float]]) -> Optional[PixelSize]:
    """A job's ``[x, y, z]`` voxel size in µm as a PixelSize (None when not given)."""
    return None if given is None else PixelSize(x=given[0], y=given[1], z=given[2], unit="um")


def prepare_register3d(uploads: dict[str, list[Path]], params: dict, inputs_dir: Path,
                       max_pixels: int) -> dict[str, Path]:
    """Validate the EM and LM stacks (``max_pixels`` voxels each at most) and write them as calibrated ImageJ
    hyperstacks ``em/*.tif``, ``lm/*.tif``.  A file without z spacing keeps none, so the run warns that
    isotropic voxels were assumed; a stack without any voxel size (and none in ``params``) is refused."""
    out = {}
    for key, name in (("em", "EM stack"), ("lm", "LM stack")):
        stack = read_stack(uploads[key][0], max_voxels=max_pixels)
        given = _voxel_param(params.get(f"{key}_voxel"))
        voxel = _voxel(given, stack.voxel, f"{name} {stack.path.name}")
        if given is None and stack.z_assumed:
            voxel = PixelSize(x=voxel.x, y=voxel.y, unit=voxel.unit)
        if key == "em" and len(stack.data) > 1:
            raise InputError(f"EM stack {stack.path.name} has {len(stack.data)} channels; give a single-channel EM")
        if key == "lm":
            io.pick_channels(len(stack.data), params["reg_channel"], params.get("channels"))
        c = params["reg_channel"] if key == "lm" else 0
        check_volume(stack.data[c], f"the {name} {stack.path.name}" + (f" channel {c}" if key == "lm" else ""))
        out[key] = write_stack(inputs_dir / key / (uploads[key][0].stem + ".tif"), stack.data, voxel)
    return out


def run_register3d(inputs: dict[str, Path], params: dict, out_dir: Path, progress: ProgressFn,
                   cancelled: CancelFn) -> dict:
    """Register the LM stack onto the EM volume (:func:`register_volume_files`); the result is the transform
    record (``ndim`` 3, ``status``)."""
    reg = register_volume_files(inputs["em"], inputs["lm"], out_dir, reg_channel=params["reg_channel"],
                                channels=params.get("channels"), method=params["method"],
                                tilt_search=params["tilt_search"], seed=params["seed"], progress=progress,
                                cancelled=cancelled)
    reg.params.update(em_file=inputs["em"].name, lm_file=inputs["lm"].name)   # no server paths in results
    reg.save_json(Path(out_dir) / TRANSFORM_JSON)
    return {"result": reg.to_record().model_dump(mode="json")}
