"""``clem-bridge prepare`` on files: find the EM field of view in the LM and write the LM on the EM grid."""
from __future__ import annotations

import time
from typing import Optional

from .. import io
from ..preprocess import estimate_psr, grey_fill, psr_from_pixel_sizes
from ..result import Registration
from ..tiled import warp_to_tiff
from .outputs import PREPARE_JSON, PREPARED_TIFF


def prepare_files(em_path, lm_path, out_dir, *, reg_channel: int = 0, channels: Optional[list[int]] = None,
                  extra_channel_paths=None, psr: Optional[float] = None, search: float = 0.1,
                  rotations: float = 8.0) -> Registration:
    """Match the EM in the LM file; returns the preparation as a :class:`Registration`.

    Writes ``lm_prepared.tif`` (LM channels on the full EM grid, grey outside the LM field of
    view, calibrated with the EM pixel size; warped in strips) and ``prepare.json`` (a
    transform.json whose ``fixed_to_moving`` maps EM pixels to ORIGINAL LM pixels).
    """
    t0 = time.perf_counter()
    out = io.output_dir(out_dir)
    em, em_img = io.read_em(em_path)
    chans, lm_img = io.load_lm_channels(lm_path, extra_channel_paths)
    picked = io.pick_channels(len(chans), reg_channel, channels)
    hint = psr if psr is not None else psr_from_pixel_sizes(em_img.pixel_size, lm_img.pixel_size)
    est = estimate_psr(em, chans[reg_channel], psr_hint=hint, search=0.0 if psr is not None else search,
                       rotations=rotations)
    t1 = time.perf_counter()
    selected = [chans[i] for i in picked]
    warp_to_tiff(out / PREPARED_TIFF, selected, est.fixed_to_moving, em.shape, pixel_size=em_img.pixel_size,
                 fill=[grey_fill(c) for c in selected])
    t2 = time.perf_counter()
    reg = Registration(fixed_to_moving=est.fixed_to_moving, fixed_shape=tuple(em.shape),
                       moving_shape=tuple(chans[0].shape), method="prepare-template-matching",
                       params={"psr": est.psr, "psr_hint": hint, "psr_given": psr is not None,
                               "rotation_deg": est.rotation_deg, "lm_center_of_em": list(est.center),
                               "reg_channel": reg_channel, "channels": picked, "em_file": str(em_img.path),
                               "lm_file": str(lm_img.path)},
                       metrics={"match_score": est.score, "match_sharpness": est.sharpness},
                       timings={"estimate_s": t1 - t0, "warp_write_s": t2 - t1},
                       fixed_pixel_size=em_img.pixel_size, moving_pixel_size=lm_img.pixel_size)
    reg.save_json(out / PREPARE_JSON)
    return reg
