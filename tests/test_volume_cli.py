"""``clem-bridge register3d`` on small calibrated stacks (typer CliRunner): outputs written and read back,
the matrix recovers the phantom's, bad input gives one-line errors with exit code 2."""
import json

import numpy as np
import pytest
import tifffile
import typer
from typer.testing import CliRunner

from clem_bridge.cli import register3d as cli3d
from clem_bridge.errors import InputError
from clem_bridge.export3d import read_bigwarp_csv3d
from clem_bridge.result import load_transform_json
from clem_bridge.schema import PixelSize
from clem_bridge.transforms3d import tre3d_components, valid_mask3d, warp_volume
from clem_bridge.volume.phantom import make_phantom3d
from clem_bridge.volume.stack_io import read_stack, write_stack
from clem_bridge.volume.stack_io import wants_3d

GEOMETRY = dict(em_shape=(16, 64, 64), em_voxel=(0.15, 0.15, 0.3), lm_shape=(10, 64, 64), lm_voxel=(0.3, 0.3, 2.0),
                psf_sigma_um=(0.15, 0.15, 0.8), cell_size=4.5)


@pytest.fixture(scope="module")
def app():
    a = typer.Typer()
    cli3d.add_commands(a)
    a.command("noop")(lambda: None)        # a second command keeps typer's sub-command layout
    return a


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    d = tmp_path_factory.mktemp("stacks")
    ph = make_phantom3d(**GEOMETRY, rot_z_deg=20, mirror=True, shift_frac=(0.05, -0.08, 0.1), seed=11)
    em = (np.clip(ph.em, 0, 1) * 255).astype(np.uint8)
    lm = (np.clip(ph.lm / ph.lm.max(), 0, 1) * 65535).astype(np.uint16)
    em_path = write_stack(d / "em.tif", em, PixelSize(x=150, y=150, z=300, unit="nm"))
    lm_path = write_stack(d / "lm.tif", lm, PixelSize(x=0.3, y=0.3, z=2.0, unit="um"))
    return ph, em_path, lm_path


def test_register3d_writes_the_contract(app, stacks, tmp_path):
    ph, em_path, lm_path = stacks
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["register3d", str(em_path), str(lm_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    reg = load_transform_json(out / "transform.json")
    assert reg.ndim == 3 and reg.fixed_to_moving.shape == (4, 4)
    assert json.loads((out / "transform.json").read_text())["fixed_shape"] == [16, 64, 64]
    err = tre3d_components(reg.fixed_to_moving, ph.fixed_to_moving, ph.em.shape, fixed_voxel=ph.em_voxel,
                           moving_voxel=ph.lm_voxel, step=4)
    assert err["xy_fixed_voxels"] <= 1.0 and err["z_moving_slices"] <= 0.5, err
    warped = read_stack(out / "lm_warped.tif")
    assert warped.data.shape == (2, 16, 64, 64) and warped.data.dtype == np.uint16
    assert (warped.voxel.x, warped.voxel.z) == (pytest.approx(0.15), pytest.approx(0.3))
    # the written channel is the LM resampled through the found matrix: it matches the LM warped by the truth
    lm_saved = read_stack(lm_path).data[0].astype(np.float32)
    truth = warp_volume(lm_saved, ph.fixed_to_moving, ph.em.shape)
    inside = valid_mask3d(ph.fixed_to_moving, ph.em.shape, lm_saved.shape)
    assert np.corrcoef(warped.data[0][inside].astype(float), truth[inside])[0, 1] > 0.9
    for name in ("overlay.png", "mi_curve.png", "moving-bigWarp.xml"):
        assert (out / name).stat().st_size > 0
    csv_m = read_bigwarp_csv3d(out / "bigwarp_landmarks3d.csv", fixed_pixel_size=reg.fixed_pixel_size,
                               moving_pixel_size=reg.moving_pixel_size)
    assert np.allclose(csv_m, reg.fixed_to_moving, atol=1e-6)


def test_register3d_bad_input(app, stacks, tmp_path):
    ph, em_path, lm_path = stacks
    runner = CliRunner()
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((32, 32), np.uint8), imagej=True)
    res = runner.invoke(app, ["register3d", str(flat), str(lm_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "2-D image" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["register3d", str(em_path), str(lm_path), "--out", str(tmp_path / "o"),
                              "--max-voxels", "1000"])
    assert res.exit_code == 2 and "--max-voxels" in res.output
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.random.rand(12, 32, 32).astype(np.float32))
    res = runner.invoke(app, ["register3d", str(plain), str(lm_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--em-voxel" in res.output
    res = runner.invoke(app, ["register3d", str(em_path), str(lm_path), "--out", str(tmp_path / "o"),
                              "--lm-voxel", "0.3,0.3"])
    assert res.exit_code == 2 and "three positive numbers" in res.output
    res = runner.invoke(app, ["register3d", str(em_path), str(lm_path), "--out", str(tmp_path / "o"),
                              "--reg-channel", "5"])
    assert res.exit_code == 2 and "channel 5" in res.output


def test_register_dispatch(stacks, tmp_path):
    _, em_path, lm_path = stacks
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((32, 32), np.uint8), imagej=True)
    assert wants_3d(em_path, lm_path) and not wants_3d(flat, flat) and wants_3d(flat, flat, force=True)
    with pytest.raises(InputError, match="Z stack but flat.tif is a 2-D image"):
        wants_3d(em_path, flat)


def test_register_dispatches_stacks_to_3d(stacks, tmp_path):
    """``clem-bridge register`` on two stacks runs the 3-D workflow; 2-D-only options and a stack with a 2-D
    image are one-line errors."""
    from clem_bridge.cli import app as main_app
    ph, em_path, lm_path = stacks
    out = tmp_path / "out"
    res = CliRunner().invoke(main_app, ["register", str(em_path), str(lm_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    reg = load_transform_json(out / "transform.json")
    assert reg.ndim == 3
    err = tre3d_components(reg.fixed_to_moving, ph.fixed_to_moving, ph.em.shape, fixed_voxel=ph.em_voxel,
                           moving_voxel=ph.lm_voxel, step=4)
    assert err["xy_fixed_voxels"] <= 1.0 and err["z_moving_slices"] <= 0.5, err
    res = CliRunner().invoke(main_app, ["register", str(em_path), str(lm_path), "--prepare", "--out", str(out)])
    assert res.exit_code == 2 and "--prepare" in res.stderr and "2-D registration only" in res.stderr
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, read_stack(lm_path).data[0, 3])
    res = CliRunner().invoke(main_app, ["register", str(em_path), str(flat), "--out", str(out)])
    assert res.exit_code == 2 and "Z stack" in res.stderr and "Traceback" not in res.output
