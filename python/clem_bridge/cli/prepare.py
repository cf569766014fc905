"""``prepare``: find the PSR and EM field of view in the LM, write the LM resampled onto the EM grid."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from .common import parse_channels, user_errors


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
            from ..workflows.outputs import PREPARE_JSON, PREPARED_TIFF
            from ..workflows.prepare import prepare_files

            typer.echo("matching the EM field of view in the LM ...", err=True)
            reg = prepare_files(em, lm, out, reg_channel=reg_channel, channels=parse_channels(channels),
                                extra_channel_paths=[str(p) for p in extra_channel], psr=psr, search=search,
                                rotations=rotations)
            p = reg.params
            typer.echo(f"PSR {p['psr']:.4f} (LM/EM pixel size), rotation {p['rotation_deg']:.2f} deg, "
                       f"match score {reg.metrics['match_score']:.3f}")
            typer.echo(f"  {out / PREPARED_TIFF}\n  {out / PREPARE_JSON}")
