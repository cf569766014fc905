"""Servers for tests: in-process apps (FastAPI TestClient) and real processes (uvicorn on 127.0.0.1).

    with app_client(tmp_path / "data") as client:           # in process, fast
        client.get("/v1/health")
    with running_server(tmp_path / "data") as url:           # a real `python -m clem_bridge.server`
        httpx.get(url + "/v1/health")

``server_process`` yields ``(process, url)`` for tests that kill or signal the server themselves.
:class:`BlockingJob` is a test-only job type that runs until the test releases it (or it is
cancelled), so a test can wait for a job to be ``running`` without racing a job that ends first.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import httpx
from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from clem_bridge.errors import Cancelled
from clem_bridge.progress import Progress
from clem_bridge.server import Settings, create_app
from clem_bridge.server.schemas import Job, JobState
from clem_bridge.server.submit import parse_params, submit_job, wait_and_reply

BASE_URL = "http://127.0.0.1:8765"      # what a TestClient request looks like: a loopback Host header
TOKEN = "s3cret-token"                  # the token of conftest's shared server (``server_url``)
_URL = re.compile(r"on (http://\S+) ")
_TESTS = Path(__file__).resolve().parent


class BlockingJob:
    """Test-only job type ``block``: copies the upload ``file`` as its input; when run it reports one
    progress step, releases :attr:`started` once, then waits until :attr:`release` is set (raising
    :class:`Cancelled` when cancelled meanwhile), writes ``note.txt`` (the input's text) and, when
    :attr:`result` holds a transform record, ``transform.json`` the way the job types do it (Python's
    ``json``, which writes NaN as an invalid bare ``NaN``); returns :attr:`result`."""

    def __init__(self, result: Optional[dict] = None):
        self.result = result if result is not None else {"status": "ok"}
        self.started = threading.Semaphore(0)
        self.release = threading.Event()

    def prepare(self, uploads: dict[str, list[Path]], params: dict, inputs_dir: Path, max_pixels: int) -> dict:
        return {"payload": Path(shutil.copy(uploads["file"][0], inputs_dir / "payload.txt"))}

    def run(self, inputs: dict[str, Path], params: dict, out_dir: Path, progress, cancelled) -> dict:
        progress(Progress("blocked", 0, None, None, 0.5))
        self.started.release()
        while not self.release.wait(0.01):
            if cancelled():
                raise Cancelled()
        (out_dir / "note.txt").write_text(inputs["payload"].read_text())
        if "fixed_to_moving" in self.result:
            (out_dir / "transform.json").write_text(json.dumps(self.result))
        return {"result": self.result}

    def wait_started(self, timeout: float = 60.0) -> None:
        """Block until a ``block`` job is running (a failed sync raises rather than hangs)."""
        if not self.started.acquire(timeout=timeout):
            raise AssertionError(f"no block job started within {timeout} s")


class BlockParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = ""


block_router = APIRouter()


@block_router.post("/v1/test/block", status_code=202, response_model=Job)
async def submit_block(request: Request, response: Response, file: Annotated[UploadFile, File()],
                       params: Annotated[str, Form()] = "{}", wait: Annotated[float, Query()] = 0):
    """Route of the test-only ``block`` job type (the pattern of ``server/routers/register.py``)."""
    job = await submit_job(request, "block", parse_params(BlockParams, params), {"file": [file]})
    return await wait_and_reply(request, response, job, wait)


def post_block(client: TestClient, text: str = "hello", **kw) -> httpx.Response:
    return client.post("/v1/test/block", files={"file": ("payload.txt", text.encode())}, **kw)


@contextlib.contextmanager
def app_client(data_dir: Path, block: Optional[BlockingJob] = None, **settings: Any) -> Iterator[TestClient]:
    """An in-process server app (with the ``block`` job type and route when ``block`` is given) behind
    a TestClient whose requests carry ``Host: 127.0.0.1:8765``; the worker runs while it is open."""
    app = create_app(Settings(device="cpu", data_dir=Path(data_dir), **settings),
                     extra_job_types={"block": block} if block else None)
    if block:
        app.include_router(block_router)
    try:
        with TestClient(app, base_url=BASE_URL) as client:
            yield client
    finally:
        if block:
            block.release.set()


def seed_job(data_dir: Path, job_id: str, *, type: str = "block", status: JobState = JobState.queued,
             created: Optional[datetime] = None, finished: Optional[datetime] = None) -> Job:
    """Write a job straight into a data dir (as a stopped server left it), with a ``payload.txt`` input."""
    created = created or datetime.now(timezone.utc)
    job = Job(id=job_id, type=type, status=status, created=created, finished=finished,
              inputs={"payload": "payload.txt"})
    d = Path(data_dir) / "jobs" / job_id
    (d / "inputs").mkdir(parents=True)
    (d / "inputs" / "payload.txt").write_text("seeded")
    (d / "job.json").write_text(job.model_dump_json())
    return job


def wait_running(url: str, job_id: str, timeout: float = 60.0) -> None:
    """Poll a real server until a ``block`` job (which runs until cancelled) is running."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/v1/jobs/{job_id}").json()["status"] != "running":
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not start within {timeout} s")
        time.sleep(0.1)


def serve_with_block_jobs() -> None:
    """``python -c`` entry of :func:`server_process` (``block_jobs=True``): the real ``serve`` with the
    ``block`` job type added (``argv``: data dir).  Its jobs run until cancelled."""
    from clem_bridge.server.run import serve
    serve(Settings(port=0, device="cpu", data_dir=Path(sys.argv[1])), extra_job_types={"block": BlockingJob()})


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
                   timeout: float = 120.0, env: Optional[dict] = None,
                   block_jobs: bool = False) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run ``python -m clem_bridge.server`` on ``host`` port 0 (or, with ``block_jobs``, the same server
    with the test-only ``block`` job type); yields (process, url); stops it on exit."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}-server-{time.time_ns()}.log"
    if block_jobs:
        code = f"import sys; sys.path.insert(0, {str(_TESTS)!r}); import server_utils; server_utils.serve_with_block_jobs()"
        cmd = [sys.executable, "-c", code, str(data_dir)]
    else:
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
