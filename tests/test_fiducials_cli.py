"""Fiducials on files: the ``fiducials``, ``landmarks`` and ``validate`` commands and the ``fiducials`` server job."""
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clem_bridge.cli import app
from clem_bridge.export import read_bigwarp_csv, read_bigwarp_landmarks
from clem_bridge.fiducials.simulate import make_bead_phantom
from clem_bridge.io import write_tiff
from clem_bridge.result import load_transform_json
from clem_bridge.schema import PixelSize
from clem_bridge.transforms import apply_to_points, from_params, tre

from server_utils import app_client

EM_PS, LM_PS = PixelSize(x=0.01, y=0.01, unit="um"), PixelSize(x=0.065, y=0.065, unit="um")
runner = CliRunner()


def save(ph, d, em_ps=EM_PS, lm_ps=LM_PS):
    d.mkdir(parents=True, exist_ok=True)
    return write_tiff(d / "em.tif", ph.em, em_ps), write_tiff(d / "lm.tif", ph.lm, lm_ps)


@pytest.fixture(scope="module")
def beads(tmp_path_factory):
    """A calibrated bead pair (mirrored LM) and the ``fiducials`` command's output folder."""
    d = tmp_path_factory.mktemp("beads")
    ph = make_bead_phantom(4, em_shape=(512, 512), lm_shape=(120, 160), n_beads=(10, 14), mirror=True)
    em, lm = save(ph, d)
    r = runner.invoke(app, ["fiducials", str(em), str(lm), "--out", str(d / "out")])
    assert r.exit_code == 0, r.output
    return ph, em, lm, d / "out", r.output


def test_fiducials_command_writes_the_outputs(beads):
    ph, em, lm, out, text = beads
    assert "error budget (nm)" in text
    reg = load_transform_json(out / "transform.json")
    assert reg.method == "fiducials" and reg.outcome == "ok" and reg.params["mirrored"]
    assert tre(reg.fixed_to_moving, ph.fixed_to_moving, ph.em.shape, step=16) < 0.5
    b = reg.error_budget
    assert b["unit"] == "nm" and b["n_matched"] >= 6 and b["sigma_total_nm"] > b["sigma_alignment_nm"]
    for name in ("lm_warped.tif", "overlay.png", "tre_map.png", "fusion.png", "bigwarp_landmarks.csv"):
        assert (out / name).stat().st_size > 0
    assert Image.open(out / "fusion.png").size == (512, 512)
    # the Fiji transform files reproduce the matrix
    assert np.allclose(read_bigwarp_csv(out / "bigwarp_landmarks.csv", fixed_pixel_size=EM_PS,
                                        moving_pixel_size=LM_PS), reg.fixed_to_moving, atol=1e-6)


def test_bead_landmarks_csv_round_trip_through_the_landmarks_command(beads, tmp_path):
    ph, em, lm, out, _ = beads
    reg = load_transform_json(out / "transform.json")
    moving_w, fixed_w = read_bigwarp_landmarks(out / "bead_landmarks.csv")
    pairs = reg.error_budget["pairs"]
    assert np.allclose(fixed_w, np.array([p["fixed_px"] for p in pairs]) * 0.01)
    assert np.allclose(moving_w, np.array([p["moving_px"] for p in pairs]) * 0.065)
    r = runner.invoke(app, ["landmarks", str(out / "bead_landmarks.csv"), "--out", str(tmp_path / "lmk"),
                            "--em", str(em), "--lm", str(lm), "--model", "similarity"])
    assert r.exit_code == 0, r.output
    lmk = load_transform_json(tmp_path / "lmk" / "transform.json")
    assert lmk.method == "landmarks" and lmk.error_budget["n_matched"] == len(pairs)
    assert tre(lmk.fixed_to_moving, reg.fixed_to_moving, ph.em.shape, step=16) < 0.2    # same pairs, unweighted
    assert tre(lmk.fixed_to_moving, ph.fixed_to_moving, ph.em.shape, step=16) < 0.5
    assert (tmp_path / "lmk" / "lm_warped.tif").exists() and (tmp_path / "lmk" / "tre_map.png").exists()
    # without images: CSV units taken as pixels
    r = runner.invoke(app, ["landmarks", str(out / "bead_landmarks.csv"), "--out", str(tmp_path / "bare")])
    assert r.exit_code == 0, r.output
    assert load_transform_json(tmp_path / "bare" / "transform.json").error_budget["unit"] == "px"


def test_validate_reports_the_error_of_another_registration(beads, tmp_path):
    ph, em, lm, out, _ = beads
    reg = load_transform_json(out / "transform.json")
    reg.fixed_to_moving = ph.fixed_to_moving @ from_params(translation=(0, 20))     # 20 EM px = 200 nm off
    reg.method = "mine"
    reg.save_json(tmp_path / "shifted.json")
    r = runner.invoke(app, ["validate", str(tmp_path / "shifted.json"), "--fiducials", str(em), str(lm),
                            "--out", str(tmp_path / "val")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert rep["method"] == "mine" and rep["unit"] == "nm"
    assert rep["field_rms"] == pytest.approx(200, abs=20) and rep["bead_rms"] == pytest.approx(200, abs=40)


def test_bad_input_and_failed_status_exit_codes(tmp_path):
    rng = np.random.default_rng(0)
    blank = write_tiff(tmp_path / "blank.tif", rng.normal(100, 5, (256, 256)).astype(np.float32), EM_PS)
    ph = make_bead_phantom(1, em_shape=(512, 512), lm_shape=(120, 160), n_beads=(10, 14))
    em, lm = save(ph, tmp_path / "ok")
    r = runner.invoke(app, ["fiducials", str(blank), str(lm), "--out", str(tmp_path / "o1")])
    assert r.exit_code == 2 and "error: no beads found in the EM" in r.output
    _, lm_uncal = save(ph, tmp_path / "uncal", lm_ps=None)
    r = runner.invoke(app, ["fiducials", str(em), str(lm_uncal), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "error:" in r.output and "pixel size" in r.output
    r = runner.invoke(app, ["fiducials", str(em), str(lm), "--out", str(tmp_path / "o3"), "--model", "warp"])
    assert r.exit_code == 2 and "--model" in r.output
    # 3 of 5 EM beads in the LM (2 bleached) and one LM-only bead: a match that cannot be verified
    pos = [[100, 120], [400, 90], [260, 300], [120, 430], [420, 400]]
    few = make_bead_phantom(0, em_shape=(512, 512), lm_shape=(120, 160), bead_positions=pos, n_bleached=2,
                            n_lm_only=1, n_debris=0)
    em3, lm3 = save(few, tmp_path / "few")
    r = runner.invoke(app, ["fiducials", str(em3), str(lm3), "--out", str(tmp_path / "o4")])
    assert r.exit_code == 3 and "status: failed" in r.output
    assert load_transform_json(tmp_path / "o4" / "transform.json").outcome == "failed"


def test_server_fiducials_job(beads, tmp_path):
    ph, em, lm, _, _ = beads
    with app_client(tmp_path / "data") as c:
        files = [("em", ("em.tif", em.read_bytes())), ("lm", ("lm.tif", lm.read_bytes()))]
        r = c.post("/v1/fiducials", files=files, data={"params": json.dumps({"model": "affine"})},
                   params={"wait": 120})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["status"] == "done", job
        res = c.get(f"/v1/jobs/{job['id']}/result").json()
        assert res["method"] == "fiducials" and res["params"]["model"] == "affine"
        assert res["error_budget"]["n_matched"] >= 6 and res["status"] == "ok"
        f2m = np.array(res["fixed_to_moving"])
        assert tre(f2m, ph.fixed_to_moving, ph.em.shape, step=16) < 0.5
        assert c.get(f"/v1/jobs/{job['id']}/artifacts/tre_map.png").status_code == 200
        assert c.get(f"/v1/jobs/{job['id']}/artifacts/bead_landmarks.csv").status_code == 200
        bad = c.post("/v1/fiducials", files=files, data={"params": json.dumps({"polarity": "grey"})})
        assert bad.status_code == 422
        uncal = [("em", ("em.png", _png(ph.em))), ("lm", ("lm.tif", lm.read_bytes()))]
        r = c.post("/v1/fiducials", files=uncal)
        assert r.status_code == 422 and "pixel size" in r.json()["detail"]
        r = c.post("/v1/fiducials", files=uncal, data={"params": json.dumps(
            {"em_pixel_size": {"x": 10, "y": 10, "unit": "nm"}})}, params={"wait": 120})
        assert r.status_code == 200 and r.json()["status"] == "done", r.text


def _png(a):
    import io
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_server_landmarks_endpoint(tmp_path):
    rng = np.random.default_rng(3)
    f2m = from_params(rotation_deg=-70, scale=0.16, translation=(5, 8), center=(200, 150))
    em = rng.uniform(0, 400, (8, 2))
    lm = apply_to_points(f2m, em) + rng.normal(0, 0.05, (8, 2))
    body = {"fixed": em.tolist(), "moving": lm.tolist(), "model": "similarity", "fixed_shape": [300, 400],
            "moving_shape": [120, 160], "fixed_pixel_size": {"x": 10, "y": 10, "unit": "nm"},
            "moving_pixel_size": {"x": 65, "y": 65, "unit": "nm"}}
    with app_client(tmp_path / "data") as c:
        r = c.post("/v1/landmarks", json=body)
        assert r.status_code == 200, r.text
        rec = r.json()
        assert rec["method"] == "landmarks" and rec["status"] == "ok"
        assert tre(np.array(rec["fixed_to_moving"]), f2m, (300, 400), step=16) < 0.1
        assert rec["error_budget"]["n_matched"] == 8 and rec["error_budget"]["unit"] == "nm"
        line = dict(body, fixed=[[0, 0], [1, 1], [2, 2]], moving=[[0, 0], [1, 1], [2, 2]])
        r = c.post("/v1/landmarks", json=line)
        assert r.status_code == 422 and "one line" in r.json()["detail"]
        r = c.post("/v1/landmarks", json=dict(body, moving=lm[:5].tolist()))
        assert r.status_code == 422 and "pairs" in r.json()["detail"]
