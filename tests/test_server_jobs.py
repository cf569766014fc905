"""Registration jobs over real HTTP: concurrency, cancel, queue bound, restart (finished + interrupted)."""
from __future__ import annotations

import io
import json
import signal
import time

import httpx
import numpy as np
import pytest
import tifffile

from clem_bridge import transforms as T
from clem_bridge.synthetic import make_pair
from server_utils import running_server, server_process

SHAPE = (96, 96)          # small phantoms keep the MINE engine quick on CPU


def tiff_bytes(a) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(a))
    return buf.getvalue()


def submit(url, pair, params=None, wait=0):
    files = [("em", ("em.tif", tiff_bytes(pair.em))), ("lm", ("lm.tif", tiff_bytes(pair.lm["reflected"])))]
    r = httpx.post(url + "/v1/register", files=files, data={"params": json.dumps(params or {})},
                   params={"wait": wait}, timeout=wait + 60)
    return r


def wait_status(url, job_id, statuses, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", params={"wait": 0.5 if "running" not in statuses else 0},
                        timeout=30).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


@pytest.mark.slow
def test_eight_concurrent_jobs_then_restart_and_interrupt(tmp_path):
    data = tmp_path / "data"
    pairs = [make_pair(shape=SHAPE, seed=k) for k in range(8)]
    with running_server(data) as url:
        ids = [None] * 8

        def post(k):
            r = submit(url, pairs[k], {"seed": k})
            assert r.status_code == 202, r.text
            ids[k] = r.json()["id"]

        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(post, range(8)))
        assert len(set(ids)) == 8
        health = httpx.get(url + "/v1/health").json()
        assert health["queued"] + health["running"] >= 1
        seen_progress = False
        for k, job_id in enumerate(ids):
            job = wait_status(url, job_id, {"done", "failed"})
            assert job["status"] == "done", job
            seen_progress |= job["progress"] == 1.0 and job["stage"] is not None
            rec = httpx.get(f"{url}/v1/jobs/{job_id}/result").json()
            err = T.tre(rec["fixed_to_moving"], pairs[k].fixed_to_moving, SHAPE)
            assert err < 1.5, (k, err)
            assert {"transform.json", "lm_warped.tif", "overlay.png", "mi_curve.png"} <= set(job["artifacts"])
        assert seen_progress
        finished = httpx.get(f"{url}/v1/jobs/{ids[0]}/result").json()
        warped = httpx.get(f"{url}/v1/jobs/{ids[0]}/artifacts/lm_warped.tif")
        assert warped.status_code == 200 and warped.headers["content-type"] == "image/tiff"
        assert tifffile.imread(io.BytesIO(warped.content)).shape[-2:] == SHAPE

    # a job running when the process is killed is reported "interrupted" after the restart
    with server_process(data) as (proc, url):
        victim = submit(url, pairs[0]).json()["id"]
        queued = submit(url, pairs[1]).json()["id"]
        wait_status(url, victim, {"running"})
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    half_created = data / "jobs" / ("f" * 32)      # a submission cut off before it was queued
    (half_created / "inputs").mkdir(parents=True)
    with running_server(data) as url:
        assert not half_created.exists()
        assert httpx.get(f"{url}/v1/jobs/{ids[0]}/result").json() == finished
        job = httpx.get(f"{url}/v1/jobs/{victim}").json()
        assert job["status"] == "interrupted" and job["error"]["error"] == "interrupted"
        r = httpx.get(f"{url}/v1/jobs/{victim}/result")
        assert r.status_code == 409 and r.json()["error"] == "not_done"
        # the queued one was re-queued; cancel it so the server stops quickly
        assert httpx.get(f"{url}/v1/jobs/{queued}").json()["status"] in ("queued", "running", "done")
        httpx.delete(f"{url}/v1/jobs/{queued}")
        listing = httpx.get(url + "/v1/jobs").json()["jobs"]
        assert {j["id"] for j in listing} == set(ids) | {victim, queued}
        # finished jobs can be deleted
        assert httpx.delete(f"{url}/v1/jobs/{ids[1]}").json() == {"id": ids[1], "status": "deleted"}
        assert httpx.get(f"{url}/v1/jobs/{ids[1]}").status_code == 404
        assert not (data / "jobs" / ids[1]).exists()


def test_cancel_running_job_and_queue_bound(tmp_path):
    pair = make_pair(shape=(128, 128), seed=3)
    with running_server(tmp_path / "data", "--max-queue", "1") as url:
        running = submit(url, pair).json()["id"]
        wait_status(url, running, {"running"})
        queued = submit(url, pair)
        assert queued.status_code == 202
        full = submit(url, pair)
        assert full.status_code == 429 and full.json()["error"] == "queue_full"
        assert int(full.headers["retry-after"]) >= 1
        assert httpx.delete(f"{url}/v1/jobs/{queued.json()['id']}").json()["status"] == "cancelled"
        t0 = time.monotonic()
        assert httpx.delete(f"{url}/v1/jobs/{running}").json()["status"] == "cancelling"
        job = wait_status(url, running, {"cancelled", "done", "failed"}, timeout=60)
        assert job["status"] == "cancelled" and time.monotonic() - t0 < 30
        assert httpx.get(f"{url}/v1/jobs/{queued.json()['id']}").json()["status"] == "cancelled"
        assert httpx.get(url + "/v1/health").json()["running"] == 0
