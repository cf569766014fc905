"""Server benchmark: request overhead vs the direct library call, and ``/v1/apply`` throughput; prints JSON.

* ``register``: a phantom EM/LM pair (``--size``², 3 LM channels) registered once with
  ``workflows.register.register_files`` in this process and once through a real server (uvicorn on
  127.0.0.1, HTTP upload → queue → worker → result + warped-TIFF download).  ``overhead_s`` is the
  server wall time minus the direct wall time; ``http_overhead_s`` excludes the job's own run time
  (upload, validation, queueing, polling, download).
* ``apply``: ``--apply-n`` sequential ``POST /v1/apply`` calls, each warping one ``--size``² LM image
  (3 channels) onto a ``--size``² EM canvas, vs ``transforms.warp_channels`` in process (pairs/s).

Both paths get one warm-up on a small pair first; direct and server runs alternate (``--repeats``)
and medians are reported.  Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_server.py [--size 1024] [--preset fast] [--repeats 2] [--apply-n 20]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import uvicorn

from clem_bridge import __version__
from clem_bridge import transforms as T
from clem_bridge.client import Client
from clem_bridge.io import read_image
from clem_bridge.workflows.register import register_files
from clem_bridge.server import Settings, create_app
from clem_bridge.server.run import bind, url_of
from clem_bridge.synthetic import make_pair, save_pair


class ServerThread:
    """A real uvicorn server on 127.0.0.1 (ephemeral port) in a background thread."""

    def __init__(self, data_dir: Path, device: str):
        app = create_app(Settings(port=0, data_dir=data_dir, device=device, max_upload_mb=4096))
        sock = bind("127.0.0.1", 0)
        self.url = url_of(sock)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _direct(em: Path, lm: Path, out: Path, preset: str, device: str):
    t0 = time.perf_counter()
    reg = register_files(em, lm, out, preset=preset, device=device)
    return reg, time.perf_counter() - t0


def _served(client: Client, em: Path, lm: Path, out: Path, preset: str):
    t0 = time.perf_counter()
    job = client.wait(client.register(em, lm, preset=preset), poll=0.2)
    if job["status"] != "done":
        raise RuntimeError(f"server job ended {job['status']}: {job.get('error')}")
    rec = client.result(job)
    client.download(job, "lm_warped.tif", out / "lm_warped.tif")
    return rec, job["timings"]["run_s"], time.perf_counter() - t0


def bench_register(client: Client, em: Path, lm: Path, warm: tuple[Path, Path], tmp: Path, preset: str,
                   device: str, repeats: int) -> dict:
    """Medians over ``repeats`` alternating direct/server runs, after one warm-up each on a small pair."""
    _direct(*warm, tmp / "warm", preset, device)
    _served(client, *warm, tmp / "warm", preset)
    direct, server, run = [], [], []
    for k in range(repeats):
        reg, d = _direct(em, lm, tmp / f"direct{k}", preset, device)
        rec, r, s = _served(client, em, lm, tmp / f"server{k}", preset)
        direct.append(d)
        server.append(s)
        run.append(r)
    d, s, r = (float(np.median(v)) for v in (direct, server, run))
    return {"repeats": repeats, "direct_s": round(d, 3), "server_s": round(s, 3), "server_job_run_s": round(r, 3),
            "overhead_s": round(s - d, 3), "overhead_pct": round(100 * (s - d) / d, 1),
            "http_overhead_s": round(s - r, 3), "direct_runs_s": [round(v, 3) for v in direct],
            "server_runs_s": [round(v, 3) for v in server],
            "matrix_diff_px": round(T.tre(rec["fixed_to_moving"], reg.fixed_to_moving, reg.fixed_shape), 4)}


def bench_apply(client: Client, lm_path: Path, lm: np.ndarray, matrix: np.ndarray, shape, n: int) -> dict:
    t0 = time.perf_counter()
    for _ in range(n):
        out = client.apply(lm_path, matrix, shape)
    server_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        T.warp_channels(list(lm), matrix, shape)
    local_s = time.perf_counter() - t0
    return {"pairs": n, "channels": int(out.shape[0]), "server_pairs_per_s": round(n / server_s, 3),
            "direct_pairs_per_s": round(n / local_s, 3), "server_s_per_pair": round(server_s / n, 4),
            "direct_s_per_pair": round(local_s / n, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--preset", default="fast", choices=["fast", "thesis"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--apply-n", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-register", action="store_true", help="only the apply benchmark")
    args = ap.parse_args()

    pair = make_pair((args.size, args.size), seed=0)
    report = {"benchmark": "server", "version": __version__, "size": args.size, "preset": args.preset,
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        em_path, lm_path = save_pair(pair, tmp / "pair")
        warm = save_pair(make_pair((64, 64), seed=1), tmp / "warm")
        with ServerThread(tmp / "server", args.device) as url, Client(url) as client:
            report["device"] = client.health()["device"]
            if not args.skip_register:
                report["register"] = bench_register(client, em_path, lm_path, warm, tmp, args.preset, args.device,
                                                    args.repeats)
            lm = read_image(lm_path).data
            report["apply"] = bench_apply(client, lm_path, lm, pair.fixed_to_moving, pair.em.shape, args.apply_n)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
