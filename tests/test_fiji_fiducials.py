"""Register Fiducials and Register Landmarks (Fiji, Jython) headless under a real JVM against a live server.

A calibrated bead phantom (512² EM at 10 nm, 120×160 LM at 65 nm, mirrored LM) from
clem_bridge.fiducials.simulate: the command's matrix recovers the truth, the files it saved are the server's
artifacts, the log carries the error budget the server computed; a failed match exits 3 after saving its
files.  Landmarks come from ImageJ multi-point selections (stored in the TIFFs, or set on open images).
"""
import json
import re

import numpy as np
import pytest
import tifffile
from clem_bridge import transforms
from clem_bridge.fiducials.simulate import make_bead_phantom
from clem_bridge.io import read_image, write_tiff
from clem_bridge.result import load_transform_json
from clem_bridge.schema import PixelSize
from fiji_utils import fiji_app_and_server, jvm_missing, run_jython, run_script
from server_utils import TOKEN

pytestmark = [pytest.mark.jvm, pytest.mark.slow,
              pytest.mark.skipif(jvm_missing() is not None, reason=str(jvm_missing()))]
EM_PS, LM_PS = PixelSize(x=0.01, y=0.01, unit="um"), PixelSize(x=0.065, y=0.065, unit="um")
BUDGET = ("sigma_em", "sigma_lm", "sigma_alignment", "sigma_total", "fre", "tre_loo")


@pytest.fixture(scope="module")
def env(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("fiji_fiducials")
    ph = make_bead_phantom(4, em_shape=(512, 512), lm_shape=(120, 160), n_beads=(10, 14), mirror=True)
    write_tiff(root / "em.tif", ph.em, EM_PS)
    write_tiff(root / "lm.tif", ph.lm, LM_PS)
    write_tiff(root / "lm_uncal.tif", ph.lm)
    app, url = fiji_app_and_server(root, request)
    return {"root": root, "app": app, "url": url, "ph": ph}


def budget_line(record, label):
    b = record["error_budget"]
    terms = [f"{b[k + '_nm']:.1f}" if b[k + "_nm"] is not None else "n/a" for k in BUDGET]
    return (f"{label}: {b['n_matched']} pairs matched; error budget (nm): sigma EM {terms[0]}, sigma LM {terms[1]}, "
            f"sigma alignment {terms[2]}, sigma total {terms[3]}, FRE {terms[4]}, TRE leave-one-out {terms[5]}")


def test_register_fiducials_end_to_end(env):
    root, out = env["root"], env["root"] / "out"
    r = run_script(env["app"], "Register_Fiducials.py",
                   f'em_file="{root / "em.tif"}",lm_file="{root / "lm.tif"}",server_url="{env["url"]}",'
                   f'token="{TOKEN}",out_dir="{out}"')
    assert r.returncode == 0, r.stdout + r.stderr
    reg = load_transform_json(out / "transform.json")
    assert reg.method == "fiducials" and reg.params["mirrored"] and reg.outcome == "ok"
    assert transforms.tre(reg.fixed_to_moving, env["ph"].fixed_to_moving, (512, 512), step=16) < 0.5
    record = json.loads((out / "transform.json").read_text())
    assert budget_line(record, "CLEM fiducials") in r.stdout
    assert "CLEM fiducials: status ok" in r.stdout
    for name in ("lm_warped.tif", "fusion.png", "tre_map.png", "bead_landmarks.csv", "moving-bigWarp.xml"):
        assert (out / name).stat().st_size > 0, name
    warped = read_image(out / "lm_warped.tif")
    assert warped.data.shape[-2:] == (512, 512) and warped.pixel_size.x == pytest.approx(0.01, rel=1e-5)
    ref = transforms.warp_image(env["ph"].lm.astype(np.float32), reg.fixed_to_moving, (512, 512))
    mask = transforms.valid_mask(reg.fixed_to_moving, (512, 512), env["ph"].lm.shape)
    assert np.abs(warped.data.reshape(512, 512).astype(float) - ref)[mask].max() <= 1.0


def test_failed_bead_match_exits_3_after_saving(env, tmp_path):
    """3 of 5 EM beads in the LM (2 bleached) and an LM-only bead: a match that cannot be verified."""
    pos = [[100, 120], [400, 90], [260, 300], [120, 430], [420, 400]]
    few = make_bead_phantom(0, em_shape=(512, 512), lm_shape=(120, 160), bead_positions=pos, n_bleached=2,
                            n_lm_only=1, n_debris=0)
    write_tiff(tmp_path / "em.tif", few.em, EM_PS)
    write_tiff(tmp_path / "lm.tif", few.lm, LM_PS)
    r = run_script(env["app"], "Register_Fiducials.py",
                   f'em_file="{tmp_path / "em.tif"}",lm_file="{tmp_path / "lm.tif"}",server_url="{env["url"]}",'
                   f'token="{TOKEN}",out_dir="{tmp_path / "out"}"')
    assert r.returncode == 3, r.stdout + r.stderr
    assert "CLEM fiducials: status failed" in r.stdout and re.search(r"^warning: ", r.stdout, re.MULTILINE)
    assert load_transform_json(tmp_path / "out" / "transform.json").outcome == "failed"
    assert (tmp_path / "out" / "lm_warped.tif").is_file()


def test_landmarks_from_point_selections(env, tmp_path):
    """Open images: the LM file has no calibration, ImageJ's (Image > Properties) is sent; point selections
    set on the images are fitted by the server (the truth recovered), bad selections are one clear line;
    point selections saved in the TIFFs drive the headless Register Landmarks command."""
    ph, root = env["ph"], env["root"]
    em_pts = np.array([[40.0, 60.0], [470.0, 35.0], [250.0, 260.0], [60.0, 450.0], [455.0, 470.0], [300.0, 120.0]])
    lm_pts = transforms.apply_to_points(ph.fixed_to_moving, em_pts)
    code = f"""
from jarray import array
from ij import IJ
from ij.gui import PointRoi
from ij.io import FileSaver
from ij.macro import Interpreter
import clem_bridge_fiji as clem
Interpreter.batchMode = True
em, lm = IJ.openImage({str(root / 'em.tif')!r}), IJ.openImage({str(root / 'lm_uncal.tif')!r})
for imp in (em, lm):
    Interpreter.addBatchModeImage(imp)
cal = lm.getCalibration()
cal.pixelWidth = cal.pixelHeight = 0.065
cal.setUnit(u"\\u00b5m")
def points(xs, ys):
    return PointRoi(array(xs, "f"), array(ys, "f"), len(xs))
em.setRoi(points({em_pts[:, 0].tolist()!r}, {em_pts[:, 1].tolist()!r}))
lm.setRoi(points({lm_pts[:, 0].tolist()!r}, {lm_pts[:, 1].tolist()!r}))
FileSaver(em).saveAsTiff({str(tmp_path / 'em_points.tif')!r})
FileSaver(lm).saveAsTiff({str(tmp_path / 'lm_points.tif')!r})
url, token = {env['url']!r}, {TOKEN!r}
def landmarks(out):
    return clem.run_command("x", lambda: clem.landmarks(None, em.getTitle(), None, lm.getTitle(), "similarity", "",
                                                        url, token, out))
warped, status = landmarks({str(tmp_path / 'a')!r})
print("STATUS " + status)
clem.run_command("x", lambda: clem.fiducials(None, em.getTitle(), None, lm.getTitle(), 0, 200, "auto", "auto",
                                             "quadratic", url, token, {str(tmp_path / 'f')!r}))
lm.setRoi(points([1.0, 50.0, 90.0], [1.0, 50.0, 90.0]))
em.setRoi(points([1.0, 50.0, 99.0], [1.0, 50.0, 99.0]))
landmarks({str(tmp_path / 'b')!r})
lm.setRoi(points([1.0, 50.0], [1.0, 70.0]))
landmarks({str(tmp_path / 'c')!r})
lm.deleteRoi()
landmarks({str(tmp_path / 'c')!r})
"""
    r = run_jython(env["app"], code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "STATUS ok" in r.stdout, r.stdout + r.stderr
    rec = load_transform_json(tmp_path / "a" / "transform.json")
    assert rec.method == "landmarks" and rec.error_budget["n_matched"] == len(em_pts)
    np.testing.assert_allclose(rec.fixed_to_moving, ph.fixed_to_moving, atol=1e-4)   # exact points: exact fit
    assert rec.moving_pixel_size.x == pytest.approx(0.065) and rec.moving_pixel_size.unit == "um"
    assert budget_line(json.loads((tmp_path / "a" / "transform.json").read_text()), "CLEM landmarks") in r.stdout
    got = tifffile.imread(tmp_path / "a" / "warped_channels.tif").astype(float)
    mask = transforms.valid_mask(ph.fixed_to_moving, (512, 512), ph.lm.shape)
    ref = transforms.warp_image(ph.lm.astype(np.float32), rec.fixed_to_moving, (512, 512))
    assert np.abs(got - ref)[mask].max() <= 1
    # the fiducials command on the same open images (LM calibrated in ImageJ only)
    fid = load_transform_json(tmp_path / "f" / "transform.json")
    assert fid.method == "fiducials" and transforms.tre(fid.fixed_to_moving, ph.fixed_to_moving, (512, 512)) < 0.5
    assert "both images carry point selections; Plugins > CLEM > Register Landmarks fits those" in r.stdout
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors), r.stderr
    assert "HTTP 422" in errors[0] and "line" in errors[0]        # collinear points: the server's sentence
    assert "the EM has 3 points but the LM 2" in errors[1]
    assert "needs a multi-point selection on both images" in errors[2] and "no point selection" in errors[2]
    assert not re.search(r"Traceback|Exception", r.stdout + r.stderr)

    # point selections saved in the TIFFs: the menu command, headless, with files
    r = run_script(env["app"], "Register_Landmarks.py",
                   f'em_file="{tmp_path / "em_points.tif"}",lm_file="{tmp_path / "lm_points.tif"}",model="affine",'
                   f'server_url="{env["url"]}",token="{TOKEN}",out_dir="{tmp_path / "cli"}"')
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CLEM landmarks: fitted 6 point pairs (affine)" in r.stdout and "CLEM landmarks: status ok" in r.stdout
    np.testing.assert_allclose(load_transform_json(tmp_path / "cli" / "transform.json").fixed_to_moving,
                               ph.fixed_to_moving, atol=1e-4)
