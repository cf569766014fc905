"""Chromatin commands (DeepCLEM): ``train-chromatin``, ``predict-chromatin``, ``correlate``."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from ..insilico import DEFAULT_MODEL
from .common import parse_channels, progress_bar, report_outcome, user_errors


def add_commands(app) -> None:
    """Register the chromatin commands on the typer ``app``."""

    @app.command("train-chromatin")
    def train_chromatin(
        data: Path = typer.Option(..., "--data", help="Folder of registered em_<id>.* / chromatin_<id>.* pairs."),
        out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (e.g. models/NAME)."),
        source: str = typer.Option("", "--source", help="Data provenance for the model card."),
        licence: str = typer.Option("", "--licence", help="Data licence for the model card."),
        loo: bool = typer.Option(True, "--loo/--no-loo", help="Report leave-one-out Pearson r (trains N extra models)."),
        loo_dir: Optional[Path] = typer.Option(None, "--loo-dir", help="Also keep the leave-one-out fold models here."),
        patch: int = typer.Option(96, "--patch", help="Training patch size (pixels after binning)."),
        epochs: int = typer.Option(10, "--epochs", help="Epochs (cosine learning-rate decay; the last one's weights are kept)."),
        steps: int = typer.Option(80, "--steps", help="Steps per epoch."),
        bin_: int = typer.Option(4, "--bin", help="EM binning the network works at (4: a 96 px patch sees whole nuclei)."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        em_normalisation: str = typer.Option("clahe", "--em-normalisation",
                                             help="equalize_hist (global, DeepCLEM) or clahe (local: robust to EM crops)."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    ) -> None:
        """Train the chromatin U-Net; writes weights.pt and model.yaml (the model card)."""
        from ..insilico.train import TrainConfig, train_from_dir

        with user_errors():
            from ..insilico.normalize import EM_METHODS
            if em_normalisation not in EM_METHODS:
                raise InputError(f"--em-normalisation must be one of {', '.join(EM_METHODS)} (got {em_normalisation!r})")
            cfg = TrainConfig(patch=patch, max_epochs=epochs, steps_per_epoch=steps, bin=bin_, seed=seed,
                              em_normalisation=em_normalisation)
            extra = {"data_source": source, "data_licence": licence,
                     "command": shlex.join(["clem-bridge", "train-chromatin", "--data", str(data), "--out", str(out),
                                            "--source", source, "--licence", licence, "--loo" if loo else "--no-loo",
                                            "--patch", str(patch), "--epochs", str(epochs), "--steps", str(steps),
                                            "--bin", str(bin_), "--seed", str(seed),
                                            "--em-normalisation", em_normalisation])}
            model = train_from_dir(data, out, cfg, loo=loo, loo_dir=loo_dir, device=device, card_extra=extra,
                                   log=lambda m: typer.echo(m, err=True))
            r = model.card["leave_one_out_mean_pearson_r"]
            typer.echo(f"model written to {out}" + (f"; leave-one-out Pearson r {r:.3f}" if r is not None else ""))

    @app.command("predict-chromatin")
    def predict_chromatin_cmd(
        em: Path = typer.Argument(..., help="EM image (TIFF/PNG/JPEG)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output TIFF (float32, EM calibration)."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", help="Model name under models/ or a model folder."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    ) -> None:
        """Predict the chromatin stain of an EM image."""
        from ..workflows.predict import predict_file

        with user_errors():
            with progress_bar() as report:
                predict_file(em, out, model=model, device=device, progress=report)
            typer.echo(f"predicted chromatin written to {out}")

    @app.command("correlate")
    def correlate_cmd(
        em: Path = typer.Argument(..., help="EM image (fixed)."),
        chromatin: Path = typer.Argument(..., help="Measured chromatin image (moving); RGB → blue channel."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
        channels: Optional[str] = typer.Option(None, "--channels",
                                               help="Channels to warp, e.g. 0,2 (default all)."),
        chromatin_channel: Optional[int] = typer.Option(None, "--chromatin-channel",
                                                        help="Chromatin channel (default: blue of RGB, or the only one)."),
        extra_channel: List[Path] = typer.Option([], "--extra-channel",
                                                 help="Extra LM channel file on the chromatin grid (repeatable)."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", help="Model name under models/ or a model folder."),
        max_rotation: float = typer.Option(180.0, "--max-rotation", help="Rotation search range ± degrees."),
        transform: str = typer.Option("similarity", "--transform",
                                      help="similarity (rotation, scale, shift; default) or affine."),
        nuclei_refinement: bool = typer.Option(True, "--nuclei-refinement/--no-nuclei-refinement",
                                               help="Finish by aligning the chromatin with the EM's dense "
                                                    "heterochromatin inside the nuclei."),
        scale_from_pixel_size: bool = typer.Option(True, "--scale-from-pixel-size/--free-scale",
                                                   help="With both images calibrated, use their pixel sizes' ratio "
                                                        "as the scale when the fit is within 6 % of it."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        server: Optional[str] = typer.Option(None, "--server", help="Correlate on a clem-bridge server at this URL "
                                             "(its device and models; shows its progress)."),
        token: Optional[str] = typer.Option(None, "--token", envvar="CLEM_BRIDGE_TOKEN", help="Token for --server."),
    ) -> None:
        """DeepCLEM: predict chromatin from the EM, register it to the measured chromatin, warp the channels."""
        from ..insilico.correlate import SearchParams
        from ..workflows.correlate import correlate_files
        from ..workflows.outputs import OVERLAY_PNG, PREDICTED_TIFF, TRANSFORM_JSON, WARPED_TIFF

        with user_errors():
            if transform not in ("similarity", "affine"):
                raise InputError(f"--transform must be similarity or affine (got {transform!r})")
            if not 0 <= max_rotation <= 180:
                raise InputError(f"--max-rotation must be between 0 and 180 degrees (got {max_rotation})")
            if server:
                from ..client import Client
                with Client(server, token=token) as client, progress_bar() as report:
                    reg = client.correlate_files(em, chromatin, out, extra_channel_paths=extra_channel,
                                                 progress=report, model=model, chromatin_channel=chromatin_channel,
                                                 channels=parse_channels(channels), max_rotation=max_rotation,
                                                 transform=transform, nuclei_refinement=nuclei_refinement,
                                                 scale_from_pixel_size=scale_from_pixel_size)
            else:
                with progress_bar() as report:
                    reg = correlate_files(em, chromatin, out, chromatin_channel_index=chromatin_channel,
                                          channels=parse_channels(channels),
                                          extra_channel_paths=[str(p) for p in extra_channel], model=model,
                                          params=SearchParams(max_rotation=max_rotation, model=transform,
                                                              nuclei_refinement=nuclei_refinement,
                                                              scale_from_pixel_size=scale_from_pixel_size),
                                          device=device, progress=report)
            err = reg.metrics.get("expected_error_px")
            typer.echo(f"correlated in {reg.timings['total_s']:.1f} s; NCC {reg.metrics['ncc']:.3f}, "
                       f"overlap {reg.metrics['overlap']:.2f}" + ("" if err is None else
                       f"; expected error {err:.1f} EM px ({reg.metrics['local_nuclei']:.0f} nuclei aligned one by one)"))
            for name in (TRANSFORM_JSON, WARPED_TIFF, OVERLAY_PNG, PREDICTED_TIFF):
                typer.echo(f"  {out / name}")
            report_outcome(reg)
