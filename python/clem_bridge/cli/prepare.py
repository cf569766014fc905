"""``prepare``: find the PSR and EM field of view in the LM, write the LM resampled onto the EM grid."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from .core import parse_channels, user_errors

PREPARED_TIFF = "lm_prepared.tif"
PREPARE_JSON = "prepare.json"


def prepare_files(em_path, lm_path, out_dir, *, reg_channel: int = 0, channels: Optional[list[int]] = None,
                  extra_channel_paths=None, psr: Optional[float] = None, search: float = 0.1,
                  rotations: float = 8.0):
    """Library side of the command: returns the prep :class:`~clem_bridge.result.Registration`.

    Writes ``lm_prepared.tif`` (LM channels on the full EM grid, grey outside the LM field of
    view, calibrated with the EM pixel size; warped in strips) and ``prepare.json`` (a
    transform.json whose ``fixed_to_moving`` maps EM pixels to ORIGINAL LM pixels).
    """
    from ..io import check_image, read_image, select_channel
    from ..pipeline import _pick, load_lm_channels
    from ..preprocess import estimate_psr, grey_fill, psr_from_pixel_sizes
    from ..result import Registration
    from ..tiled import warp_to_tiff

    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder")
    em_img = read_image(em_path)
    em = check_image(select_channel(em_img), f"EM image {em_img.path.name}")
    chans, lm_img = load_lm_channels(lm_path, extra_channel_paths)
    picked = _pick(len(chans), reg_channel, channels)
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


def add_commands(app) -> None:
    """Register ``prepare`` on the typer ``app``."""

    @app.command("prepare")
    def prepare(
        em: Path = typer.Argument(..., help="EM image (fixed)."),
        lm: Path = typer.Argument(..., help="LM image (moving), larger field of view, larger pixels."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        reg_channel: int = typer.Option(0, "--reg-channel", help="LM channel used for matching (0-based)."),
        channels: Optional[str] = typer.Option(None, "--channels", help="LM channels to write, e.g. 0,2 (default all)."),
        extra_channel: List[Path] = typer.Option([], "--extra-channel",
                                                 help="Extra LM channel file on the same grid (repeatable)."),
        psr: Optional[float] = typer.Option(None, "--psr", help="Pixel size ratio LM/EM to use as is "
                                            "(default: metadata ratio refined automatically, or a full search)."),
        search: float = typer.Option(0.1, "--search", help="Relative PSR range searched around the metadata."),
        rotations: float = typer.Option(8.0, "--rotations", help="Largest rotation searched (degrees)."),
    ) -> None:
        """Match the EM inside the LM; write lm_prepared.tif (LM on the EM grid) and prepare.json."""
        with user_errors():
            if not 0 <= search < 1:
                raise InputError(f"--search must be between 0 and 1 (got {search})")
            if not 0 <= rotations <= 45:
                raise InputError(f"--rotations must be between 0 and 45 degrees (got {rotations})")
            typer.echo("matching the EM field of view in the LM ...", err=True)
            reg = prepare_files(em, lm, out, reg_channel=reg_channel, channels=parse_channels(channels),
                                extra_channel_paths=[str(p) for p in extra_channel], psr=psr, search=search,
                                rotations=rotations)
            p = reg.params
            typer.echo(f"PSR {p['psr']:.4f} (LM/EM pixel size), rotation {p['rotation_deg']:.2f} deg, "
                       f"match score {reg.metrics['match_score']:.3f}")
            typer.echo(f"  {out / PREPARED_TIFF}\n  {out / PREPARE_JSON}")
