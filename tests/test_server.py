"""The server's HTTP API: health, validation, errors, apply, Host/token guard, disk reserve, settings.

Most tests run the app in process (TestClient); a few smoke tests run the real command
(``python -m clem_bridge.server``, uvicorn on 127.0.0.1): HTTP-level limits, Ctrl-C, the data-dir lock.
"""
from __future__ import annotations

import io
import json
import signal
import threading

import httpx
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from clem_bridge import transforms as T
from clem_bridge.cli import app as cli_app
from server_utils import BlockingJob, app_client, running_server, seed_job, server_process, wait_running

MAX_PIXELS = 300_000


def tiff_bytes(a: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, a, **kw)
    return buf.getvalue()


def texture(shape, seed=0, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 200).astype(dtype)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with app_client(tmp_path_factory.mktemp("srv") / "data", max_pixels=MAX_PIXELS, max_upload_mb=2) as c:
        yield c


def post_register(client, em: bytes, lm: bytes, extra=(), params=None):
    files = [("em", ("em.tif", em)), ("lm", ("lm.tif", lm))] + [("extra", (f"x{k}.tif", x)) for k, x in enumerate(extra)]
    return client.post("/v1/register", files=files, data={"params": json.dumps(params or {})})


def post_apply(client, params, images=None, **kw):
    files = [("images", (f"{k}.tif", tiff_bytes(a))) for k, a in enumerate(images or [GOOD])]
    return client.post("/v1/apply", files=files, data={"params": json.dumps(params)}, **kw)


def test_health_reports_worker_and_disk(client):
    h = client.get("/v1/health").json()
    assert h["status"] == "ok" and h["device"] == "cpu" and "register" in h["job_types"]
    assert h["worker"] == "alive" and h["disk_free_mb"] > h["min_free_mb"] == 100
    assert h["queued"] == 0 and h["uptime_s"] >= 0
    spec = client.get("/openapi.json").json()
    assert {"/v1/register", "/v1/apply", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/artifacts/{name}"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


GOOD = texture((64, 64))
NAN = GOOD.copy()
NAN[3, 4] = np.nan
TIFF = tiff_bytes(GOOD)


@pytest.mark.parametrize("case, em, lm, extra, params, status, code, words", [pytest.param(*c, id=c[0]) for c in [
    ("non-image bytes", b"this is not an image at all", TIFF, (), {}, 422, "invalid_input", "not a tiff"),
    ("truncated tiff", tiff_bytes(texture((200, 200)))[:5000], TIFF, (), {}, 422, "invalid_input", "truncated"),
    ("zero-size file", b"", TIFF, (), {}, 422, "invalid_input", "empty"),
    ("nan pixels", tiff_bytes(NAN), TIFF, (), {}, 422, "invalid_input", "nan"),
    ("mismatched channels", TIFF, TIFF, (tiff_bytes(texture((32, 64))),), {}, 422, "invalid_input", "same size"),
    ("too many pixels", tiff_bytes(texture((600, 600), dtype=np.uint8)), TIFF, (), {}, 422, "invalid_input", "limit"),
    ("constant image", tiff_bytes(np.zeros((64, 64), np.uint8)), TIFF, (), {}, 422, "invalid_input", "constant"),
    ("bad preset", TIFF, TIFF, (), {"preset": "slowest"}, 422, "invalid_params", "preset"),
    ("unknown param", TIFF, TIFF, (), {"sede": 1}, 422, "invalid_params", "sede"),
    ("reg channel missing", TIFF, TIFF, (), {"reg_channel": 3}, 422, "invalid_input", "reg_channel 3"),
]])
def test_malformed_register_inputs_are_4xx_json(client, case, em, lm, extra, params, status, code, words):
    r = post_register(client, em, lm, extra, params)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and words in body["detail"].lower(), body
    assert "Traceback" not in r.text and "\n" not in body["detail"]


def test_rejected_submissions_leave_no_job(client):
    post_register(client, b"junk", TIFF)
    assert client.get("/v1/jobs").json() == {"jobs": []}
    assert list((client.app.state.store.root).iterdir()) == []


def test_missing_part_unknown_route_and_job(client):
    r = client.post("/v1/register", files={"em": ("em.tif", TIFF)})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request" and "lm" in r.json()["detail"]
    for path in ("/v1/nothing", "/v1/jobs/0123456789abcdef0123456789abcdef", "/v1/jobs/../../etc/passwd",
                 "/v1/jobs/0123456789abcdef0123456789abcdef/artifacts/..%2Fjob.json"):
        r = client.get(path)
        assert r.status_code == 404 and set(r.json()) == {"error", "detail"}, (path, r.text)
    r = client.put("/v1/health")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_apply_matches_library_warp_streams_a_calibrated_tiff_and_cleans_up(client):
    rng = np.random.default_rng(1)
    a = rng.random((80, 90)).astype(np.float32)
    b = (rng.random((80, 90)) * 1000).astype(np.uint16)
    m = T.from_params(rotation_deg=7, scale=1.1, translation=(3.5, -2.0), center=(45, 40))
    params = {"fixed_to_moving": m.tolist(), "fixed_shape": [70, 100],
              "pixel_size": {"x": 0.01, "y": 0.01, "unit": "um"}}
    r = post_apply(client, params, [a, b])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/tiff"
    assert r.headers["content-disposition"] == 'attachment; filename="warped.tif"'
    with tifffile.TiffFile(io.BytesIO(r.content)) as tf:
        out = tf.asarray()
        assert tf.is_imagej and tf.imagej_metadata["unit"] == "um"
        xres = tf.pages[0].tags["XResolution"].value
        assert abs(xres[1] / xres[0] - 0.01) < 1e-6
    assert out.shape == (2, 70, 100)
    np.testing.assert_allclose(out[0], T.warp_image(a, m, (70, 100)), atol=1e-5)
    np.testing.assert_allclose(out[1], T.warp_image(b, m, (70, 100)).astype(np.float32), atol=1)
    assert list(client.app.state.tmp_dir.iterdir()) == []        # the scratch file went once sent


@pytest.mark.parametrize("params, images, words", [pytest.param(*c, id=c[2]) for c in [
    ({"fixed_to_moving": [[1, 0, 0], [0, 0, 0], [0, 0, 1]], "fixed_shape": [10, 10]}, None, "singular"),
    ({"fixed_to_moving": [[1, 0], [0, 1]], "fixed_shape": [10, 10]}, None, "3x3"),
    ({"fixed_to_moving": np.eye(3).tolist(), "fixed_shape": [100000, 100000]}, None, "300000 pixels"),
    ({"fixed_to_moving": np.eye(3).tolist(), "fixed_shape": [0, 10]}, None, "pixels"),
    ({"fixed_to_moving": np.eye(3).tolist(), "fixed_shape": [400, 400]}, [GOOD, GOOD], "limit of 300000"),
    ({"fixed_to_moving": np.eye(3).tolist(), "fixed_shape": [10, 10]}, [texture((600, 600), dtype=np.uint8)],
     "limit of 300,000"),
    ({"fixed_to_moving": np.eye(3).tolist()}, None, "fixed_shape"),
]])
def test_apply_bad_params_and_max_pixels_are_422(client, params, images, words):
    r = post_apply(client, params, images)
    assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert list(client.app.state.tmp_dir.iterdir()) == []


def test_apply_runs_on_its_bounded_worker_and_answers_429_when_it_is_full(tmp_path):
    params = {"fixed_to_moving": np.eye(3).tolist(), "fixed_shape": [64, 64]}
    with app_client(tmp_path / "data", max_queue=1) as c:
        started, release = threading.Event(), threading.Event()

        def occupy():               # takes the worker's only slot from another thread
            import asyncio
            asyncio.run(c.app.state.apply_worker.run(lambda: (started.set(), release.wait(60))))
        t = threading.Thread(target=occupy)
        t.start()
        try:
            assert started.wait(60)
            r = post_apply(c, params)
            assert r.status_code == 429 and r.json()["error"] == "queue_full" and r.headers["retry-after"] == "1"
        finally:
            release.set()
            t.join(60)
        r = post_apply(c, params)
        assert r.status_code == 200 and tifffile.imread(io.BytesIO(r.content)).shape == (64, 64)


LOOPBACK = ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LocalHost:1234", "localhost", "127.0.0.1",
            "localhost.:8765"]
OTHERS = ["evil.example:8765", "evil.example", "127.0.0.1.evil.example:8765", "localhost.evil.example",
          "[::2]:8765", "127.0.0.2:8765", "", "127.0.0.1:8765@evil.example", "127.0.0.1:x"]


def test_without_token_only_loopback_host_names_are_answered(tmp_path):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example."""
    with app_client(tmp_path / "data", block=BlockingJob()) as c:
        job = c.post("/v1/test/block", files={"file": ("p.txt", b"x")}).json()["id"]
        for host in LOOPBACK:
            assert c.get("/v1/jobs", headers={"host": host}).status_code == 200, host
        for host in OTHERS:
            for path in ("/v1/jobs", f"/v1/jobs/{job}", f"/v1/jobs/{job}/artifacts/note.txt", "/v1/health",
                         "/openapi.json"):
                r = c.get(path, headers={"host": host})
                assert r.status_code == 403 and r.json()["error"] == "forbidden_host", (host, path, r.text)
            r = c.post("/v1/test/block", files={"file": ("p.txt", b"x")}, headers={"host": host})
            assert r.status_code == 403
        assert [j["id"] for j in c.get("/v1/jobs").json()["jobs"]] == [job]


def test_with_token_every_name_needs_the_token(tmp_path):
    with app_client(tmp_path / "data", host="0.0.0.0", token="s3cret") as c:
        assert c.get("/v1/health", headers={"host": "evil.example"}).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            r = c.get("/v1/jobs", headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert post_register(c, TIFF, TIFF).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert c.get("/v1/jobs", headers={**ok, "host": "evil.example:8765"}).status_code == 200
        spec = c.get("/openapi.json").json()      # documented for /docs' "Authorize"
        assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        assert spec["paths"]["/v1/jobs"]["get"]["security"] == [{"bearer": []}]


def test_uploads_are_507_when_the_disk_is_below_the_reserve(tmp_path):
    with app_client(tmp_path / "data", min_free_mb=2**40) as c:      # a reserve no real disk has free
        for r in (post_register(c, TIFF, TIFF),
                  post_apply(c, {"fixed_to_moving": np.eye(3).tolist(), "fixed_shape": [8, 8]})):
            assert r.status_code == 507 and r.json()["error"] == "insufficient_storage", r.text
            assert "--min-free-mb" in r.json()["detail"]
        h = c.get("/v1/health").json()
        assert h["status"] == "degraded" and h["worker"] == "alive" and 0 < h["disk_free_mb"] < h["min_free_mb"]
        assert c.get("/v1/jobs").json() == {"jobs": []}


def test_health_says_degraded_when_the_worker_has_stopped(tmp_path):
    with app_client(tmp_path / "data") as c:
        c.app.state.manager.stop()
        h = c.get("/v1/health").json()
        assert h["status"] == "degraded" and h["worker"] == "stopped"


def test_serve_refuses_unsafe_settings(tmp_path):
    runner = CliRunner()
    for args, words in ((["--host", "0.0.0.0"], "error: refusing to bind 0.0.0.0"),
                        (["--keep-days", "-1"], "--keep-days"), (["--min-free-mb", "-5"], "--min-free-mb")):
        r = runner.invoke(cli_app, ["serve", "--port", "0", "--data-dir", str(tmp_path / "d"), *args])
        assert r.exit_code == 2 and words in r.stderr and "Traceback" not in r.output, r.output


# --- the real server process -------------------------------------------------------------------

def test_real_server_limits_host_cors_threads_and_data_dir_lock(tmp_path):
    with running_server(tmp_path / "data", "--max-upload-mb", "2", "--threads", "1") as url:
        r = CliRunner().invoke(cli_app, ["serve", "--port", "0", "--data-dir", str(tmp_path / "data")])
        assert r.exit_code == 2 and "error: another clem-bridge server is using the data dir" in r.stderr
        h = httpx.get(url + "/v1/health").json()
        assert h["status"] == "ok" and h["worker"] == "alive"
        assert "CPU threads: 1," in next(tmp_path.glob("*.log")).read_text()      # set once at start-up
        r = httpx.get(url + "/v1/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers       # CORS is off
        r = httpx.get(url + "/v1/jobs", headers={"Host": "evil.example:" + url.rsplit(":", 1)[1]})
        assert r.status_code == 403 and r.json()["error"] == "forbidden_host"
        big = np.zeros(3 * 2**20, np.uint8).tobytes()
        try:
            r = httpx.post(url + "/v1/register", files=[("em", ("em.tif", big)), ("lm", ("lm.tif", TIFF))])
        except httpx.HTTPError as e:   # some stacks reset the connection while the client is still sending
            pytest.fail(f"server did not answer the oversized upload: {e!r}")
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

        def streamed():   # chunked, no Content-Length: the limit is enforced while the body is read
            yield b'--XX\r\nContent-Disposition: form-data; name="em"; filename="a.tif"\r\n\r\n'
            for _ in range(48):
                yield bytes(65536)
            yield b"\r\n--XX--\r\n"
        r = httpx.post(url + "/v1/register", content=streamed(),
                       headers={"content-type": "multipart/form-data; boundary=XX"})
        assert r.request.headers["transfer-encoding"] == "chunked"
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_ctrl_c_shuts_down_cleanly_and_marks_the_running_job(tmp_path):
    data = tmp_path / "data"
    job = seed_job(data, "c" * 32)             # queued before the start: the server picks it up
    with server_process(data, block_jobs=True) as (proc, url):
        wait_running(url, job.id)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    log = next(tmp_path.glob("*.log")).read_text()
    assert "Traceback" not in log and "server stopped" in log
    with app_client(data) as c:
        status = c.get(f"/v1/jobs/{job.id}").json()
        assert status["status"] == "interrupted" and "shut down" in status["error"]["detail"]
        assert not (data / "jobs" / job.id / "work").exists()
