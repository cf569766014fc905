"""Pre-processing on synthetic phantoms: PSR, crop, grey padding, one composed matrix EM → original LM."""
import numpy as np
import pytest

from clem_bridge import transforms as T
from clem_bridge.errors import InputError
from clem_bridge.preprocess import (estimate_psr, final_fixed_to_moving, grey_fill, prepare_pair,
                                    psr_from_pixel_sizes, register_prepared)
from clem_bridge.schema import PixelSize
from clem_bridge.synthetic import centred_affine, make_pair
from clem_bridge.transforms import working_shape

PSR = 8.05
EM_SHAPE, LM_SHAPE = (768, 1024), (256, 256)


def _similarity(rotation=3.0, translation=(12.3, -9.6), psr=PSR, em_shape=EM_SHAPE, lm_shape=LM_SHAPE):
    return centred_affine(em_shape, lm_shape, rotation_deg=rotation, scale=1 / psr, translation=translation)


@pytest.fixture(scope="module")
def pair():
    """EM 768x1024 inside a 256x256 LM at 8.05x its pixel size, 3 deg rotation, unknown offset."""
    return make_pair(EM_SHAPE, _similarity(), seed=1, moving_shape=LM_SHAPE, lm_pixel_ratio=PSR)


@pytest.mark.parametrize("metadata_error", [1.05, 0.95])
def test_psr_recovered_when_metadata_is_wrong_by_5_percent(pair, metadata_error):
    est = estimate_psr(pair.em, pair.lm["reflected"], psr_hint=PSR * metadata_error)
    assert abs(est.psr / PSR - 1) < 0.005
    assert abs(est.rotation_deg - 3.0) < 0.6
    # the crop (EM field of view in the LM) within 1 LM pixel everywhere on the EM grid
    assert T.tre(est.fixed_to_moving, pair.fixed_to_moving, EM_SHAPE) < 1.0
    corners = [[0, 0], [EM_SHAPE[1] - 1, 0], [0, EM_SHAPE[0] - 1], [EM_SHAPE[1] - 1, EM_SHAPE[0] - 1]]
    d = T.apply_to_points(est.fixed_to_moving, corners) - T.apply_to_points(pair.fixed_to_moving, corners)
    assert np.abs(d).max() < 1.0
    assert est.score > 0.5 and est.sharpness > 0


def test_psr_found_without_metadata(pair):
    est = estimate_psr(pair.em, pair.lm["reflected"])
    assert abs(est.psr / PSR - 1) < 0.005
    assert T.tre(est.fixed_to_moving, pair.fixed_to_moving, EM_SHAPE) < 1.0


def test_given_psr_is_kept_and_only_position_searched(pair):
    est = estimate_psr(pair.em, pair.lm["reflected"], psr_hint=PSR, search=0.0)
    assert est.psr == pytest.approx(PSR, rel=1e-12)
    assert T.tre(est.fixed_to_moving, pair.fixed_to_moving, EM_SHAPE) < 1.0


def test_prepared_pair_and_composed_matrix_at_working_size(pair):
    """Prepared on a binned grid: LM channels on the EM grid, one matrix full EM px → original LM px."""
    chans = np.stack([pair.lm["reflected"], pair.lm["chromatin"]])
    prep = prepare_pair(pair.em, chans, em_pixel_size=pair.fixed_pixel_size,
                        lm_pixel_size=PixelSize(x=pair.moving_pixel_size.x * 1.05, y=pair.moving_pixel_size.y * 1.05,
                                                unit="um"), work_size=512)
    assert prep.em.shape == (384, 512) and all(c.shape == (384, 512) for c in prep.channels)
    assert prep.mask.all()                                  # EM field lies inside the LM
    # prepared channel k equals the original channel sampled through prep_fixed_to_moving
    ref = T.warp_image(chans[1], prep.prep_fixed_to_moving, (384, 512))
    np.testing.assert_allclose(prep.channels[1], ref, atol=1e-6)
    # with a perfect registration on the prepared grid (identity), the composed matrix is the truth
    final = final_fixed_to_moving(prep, np.eye(3))
    assert T.tre(final, pair.fixed_to_moving, EM_SHAPE) < 1.0
    # a known residual registration R on the grid composes in the right order
    r = T.from_params(rotation_deg=1.5, scale=1.02, translation=(3.0, -2.0), center=T.center_of((384, 512)))
    expected = prep.prep_fixed_to_moving @ r @ np.linalg.inv(T.resize_matrix(EM_SHAPE, (384, 512)))
    np.testing.assert_allclose(final_fixed_to_moving(prep, r), expected)
    pts = np.array([[10.0, 20.0], [1000.0, 700.0]])
    grid_pts = T.apply_to_points(np.linalg.inv(prep.grid_to_em), pts)
    via_grid = T.apply_to_points(prep.prep_fixed_to_moving, T.apply_to_points(r, grid_pts))
    np.testing.assert_allclose(T.apply_to_points(final_fixed_to_moving(prep, r), pts), via_grid)


def test_end_to_end_with_engine():
    """Prepare (metadata PSR 5 % off), register EM vs prepared LM with MINE, compose: ONE correct matrix.

    The truth has anisotropic scale and shear that the similarity of the pre-processing
    cannot capture; the registration on the prepared grid removes that residual.
    """
    from dataclasses import replace
    from functools import partial

    from clem_bridge.register import register_mine
    from clem_bridge.register.mine import MineParams
    f2m = centred_affine(EM_SHAPE, LM_SHAPE, rotation_deg=3.0, scale=(1.03 / PSR, 0.98 / PSR), shear=0.02,
                         translation=(12.3, -9.6))
    p = make_pair(EM_SHAPE, f2m, seed=1, moving_shape=LM_SHAPE, lm_pixel_ratio=PSR)
    lm_px = PixelSize(x=p.moving_pixel_size.x * 1.05, y=p.moving_pixel_size.y * 1.05, unit="um")
    params = replace(MineParams.preset("fast"), max_iterations=250, min_iterations=100)
    reg = register_prepared(p.em, p.lm["reflected"], partial(register_mine, params=params, seed=0, device="cpu"),
                            em_pixel_size=p.fixed_pixel_size, lm_pixel_size=lm_px, work_size=256)
    assert reg.fixed_shape == EM_SHAPE and reg.moving_shape == LM_SHAPE
    info = reg.params["prepare"]
    assert abs(info["psr"] / PSR - 1) < 0.03 and info["work_shape"] == [192, 256]   # anisotropic truth
    prep_only = np.asarray(info["prep_fixed_to_moving"]) @ np.linalg.inv(T.resize_matrix(EM_SHAPE, (192, 256)))
    assert T.tre(prep_only, f2m, EM_SHAPE) > 1.0               # residual left for MINE
    assert T.tre(reg.fixed_to_moving, f2m, EM_SHAPE) < 0.75    # LM pixels, over the whole EM grid


def test_grey_padding_outside_lm_field_of_view():
    """EM field of view partly outside the LM: grey (never black) fill there, mask False, match still right."""
    f2m = _similarity(rotation=-2.0, translation=(40.0, 10.0), psr=6.0, lm_shape=(200, 200))
    p = make_pair(EM_SHAPE, f2m, seed=2, moving_shape=(200, 200), lm_pixel_ratio=6.0)
    chans = [p.lm["reflected"], np.where(p.lm["fluorescence"] > 0.5, p.lm["fluorescence"], 0.0).astype(np.float32)]
    prep = prepare_pair(p.em, chans, psr=6.0)
    truth_mask = T.valid_mask(f2m, EM_SHAPE, (200, 200))
    assert 0.1 < 1 - truth_mask.mean() < 0.3                  # a real padding case
    assert np.mean(prep.mask != truth_mask) < 0.01
    for c, fill, orig in zip(prep.channels, prep.fill, chans):
        assert fill > orig.min()                                # never black
        np.testing.assert_allclose(c[~prep.mask], fill)
    assert prep.fill[0] == pytest.approx(float(np.median(chans[0])), abs=1e-6)
    assert prep.fill[1] == pytest.approx(0.5 * (chans[1].min() + chans[1].max()))  # black median → mid-grey
    assert T.tre(prep.prep_fixed_to_moving, f2m, EM_SHAPE) < 1.0


def test_helpers():
    assert psr_from_pixel_sizes(PixelSize(x=10, y=10, unit="nm"), PixelSize(x=0.0805, y=0.0805, unit="µm")) \
        == pytest.approx(8.05)
    assert psr_from_pixel_sizes(None, PixelSize(x=1, y=1)) is None
    assert working_shape((12000, 9000), 2048) == (2048, 1536)
    assert working_shape((500, 400), 2048) == (500, 400)
    assert grey_fill(np.array([[0, 0, 0], [0, 0, 10.0]])) == 5.0


@pytest.mark.parametrize("em, lm, kw, match", [
    (np.full((64, 64), np.nan), np.ones((32, 32)), {}, "NaN"),
    (np.zeros((3, 64, 64)), np.ones((32, 32)), {}, "2-D"),
    (np.random.rand(64, 64), np.ones((32, 32)), {}, "constant"),
    (np.random.rand(64, 64), np.random.rand(32, 32), {"psr_hint": -2.0}, "positive"),
    (np.random.rand(64, 64), np.random.rand(32, 32), {"method": "sqdiff"}, "method"),
    (np.random.rand(512, 512), np.random.rand(64, 64), {"psr_range": (1.5, 4.0)}, "larger than the LM"),
])
def test_bad_input_is_one_line_input_error(em, lm, kw, match):
    with pytest.raises(InputError, match=match):
        estimate_psr(em, lm, **kw)


def test_bad_channels_and_reg_channel(pair):
    with pytest.raises(InputError, match="one size"):
        prepare_pair(pair.em, [pair.lm["reflected"], np.zeros((10, 10))], psr=PSR)
    with pytest.raises(InputError, match="reg_channel"):
        prepare_pair(pair.em, [pair.lm["reflected"]], psr=PSR, reg_channel=3)


def _cli(*args):
    """The command as a real subprocess."""
    import os
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", "from clem_bridge.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _cli_in_process(*args):
    """The same command in this process (a subprocess costs seconds of imports; test_prepare_command runs one)."""
    from typer.testing import CliRunner

    from clem_bridge.cli import app
    return CliRunner().invoke(app, list(map(str, args)))


def test_prepare_command(pair, tmp_path):
    """Calibrated files whose metadata PSR is 5 % off: prepare.json maps EM px → original LM px correctly."""
    import json

    from clem_bridge.io import read_image, write_tiff
    em = write_tiff(tmp_path / "em.tif", np.round(pair.em * 255).astype(np.uint8), pair.fixed_pixel_size)
    lm_stack = np.stack([np.round(pair.lm[k] * 65535).astype(np.uint16) for k in ("reflected", "chromatin")])
    lm = write_tiff(tmp_path / "lm.tif", lm_stack, PixelSize(x=pair.moving_pixel_size.x * 1.05,
                                                             y=pair.moving_pixel_size.y * 1.05, unit="um"))
    r = _cli("prepare", em, lm, "--channels", "1", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert abs(rec["params"]["psr"] / PSR - 1) < 0.005 and rec["moving_shape"] == list(LM_SHAPE)
    assert T.tre(rec["fixed_to_moving"], pair.fixed_to_moving, EM_SHAPE) < 1.0
    img = read_image(tmp_path / "out" / "lm_prepared.tif")
    assert img.data.shape == (1, *EM_SHAPE) and img.data.dtype == np.uint16
    assert img.pixel_size.x == pytest.approx(pair.fixed_pixel_size.x)
    np.testing.assert_allclose(img.data[0].astype(float), T.warp_image(lm_stack[1], rec["fixed_to_moving"], EM_SHAPE),
                               atol=1)
    bad = _cli_in_process("prepare", em, lm, "--psr", "-3", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: the pixel size ratio must be a positive")


@pytest.mark.parametrize("where", ["local", "server"])
def test_register_command_with_prepare(tmp_path, where, request):
    """``clem-bridge register --prepare`` (locally and as a server job): LM at 5x the EM pixel size with a
    larger field of view; transform.json maps EM pixels straight to ORIGINAL LM pixels."""
    import json

    from clem_bridge.synthetic import save_pair
    em_shape, lm_shape, r = (320, 384), (128, 128), 5.0
    f2m = centred_affine(em_shape, lm_shape, rotation_deg=-4.0, scale=(1.02 / r, 0.99 / r), shear=0.01,
                         translation=(9.0, -6.0))
    em, lm = save_pair(make_pair(em_shape, f2m, seed=4, moving_shape=lm_shape, lm_pixel_ratio=r), tmp_path)
    from server_utils import TOKEN
    extra = (["--server", request.getfixturevalue("server_url"), "--token", TOKEN] if where == "server"
             else ["--device", "cpu"])
    res = _cli_in_process("register", em, lm, "--prepare", *extra, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.stderr[-2000:]
    rec = json.loads((tmp_path / "out" / "transform.json").read_text())
    assert rec["fixed_shape"] == list(em_shape) and rec["moving_shape"] == list(lm_shape)
    assert abs(rec["params"]["prepare"]["psr"] / r - 1) < 0.03
    assert T.tre(rec["fixed_to_moving"], f2m, em_shape) < 0.75


def test_server_register_params_accept_prepare():
    from pydantic import ValidationError

    from clem_bridge.server.schemas import RegisterParams
    p = RegisterParams.model_validate({"prepare": True, "psr": 8.05})
    assert p.prepare and p.psr == 8.05 and not RegisterParams().prepare
    with pytest.raises(ValidationError):
        RegisterParams.model_validate({"prepare": True, "psr": -1})
