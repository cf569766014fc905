"""Core commands: ``register`` (EM + LM files → transform.json, warped TIFF, previews) and ``demo``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from .common import parse_channels, progress_bar, report_outcome, user_errors


def _summary(reg, out: Path) -> None:
    from ..workflows.outputs import MI_CURVE_PNG, OVERLAY_PNG, TRANSFORM_JSON, WARPED_TIFF

    m = {k: reg.metrics[k] for k in ("overlap", "ncc", "mi", "ms_ssim") if k in reg.metrics}
    typer.echo(f"registered in {reg.timings.get('pipeline_total_s', 0.0):.1f} s on {reg.device}; "
               + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    for name in (TRANSFORM_JSON, WARPED_TIFF, OVERLAY_PNG, MI_CURVE_PNG):
        typer.echo(f"  {out / name}")
    report_outcome(reg)


def _register_local(em: Path, lm: Path, out: Path, **kw):
    import os

    import torch

    from ..workflows.register import register_files

    if "OMP_NUM_THREADS" not in os.environ:   # MINE's per-step tensors are small: one thread is fastest (2 cores,
        torch.set_num_threads(1)               # loaded: 2 threads were 10x slower), unless the user says otherwise
    with progress_bar() as report:
        return register_files(em, lm, out, progress=report, **kw)


def add_commands(app) -> None:
    """Register ``register`` and ``demo`` on the typer ``app``."""

    @app.command("register")
    def register(
        em: Path = typer.Argument(..., help="EM image (fixed): TIFF/PNG/JPEG."),
        lm: Path = typer.Argument(..., help="LM image (moving), one or more channels."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        reg_channel: int = typer.Option(0, "--reg-channel", help="LM channel used for registration (0-based)."),
        channels: Optional[str] = typer.Option(None, "--channels", help="LM channels to warp, e.g. 0,2 (default all)."),
        extra_channel: List[Path] = typer.Option([], "--extra-channel",
                                                 help="Extra LM channel file on the same grid (repeatable)."),
        preset: str = typer.Option("fast", "--preset", help="fast (default) or thesis (published settings)."),
        seed: int = typer.Option(0, "--seed", help="Random seed (same inputs + seed = same matrix)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        prepare: bool = typer.Option(False, "--prepare", help="First find the EM field of view in the LM "
                                     "(pixel-size ratio, crop, rotation) automatically; see 'prepare'."),
        psr: Optional[float] = typer.Option(None, "--psr", help="With --prepare: LM/EM pixel size ratio to use "
                                            "as is (default: the files' calibration, refined)."),
        server: Optional[str] = typer.Option(None, "--server", help="Register on a clem-bridge server at this URL "
                                             "(its device; shows its progress)."),
        token: Optional[str] = typer.Option(None, "--token", envvar="CLEM_BRIDGE_TOKEN", help="Token for --server."),
        three_d: bool = typer.Option(False, "--3d", help="3-D registration of an EM volume and an LM Z stack "
                                     "(automatic when both files are stacks; see 'register3d' for its options)."),
    ) -> None:
        """Register an LM image onto an EM image; writes transform.json, lm_warped.tif, overlay.png, mi_curve.png.

        Two Z stacks (or --3d) run the 3-D workflow of 'register3d'."""
        with user_errors():
            from ..volume.stack_io import wants_3d
            if wants_3d(em, lm, force=three_d):
                two_d_only = {"--prepare": prepare, "--psr": psr is not None, "--extra-channel": bool(extra_channel),
                              "--preset thesis": preset != "fast", "--server": bool(server)}
                used = [k for k, v in two_d_only.items() if v]
                if used:
                    raise InputError(f"{', '.join(used)} apply to 2-D registration only; these are Z stacks "
                                     "(see 'clem-bridge register3d --help' for the 3-D options)")
                from .register3d import run_register3d
                return run_register3d(em, lm, out, reg_channel=reg_channel, channels=parse_channels(channels),
                                      seed=seed)
            if preset not in ("fast", "thesis"):
                raise InputError(f"--preset must be fast or thesis (got {preset!r})")
            if server:
                from ..client import Client
                with Client(server, token=token) as client, progress_bar() as report:
                    reg = client.register_files(em, lm, out, extra_channel_paths=extra_channel, progress=report,
                                                reg_channel=reg_channel, channels=parse_channels(channels),
                                                preset=preset, seed=seed, prepare=prepare, psr=psr)
                return _summary(reg, out)
            reg = _register_local(em, lm, out, reg_channel=reg_channel, channels=parse_channels(channels),
                                  extra_channel_paths=[str(p) for p in extra_channel], preset=preset, seed=seed,
                                  device=device, prepare=prepare, psr=psr)
            _summary(reg, out)

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("clem_demo"), "--out", "-o", help="Output folder."),
        size: int = typer.Option(512, "--size", help="Phantom EM size in pixels (square)."),
        preset: str = typer.Option("fast", "--preset", help="fast or thesis."),
        seed: int = typer.Option(0, "--seed", help="Phantom and registration seed."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    ) -> None:
        """Generate a phantom EM/LM pair with a known affine, register it and report the error vs the truth."""
        from .. import transforms as T
        from ..synthetic import make_pair, save_pair

        with user_errors():
            if not 64 <= size <= 8192:
                raise InputError(f"--size must be between 64 and 8192 (got {size})")
            pair = make_pair((size, size), seed=seed)
            em_path, lm_path = save_pair(pair, out)
            truth = pair.fixed_to_moving
            typer.echo(f"phantom pair: {em_path} (EM), {lm_path} (LM: reflected, chromatin, fluorescence)")
            reg = _register_local(em_path, lm_path, out, reg_channel=0, preset=preset, seed=seed, device=device)
            err = T.tre(reg.fixed_to_moving, truth, reg.fixed_shape)
            typer.echo(f"TRE vs the known affine: {err:.3f} LM px (mean over the EM grid)")
            _summary(reg, out)
