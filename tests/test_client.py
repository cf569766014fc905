"""clem_bridge.client (and the CLI's --server) against a real server process: end-to-end registration,
fiducials and landmarks, artifacts, apply, errors."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from clem_bridge import transforms as T
from clem_bridge.cli import app as cli_app
from clem_bridge.client import Client
from clem_bridge.errors import ServerError, ServerUnreachable
from clem_bridge.fiducials.simulate import make_bead_phantom
from clem_bridge.io import read_image, write_tiff
from clem_bridge.result import load_transform_json
from clem_bridge.schema import PixelSize
from clem_bridge.synthetic import make_pair, save_pair
from server_utils import TOKEN

SHAPE = (128, 128)


@pytest.fixture(scope="module")
def url(server_url):
    """conftest's shared server (token ``TOKEN``)."""
    return server_url


def test_register_end_to_end_recovers_the_matrix(url, tmp_path):
    pair = make_pair(shape=SHAPE, seed=5)
    lm = np.stack([pair.lm["reflected"], pair.lm["chromatin"]])
    seen = []
    with Client(url, token=TOKEN) as c:
        assert c.health()["status"] == "ok"
        job = c.register(pair.em, lm, extra=[pair.lm["fluorescence"]], reg_channel=0,
                         em_pixel_size={"x": 0.01, "y": 0.01, "unit": "um"}, seed=1, wait=300)
        assert job["status"] == "done", job          # ?wait returned the finished job with its result
        job = c.wait(job, progress=seen.append)
        rec = c.result(job)
        assert rec == job["result"]
        err = T.tre(rec["fixed_to_moving"], pair.fixed_to_moving, SHAPE)
        assert err < 1.0, err
        np.testing.assert_allclose(np.asarray(rec["moving_to_fixed"]) @ np.asarray(rec["fixed_to_moving"]),
                                   np.eye(3), atol=1e-9)
        assert rec["fixed_shape"] == list(SHAPE) and rec["params"]["channels"] == [0, 1, 2]
        assert [s["status"] for s in seen] == ["done"]
        warped_path = c.download(job, "lm_warped.tif", tmp_path / "w.tif")
        warped = read_image(warped_path)
        assert warped.data.shape == (3, *SHAPE)
        assert warped.pixel_size is not None and abs(warped.pixel_size.x - 0.01) < 1e-9
        assert c.download(job, "overlay.png", tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"
        # /v1/apply with the found matrix reproduces the job's warped channels
        again = c.apply([lm, pair.lm["fluorescence"]], rec["fixed_to_moving"], SHAPE, path=tmp_path / "a.tif")
        np.testing.assert_allclose(again, warped.data, atol=1e-4)
        assert tifffile.imread(tmp_path / "a.tif").shape == (3, *SHAPE)
        assert any(j["id"] == job["id"] for j in c.jobs(status="done"))
        with pytest.raises(ServerError) as e:
            c.download(job, "../job.json", tmp_path / "x")
        assert e.value.status == 404


def test_fiducials_files_and_landmarks(url, tmp_path):
    """Bead registration on the server with its files downloaded; the matched beads fitted again as
    landmarks (pixels) reproduce it; collinear landmarks are a 422 with the server's sentence."""
    ph = make_bead_phantom(4, em_shape=(512, 512), lm_shape=(120, 160), n_beads=(10, 14), mirror=True)
    em_ps, lm_ps = PixelSize(x=10, y=10, unit="nm"), PixelSize(x=65, y=65, unit="nm")
    write_tiff(tmp_path / "em.tif", ph.em, em_ps)
    with Client(url, token=TOKEN) as c:
        reg = c.fiducials_files(tmp_path / "em.tif", ph.lm, tmp_path / "out", lm_pixel_size=lm_ps, model="affine")
        assert reg.method == "fiducials" and reg.outcome == "ok" and reg.params["model"] == "affine"
        assert T.tre(reg.fixed_to_moving, ph.fixed_to_moving, (512, 512), step=16) < 0.5
        b = reg.error_budget
        assert b["n_matched"] >= 6 and b["sigma_total_nm"] >= b["sigma_alignment_nm"] > 0
        for name in ("transform.json", "lm_warped.tif", "tre_map.png", "fusion.png", "bead_landmarks.csv"):
            assert (tmp_path / "out" / name).stat().st_size > 0, name
        assert load_transform_json(tmp_path / "out" / "transform.json").error_budget == b
        pairs = b["pairs"]
        fixed, moving = [p["fixed_px"] for p in pairs], [p["moving_px"] for p in pairs]
        lmk = c.landmarks(fixed, moving, model="affine", fixed_shape=(512, 512), moving_shape=(120, 160),
                          fixed_pixel_size=em_ps, moving_pixel_size=lm_ps)
        assert lmk.method == "landmarks" and lmk.error_budget["n_matched"] == len(pairs)
        assert lmk.fixed_shape == (512, 512) and lmk.moving_pixel_size.x == 65
        assert T.tre(lmk.fixed_to_moving, reg.fixed_to_moving, (512, 512), step=16) < 0.2
        with pytest.raises(ServerError) as e:
            c.landmarks([[0, 0], [10, 10], [20, 20]], [[1, 1], [5, 5], [9, 9]])
        assert e.value.status == 422 and "line" in str(e.value)


def test_errors_carry_the_server_sentence(url):
    with Client(url, token=TOKEN) as c:
        with pytest.raises(ServerError) as e:
            c.result("0" * 32)
        assert e.value.status == 404 and e.value.code == "not_found" and "no job" in str(e.value)
        with pytest.raises(ServerError) as e:
            c.register(np.zeros((64, 64), np.float32), np.ones((64, 64), np.float32))
        assert e.value.status == 422 and "constant" in str(e.value)
    with Client(url, token="wrong") as c, pytest.raises(ServerError) as e:
        c.jobs()
    assert e.value.status == 401 and "token" in str(e.value)


def test_dead_server_is_a_clear_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", timeout=5) as c, pytest.raises(ConnectionError) as e:
        c.health()
    assert isinstance(e.value, ServerUnreachable)
    assert f"no clem-bridge server answers at http://127.0.0.1:{port}" in str(e.value)


def _cli(*args: str):
    return CliRunner().invoke(cli_app, list(args))


def test_cli_register_through_the_server(url, tmp_path):
    pair = make_pair(shape=(96, 96), seed=2)
    em, lm = save_pair(pair, tmp_path / "in")
    p = _cli("register", str(em), str(lm), "-o", str(tmp_path / "out"), "--server", url, "--token", TOKEN,
             "--seed", "2")
    assert p.exit_code == 0, p.output
    written = {f.name for f in (tmp_path / "out").iterdir()}
    assert {"transform.json", "lm_warped.tif", "overlay.png", "mi_curve.png"} <= written
    reg = load_transform_json(tmp_path / "out" / "transform.json")
    assert T.tre(reg.fixed_to_moving, pair.fixed_to_moving, (96, 96)) < 1.5
    assert "%" in p.stderr          # the server's progress, shown as a bar on stderr


def test_cli_register_with_dead_server_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pair = make_pair(shape=(64, 64), seed=2)
    em, lm = save_pair(pair, tmp_path / "in")
    p = _cli("register", str(em), str(lm), "-o", str(tmp_path / "out"), "--server", f"http://127.0.0.1:{port}")
    assert p.exit_code == 1
    assert p.stderr.strip().splitlines() == [f"error: no clem-bridge server answers at http://127.0.0.1:{port} "
                                             "(ConnectError); start one with 'clem-bridge serve' or check the URL"]
