"""``clem-bridge serve``: the registration server (see :mod:`clem_bridge.server`, imported only when it runs)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError


def add_commands(app) -> None:
    """Register ``serve`` on the typer ``app``."""
    app.command("serve")(serve_command)


def serve_command(
    host: str = typer.Option("127.0.0.1", help="address to bind; anything but loopback needs --token"),
    port: int = typer.Option(8765, help="TCP port (0 = any free port)"),
    device: str = typer.Option("auto", help="compute device: auto, cpu or cuda"),
    data_dir: Path = typer.Option(None, help="job directory (default ~/.clem-bridge/server)"),
    token: Optional[str] = typer.Option(None, envvar="CLEM_BRIDGE_TOKEN",
                                        help="require 'Authorization: Bearer TOKEN' on /v1 routes"),
    max_upload_mb: float = typer.Option(2048.0, help="largest request body accepted (413 above)"),
    max_pixels: int = typer.Option(400_000_000, help="largest image accepted, in pixels (422 above)"),
    max_queue: int = typer.Option(32, help="jobs allowed to wait (429 with Retry-After above)"),
    keep_days: float = typer.Option(30.0, help="delete finished jobs older than this at start-up (0 = keep all)"),
    min_free_mb: float = typer.Option(100.0, help="refuse uploads (507) that would leave less free disk than this"),
    threads: int = typer.Option(0, help="torch CPU threads for the whole server (0 = torch's default)"),
) -> None:
    """Run the registration server (prints its URL and device; Ctrl-C stops it cleanly)."""
    from ..server.run import serve
    from ..server.settings import Settings, default_data_dir

    settings = Settings(host=host, port=port, device=device, data_dir=data_dir or default_data_dir(),
                        token=token, max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_queue=max_queue,
                        keep_days=keep_days, min_free_mb=min_free_mb, threads=threads)
    try:
        serve(settings, announce=typer.echo)
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
