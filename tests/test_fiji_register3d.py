"""Fiji's Register EM-LM on two Z stacks, headless under a real JVM against a live clem-bridge server: the stacks
go to ``POST /v1/register3d`` with ImageJ's voxel sizes (EM calibrated in nm, sent in µm), the job's files are
saved, the registration recovers the phantom's matrix and ``lm_warped.tif`` reads back as a calibrated
hyperstack; an EM stack with a 2-D LM is one ``error:`` line."""
import re

import numpy as np
import pytest
import tifffile

from clem_bridge.result import load_transform_json
from clem_bridge.schema import PixelSize
from clem_bridge.transforms3d import tre3d_components
from clem_bridge.volume.phantom import make_phantom3d
from clem_bridge.volume.stack_io import read_stack, write_stack
from fiji_utils import fiji_app_and_server, jvm_missing, run_script
from server_utils import TOKEN

pytestmark = [pytest.mark.jvm, pytest.mark.slow,
              pytest.mark.skipif(jvm_missing() is not None, reason=str(jvm_missing()))]
GEOMETRY = dict(em_shape=(16, 64, 64), em_voxel=(0.15, 0.15, 0.3), lm_shape=(10, 64, 64), lm_voxel=(0.3, 0.3, 2.0),
                psf_sigma_um=(0.15, 0.15, 0.8), cell_size=4.5)


def test_register_em_lm_on_stacks_runs_3d(tmp_path, request):
    ph = make_phantom3d(**GEOMETRY, rot_z_deg=-15, shift_frac=(-0.05, 0.06, 0.1), seed=7)
    em_path = write_stack(tmp_path / "em.tif", (np.clip(ph.em, 0, 1) * 255).astype(np.uint8),
                          PixelSize(x=150, y=150, z=300, unit="nm"))
    lm_path = write_stack(tmp_path / "lm.tif", (np.clip(ph.lm / ph.lm.max(), 0, 1) * 65535).astype(np.uint16),
                          PixelSize(x=0.3, y=0.3, z=2.0, unit="um"))
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, (ph.lm[0, 5] * 1000).astype(np.uint16), imagej=True)
    out = tmp_path / "out"
    app, server_url = fiji_app_and_server(tmp_path, request)
    r = run_script(app, "Register_EM-LM.py", f'em_file="{em_path}",lm_file="{lm_path}",reg_channel=0,'
                   f'channels="",server_url="{server_url}",token="{TOKEN}",seed=0,out_dir="{out}"')
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CLEM 3-D: EM voxel 0.15 x 0.15 x 0.3 um (x, y, z) for em.tif" in r.stdout, r.stdout
    assert "CLEM 3-D registration: status ok" in r.stdout, r.stdout
    bad = run_script(app, "Register_EM-LM.py", f'em_file="{em_path}",lm_file="{flat}",server_url="{server_url}",'
                     f'token="{TOKEN}",out_dir="{tmp_path / "bad"}"')
    reg = load_transform_json(out / "transform.json")
    assert reg.ndim == 3 and reg.status == "ok"
    err = tre3d_components(reg.fixed_to_moving, ph.fixed_to_moving, ph.em.shape, fixed_voxel=ph.em_voxel,
                           moving_voxel=ph.lm_voxel, step=4)
    assert err["xy_fixed_voxels"] <= 1.0 and err["z_moving_slices"] <= 0.5, err
    warped = read_stack(out / "lm_warped.tif")
    assert warped.data.shape == (2, 16, 64, 64)
    assert (warped.voxel.x, warped.voxel.z) == (pytest.approx(0.15), pytest.approx(0.3))
    for name in ("overlay.png", "mi_curve.png", "bigwarp_landmarks3d.csv", "moving-bigWarp.xml"):
        assert (out / name).stat().st_size > 0
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: the EM image em.tif is a stack (16 planes); Register EM-LM is 2-D unless both images are Z stacks "
        "(then it registers them in 3-D)"), bad.stderr
    assert not re.search(r"Traceback|Exception", bad.stdout + bad.stderr)
