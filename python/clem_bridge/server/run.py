"""Run the server with uvicorn on a socket bound here (so ``--port 0`` prints the real port)."""
from __future__ import annotations

import socket
from typing import Callable, Mapping, Optional

import torch
import uvicorn

from ..errors import InputError
from .app import create_app
from .settings import Settings


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


def serve(settings: Settings, announce: Callable[[str], None] = print, log_level: str = "warning",
          extra_job_types: Optional[Mapping] = None) -> None:
    """Serve until Ctrl-C / SIGTERM; ``announce`` gets one line with the URL, device and data dir.

    The torch CPU thread count is set here, once for the process (``settings.threads``); the engines
    never change it, so concurrent computations stay deterministic.  ``extra_job_types``: see
    :func:`~clem_bridge.server.app.create_app`."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    app = create_app(settings, extra_job_types)
    sock = bind(settings.host, settings.port)
    announce(f"clem-bridge server on {url_of(sock)} (device: {app.state.device_label}, "
             f"CPU threads: {torch.get_num_threads()}, data: {settings.data_dir})")
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:   # uvicorn re-raises the Ctrl-C it handled after a graceful shutdown
        pass
    announce("clem-bridge server stopped")
