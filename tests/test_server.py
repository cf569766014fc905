"""The server over real HTTP (uvicorn subprocess on 127.0.0.1): health, validation, errors, apply, token, shutdown."""
from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import tifffile

from clem_bridge import transforms as T
from clem_bridge.synthetic import make_pair
from server_utils import running_server, server_process

MAX_PIXELS = 300_000


def tiff_bytes(a: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, a, **kw)
    return buf.getvalue()


def texture(shape, seed=0, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 200).astype(dtype)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("srv") / "data", "--max-pixels", str(MAX_PIXELS),
                        "--max-upload-mb", "2") as u:
        yield u


def post_register(url, em: bytes, lm: bytes, extra=(), params=None):
    files = [("em", ("em.tif", em)), ("lm", ("lm.tif", lm))] + [("extra", (f"x{k}.tif", x)) for k, x in enumerate(extra)]
    return httpx.post(url + "/v1/register", files=files, data={"params": json.dumps(params or {})}, timeout=60)


def test_health_openapi_and_docs(url):
    h = httpx.get(url + "/v1/health").json()
    assert h["status"] == "ok" and h["device"] == "cpu" and "register" in h["job_types"]
    assert h["queued"] == 0 and h["uptime_s"] >= 0
    spec = httpx.get(url + "/openapi.json").json()
    assert {"/v1/register", "/v1/apply", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/artifacts/{name}"} <= set(spec["paths"])
    assert httpx.get(url + "/docs").status_code == 200
    # CORS is off: no allow-origin header even when asked
    r = httpx.get(url + "/v1/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


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
def test_malformed_register_inputs_are_4xx_json(url, case, em, lm, extra, params, status, code, words):
    r = post_register(url, em, lm, extra, params)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and words in body["detail"].lower(), body
    assert "Traceback" not in r.text and "\n" not in body["detail"]


def test_rejected_submissions_leave_no_job(url, tmp_path):
    post_register(url, b"junk", TIFF)
    assert httpx.get(url + "/v1/jobs").json() == {"jobs": []}


def test_oversized_upload_is_413(url):
    big = np.zeros(3 * 2**20, np.uint8).tobytes()
    try:
        r = post_register(url, big, TIFF)
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


def test_missing_part_unknown_route_and_job(url):
    r = httpx.post(url + "/v1/register", files={"em": ("em.tif", TIFF)})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request" and "lm" in r.json()["detail"]
    for path in ("/v1/nothing", "/v1/jobs/0123456789abcdef0123456789abcdef", "/v1/jobs/../../etc/passwd",
                 "/v1/jobs/0123456789abcdef0123456789abcdef/artifacts/..%2Fjob.json"):
        r = httpx.get(url + path)
        assert r.status_code == 404 and set(r.json()) == {"error", "detail"}, (path, r.text)
    r = httpx.put(url + "/v1/health")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_apply_matches_library_warp_and_is_calibrated(url):
    rng = np.random.default_rng(1)
    a = rng.random((80, 90)).astype(np.float32)
    b = (rng.random((80, 90)) * 1000).astype(np.uint16)
    m = T.from_params(rotation_deg=7, scale=1.1, translation=(3.5, -2.0), center=(45, 40))
    params = {"fixed_to_moving": m.tolist(), "fixed_shape": [70, 100], "pixel_size": {"x": 0.01, "y": 0.01,
                                                                                      "unit": "um"}}
    files = [("images", ("a.tif", tiff_bytes(a))), ("images", ("b.tif", tiff_bytes(b)))]
    r = httpx.post(url + "/v1/apply", files=files, data={"params": json.dumps(params)}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/tiff"
    with tifffile.TiffFile(io.BytesIO(r.content)) as tf:
        out = tf.asarray()
        assert tf.is_imagej and tf.imagej_metadata["unit"] == "um"
        xres = tf.pages[0].tags["XResolution"].value
        assert abs(xres[1] / xres[0] - 0.01) < 1e-6
    assert out.shape == (2, 70, 100)
    np.testing.assert_allclose(out[0], T.warp_image(a, m, (70, 100)), atol=1e-5)
    np.testing.assert_allclose(out[1], T.warp_image(b, m, (70, 100)).astype(np.float32), atol=1)


@pytest.mark.parametrize("params, words", [pytest.param(*c, id=c[1]) for c in [
    ({"fixed_to_moving": [[1, 0, 0], [0, 0, 0], [0, 0, 1]], "fixed_shape": [10, 10]}, "singular"),
    ({"fixed_to_moving": [[1, 0], [0, 1]], "fixed_shape": [10, 10]}, "3x3"),
    ({"fixed_to_moving": np.eye(3).tolist(), "fixed_shape": [100000, 100000]}, "pixels"),
    ({"fixed_to_moving": np.eye(3).tolist(), "fixed_shape": [0, 10]}, "pixels"),
    ({"fixed_to_moving": np.eye(3).tolist()}, "fixed_shape"),
]])
def test_apply_bad_params_are_422(url, params, words):
    r = httpx.post(url + "/v1/apply", files=[("images", ("a.tif", TIFF))], data={"params": json.dumps(params)})
    assert r.status_code == 422 and words in r.json()["detail"], r.text


def test_second_server_on_the_same_data_dir_refuses_to_start(tmp_path):
    with running_server(tmp_path / "data"):
        p = subprocess.run([sys.executable, "-m", "clem_bridge.server", "--port", "0",
                            "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "error: another clem-bridge server is using the data dir" in p.stderr


def test_non_loopback_without_token_refuses_to_start(tmp_path):
    p = subprocess.run([sys.executable, "-m", "clem_bridge.server", "--host", "0.0.0.0", "--port", "0",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "error: refusing to bind 0.0.0.0" in p.stderr and "token" in p.stderr and "Traceback" not in p.stderr


def test_token_is_enforced_off_loopback(tmp_path):
    with running_server(tmp_path / "data", host="0.0.0.0", token="s3cret") as url:
        assert httpx.get(url + "/v1/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            r = httpx.get(url + "/v1/jobs", headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        r = httpx.post(url + "/v1/register", files={"em": ("e.tif", TIFF), "lm": ("l.tif", TIFF)})
        assert r.status_code == 401
        assert httpx.get(url + "/v1/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        spec = httpx.get(url + "/openapi.json").json()      # documented for /docs' "Authorize"
        assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        assert spec["paths"]["/v1/jobs"]["get"]["security"] == [{"bearer": []}]


def test_ctrl_c_shuts_down_cleanly_and_marks_the_running_job(tmp_path):
    pair = make_pair(shape=(128, 128), seed=4)
    with server_process(tmp_path / "data") as (proc, url):
        job = post_register(url, tiff_bytes(pair.em), tiff_bytes(pair.lm["reflected"])).json()["id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v1/jobs/{job}").json()["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    log = next(tmp_path.glob("*.log")).read_text()
    assert "Traceback" not in log and "server stopped" in log
    with running_server(tmp_path / "data") as url:
        status = httpx.get(f"{url}/v1/jobs/{job}").json()
        assert status["status"] == "interrupted" and "shut down" in status["error"]["detail"]
