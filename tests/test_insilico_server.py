"""DeepCLEM over real HTTP: ``POST /v1/predict/chromatin`` and ``POST /v1/correlate`` jobs on a live server."""
from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from clem_bridge import synthetic as S
from clem_bridge import transforms as T
from clem_bridge.cli import app
from clem_bridge.result import load_transform_json
from server_utils import running_server
from test_insilico import train_tiny


def tiff_bytes(a) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(a))
    return buf.getvalue()


def png_bytes(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A live server with the models folder of a tiny model (trained while the server starts: it finds the
    models when a job asks for one)."""
    models = tmp_path_factory.mktemp("models")
    with ThreadPoolExecutor(1) as pool:
        trained = pool.submit(train_tiny, models / "tiny")
        with running_server(tmp_path_factory.mktemp("srv") / "data", env={"CLEM_BRIDGE_MODELS": str(models)}) as url:
            trained.result()
            yield url


def test_predict_job(server):
    em = S.make_pair((128, 96), seed=4).em
    r = httpx.post(server + "/v1/predict/chromatin", files=[("em", ("em.tif", tiff_bytes(em)))],
                   data={"params": json.dumps({"model": "tiny"})}, params={"wait": 120}, timeout=180)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "done" and "predicted_chromatin.tif" in job["artifacts"]
    pred = tifffile.imread(io.BytesIO(httpx.get(f"{server}/v1/jobs/{job['id']}/artifacts/predicted_chromatin.tif").content))
    assert pred.shape == em.shape and np.all(np.isfinite(pred))


def test_correlate_job_rgb_blue_is_chromatin(server):
    f2m = S.centred_affine((256, 256), (272, 288), rotation_deg=18, scale=0.92, translation=(-5, 7))
    pair = S.make_pair((256, 256), fixed_to_moving=f2m, moving_shape=(272, 288), seed=6)
    rgb = np.stack([pair.lm["fluorescence"], pair.lm["reflected"], pair.lm["chromatin"]], axis=-1)
    rgb = (rgb * 255).round().astype(np.uint8)
    files = [("em", ("em.tif", tiff_bytes(pair.em))), ("chromatin", ("lm.png", png_bytes(rgb)))]
    r = httpx.post(server + "/v1/correlate", files=files,
                   data={"params": json.dumps({"model": "tiny", "max_rotation": 30, "channels": [0],
                                              "transform": "similarity", "scale_from_pixel_size": False})},
                   params={"wait": 240}, timeout=300)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "done", job
    assert {"transform.json", "lm_warped.tif", "overlay.png", "predicted_chromatin.tif"} <= set(job["artifacts"])
    rec = httpx.get(f"{server}/v1/jobs/{job['id']}/result").json()
    assert rec["params"]["chromatin_channel"] == 2 and rec["params"]["model"] == "tiny"
    err = T.tre(np.array(rec["fixed_to_moving"]), f2m, (256, 256))
    assert err < 1.5, f"TRE {err:.2f} px"
    assert rec["metrics"]["nuclei_applied"] == 1.0 and rec["params"]["nuclei_refinement"] is True
    assert rec["params"]["scale_from_pixel_size"] is False and rec["params"]["scale_fixed"] is False


@pytest.mark.parametrize("params", [{"model": "../tiny"}, {"model": "missing"}, {"max_rotation": 400},
                                    {"model": "tiny", "transform": "projective"},
                                    {"model": "tiny", "chromatin_channel": 5},
                                    {"model": "tiny", "nuclei_refinement": "sometimes"},
                                    {"model": "tiny", "scale_from_pixel_size": "maybe"}])
def test_correlate_bad_params_are_422(server, params):
    em = S.make_pair((64, 64), seed=1).em
    files = [("em", ("em.tif", tiff_bytes(em))), ("chromatin", ("c.tif", tiff_bytes(em)))]
    r = httpx.post(server + "/v1/correlate", files=files, data={"params": json.dumps(params)}, timeout=60)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] and "\n" not in body["detail"]


def test_cli_correlate_on_the_server(server, tmp_path):
    """``clem-bridge correlate --server``: the job runs on the server, the artifacts land in --out."""
    f2m = S.centred_affine((256, 256), (264, 280), rotation_deg=-14, scale=1.08, translation=(4, -6))
    pair = S.make_pair((256, 256), fixed_to_moving=f2m, moving_shape=(264, 280), seed=8)
    tifffile.imwrite(tmp_path / "em.tif", pair.em)
    tifffile.imwrite(tmp_path / "chromatin.tif", pair.lm["chromatin"])
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["correlate", str(tmp_path / "em.tif"), str(tmp_path / "chromatin.tif"),
                                 "--out", str(out), "--model", "tiny", "--max-rotation", "30", "--server", server])
    assert r.exit_code == 0, r.output
    reg = load_transform_json(out / "transform.json")
    assert T.tre(reg.fixed_to_moving, f2m, (256, 256)) < 1.5
    assert reg.params["model"] == "tiny" and reg.metrics["nuclei_applied"] == 1.0
    # the server's result carries the expected error, and the CLI prints it as it does locally
    assert f"expected error {reg.metrics['expected_error_px']:.1f} EM px" in r.output
    assert {"lm_warped.tif", "overlay.png", "predicted_chromatin.tif"} <= {p.name for p in out.iterdir()}
    r = CliRunner().invoke(app, ["correlate", str(tmp_path / "em.tif"), str(tmp_path / "chromatin.tif"),
                                 "--out", str(out), "--model", "missing", "--server", server])
    assert r.exit_code != 0 and "missing" in r.output and "Traceback" not in r.output
