"""``register3d``: an EM volume and an LM Z stack → transform.json (ndim 3), warped hyperstack, previews,
BigWarp 3-D files."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .common import parse_channels, progress_bar, report_outcome, user_errors


def parse_voxel(text: Optional[str], option: str):
    """'0.2,0.2,0.6' (µm) → PixelSize; None → None (the file's calibration)."""
    if text is None or not text.strip():
        return None
    from ..schema import PixelSize
    try:
        x, y, z = (float(t) for t in text.replace(",", " ").split())
        return PixelSize(x=x, y=y, z=z, unit="um")
    except ValueError:
        raise InputError(f"{option} must be three positive numbers x,y,z in µm, like 0.2,0.2,0.6 "
                         f"(got {text!r})") from None


def run_register3d(em: Path, lm: Path, out: Path, **kw) -> None:
    """The 3-D workflow with a progress bar, its summary on stdout and its status (``register --3d`` too)."""
    from ..workflows.outputs import MI_CURVE_PNG, OVERLAY_PNG, TRANSFORM_JSON, WARPED_TIFF
    from ..workflows.register3d import register_volume_files

    with progress_bar() as report:
        reg = register_volume_files(em, lm, out, progress=report, **kw)
    m = reg.metrics
    typer.echo(f"registered in {reg.timings.get('pipeline_total_s', 0.0):.1f} s (3-D, {reg.method}); "
               f"histogram MI {m.get('mi_histogram', 0.0):.3f}, overlap {m.get('overlap_fraction', 0.0):.2f}, "
               f"EM centre at LM slice {m.get('em_centre_lm_slice', 0.0):.2f}")
    for name in (TRANSFORM_JSON, WARPED_TIFF, OVERLAY_PNG, MI_CURVE_PNG):
        typer.echo(f"  {out / name}")
    report_outcome(reg)


def add_commands(app) -> None:
    """Register ``register3d`` on the typer ``app``."""

    @app.command("register3d")
    def register3d(
        em: Path = typer.Argument(..., help="EM volume (fixed): ImageJ hyperstack or OME-TIFF Z stack."),
        lm: Path = typer.Argument(..., help="LM Z stack (moving), one or more channels."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        reg_channel: int = typer.Option(0, "--reg-channel", help="LM channel used for registration (0-based)."),
        channels: Optional[str] = typer.Option(None, "--channels", help="LM channels to warp, e.g. 0,2 (default all)."),
        method: str = typer.Option("mine", "--method", help="mine (default) or mi (classical histogram MI)."),
        em_voxel: Optional[str] = typer.Option(None, "--em-voxel", help="EM voxel size x,y,z in µm "
                                               "(default: the file's calibration)."),
        lm_voxel: Optional[str] = typer.Option(None, "--lm-voxel", help="LM voxel size x,y,z in µm "
                                               "(default: the file's calibration)."),
        max_voxels: int = typer.Option(2 ** 31, "--max-voxels", help="Refuse stacks with more voxels than this."),
        tilt: bool = typer.Option(True, "--tilt/--no-tilt", help="Coarse tilt search (±3°) in the pre-alignment."),
        seed: int = typer.Option(0, "--seed", help="Random seed (same inputs + seed = same matrix)."),
    ) -> None:
        """Register an LM Z stack onto an EM volume (3-D affine, mirror allowed); writes transform.json (4x4),
        lm_warped.tif (ZCYX on the EM grid), overlay.png, mi_curve.png and BigWarp 3-D files."""
        with user_errors():
            if method not in ("mine", "mi"):
                raise InputError(f"--method must be mine or mi (got {method!r})")
            if max_voxels < 1:
                raise InputError(f"--max-voxels must be positive (got {max_voxels})")
            run_register3d(em, lm, out, reg_channel=reg_channel, channels=parse_channels(channels), method=method,
                           em_voxel=parse_voxel(em_voxel, "--em-voxel"), lm_voxel=parse_voxel(lm_voxel, "--lm-voxel"),
                           max_voxels=max_voxels, tilt_search=tilt, seed=seed)
