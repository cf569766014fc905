"""register_files end to end on a small phantom (real MINE run) and its input checks."""
import json

import numpy as np
import pytest
from PIL import Image

from clem_bridge import transforms as T
from clem_bridge.errors import Cancelled, InputError
from clem_bridge.io import read_image, write_tiff
from clem_bridge.workflows.register import register_files
from clem_bridge.result import load_transform_json
from clem_bridge.schema import PixelSize


def test_register_files_writes_the_cli_contract(phantom, tmp_path):
    pair, em, lm, d = phantom
    extra = write_tiff(d / "extra.tif", np.round(pair.lm["fluorescence"] * 255).astype(np.uint8),
                       pair.moving_pixel_size)
    seen = []
    reg = register_files(em, lm, tmp_path / "out", reg_channel=0, channels=[1, 3], extra_channel_paths=[extra],
                         seed=0, device="cpu", progress=seen.append)
    assert seen and seen[-1].fraction == pytest.approx(1.0, abs=1e-6)
    err = T.tre(reg.fixed_to_moving, pair.fixed_to_moving, pair.em.shape)
    assert err < 1.0, err
    out = tmp_path / "out"
    rec = json.loads((out / "transform.json").read_text())
    back = load_transform_json(out / "transform.json")
    np.testing.assert_allclose(back.fixed_to_moving, reg.fixed_to_moving)
    np.testing.assert_allclose(np.array(rec["moving_to_fixed"]) @ np.array(rec["fixed_to_moving"]), np.eye(3),
                               atol=1e-9)
    assert rec["fixed_shape"] == [128, 128] and rec["moving_shape"] == [128, 128]
    assert rec["pixel_size"]["fixed"] == {"x": 0.01, "y": 0.01, "unit": "um"}
    assert rec["params"]["channels"] == [1, 3] and rec["params"]["reg_channel"] == 0
    assert {"ncc", "mi", "ms_ssim"} <= set(rec["metrics"]) and rec["timings"]["pipeline_total_s"] > 0
    warped = read_image(out / "lm_warped.tif")
    assert warped.data.shape == (2, 128, 128) and warped.pixel_size == PixelSize(x=0.01, y=0.01, unit="um")
    # the warped chromatin channel lands on the EM's heterochromatin
    chrom = warped.data[0].astype(np.float64)
    valid = T.valid_mask(reg.fixed_to_moving, (128, 128), (128, 128))
    c = np.corrcoef(chrom[valid], pair.masks["heterochromatin"][valid])[0, 1]
    assert c > 0.6, c
    assert warped.data.dtype == np.float32                 # uint16 + uint8 channels stored as float32
    assert Image.open(out / "overlay.png").size == (128, 128)
    assert Image.open(out / "mi_curve.png").format == "PNG"


def test_cancel_hook_stops_the_run(phantom, tmp_path):
    _, em, lm, _ = phantom
    with pytest.raises(Cancelled):
        register_files(em, lm, tmp_path / "c", device="cpu", cancelled=lambda: True)
    assert not (tmp_path / "c" / "transform.json").exists()


def test_bad_inputs_fail_before_registering(phantom, tmp_path):
    pair, em, lm, d = phantom
    small = write_tiff(d / "small.tif", np.ones((64, 64), np.uint16))
    flat = write_tiff(d / "flat.tif", np.full((3, 128, 128), 9, np.uint16))
    (d / "afile").write_text("x")
    cases = [
        (dict(em_path=d / "nope.tif", lm_path=lm), "file not found"),
        (dict(em_path=em, lm_path=lm, reg_channel=3), "registration channel 3 does not exist"),
        (dict(em_path=em, lm_path=lm, channels=[0, 7]), r"channel\(s\) \[7\] do not exist"),
        (dict(em_path=em, lm_path=lm, extra_channel_paths=[small]), "channels must share one grid"),
        (dict(em_path=em, lm_path=flat), "is constant"),
        (dict(em_path=lm, lm_path=lm), "has 3 channels; give a single-channel EM"),
        (dict(em_path=em, lm_path=lm, out_dir=d / "afile"), "not a folder"),
    ]
    for kw, msg in cases:
        kw.setdefault("out_dir", tmp_path / "o")
        with pytest.raises(InputError, match=msg):
            register_files(device="cpu", **kw)
    assert not (tmp_path / "o").exists()


def test_mirrored_lm_through_the_cli_and_every_transform_file(tmp_path):
    """A mirrored LM (inverted microscope): ``clem-bridge register`` finds det < 0 and every file written for
    Fiji carries the same mirrored matrix."""
    from typer.testing import CliRunner

    from clem_bridge.cli import app
    from clem_bridge.export import FILE_NAMES, read_transform
    from clem_bridge.synthetic import centred_affine, make_pair, save_pair
    shape = (192, 192)
    flip = np.array([[-1.0, 0, shape[1] - 1], [0, 1, 0], [0, 0, 1]])   # about the EM's vertical centre line
    truth = centred_affine(shape, shape, rotation_deg=25.0, translation=(6.0, -4.0)) @ flip
    pair = make_pair(shape, fixed_to_moving=truth, seed=3)
    em, lm = save_pair(pair, tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["register", str(em), str(lm), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    reg = load_transform_json(out / "transform.json")
    assert np.linalg.det(reg.fixed_to_moving[:2, :2]) < 0
    assert T.tre(reg.fixed_to_moving, pair.fixed_to_moving, shape) < 1.0
    for name in FILE_NAMES.values():
        m = read_transform(out / name, fixed_pixel_size=pair.fixed_pixel_size, moving_pixel_size=pair.moving_pixel_size)
        np.testing.assert_allclose(m, reg.fixed_to_moving, atol=1e-6)
