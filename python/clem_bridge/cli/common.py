"""What every command shares: channel lists, the progress bar, one-line errors (exit 2) and the result's
status (exit 3 when failed)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Optional

import typer

from ..errors import Cancelled, InputError, ServerError


def parse_channels(text: Optional[str]) -> Optional[list[int]]:
    """'0,2' or '0 2' → [0, 2]; None/'' → None (all channels)."""
    if text is None or not text.strip():
        return None
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise InputError(f"--channels must be channel numbers like 0,2 (got {text!r})") from None


@contextmanager
def progress_bar():
    """A tqdm bar on stderr driven by the engine's ``Progress`` reports (opened at the first report)."""
    from tqdm import tqdm

    bars = []

    def report(p) -> None:
        if not bars:
            bars.append(tqdm(total=1000, file=sys.stderr, leave=False, dynamic_ncols=True,
                             bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}"))
        bar = bars[0]
        bar.set_description_str(p.stage, refresh=False)
        if p.mi is not None:
            bar.set_postfix_str(f"MI {p.mi:.3f}", refresh=False)
        bar.update(max(int(round(p.fraction * 1000)) - bar.n, 0))

    try:
        yield report
    finally:
        for bar in bars:
            bar.close()


@contextmanager
def user_errors():
    """Turn bad input into a one-line ``error: …`` on stderr and exit code 2 (130 when cancelled)."""
    try:
        yield
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    except (Cancelled, KeyboardInterrupt):
        typer.echo("cancelled", err=True)
        raise typer.Exit(130)
    except ServerError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)


EXIT_FAILED = 3   # the registration ran and wrote its files, but its result is judged wrong (status "failed")


def report_outcome(reg) -> None:
    """The result's warnings and status on stderr; exit code 3 when the status is ``failed``.

    Files are written either way, so a user can inspect what went wrong."""
    for warning in reg.warnings:
        typer.echo(f"warning: {warning}", err=True)
    status = reg.outcome
    if status != "ok":
        typer.echo(f"status: {status}" + (" (see the warnings above)" if reg.warnings else ""), err=True)
    if status == "failed":
        raise typer.Exit(EXIT_FAILED)
