"""Fiji side without a server: the Jython library and the Groovy "Apply CLEM transform" under a real JVM.

ImageJ-warped channels must equal ``transforms.warp_image`` (bilinear) inside the valid region and
be 0 outside; transform files read by the Jython/Groovy code must give our matrix, and files the
Jython library writes must equal clem_bridge.export's.
"""
import json
import re

import numpy as np
import pytest
import tifffile

from clem_bridge import export, io, synthetic, transforms
from clem_bridge.result import Registration
from fiji_utils import jvm_missing, make_fiji_app, run_jython, run_script

pytestmark = [pytest.mark.jvm, pytest.mark.skipif(jvm_missing() is not None, reason=str(jvm_missing()))]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 256² phantom: EM uint8, LM 2 channels uint16 (rotated, scaled, smaller), all transform files."""
    root = tmp_path_factory.mktemp("fiji_apply")
    pair = synthetic.make_pair((256, 256), seed=3, lm_pixel_ratio=1.4)
    em = (pair.em * 255).round().astype(np.uint8)
    lm = np.stack([(pair.lm[k] * 60000).round().astype(np.uint16) for k in ("reflected", "fluorescence")])
    io.write_tiff(root / "em.tif", em, pixel_size=pair.fixed_pixel_size)
    io.write_tiff(root / "lm.tif", lm, pixel_size=pair.moving_pixel_size)
    reg = Registration(fixed_to_moving=pair.fixed_to_moving, fixed_shape=em.shape, moving_shape=lm.shape[1:],
                       method="truth", fixed_pixel_size=pair.fixed_pixel_size,
                       moving_pixel_size=pair.moving_pixel_size)
    files = {k: str(v) for k, v in export.write_all(reg, root / "py", moving_file="lm.tif").items()}
    files["json"] = str(reg.save_json(root / "py" / "transform.json"))
    rgb = np.stack([(lm[0] >> 8).astype(np.uint8), (lm[1] >> 8).astype(np.uint8), np.full(lm.shape[1:], 77, np.uint8)])
    tifffile.imwrite(root / "rgb.tif", np.moveaxis(rgb, 0, -1), photometric="rgb")
    return {"root": root, "app": make_fiji_app(root), "em": em, "lm": lm, "rgb": rgb, "reg": reg, "files": files}


def assert_same_warp(case, out_path, lm=None):
    lm = case["lm"] if lm is None else lm
    got = tifffile.imread(out_path)
    got = got[None] if got.ndim == 2 else got
    assert got.shape[0] == lm.shape[0]
    f2m = case["reg"].fixed_to_moving
    mask = transforms.valid_mask(f2m, case["em"].shape, lm.shape[1:])
    assert 0.3 < mask.mean() < 1.0  # part of the EM is outside the LM field: edges are exercised
    for c in range(lm.shape[0]):
        ref = transforms.warp_image(lm[c], f2m, case["em"].shape).astype(float)
        diff = got[c].astype(float) - ref
        rms = float(np.sqrt(np.mean(diff[mask] ** 2)))
        assert rms < 0.05, f"channel {c}: RMS {rms} grey levels inside the valid region"
        assert np.all(got[c][~mask] == 0)
    back = io.read_image(out_path)
    assert back.pixel_size.x == pytest.approx(case["reg"].fixed_pixel_size.x, rel=1e-5)


@pytest.mark.parametrize("fmt", ["json", "bigwarp_csv", "bigwarp_xml", "mpicbg_xml"])
def test_groovy_apply_matches_python_warp(case, fmt):
    out = case["root"] / f"warped_{fmt}.tif"
    r = run_script(case["app"], "Apply_CLEM_Transform.groovy",
                   f'image_file="{case["root"] / "lm.tif"}",target_file="{case["root"] / "em.tif"}",'
                   f'transform_file="{case["files"][fmt]}",out_file="{out}"')
    assert r.returncode == 0, r.stderr
    assert_same_warp(case, out)


def test_groovy_apply_rgb_lm_gives_three_channels(case):
    out = case["root"] / "warped_rgb.tif"
    r = run_script(case["app"], "Apply_CLEM_Transform.groovy",
                   f'image_file="{case["root"] / "rgb.tif"}",target_file="{case["root"] / "em.tif"}",'
                   f'transform_file="{case["files"]["json"]}",out_file="{out}"')
    assert r.returncode == 0, r.stderr
    assert_same_warp(case, out, case["rgb"])


@pytest.mark.parametrize("name,content,message", [
    ("bad.csv", '"Pt-0","true","1","2","3","4"\n', "an affine needs at least 3 active landmark pairs that are not on one line"),
    ("bad.json", '{"fixed_to_moving": "identity"}', "is not a clem-bridge transform JSON"),
    ("bad.xml", '<iict_transform class="mpicbg.trakem2.transform.AffineModel2D" data="0 0 0 0 1 1" />', "singular"),
])
def test_groovy_apply_bad_transform_file_is_one_clear_line(case, name, content, message):
    bad = case["root"] / name
    bad.write_text(content)
    r = run_script(case["app"], "Apply_CLEM_Transform.groovy",
                   f'image_file="{case["root"] / "lm.tif"}",target_file="{case["root"] / "em.tif"}",'
                   f'transform_file="{bad}",out_file="{case["root"] / "x.tif"}"')
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Exception" not in r.stdout + r.stderr


def test_jython_library_reads_python_files_writes_equal_files_and_warps(case):
    root, files = case["root"], case["files"]
    code = f"""
import json
import clem_bridge_fiji as clem
from ij import IJ
em, lm = IJ.openImage({str(root / 'em.tif')!r}), IJ.openImage({str(root / 'lm.tif')!r})
fc, mc = em.getCalibration(), lm.getCalibration()
files = json.loads({json.dumps(files)!r})
read = dict((k, clem.read_transform(p, fc, mc)) for k, p in files.items())
f2m = read["json"]
clem.write_transform_files({str(root / 'jy')!r}, f2m, em, lm, "lm.tif")
clem.save_tiff(clem.warp_image(lm, f2m, em), {str(root / 'jy_warped.tif')!r})
clem.save_tiff(clem.warp_image(IJ.openImage({str(root / 'rgb.tif')!r}), f2m, em), {str(root / 'jy_rgb.tif')!r})
print(json.dumps(read))
"""
    r = run_jython(case["app"], code)
    assert r.returncode == 0, r.stderr
    read = json.loads(r.stdout.strip().splitlines()[-1])
    for k, m in read.items():
        np.testing.assert_allclose(m, case["reg"].fixed_to_moving, atol=1e-9, err_msg=k)
    ps = dict(fixed_pixel_size=case["reg"].fixed_pixel_size, moving_pixel_size=case["reg"].moving_pixel_size)
    for key, name in export.FILE_NAMES.items():
        py, jy = root / "py" / name, root / "jy" / name
        np.testing.assert_allclose(export.read_transform(jy, **ps), export.read_transform(py, **ps), atol=1e-9)
        if key == "bigwarp_csv":  # same landmarks, same layout (quoted fields, names, order)
            a, b = export.read_bigwarp_landmarks(py), export.read_bigwarp_landmarks(jy)
            np.testing.assert_allclose(a[0], b[0], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-12)
            assert [ln.split(",")[:2] for ln in py.read_text().splitlines()] == \
                   [ln.split(",")[:2] for ln in jy.read_text().splitlines()]
        if key == "bigwarp_xml":
            def text(p):  # numbers rounded to 9 significant digits (ImageJ reads 0.014 from TIFF rationals)
                t = re.sub(r"-?\d+\.\d+(e-?\d+)?", lambda m: f"{float(m.group()):.9g}", p.read_text())
                return [ln.strip() for ln in t.splitlines()[1:]]
            assert text(py) == text(jy)
    np.testing.assert_allclose(json.loads((root / "jy" / "transform.json").read_text())["fixed_to_moving"],
                               case["reg"].fixed_to_moving, atol=1e-12)
    assert_same_warp(case, root / "jy_warped.tif")
    assert_same_warp(case, root / "jy_rgb.tif", case["rgb"])


@pytest.mark.parametrize("args,message", [
    ('em_pattern="em.tif"', "a file name pattern needs exactly one * for the pair name, got 'em.tif'"),
    ('em_pattern="*_nothing.tif"', "no EM/LM pairs in"),
])
def test_batch_bad_patterns_fail_before_contacting_a_server(case, args, message):
    r = run_script(case["app"], "Batch_Register_Folder.py",
                   f'in_dir="{case["root"]}",{args},out_dir="{case["root"] / "batch"}",server_url="http://127.0.0.1:9"')
    assert r.returncode == 2 and r.stderr.startswith("error: " + message.split(" in")[0]), r.stderr
    assert message in r.stderr and "Exception" not in r.stderr
