"""``POST /v1/register3d`` (in-process app) and ``Client.register3d_files`` (a real server) on a small calibrated
phantom stack pair: the matrix recovers the phantom's within the issue-13 targets, the artifacts are downloadable
and read back calibrated; bad input is a 422 with a clear message before anything is queued."""
import json

import numpy as np
import pytest
import tifffile

from clem_bridge.client import Client
from clem_bridge.result import load_transform_json
from clem_bridge.schema import PixelSize
from clem_bridge.transforms3d import tre3d_components
from clem_bridge.volume.phantom import make_phantom3d
from clem_bridge.volume.stack_io import read_stack, write_stack
from server_utils import TOKEN, app_client

GEOMETRY = dict(em_shape=(16, 64, 64), em_voxel=(0.15, 0.15, 0.3), lm_shape=(10, 64, 64), lm_voxel=(0.3, 0.3, 2.0),
                psf_sigma_um=(0.15, 0.15, 0.8), cell_size=4.5)
FAST = {"tilt_search": False}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """A mirrored, rotated, shifted phantom; the EM is saved without calibration (given as ``em_voxel``)."""
    d = tmp_path_factory.mktemp("stacks")
    ph = make_phantom3d(**GEOMETRY, rot_z_deg=20, mirror=True, shift_frac=(0.05, -0.08, 0.1), seed=11)
    em = (np.clip(ph.em, 0, 1) * 255).astype(np.uint8)
    lm = (np.clip(ph.lm / ph.lm.max(), 0, 1) * 65535).astype(np.uint16)
    em_path = write_stack(d / "em.tif", em)
    lm_path = write_stack(d / "lm.tif", lm, PixelSize(x=0.3, y=0.3, z=2.0, unit="um"))
    return ph, em_path, lm_path


def _error(matrix, ph) -> dict:
    return tre3d_components(np.asarray(matrix), ph.fixed_to_moving, ph.em.shape, fixed_voxel=ph.em_voxel,
                            moving_voxel=ph.lm_voxel, step=4)


def _post(client, em, lm, job_params=None, **kw):
    return client.post("/v1/register3d", files={"em": (em.name, em.read_bytes()), "lm": (lm.name, lm.read_bytes())},
                       data={"params": json.dumps(job_params or {})}, **kw)


def test_register3d_job_recovers_the_phantom(stacks, tmp_path):
    ph, em_path, lm_path = stacks
    with app_client(tmp_path / "data") as client:
        r = _post(client, em_path, lm_path, {"em_voxel": list(ph.em_voxel), **FAST}, params={"wait": 600})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["status"] == "done" and job["type"] == "register3d", job
        res = client.get(f"/v1/jobs/{job['id']}/result").json()
        assert res["ndim"] == 3 and res["status"] == "ok", res
        assert res["fixed_shape"] == [16, 64, 64] and res["moving_shape"] == [10, 64, 64]
        assert res["params"]["em_file"] == "em.tif"          # no server paths
        err = _error(res["fixed_to_moving"], ph)
        assert err["xy_fixed_voxels"] <= 1.0 and err["z_moving_slices"] <= 0.5, err
        assert {"transform.json", "lm_warped.tif", "overlay.png", "mi_curve.png", "bigwarp_landmarks3d.csv",
                "moving-bigWarp.xml"} <= set(job["artifacts"])
        for name in job["artifacts"]:
            got = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
            assert got.status_code == 200 and got.content, name
            (tmp_path / name).write_bytes(got.content)
    warped = read_stack(tmp_path / "lm_warped.tif")
    assert warped.data.shape == (2, 16, 64, 64) and warped.data.dtype == np.uint16
    assert (warped.voxel.x, warped.voxel.z, warped.voxel.unit) == (pytest.approx(0.15), pytest.approx(0.3), "um")
    assert np.allclose(load_transform_json(tmp_path / "transform.json").fixed_to_moving, res["fixed_to_moving"])


def test_register3d_bad_input_is_422(stacks, tmp_path):
    ph, em_path, lm_path = stacks
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), imagej=True)
    with app_client(tmp_path / "data", max_pixels=100_000) as client:
        r = _post(client, flat, lm_path)
        assert r.status_code == 422 and "2-D image" in r.json()["detail"], r.text
        r = _post(client, em_path, lm_path)                      # the EM file has no voxel size, none given
        assert r.status_code == 422 and "no voxel size" in r.json()["detail"] and "em.tif" in r.json()["detail"]
        r = _post(client, em_path, lm_path, {"em_voxel": [0.15, 0.15], "method": "mine"})
        assert r.status_code == 422 and r.json()["error"] == "invalid_params", r.text
        r = _post(client, em_path, lm_path, {"em_voxel": list(ph.em_voxel), "reg_channel": 5})
        assert r.status_code == 422 and "channel 5 does not exist" in r.json()["detail"], r.text
        big = write_stack(tmp_path / "big.tif", np.zeros((30, 64, 64), np.uint8), PixelSize(x=1, y=1, z=1))
        r = _post(client, big, lm_path)
        assert r.status_code == 422 and "voxels, more than the limit of 100,000" in r.json()["detail"], r.text
        assert client.get("/v1/jobs").json()["jobs"] == []        # nothing was queued


def test_client_register3d_files(stacks, tmp_path, server_url):
    ph, em_path, lm_path = stacks
    with Client(server_url, token=TOKEN) as c:
        reg = c.register3d_files(em_path, lm_path, tmp_path / "out", em_voxel=ph.em_voxel, **FAST)
    assert reg.ndim == 3 and reg.status == "ok"
    err = _error(reg.fixed_to_moving, ph)
    assert err["xy_fixed_voxels"] <= 1.0 and err["z_moving_slices"] <= 0.5, err
    saved = load_transform_json(tmp_path / "out" / "transform.json")
    assert np.allclose(saved.fixed_to_moving, reg.fixed_to_moving)
    assert read_stack(tmp_path / "out" / "lm_warped.tif").data.shape == (2, 16, 64, 64)
