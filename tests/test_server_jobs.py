"""Server jobs: queue bound and cancel, atomic outputs, full disk, non-finite results, result status,
retention, restart after a kill, and real registrations submitted concurrently.

Tests that need a job to be running use the test-only ``block`` job type (``server_utils.BlockingJob``),
which runs until the test releases it: no race with a job that ends before it is seen running.
"""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import tifffile

from clem_bridge import transforms as T
from clem_bridge.errors import InputError
from clem_bridge.result import Registration
from clem_bridge.schema import TransformRecord
from clem_bridge.server.schemas import Job, JobState
from clem_bridge.server.store import write_atomic
from clem_bridge.synthetic import make_pair
from server_utils import BlockingJob, app_client, post_block, seed_job, server_process, wait_running

SHAPE = (96, 96)          # small phantoms keep the MINE engine quick on CPU


def tiff_bytes(a) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(a))
    return buf.getvalue()


def finished(c, job_id: str) -> dict:
    return c.get(f"/v1/jobs/{job_id}", params={"wait": 120}).json()


def record(**kw) -> dict:
    """A transform record as the register job returns it (``model_dump(mode='json')`` keeps NaN)."""
    reg = Registration(fixed_to_moving=T.from_params(rotation_deg=3, translation=(2, 1)), fixed_shape=(32, 32),
                       moving_shape=(32, 32), method="test", **kw)
    return reg.to_record().model_dump(mode="json")


def test_running_job_cancel_and_queue_bound(tmp_path):
    block = BlockingJob()
    with app_client(tmp_path / "data", block, max_queue=1) as c:
        running = post_block(c).json()["id"]
        block.wait_started()
        job = c.get(f"/v1/jobs/{running}").json()
        assert job["status"] == "running" and job["stage"] == "blocked" and job["progress"] == 0.5
        queued = post_block(c)
        assert queued.status_code == 202 and queued.json()["status"] == "queued"
        full = post_block(c)
        assert full.status_code == 429 and full.json()["error"] == "queue_full"
        assert int(full.headers["retry-after"]) >= 1
        assert c.delete(f"/v1/jobs/{queued.json()['id']}").json()["status"] == "cancelled"
        assert c.delete(f"/v1/jobs/{running}").json()["status"] == "cancelling"
        job = finished(c, running)
        assert job["status"] == "cancelled" and job["artifacts"] == [] and job["result"] is None
        assert c.get(f"/v1/jobs/{queued.json()['id']}").json()["status"] == "cancelled"
        h = c.get("/v1/health").json()
        assert h["running"] == 0 and h["queued"] == 0 and h["worker"] == "alive"
        assert not (tmp_path / "data" / "jobs" / running / "work").exists()


def test_outputs_appear_all_at_once_when_the_job_is_done(tmp_path):
    block = BlockingJob()
    with app_client(tmp_path / "data", block) as c:
        job_id = post_block(c, "some text").json()["id"]
        block.wait_started()
        d = tmp_path / "data" / "jobs" / job_id
        assert (d / "work").is_dir() and not (d / "out").exists()
        assert c.get(f"/v1/jobs/{job_id}").json()["artifacts"] == []
        block.release.set()
        job = finished(c, job_id)
        assert job["status"] == "done" and job["artifacts"] == ["note.txt"] and job["result_status"] == "ok"
        assert c.get(f"/v1/jobs/{job_id}/artifacts/note.txt").text == "some text"
        assert not (d / "work").exists() and not list(d.rglob("*.tmp"))
        assert Job.model_validate_json((d / "job.json").read_text()).status == JobState.done


def test_write_atomic_leaves_the_old_file_when_the_replace_fails(tmp_path, monkeypatch):
    target = write_atomic(tmp_path / "job.json", '{"v": 1}')

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError):
        write_atomic(target, '{"v": 2}')
    assert target.read_text() == '{"v": 1}' and [p.name for p in tmp_path.iterdir()] == ["job.json"]


def test_full_disk_fails_the_job_not_the_worker_and_uploads_get_507(tmp_path, monkeypatch):
    """Injected fault: every ``os.replace`` into the data dir fails with ENOSPC while ``full`` is set."""
    data = tmp_path / "data"
    full, real_replace = threading.Event(), os.replace

    def replace(src, dst, *a, **kw):
        if full.is_set() and Path(dst).is_relative_to(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *a, **kw)
    monkeypatch.setattr(os, "replace", replace)
    block = BlockingJob()
    with app_client(data, block) as c:
        first = post_block(c).json()["id"]
        block.wait_started()
        full.set()
        block.release.set()
        job = finished(c, first)
        assert job["status"] == "failed" and job["error"]["error"] == "insufficient_storage", job
        assert "disk is full" in job["error"]["detail"] and job["result"] is None and job["artifacts"] == []
        assert c.get("/v1/health").json()["worker"] == "alive"
        r = post_block(c)                                   # the job record cannot be written: 507
        assert r.status_code == 507 and r.json()["error"] == "insufficient_storage", r.text
        assert [j["id"] for j in c.get("/v1/jobs").json()["jobs"]] == [first]
        assert [p.name for p in (data / "jobs").iterdir()] == [first]
        full.clear()
        block.release.clear()
        second = post_block(c).json()["id"]               # the same worker runs the next job
        block.wait_started()
        block.release.set()
        assert finished(c, second)["status"] == "done"


def test_non_finite_values_are_dropped_with_a_warning_and_the_records_read_back(tmp_path):
    block = BlockingJob(record(metrics={"ecc": float("nan"), "mi": 0.42, "ncc": float("inf")},
                               mi_curve=[0.1, float("-inf"), 0.3]))
    block.release.set()
    with app_client(tmp_path / "data", block) as c:
        job = post_block(c, params={"wait": 120}).json()
        assert job["status"] == "done", job
        res = job["result"]
        assert res["metrics"] == {"mi": 0.42} and res["mi_curve"] == [0.1, 0.3]
        assert res["status"] == "uncertain" == job["result_status"]
        assert any("ecc" in w and "ncc" in w and "mi_curve" in w for w in res["warnings"])
        served = c.get(f"/v1/jobs/{job['id']}/artifacts/transform.json").json()
        assert TransformRecord.model_validate(served).model_dump(mode="json") == \
            TransformRecord.model_validate(res).model_dump(mode="json")
    with app_client(tmp_path / "data") as c:                     # job.json reads back after a restart
        again = c.get(f"/v1/jobs/{job['id']}").json()
        assert again["status"] == "done" and again["result"] == res


def test_a_failed_registration_is_a_done_job_whose_result_says_failed(tmp_path):
    block = BlockingJob(record(warnings=["no overlap between EM and LM"], status="failed"))
    block.release.set()
    with app_client(tmp_path / "data", block) as c:
        r = post_block(c, params={"wait": 120})
        assert r.status_code == 200 and r.json()["status"] == "done" and r.json()["result_status"] == "failed"
        result = c.get(f"/v1/jobs/{r.json()['id']}/result")
        assert result.status_code == 200 and result.json()["status"] == "failed"
        listed = c.get("/v1/jobs").json()["jobs"]
        assert listed[0]["result_status"] == "failed" and listed[0]["result"] is None


def test_finished_jobs_older_than_keep_days_are_deleted_at_start(tmp_path):
    data, now = tmp_path / "data", datetime.now(timezone.utc)
    old = seed_job(data, "a" * 32, status=JobState.done, created=now - timedelta(days=41),
                   finished=now - timedelta(days=40))
    recent = seed_job(data, "b" * 32, status=JobState.failed, created=now - timedelta(days=3),
                      finished=now - timedelta(days=2))
    cancelled_old = seed_job(data, "c" * 32, status=JobState.cancelled, created=now - timedelta(days=50))
    with app_client(data, keep_days=0) as c:                      # 0 keeps everything
        assert len(c.get("/v1/jobs").json()["jobs"]) == 3
    waiting_long = seed_job(data, "d" * 32, created=now - timedelta(days=60))        # still queued: kept
    block = BlockingJob()
    block.release.set()
    with app_client(data, block) as c:                            # the default: 30 days
        ids = {j["id"] for j in c.get("/v1/jobs").json()["jobs"]}
        assert ids == {recent.id, waiting_long.id}
        assert not (data / "jobs" / old.id).exists() and not (data / "jobs" / cancelled_old.id).exists()
        assert finished(c, waiting_long.id)["status"] == "done"
    with pytest.raises(InputError, match="--keep-days"), app_client(data, keep_days=-1):
        pass


def test_a_job_running_when_the_server_is_killed_is_interrupted_and_the_queue_survives(tmp_path):
    data = tmp_path / "data"
    victim = seed_job(data, "e" * 32)
    queued = seed_job(data, "f" * 32)
    with server_process(data, block_jobs=True) as (proc, url):
        wait_running(url, victim.id)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    half_created = data / "jobs" / ("0" * 32)      # a submission cut off before it was queued
    (half_created / "inputs").mkdir(parents=True)
    block = BlockingJob()
    block.release.set()
    with app_client(data, block) as c:
        assert not half_created.exists() and not (data / "jobs" / victim.id / "work").exists()
        job = c.get(f"/v1/jobs/{victim.id}").json()
        assert job["status"] == "interrupted" and job["error"]["error"] == "interrupted"
        r = c.get(f"/v1/jobs/{victim.id}/result")
        assert r.status_code == 409 and r.json()["error"] == "not_done"
        assert finished(c, queued.id)["status"] == "done"          # queued again and run after the restart
        assert c.delete(f"/v1/jobs/{victim.id}").json()["status"] == "deleted"
        assert not (data / "jobs" / victim.id).exists()


@pytest.mark.slow
def test_concurrent_registrations_are_all_recovered(tmp_path):
    pairs = [make_pair(shape=SHAPE, seed=k) for k in range(3)]
    with app_client(tmp_path / "data") as c:
        def submit(k: int) -> str:
            files = [("em", ("em.tif", tiff_bytes(pairs[k].em))),
                     ("lm", ("lm.tif", tiff_bytes(pairs[k].lm["reflected"])))]
            r = c.post("/v1/register", files=files, data={"params": json.dumps({"seed": k})})
            assert r.status_code == 202, r.text
            return r.json()["id"]
        with ThreadPoolExecutor(3) as ex:
            ids = list(ex.map(submit, range(3)))
        assert len(set(ids)) == 3
        for k, job_id in enumerate(ids):
            job = finished(c, job_id)
            assert job["status"] == "done" and job["result_status"] in ("ok", "uncertain"), job
            assert job["progress"] == 1.0 and job["stage"] is not None
            rec = c.get(f"/v1/jobs/{job_id}/result").json()
            err = T.tre(rec["fixed_to_moving"], pairs[k].fixed_to_moving, SHAPE)
            assert err < 1.5, (k, err)
            assert {"transform.json", "lm_warped.tif", "overlay.png", "mi_curve.png"} <= set(job["artifacts"])
        warped = c.get(f"/v1/jobs/{ids[0]}/artifacts/lm_warped.tif")
        assert warped.status_code == 200 and warped.headers["content-type"] == "image/tiff"
        assert tifffile.imread(io.BytesIO(warped.content)).shape[-2:] == SHAPE


def test_mirrored_lm_job_returns_a_mirrored_matrix_and_fiji_files(tmp_path):
    """An inverted-microscope LM (mirror image of the EM) through the server: det < 0 in the result and in the
    BigWarp / mpicbg artifacts."""
    from clem_bridge.export import read_transform
    from clem_bridge.synthetic import centred_affine
    flip = np.array([[-1.0, 0, SHAPE[1] - 1], [0, 1, 0], [0, 0, 1]])
    pair = make_pair(shape=SHAPE, seed=4, fixed_to_moving=centred_affine(SHAPE, SHAPE, rotation_deg=-20) @ flip)
    with app_client(tmp_path / "data") as c:
        files = [("em", ("em.tif", tiff_bytes(pair.em))), ("lm", ("lm.tif", tiff_bytes(pair.lm["reflected"])))]
        r = c.post("/v1/register", files=files, data={"params": json.dumps({"seed": 0})})
        assert r.status_code == 202, r.text
        job = finished(c, r.json()["id"])
        rec = c.get(f"/v1/jobs/{job['id']}/result").json()
        f2m = np.array(rec["fixed_to_moving"])
        assert np.linalg.det(f2m[:2, :2]) < 0 and T.tre(f2m, pair.fixed_to_moving, SHAPE) < 1.5   # 96 px phantom
        for name in ("bigwarp_landmarks.csv", "moving-bigWarp.xml", "mpicbg_affine.xml"):
            path = tmp_path / name
            path.write_bytes(c.get(f"/v1/jobs/{job['id']}/artifacts/{name}").content)
            np.testing.assert_allclose(read_transform(path), f2m, atol=1e-6)
