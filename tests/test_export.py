"""Transform-file exporters: round trips, BigWarp's own least squares, BigWarp's example file, bad input."""
from pathlib import Path

import numpy as np
import pytest

from clem_bridge import export, transforms
from clem_bridge.errors import InputError
from clem_bridge.result import Registration
from clem_bridge.schema import PixelSize

A = transforms.from_params(rotation_deg=17.0, scale=(0.41, 0.37), shear=0.05, translation=(12.5, -7.25),
                           center=(100.0, 80.0))
FIXED_SHAPE, MOVING_SHAPE = (240, 320), (150, 130)
PS_EM, PS_LM = PixelSize(x=0.012, y=0.012, unit="um"), PixelSize(x=0.065, y=0.07, unit="um")
BLOBS = Path("/work/shared/data/bigwarp/landmarks2d-blobs.csv")


def mpicbg_affine_fit(p, q):
    """mpicbg ``AffineModel2D.fit(p, q, w=1)`` (closed form, Schaefer et al. 2006), transcribed: q ≈ M p."""
    pc, qc = p.mean(0), q.mean(0)
    dp, dq = p - pc, q - qc
    a00, a01, a11 = (dp[:, 0] ** 2).sum(), (dp[:, 0] * dp[:, 1]).sum(), (dp[:, 1] ** 2).sum()
    b00, b01 = (dp[:, 0] * dq[:, 0]).sum(), (dp[:, 0] * dq[:, 1]).sum()
    b10, b11 = (dp[:, 1] * dq[:, 0]).sum(), (dp[:, 1] * dq[:, 1]).sum()
    det = a00 * a11 - a01 * a01
    m00, m01 = (a11 * b00 - a01 * b10) / det, (a00 * b10 - a01 * b00) / det
    m10, m11 = (a11 * b01 - a01 * b11) / det, (a00 * b11 - a01 * b01) / det
    return np.array([[m00, m01, qc[0] - m00 * pc[0] - m01 * pc[1]],
                     [m10, m11, qc[1] - m10 * pc[0] - m11 * pc[1]], [0, 0, 1.0]])


@pytest.mark.parametrize("ps", [(None, None), (PS_EM, PS_LM)])
def test_bigwarp_csv_round_trip_and_format(tmp_path, ps):
    f = export.write_bigwarp_csv(tmp_path / "lm.csv", A, FIXED_SHAPE, fixed_pixel_size=ps[0],
                                 moving_pixel_size=ps[1])
    lines = f.read_text().splitlines()
    assert len(lines) == 16
    fields = lines[0].split(",")
    assert len(fields) == 6 and all(x.startswith('"') and x.endswith('"') for x in fields)
    assert fields[:2] == ['"Pt-0"', '"true"']
    back = export.read_bigwarp_csv(f, fixed_pixel_size=ps[0], moving_pixel_size=ps[1])
    np.testing.assert_allclose(back, A, atol=1e-9)


def test_bigwarp_csv_columns_are_moving_then_fixed_in_world_units(tmp_path):
    f = export.write_bigwarp_csv(tmp_path / "lm.csv", A, FIXED_SHAPE, fixed_pixel_size=PS_EM,
                                 moving_pixel_size=PS_LM)
    moving, fixed = export.read_bigwarp_landmarks(f)
    # last grid point is the bottom-right EM pixel centre (w-1, h-1), in EM world units
    np.testing.assert_allclose(fixed[-1], [(FIXED_SHAPE[1] - 1) * PS_EM.x, (FIXED_SHAPE[0] - 1) * PS_EM.y])
    lm_px = transforms.apply_to_points(A, [[FIXED_SHAPE[1] - 1, FIXED_SHAPE[0] - 1]])[0]
    np.testing.assert_allclose(moving[-1], lm_px * [PS_LM.x, PS_LM.y])


def test_bigwarp_affine_mode_least_squares_reproduces_our_matrix(tmp_path):
    """BigWarp Affine: AffineModel2D fit moving→fixed on the CSV, used inverted (fixed→moving)."""
    f = export.write_bigwarp_csv(tmp_path / "lm.csv", A, FIXED_SHAPE, fixed_pixel_size=PS_EM,
                                 moving_pixel_size=PS_LM)
    moving, fixed = export.read_bigwarp_landmarks(f)
    live_world = np.linalg.inv(mpicbg_affine_fit(moving, fixed))  # BigWarp's live fixed->moving transform
    s_f, s_m = np.diag([PS_EM.x, PS_EM.y, 1]), np.diag([PS_LM.x, PS_LM.y, 1])
    ours = np.linalg.inv(s_m) @ live_world @ s_f
    np.testing.assert_allclose(ours, A, atol=1e-9)


@pytest.mark.skipif(not BLOBS.is_file(), reason=f"shared BigWarp example {BLOBS} not present")
def test_reads_bigwarps_own_example_file():
    moving, fixed = export.read_bigwarp_landmarks(BLOBS)
    assert moving.shape == (5, 2)
    np.testing.assert_allclose(moving[0], [47.5, 103.99999999999999])
    np.testing.assert_allclose(fixed[0], [51.09375, 195.28125])
    f2m = export.read_bigwarp_csv(BLOBS)
    np.testing.assert_allclose(f2m, np.linalg.inv(mpicbg_affine_fit(moving, fixed)), atol=1e-9)


@pytest.mark.parametrize("ps", [(None, None), (PS_EM, PS_LM)])
def test_bigwarp_xml_round_trip_and_structure(tmp_path, ps):
    f = export.write_bigwarp_xml(tmp_path / "lm-bigWarp.xml", A, MOVING_SHAPE, moving_file="lm.tif",
                                 fixed_pixel_size=ps[0], moving_pixel_size=ps[1])
    root = export.ET.parse(f).getroot()
    vts = root.findall("./ViewRegistrations/ViewRegistration/ViewTransform")
    assert [v.findtext("Name") for v in vts] == ["Big Warp: Affine", "calibration"]
    assert root.findtext(".//ViewSetup/size") == "130 150 1"
    assert root.find(".//FileMapping/file").text == "lm.tif"
    pw = ps[1].x if ps[1] else 1.0
    assert [float(v) for v in root.findtext(".//voxelSize/size").split()] == [pw, ps[1].y if ps[1] else 1.0, 1.0]
    # the z row is 0 0 1 0 (BigWarp's own 2-D export leaves it zero)
    assert [float(v) for v in vts[0].findtext("affine").split()][8:] == [0, 0, 1, 0]
    np.testing.assert_allclose(export.read_bigwarp_xml(f, fixed_pixel_size=ps[0]), A, atol=1e-12)
    # voxel (moving pixel) -> fixed world: the composed model sends A·p_fixed to p_fixed in EM units
    s_f = np.diag([ps[0].x, ps[0].y, 1]) if ps[0] else np.eye(3)
    model = np.eye(3)
    for vt in vts:
        v = [float(t) for t in vt.findtext("affine").split()]
        model = model @ np.array([[v[0], v[1], v[3]], [v[4], v[5], v[7]], [0, 0, 1]])
    p_fixed = np.array([33.0, 44.0])
    np.testing.assert_allclose(transforms.apply_to_points(model, transforms.apply_to_points(A, p_fixed)),
                               transforms.apply_to_points(s_f, p_fixed), atol=1e-9)


def test_mpicbg_xml_column_major_moving_to_fixed(tmp_path):
    f = export.write_mpicbg_xml(tmp_path / "t.xml", A)
    text = f.read_text()
    assert text.startswith('<iict_transform class="mpicbg.trakem2.transform.AffineModel2D" data="')
    data = [float(v) for v in text.split('data="')[1].split('"')[0].split()]
    m = np.linalg.inv(A)
    assert data == pytest.approx([m[0, 0], m[1, 0], m[0, 1], m[1, 1], m[0, 2], m[1, 2]], abs=1e-15)
    np.testing.assert_allclose(export.read_mpicbg_xml(f), A, atol=1e-12)


def test_mpicbg_reader_documented_example_and_list(tmp_path):
    """fiji-interop §3.2: data="1.1 0.2 -0.3 0.9 5.5 -7.25" maps (10, 20) → (10.5, 12.75)."""
    f = tmp_path / "ex.xml"
    f.write_text('<iict_transform class="mpicbg.trakem2.transform.AffineModel2D" data="1.1 0.2 -0.3 0.9 5.5 -7.25" />')
    m2f = np.linalg.inv(export.read_mpicbg_xml(f))
    np.testing.assert_allclose(transforms.apply_to_points(m2f, [[10, 20]])[0], [10.5, 12.75])
    # a Register-Virtual-Stack-Slices style list: model first, then a translation
    f.write_text('<ict_transform_list>\n\t<iict_transform class="mpicbg.trakem2.transform.AffineModel2D" '
                 'data="1.1 0.2 -0.3 0.9 5.5 -7.25" />\n\t<iict_transform invertible="true" '
                 'class="mpicbg.trakem2.transform.TranslationModel2D" data="3.0 -2.0" />\n</ict_transform_list>\n')
    m2f = np.linalg.inv(export.read_mpicbg_xml(f))
    np.testing.assert_allclose(transforms.apply_to_points(m2f, [[10, 20]])[0], [13.5, 10.75])


def test_read_transform_dispatch_and_write_all(tmp_path):
    reg = Registration(fixed_to_moving=A, fixed_shape=FIXED_SHAPE, moving_shape=MOVING_SHAPE, method="test",
                       fixed_pixel_size=PS_EM, moving_pixel_size=PS_LM)
    files = export.write_all(reg, tmp_path, moving_file="lm.tif")
    assert {p.name for p in files.values()} == set(export.FILE_NAMES.values())
    reg.save_json(tmp_path / "transform.json")
    for p in [tmp_path / "transform.json", *files.values()]:
        np.testing.assert_allclose(export.read_transform(p, fixed_pixel_size=PS_EM, moving_pixel_size=PS_LM),
                                   A, atol=1e-9, err_msg=p.name)


@pytest.mark.parametrize("name,content,match", [
    ("a.csv", '"Pt-0","true","1","2","3"\n', "6"),
    ("b.csv", '"Pt-0","true","1","2","3","4"\n"Pt-1","true","2","3","4","5"\n', "at least 3"),
    ("c.csv", '"Pt-0","true","x","2","3","4"\n', "not a BigWarp"),
    ("d.xml", "<foo/>", "no mpicbg transform"),
    ("e.xml", "<SpimData><ViewRegistrations><ViewRegistration><ViewTransform><affine>1 2</affine>"
              "</ViewTransform></ViewRegistration></ViewRegistrations></SpimData>", "12 numbers"),
    ("f.json", "{}", "not a clem-bridge transform"),
    ("g.txt", "", "unknown transform file type"),
    ("h.xml", '<iict_transform class="mpicbg.trakem2.transform.AffineModel2D" data="0 0 0 0 1 1" />', "singular"),
])
def test_bad_transform_files_give_one_line_input_errors(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(InputError, match=match) as e:
        export.read_transform(p)
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        export.read_transform(tmp_path / "nope.csv")
