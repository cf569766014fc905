"""Run the server with uvicorn on a socket bound here (so ``--port 0`` prints the real port)."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable, Optional

import typer
import uvicorn

from ..errors import InputError
from .app import create_app
from .settings import Settings, default_data_dir


def bind(host: str, port: int) -> socket.socket:
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: Settings, announce: Callable[[str], None] = print, log_level: str = "warning") -> None:
    """Serve until Ctrl-C / SIGTERM; ``announce`` gets one line with the URL, device and data dir."""
    app = create_app(settings)
    sock = bind(settings.host, settings.port)
    announce(f"clem-bridge server on {url_of(sock)} (device: {app.state.device_label}, "
             f"data: {settings.data_dir})")
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:   # uvicorn re-raises the Ctrl-C it handled after a graceful shutdown
        pass
    announce("clem-bridge server stopped")


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
) -> None:
    """Run the registration server (prints its URL and device; Ctrl-C stops it cleanly)."""
    settings = Settings(host=host, port=port, device=device, data_dir=data_dir or default_data_dir(),
                        token=token, max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_queue=max_queue)
    try:
        serve(settings, announce=typer.echo)
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
