"""Fiji side without a server: the Jython library and the Groovy "Apply CLEM transform" under a real JVM.

ImageJ-warped channels must equal ``transforms.warp_image`` (bilinear; ``transforms3d.warp_volume`` for
3-D transforms on stacks) inside the valid region and be 0 outside; transform files read by the
Jython/Groovy code must give our matrix, and files the Jython library writes must equal clem_bridge.export's.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from clem_bridge import export, io, synthetic, transforms
from clem_bridge import transforms3d as T3
from clem_bridge.export3d import write_all3d
from clem_bridge.result import Registration
from clem_bridge.schema import PixelSize
from clem_bridge.volume.stack_io import read_stack, write_stack
from fiji_utils import jvm_missing, make_fiji_app, run_jython_each, run_script, run_scripts

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


FORMATS = ["json", "bigwarp_csv", "bigwarp_xml", "mpicbg_xml"]


@pytest.fixture(scope="module")
def applied(case, mirrored, volumes):
    """Every Apply CLEM Transform of this module that succeeds, one after another in one JVM (as a running Fiji
    runs commands): ``{name: (out_file, result)}``, the result with the command's own stdout and stderr."""
    root, vol = case["root"], volumes["root"]
    jobs = {fmt: (root / "lm.tif", root / "em.tif", case["files"][fmt], root / f"warped_{fmt}.tif") for fmt in FORMATS}
    jobs["rgb"] = (root / "rgb.tif", root / "em.tif", case["files"]["json"], root / "warped_rgb.tif")
    jobs["mirrored"] = (mirrored["root"] / "lm_float.tif", root / "em.tif", mirrored["files"]["mpicbg_xml"],
                        mirrored["root"] / "groovy.tif")
    jobs["3d"] = (vol / "lm.tif", vol / "em.tif", vol / "transform.json", vol / "groovy.tif")
    jobs["3d_csv"] = (vol / "lm.tif", vol / "em.tif", volumes["csv"], vol / "groovy_csv.tif")
    results = run_scripts(case["app"], [("Apply_CLEM_Transform.groovy",
                                         f'image_file="{lm}",target_file="{em}",transform_file="{t}",out_file="{out}"')
                                        for lm, em, t, out in jobs.values()])
    return {name: (job[3], r) for (name, job), r in zip(jobs.items(), results)}


@pytest.mark.parametrize("fmt", FORMATS)
def test_groovy_apply_matches_python_warp(case, applied, fmt):
    out, r = applied[fmt]
    assert r.stderr == "" and f"CLEM: applied {Path(case['files'][fmt]).name} to lm.tif" in r.stdout, r.stdout + r.stderr
    assert_same_warp(case, out)


def test_groovy_apply_rgb_lm_gives_three_channels(case, applied):
    out, r = applied["rgb"]
    assert r.stderr == "" and "CLEM: applied transform.json to rgb.tif" in r.stdout, r.stdout + r.stderr
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


def library_program(case):
    root, files = case["root"], case["files"]
    return f"""
import json
import clem_bridge_transforms as clem
from clem_bridge_images import save_tiff
from ij import IJ
em, lm = IJ.openImage({str(root / 'em.tif')!r}), IJ.openImage({str(root / 'lm.tif')!r})
fc, mc = em.getCalibration(), lm.getCalibration()
files = json.loads({json.dumps(files)!r})
read = dict((k, clem.read_transform(p, fc, mc)) for k, p in files.items())
f2m = read["json"]
clem.write_transform_files({str(root / 'jy')!r}, f2m, em, lm, "lm.tif")
save_tiff(clem.warp_image(lm, f2m, em), {str(root / 'jy_warped.tif')!r})
save_tiff(clem.warp_image(IJ.openImage({str(root / 'rgb.tif')!r}), f2m, em), {str(root / 'jy_rgb.tif')!r})
print(json.dumps(read))
"""


def test_jython_library_reads_python_files_writes_equal_files_and_warps(case, jython):
    root, r = case["root"], jython["library"]
    assert r.stderr == "", r.stderr
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


@pytest.fixture(scope="module")
def mirrored(case):
    """The case's affine composed with a left-right mirror of the EM (det < 0), a float32 LM channel and all
    transform files of it written by clem_bridge.export."""
    root = case["root"] / "mirrored"
    h, w = case["em"].shape
    flip = np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]])
    f2m = case["reg"].fixed_to_moving @ flip
    assert np.linalg.det(f2m[:2, :2]) < 0
    reg = Registration(fixed_to_moving=f2m, fixed_shape=(h, w), moving_shape=case["lm"].shape[1:], method="truth",
                       fixed_pixel_size=case["reg"].fixed_pixel_size, moving_pixel_size=case["reg"].moving_pixel_size)
    files = {k: str(v) for k, v in export.write_all(reg, root, moving_file="lm.tif").items()}
    files["json"] = str(reg.save_json(root / "transform.json"))
    lm = case["lm"][1].astype(np.float32) / 7.0
    io.write_tiff(root / "lm_float.tif", lm, pixel_size=case["reg"].moving_pixel_size)
    return {"root": root, "f2m": f2m, "files": files, "lm": lm}


def assert_exact_float_warp(path, lm, f2m, em_shape):
    """Same values as transforms.warp_image to float32 precision inside the valid region, 0 outside."""
    got = tifffile.imread(path)
    mask = transforms.valid_mask(f2m, em_shape, lm.shape)
    ref = transforms.warp_image(lm, f2m, em_shape)
    assert 0.3 < mask.mean() < 1.0
    np.testing.assert_allclose(got[mask], ref[mask], rtol=0, atol=1e-5 * float(lm.max()))
    assert np.all(got[~mask] == 0)


def test_mirrored_transform_through_groovy_apply(case, mirrored, applied):
    out, r = applied["mirrored"]
    assert r.stderr == "" and "to lm_float.tif" in r.stdout, r.stdout + r.stderr
    assert_exact_float_warp(out, mirrored["lm"], mirrored["f2m"], case["em"].shape)


def mirrored_program(case, mirrored):
    root = mirrored["root"]
    return f"""
import json
import clem_bridge_transforms as clem
from clem_bridge_images import save_tiff
from ij import IJ
em, lm = IJ.openImage({str(case['root'] / 'em.tif')!r}), IJ.openImage({str(root / 'lm_float.tif')!r})
lm16 = IJ.openImage({str(case['root'] / 'lm.tif')!r})
files = json.loads({json.dumps(mirrored['files'])!r})
read = dict((k, clem.read_transform(p, em.getCalibration(), lm16.getCalibration())) for k, p in files.items())
save_tiff(clem.warp_image(lm, read["json"], em), {str(root / 'jy.tif')!r})
save_tiff(clem.warp_image(lm16, read["json"], em), {str(root / 'jy16.tif')!r})
print(json.dumps(read))
"""


def test_mirrored_transform_through_jython(case, mirrored, jython):
    """Every transform file of a mirrored registration reads back as its matrix in Jython, and the Jython
    warp (the compiled helper) gives Python's values: float32 exactly, 16-bit within rounding."""
    root, r = mirrored["root"], jython["mirrored"]
    assert r.stderr == "", r.stderr
    for k, m in json.loads(r.stdout.strip().splitlines()[-1]).items():
        np.testing.assert_allclose(m, mirrored["f2m"], atol=1e-9, err_msg=k)
    assert_exact_float_warp(root / "jy.tif", mirrored["lm"], mirrored["f2m"], case["em"].shape)
    got, mask = tifffile.imread(root / "jy16.tif"), transforms.valid_mask(mirrored["f2m"], case["em"].shape,
                                                                          case["lm"].shape[1:])
    for c in range(2):
        diff = np.abs(got[c].astype(int) - transforms.warp_image(case["lm"][c], mirrored["f2m"],
                                                                 case["em"].shape).astype(int))[mask]
        # float32 sums near x.5 round either way (numpy rint vs ImageJ's +0.5f): off by one at most, rarely
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def chromatin_program(case):
    return f"""
import clem_bridge_images as images
from clem_bridge_host import ClemError
from ij import IJ
rgb, lm, em = (IJ.openImage({str(case['root'])!r} + "/" + n) for n in ('rgb.tif', 'lm.tif', 'em.tif'))
blue = images.select_channels(rgb, [images.chromatin_channel(rgb, -1)]).getProcessor()
print("rgb %d %d %d" % (images.chromatin_channel(rgb, -1), blue.getPixel(5, 5), images.chromatin_channel(rgb, 0)))
print("single %d %d" % (images.chromatin_channel(em, -1), images.chromatin_channel(lm, 1)))
try:
    images.chromatin_channel(lm, -1)
except ClemError as e:
    print("error " + str(e))
"""


def test_chromatin_channel_defaults_like_the_cli(case, jython):
    """DeepCLEM's chromatin channel: blue of an RGB image unless given, the only channel, else a clear error."""
    r = jython["chromatin"]
    assert r.stderr == "", r.stderr
    assert f"rgb 2 {case['rgb'][2, 5, 5]} 0" in r.stdout  # blue is the constant 77 plane
    assert "single 0 1" in r.stdout
    assert "error lm.tif has 2 channels; set the chromatin channel (0-based)" in r.stdout


def test_scripts_never_end_a_host_jvm(case):
    """Failing commands that exit with 2 on the headless command line (tests above) only print the ``error:``
    line inside a host (PyImageJ, a running Fiji): the host's JVM keeps running after them."""
    bad = f'image_file="{case["root"] / "lm.tif"}",target_file="{case["root"] / "em.tif"}",' \
          f'transform_file="{case["root"] / "missing.json"}",out_file="{case["root"] / "x.tif"}"'
    register = f'em_file="{case["root"] / "missing.tif"}",lm_file="{case["root"] / "lm.tif"}",' \
               f'out_dir="{case["root"] / "x"}"'
    for script, args in (("Apply_CLEM_Transform.groovy", bad), ("Register_EM-LM.py", register)):
        hosted = run_script(case["app"], script, args, host=True)
        assert hosted.returncode == 0 and "HOST_STILL_RUNNING" in hosted.stdout, hosted.stdout + hosted.stderr
        assert hosted.stderr.startswith("error: ") and "not found" in hosted.stderr


def test_failed_status_exits_3_on_the_command_line_only(case, tmp_path):
    """A registration whose status is failed (transform.json from clem_bridge.result): status and reasons
    in the log, exit code 3 on the headless command line, none inside a host."""
    reg = Registration(fixed_to_moving=case["reg"].fixed_to_moving, fixed_shape=case["em"].shape,
                       moving_shape=case["lm"].shape[1:], method="truth", status="failed",
                       warnings=["only 3 stained nuclei in common", 'fitted scale [0.5, 2] is "free"'])
    reg.save_json(tmp_path / "transform.json")
    script = tmp_path / "Report_Status.py"
    script.write_text(f"""import json
import clem_bridge_host as host
record = json.load(open({str(tmp_path / 'transform.json')!r}))
status = host.run_command("Report_Status.py", lambda: host.report(*(host.outcome(record) + ("CLEM test",))))
""")
    cli = run_script(case["app"], script)
    assert cli.returncode == 3, cli.stdout + cli.stderr
    assert "warning: only 3 stained nuclei in common" in cli.stdout and "CLEM test: status failed" in cli.stdout
    hosted = run_script(case["app"], script, host=True)
    assert hosted.returncode == 0 and "CLEM test: status failed" in hosted.stdout
    assert "HOST_STILL_RUNNING" in hosted.stdout
    # Apply CLEM Transform (Groovy) applies it but logs its status and warnings
    r = run_script(case["app"], "Apply_CLEM_Transform.groovy",
                   f'image_file="{case["root"] / "lm.tif"}",target_file="{case["root"] / "em.tif"}",'
                   f'transform_file="{tmp_path / "transform.json"}",out_file="{tmp_path / "w.tif"}"')
    assert r.returncode == 0 and (tmp_path / "w.tif").is_file(), r.stderr
    assert 'warning: only 3 stained nuclei in common\nwarning: fitted scale [0.5, 2] is "free"\n' in r.stdout
    assert "the registration behind transform.json has status failed" in r.stdout


@pytest.fixture(scope="module")
def volumes(case):
    """A 3-D case: EM stack 12×40×48 (0.05×0.05×0.1 µm), LM hyperstack 2×8×30×36 float32 (0.1×0.1×0.3 µm)
    and a one-channel 16-bit LM stack; a known mirrored, rotated, tilted 4×4 fixed_to_moving in transform.json
    (ndim 3)."""
    root = case["root"] / "3d"
    rng = np.random.default_rng(7)
    em_shape, lm_shape = (12, 40, 48), (8, 30, 36)
    em_vox, lm_vox = PixelSize(x=0.05, y=0.05, z=0.1), PixelSize(x=0.1, y=0.1, z=0.3)
    lm = np.stack([ndimage.gaussian_filter(rng.random(lm_shape), 1.5) for _ in range(2)]).astype(np.float32) * 1000
    lm16 = (lm[1] * 40).astype(np.uint16)
    f2m = T3.from_params3d(rot_z_deg=25, rot_x_deg=4, mirror=True, scale=(0.85, 0.85, 0.75),
                           translation_xyz=(0.4, -0.7, 0.25), center=T3.center_of3d(em_shape))
    f2m = T3.translation(T3.center_of3d(lm_shape) - T3.center_of3d(em_shape)) @ f2m
    write_stack(root / "em.tif", rng.integers(0, 255, em_shape).astype(np.uint8), em_vox)
    write_stack(root / "lm.tif", lm, lm_vox)
    write_stack(root / "lm16.tif", lm16, lm_vox)
    tifffile.imwrite(root / "flat.tif", lm16[0])                     # a 2-D LM beside an EM stack
    reg = Registration(fixed_to_moving=f2m, fixed_shape=em_shape, moving_shape=lm_shape, method="truth", ndim=3,
                       warnings=["z step 3x the EM's"], fixed_pixel_size=em_vox, moving_pixel_size=lm_vox)
    reg.save_json(root / "transform.json")
    csv = write_all3d(reg, root, moving_file="lm.tif")["bigwarp_csv"]
    return {"root": root, "f2m": f2m, "em_shape": em_shape, "lm": lm, "lm16": lm16, "em_vox": em_vox, "csv": csv}


def assert_same_volume_warp(path, lm, f2m, em_shape, atol):
    got = tifffile.imread(path).astype(float)
    got = got.reshape(em_shape[0], -1, *em_shape[1:]).transpose(1, 0, 2, 3)   # ImageJ ZCYX -> CZYX
    assert got.shape[0] == len(lm)
    mask = T3.valid_mask3d(f2m, em_shape, lm.shape[1:])
    assert 0.2 < mask.mean() < 0.95   # part of the EM stack is outside the LM volume: every edge is exercised
    for c in range(len(lm)):
        ref = T3.warp_volume(lm[c], f2m, em_shape, order="linear").astype(float)
        np.testing.assert_allclose(got[c][mask], ref[mask], rtol=0, atol=atol, err_msg=f"channel {c}")
        assert np.all(got[c][~mask] == 0)


def stacks_program(volumes):
    root = volumes["root"]
    return f"""
import clem_bridge_transforms as clem
from clem_bridge_host import ClemError
from clem_bridge_images import save_tiff
from ij import IJ
em, lm16 = IJ.openImage({str(root / 'em.tif')!r}), IJ.openImage({str(root / 'lm16.tif')!r})
path = {str(root / 'transform.json')!r}
save_tiff(clem.apply_transform_file(lm16, path, em), {str(root / 'jy16.tif')!r})
save_tiff(clem.apply_transform_file(lm16, {str(volumes['csv'])!r}, em), {str(root / 'jy16_csv.tif')!r})
flat = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
for call in (lambda: clem.apply_transform_file(em, path, em), lambda: clem.read_transform(path),
             lambda: clem.warp_stack(lm16, flat, em)):
    try:
        call()
    except ClemError as e:
        print("error " + str(e))
import clem_bridge_fiji as fiji
fiji.run_command("Register_EM-LM.py", lambda: fiji.register(
    {str(root / 'em.tif')!r}, "", {str(root / 'flat.tif')!r}, "", 0, "", "http://127.0.0.1:9", "", "fast", 0,
    {str(root / 'reg')!r}))
"""


@pytest.fixture(scope="module")
def jython(case, mirrored, volumes):
    """The Jython library programs of this module, one after another in one JVM: ``{name: result}``."""
    return dict(zip(["library", "mirrored", "chromatin", "stacks"], run_jython_each(case["app"], [
        library_program(case), mirrored_program(case, mirrored), chromatin_program(case), stacks_program(volumes)])))


def test_apply_3d_transform_to_stacks_groovy_and_jython(case, volumes, applied, jython):
    """transform.json with ndim 3 (and the 3-D BigWarp landmarks CSV) on ImageJ stacks: Groovy's Apply CLEM
    Transform and the Jython library give transforms3d.warp_volume's trilinear values (float32 exactly, 16-bit
    within rounding) with the EM's voxel calibration; stacks that do not match the transform, 2-D readers of it and Register EM-LM on stacks are one
    clear sentence."""
    root, f2m, em_shape = volumes["root"], volumes["f2m"], volumes["em_shape"]
    _, r = applied["3d"]
    assert r.stderr == "", r.stdout + r.stderr
    assert "CLEM: applied transform.json (3-D) to lm.tif" in r.stdout and "warning: z step 3x the EM's" in r.stdout
    assert_same_volume_warp(root / "groovy.tif", volumes["lm"], f2m, em_shape, atol=1e-5 * 1000)
    back = read_stack(root / "groovy.tif")
    assert back.data.shape == (2, *em_shape)
    assert (back.voxel.x, back.voxel.y, back.voxel.z) == pytest.approx((0.05, 0.05, 0.1), rel=1e-5)
    bad = run_script(case["app"], "Apply_CLEM_Transform.groovy",
                     f'image_file="{root / "em.tif"}",target_file="{root / "em.tif"}",'
                     f'transform_file="{root / "transform.json"}",out_file="{root / "x.tif"}"')
    assert bad.returncode == 2 and bad.stderr.strip() == ("error: transform.json is for a 8x30x36 LM stack "
                                                          "(depth x height x width), but em.tif is 12x40x48")
    _, r = applied["3d_csv"]                                         # the 3-D BigWarp landmarks CSV (world units)
    assert r.stderr == "" and "(3-D)" in r.stdout, r.stdout + r.stderr
    assert_same_volume_warp(root / "groovy_csv.tif", volumes["lm"], f2m, em_shape, atol=1e-3)
    r = jython["stacks"]
    assert r.stderr.strip() == ("error: the EM image em.tif is a stack (12 planes); Register EM-LM is 2-D unless both "
                                "images are Z stacks (then it registers them in 3-D)")
    assert_same_volume_warp(root / "jy16.tif", volumes["lm16"][None], f2m, em_shape, atol=1)
    assert_same_volume_warp(root / "jy16_csv.tif", volumes["lm16"][None], f2m, em_shape, atol=1)
    errors = [ln[6:] for ln in r.stdout.splitlines() if ln.startswith("error ")]
    assert errors == ["transform.json is for a 8x30x36 LM stack (depth x height x width), but em.tif is 12x40x48",
                      f"{root / 'transform.json'} is a 3-D transform (ndim 3); apply it to stacks",
                      "the transform is singular (it collapses the image)"]
