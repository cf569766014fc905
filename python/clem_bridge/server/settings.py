"""Server settings and the bind-address safety check."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError


def default_data_dir() -> Path:
    return Path.home() / ".clem-bridge" / "server"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8765
    device: str = "auto"
    data_dir: Path = field(default_factory=default_data_dir)
    token: str | None = None
    max_upload_mb: float = 2048.0
    max_pixels: int = 400_000_000
    max_queue: int = 32
    max_wait_s: float = 600.0
    keep_days: float = 30.0          # finished jobs older than this are deleted at start-up (0 = keep all)
    min_free_mb: float = 100.0       # uploads are refused (507) when less would remain on the data dir's disk
    threads: int = 0                 # torch CPU threads, set once at start-up (0 = torch's default)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def min_free_bytes(self) -> int:
        return int(self.min_free_mb * 1024 * 1024)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(settings: Settings) -> None:
    """Refuse unsafe or impossible settings with an :class:`InputError` (one sentence)."""
    if not is_loopback(settings.host) and not settings.token:
        raise InputError(f"refusing to bind {settings.host}: binding a non-loopback address requires a token "
                         "(--token or CLEM_BRIDGE_TOKEN) so that only clients with it can use the server")
    if settings.max_upload_mb <= 0 or settings.max_pixels < 1 or settings.max_queue < 1:
        raise InputError("--max-upload-mb, --max-pixels and --max-queue must be positive")
    if settings.keep_days < 0 or settings.min_free_mb < 0 or settings.threads < 0:
        raise InputError("--keep-days, --min-free-mb and --threads must not be negative")
    if not 0 <= settings.port <= 65535:
        raise InputError(f"port {settings.port} is out of range 0-65535")
