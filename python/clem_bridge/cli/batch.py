"""``clem-bridge batch``: many EM/LM pairs on Dask (see :mod:`clem_bridge.workflows.batch`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .common import user_errors


def add_commands(app) -> None:
    """Register ``batch`` on the typer ``app``."""

    @app.command("batch")
    def batch(
        manifest: Path = typer.Argument(..., help="CSV manifest (em, lm, optional name, method, extra_channels, "
                                        "reg_channel, channels, preset, seed, prepare, psr, model, transform, "
                                        "bead_nm, device), or a folder with --pair-glob."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder: one folder per pair, summary.csv, "
                                 "report.html."),
        pair_glob: Optional[str] = typer.Option(None, "--pair-glob", help="With a folder: 'EM_*.tif:LM_*.czi' "
                                                "pairs files whose * parts match."),
        method: str = typer.Option("register", "--method", help="Default method: register, correlate or fiducials."),
        reg_channel: Optional[str] = typer.Option(None, "--reg-channel", help="Default LM registration channel: "
                                                  "index or channel name."),
        preset: str = typer.Option("fast", "--preset", help="Default MINE preset: fast or thesis."),
        seed: int = typer.Option(0, "--seed", help="Default seed."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (on each worker)."),
        workers: int = typer.Option(1, "--workers", "-w", help="Local worker processes (one thread each)."),
        scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Use a running Dask cluster: "
                                                "tcp://host:8786 or a scheduler JSON file."),
        format_: str = typer.Option("tiff", "--format", help="tiff, or ome-zarr to also write lm_warped.ome.zarr "
                                    "(NGFF multiscale with the EM calibration)."),
    ) -> None:
        """Register many pairs on Dask; reruns skip finished pairs. Exit 3 when a pair failed or errored."""
        from ..workflows.batch import METHODS, pairs_from_glob, read_manifest, run_batch

        with user_errors():
            if method not in METHODS:
                raise InputError(f"--method must be one of {', '.join(METHODS)} (got {method!r})")
            defaults = {"method": method, "reg_channel": reg_channel, "preset": preset, "seed": seed,
                        "device": device}
            if manifest.is_dir():
                if not pair_glob:
                    raise InputError(f"{manifest} is a folder; give --pair-glob 'EM_*.tif:LM_*.tif' to pair its files")
                pairs = pairs_from_glob(manifest, pair_glob, defaults)
            else:
                if pair_glob:
                    raise InputError("--pair-glob needs a folder, not a manifest file")
                pairs = read_manifest(manifest, defaults)

            def echo(rec: dict) -> None:
                status = rec["status"] + (" (done earlier)" if rec.get("resumed") else "")
                detail = rec["error"] or "; ".join(rec.get("warnings", []))
                typer.echo(f"{status:<22} {rec['name']}  {rec.get('wall_s', 0.0):.1f} s" + (f"  {detail}" if detail
                                                                                              else ""))

            records = run_batch(pairs, out, workers=workers, scheduler=scheduler, output_format=format_,
                                on_done=echo)
            bad = [r for r in records if r["status"] in ("failed", "error")]
            typer.echo(f"{len(records)} pair(s), {len(bad)} failed or errored: {out / 'summary.csv'}, "
                       f"{out / 'report.html'}")
            if bad:
                raise typer.Exit(3)
