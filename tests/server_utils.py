"""Start a real clem-bridge server (uvicorn, 127.0.0.1, ephemeral port) in a subprocess for tests.

    with running_server(tmp_path / "data") as url:
        httpx.get(url + "/v1/health")

``server_process`` yields ``(process, url)`` for tests that kill or signal the server themselves.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import httpx

_URL = re.compile(r"on (http://\S+) ")


def _wait_ready(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}:\n{text[-3000:]}")
        m = url or _URL.search(text)
        url = url or (m.group(1) if m else None)
        if url:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    return url
        time.sleep(0.1)
    raise RuntimeError(f"the server did not become ready within {timeout} s:\n{text[-3000:]}")


@contextlib.contextmanager
def server_process(data_dir: Path, *args: str, token: Optional[str] = None, host: str = "127.0.0.1",
                   timeout: float = 120.0, env: Optional[dict] = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run ``python -m clem_bridge.server`` on ``host`` port 0; yields (process, url); stops it on exit."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}-server-{time.time_ns()}.log"
    cmd = [sys.executable, "-m", "clem_bridge.server", "--host", host, "--port", "0", "--device", "cpu",
           "--data-dir", str(data_dir), *args]
    if token:
        cmd += ["--token", token]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    try:
        url = _wait_ready(proc, log, timeout)
        if host not in ("127.0.0.1", "localhost"):
            url = re.sub(r"//[^:/]+|//\[[^\]]+\]", "//127.0.0.1", url, count=1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def running_server(data_dir: Path, *args: str, token: Optional[str] = None, **kw) -> Iterator[str]:
    """Run a server (see :func:`server_process`) and yield its base URL, e.g. ``http://127.0.0.1:43121``."""
    with server_process(data_dir, *args, token=token, **kw) as (_, url):
        yield url
