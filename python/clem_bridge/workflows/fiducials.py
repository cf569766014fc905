"""Fiducial beads and landmarks on files (``clem-bridge fiducials``, ``landmarks``, ``validate``) and the
server job type ``fiducials``.

:func:`fiducials_files` finds the beads in the EM and the chosen LM channel, registers them
(:func:`clem_bridge.fiducials.register_fiducials`) and writes ``transform.json`` (with ``error_budget``),
``lm_warped.tif`` (every LM channel on the EM grid, EM calibration), ``overlay.png``, ``tre_map.png``
(predicted error over the EM field), ``fusion.png`` (HSI: LM hue/saturation, EM intensity),
``bead_landmarks.csv`` (the matched beads as BigWarp landmarks, to inspect or edit in BigWarp) and the
Fiji transform files of :func:`clem_bridge.export.write_all`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .. import io
from ..errors import Cancelled, InputError
from ..export import read_bigwarp_landmarks, write_all, write_landmark_pairs_csv
from ..fiducials import fit_landmarks, register_fiducials, tre_grid
from ..fiducials.render import save_fusion_png, save_tre_map_png
from ..fiducials.validate import validate_transform
from ..progress import CancelFn, Progress, ProgressFn
from ..quality import save_overlay_png
from ..result import Registration, load_transform_json
from ..schema import PixelSize
from ..tiled import preview, warp_to_tiff
from .outputs import OVERLAY_PNG, TRANSFORM_JSON, WARPED_TIFF
from .register import pixel_size_param

TRE_MAP_PNG = "tre_map.png"
FUSION_PNG = "fusion.png"
BEADS_CSV = "bead_landmarks.csv"
VALIDATION_JSON = "validation.json"


def _report(progress: Optional[ProgressFn], stage: str, fraction: float) -> None:
    if progress is not None:
        progress(Progress(stage=stage, iteration=0, total=None, mi=None, fraction=fraction))


def _write_images(reg: Registration, out: Path, em: np.ndarray, chans: list, em_pixel_size, lm_channel: int) -> None:
    """lm_warped.tif, overlay.png, fusion.png (of ``lm_channel``) and tre_map.png for a registration."""
    warp_to_tiff(out / WARPED_TIFF, chans, reg.fixed_to_moving, em.shape, pixel_size=em_pixel_size,
                 dtype=io.stack_dtype(chans))
    em_small, warped, valid = preview(em, chans, reg.fixed_to_moving, max_side=2048)
    save_overlay_png(out / OVERLAY_PNG, em_small, warped, mask=valid)
    save_fusion_png(out / FUSION_PNG, em_small, warped[lm_channel], mask=valid)
    _write_tre_map(reg, out, em_small)


def _write_tre_map(reg: Registration, out: Path, em: Optional[np.ndarray] = None) -> None:
    b = reg.error_budget
    beads = np.array([p["fixed_px"] for p in b["pairs"]])
    save_tre_map_png(out / TRE_MAP_PNG, tre_grid(b, reg.fixed_shape), reg.fixed_shape, em=em, beads=beads,
                     unit=b["unit"])


def _bead_csv(reg: Registration, out: Path) -> None:
    pairs = reg.error_budget["pairs"]
    write_landmark_pairs_csv(out / BEADS_CSV, [p["moving_px"] for p in pairs], [p["fixed_px"] for p in pairs],
                             fixed_pixel_size=reg.fixed_pixel_size, moving_pixel_size=reg.moving_pixel_size)


def fiducials_files(em_path, lm_path, out_dir, *, lm_channel: int = 0, bead_nm: float = 200.0,
                    model: Optional[str] = None, polarity: str = "auto", localisation: str = "quadratic",
                    em_pixel_size: Optional[PixelSize] = None, lm_pixel_size: Optional[PixelSize] = None,
                    progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> Registration:
    """Register an LM file onto an EM file by fiducial beads; writes the outputs listed in the module doc.

    ``em_pixel_size``/``lm_pixel_size`` override the files' calibration (both are needed: the bead size
    and the scale prior come from them).
    """
    t0 = time.perf_counter()
    out = io.output_dir(out_dir)
    em, em_img = io.read_em(em_path)
    chans, lm_img = io.load_lm_channels(lm_path)
    io.pick_channels(len(chans), lm_channel, None)
    lm = io.check_image(chans[lm_channel], f"LM channel {lm_channel} of {lm_img.path.name}")
    em_ps, lm_ps = em_pixel_size or em_img.pixel_size, lm_pixel_size or lm_img.pixel_size
    if em_ps is None or lm_ps is None:
        missing = " and ".join(n for n, p in (("EM", em_ps), ("LM", lm_ps)) if p is None)
        raise InputError(f"the {missing} file has no pixel size; give it (--em-pixel-size/--lm-pixel-size, in nm) "
                         "so the bead size and scale are known")
    _report(progress, "beads", 0.05)
    reg = register_fiducials(em, lm, em_pixel_size=em_ps, lm_pixel_size=lm_ps, bead_nm=bead_nm, model=model,
                             polarity=polarity, localisation=localisation)
    if cancelled is not None and cancelled():
        raise Cancelled("cancelled")
    _report(progress, "write", 0.8)
    t1 = time.perf_counter()
    reg.fixed_pixel_size, reg.moving_pixel_size = em_ps, lm_ps
    reg.params.update(em_file=em_img.path.name, lm_file=lm_img.path.name, lm_channel=lm_channel)
    out.mkdir(parents=True, exist_ok=True)
    _write_images(reg, out, em, chans, em_ps, lm_channel)
    _bead_csv(reg, out)
    reg.timings = {**reg.timings, "write_s": time.perf_counter() - t1, "pipeline_total_s": time.perf_counter() - t0}
    reg.save_json(out / TRANSFORM_JSON)
    write_all(reg, out, moving_file=lm_img.path.name)
    _report(progress, "done", 1.0)
    return reg


def _world_to_px(pts: np.ndarray, ps: Optional[PixelSize]) -> np.ndarray:
    return pts / [ps.x, ps.y] if ps is not None else pts


def landmarks_files(csv_path, out_dir, *, em_path=None, lm_path=None, model: str = "affine", lm_channel: int = 0,
                    em_pixel_size: Optional[PixelSize] = None, lm_pixel_size: Optional[PixelSize] = None
                    ) -> Registration:
    """Fit a BigWarp landmarks CSV (moving = LM first, world units) and write ``transform.json`` with the error
    budget, ``tre_map.png`` and the Fiji transform files; with both images also the warped LM, overlay and fusion.

    World units become pixels through each image's pixel size (files' calibration, or the overrides); with no
    images or calibration the CSV's units are taken as pixels and the budget is in those units.
    """
    out = io.output_dir(out_dir)
    if (em_path is None) != (lm_path is None):
        raise InputError("give both --em and --lm images, or neither")
    moving_w, fixed_w = read_bigwarp_landmarks(csv_path)
    em = chans = None
    em_ps, lm_ps = em_pixel_size, lm_pixel_size
    fixed_shape = moving_shape = None
    if em_path is not None:
        em, em_img = io.read_em(em_path)
        chans, lm_img = io.load_lm_channels(lm_path)
        io.pick_channels(len(chans), lm_channel, None)
        em_ps, lm_ps = em_ps or em_img.pixel_size, lm_ps or lm_img.pixel_size
        fixed_shape, moving_shape = em.shape, lm_img.shape
    if (em_ps is None) != (lm_ps is None):
        raise InputError("mismatched calibration: only one of the two images has a pixel size; give both "
                         "(--em-pixel-size/--lm-pixel-size) or neither")
    reg = fit_landmarks(_world_to_px(fixed_w, em_ps), _world_to_px(moving_w, lm_ps), fixed_pixel_size=em_ps,
                        moving_pixel_size=lm_ps, model=model, fixed_shape=fixed_shape, moving_shape=moving_shape)
    reg.params.update(landmarks_file=Path(csv_path).name)
    out.mkdir(parents=True, exist_ok=True)
    if em is not None:
        _write_images(reg, out, em, chans, em_ps, lm_channel)
    else:
        _write_tre_map(reg, out)
    reg.save_json(out / TRANSFORM_JSON)
    write_all(reg, out, moving_file=Path(lm_path).name if lm_path else "moving.tif")
    return reg


def validate_files(transform_path, em_path, lm_path, out_dir, *, lm_channel: int = 0, bead_nm: float = 200.0,
                   polarity: str = "auto") -> dict:
    """Error of a saved registration (``transform.json``) at fiducial beads found in the EM and LM files;
    writes ``validation.json`` (the report of :func:`clem_bridge.fiducials.validate.validate_transform`
    plus the bead registration's error budget) and returns it."""
    out = io.output_dir(out_dir)
    try:
        tested = load_transform_json(transform_path)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read transform {transform_path}: {e}") from None
    em, em_img = io.read_em(em_path)
    chans, lm_img = io.load_lm_channels(lm_path)
    io.pick_channels(len(chans), lm_channel, None)
    if tuple(tested.fixed_shape) != em.shape or tuple(tested.moving_shape) != lm_img.shape:
        raise InputError(f"the transform is for a {tested.fixed_shape} EM and a {tested.moving_shape} LM, but the "
                         f"images are {list(em.shape)} and {list(lm_img.shape)}")
    em_ps = em_img.pixel_size or tested.fixed_pixel_size
    lm_ps = lm_img.pixel_size or tested.moving_pixel_size
    if em_ps is None or lm_ps is None:
        raise InputError("validation needs calibrated images (the bead size and scale come from the pixel sizes)")
    beads = register_fiducials(em, io.check_image(chans[lm_channel], "the LM bead channel"), em_pixel_size=em_ps,
                               lm_pixel_size=lm_ps, bead_nm=bead_nm, polarity=polarity)
    report = {"transform": str(Path(transform_path).name), "method": tested.method,
              **validate_transform(tested.fixed_to_moving, beads),
              "bead_registration": {"status": beads.outcome, "warnings": beads.warnings,
                                    "error_budget": {k: v for k, v in beads.error_budget.items() if k != "fit"}}}
    out.mkdir(parents=True, exist_ok=True)
    (out / VALIDATION_JSON).write_text(json.dumps(report, indent=2))
    return report


def landmarks_record(fixed, moving, *, model: str = "affine", fixed_shape=None, moving_shape=None,
                     fixed_pixel_size: Optional[PixelSize] = None, moving_pixel_size: Optional[PixelSize] = None
                     ) -> dict:
    """The transform JSON (dict) of clicked landmark pairs given in pixels (e.g. ImageJ multi-point ROIs)."""
    reg = fit_landmarks(fixed, moving, model=model, fixed_shape=fixed_shape, moving_shape=moving_shape,
                        fixed_pixel_size=fixed_pixel_size, moving_pixel_size=moving_pixel_size)
    reg.fixed_pixel_size, reg.moving_pixel_size = fixed_pixel_size, moving_pixel_size
    return reg.to_record().model_dump(mode="json")


# --- server job type -------------------------------------------------------------------

def prepare_fiducials(uploads: dict[str, list[Path]], params: dict, inputs_dir: Path,
                      max_pixels: int) -> dict[str, Path]:
    """Validate the EM and LM uploads; write them as calibrated TIFFs ``em/*.tif``, ``lm/*.tif`` (C,H,W)."""
    em, em_img = io.read_em(uploads["em"][0], max_pixels)
    chans, lm_img = io.load_lm_channels(uploads["lm"][0], None, max_pixels)
    io.pick_channels(len(chans), params["lm_channel"], None)
    em_ps = pixel_size_param(params.get("em_pixel_size"), em_img.pixel_size)
    lm_ps = pixel_size_param(params.get("lm_pixel_size"), lm_img.pixel_size)
    if em_ps is None or lm_ps is None:
        raise InputError("both images need a pixel size (in the files or as em_pixel_size/lm_pixel_size params)")
    out = {k: inputs_dir / k / (uploads[k][0].stem + ".tif") for k in ("em", "lm")}
    io.write_tiff(out["em"], em, pixel_size=em_ps)
    io.write_tiff(out["lm"], io.as_stack(chans), pixel_size=lm_ps)
    return out


def run_fiducials(inputs: dict[str, Path], params: dict, out_dir: Path, progress: ProgressFn,
                  cancelled: CancelFn) -> dict:
    """Register by fiducial beads; writes the CLI-contract outputs."""
    reg = fiducials_files(inputs["em"], inputs["lm"], out_dir, lm_channel=params["lm_channel"],
                          bead_nm=params["bead_nm"], model=params.get("model"), polarity=params["polarity"],
                          localisation=params["localisation"], progress=progress, cancelled=cancelled)
    return {"result": reg.to_record().model_dump(mode="json")}
