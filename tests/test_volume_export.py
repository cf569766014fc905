"""3-D exporters: BigWarp 3-D landmarks CSV and -bigWarp.xml reproduce the 4x4 fixed_to_moving."""
import csv

import numpy as np
import pytest

from clem_bridge.errors import InputError
from clem_bridge.export3d import (read_bigwarp_csv3d, read_bigwarp_xml3d, write_all3d, write_bigwarp_csv3d,
                                  write_bigwarp_xml3d)
from clem_bridge.result import Registration
from clem_bridge.schema import PixelSize
from clem_bridge.transforms3d import apply_to_points3d, from_params3d

A = from_params3d(rot_z_deg=-23, rot_x_deg=2, rot_y_deg=-1.5, mirror=True, scale=(0.5, 0.5, 0.12),
                  translation_xyz=(40, 30, 4), center=(64, 64, 10))
EM = PixelSize(x=0.05, y=0.05, z=0.1, unit="um")
LM = PixelSize(x=0.2, y=0.2, z=0.8, unit="um")


def test_csv_layout_world_units_and_round_trip(tmp_path):
    p = write_bigwarp_csv3d(tmp_path / "lm.csv", A, (20, 128, 128), fixed_pixel_size=EM, moving_pixel_size=LM)
    rows = list(csv.reader(p.open()))
    assert len(rows) == 27 and all(len(r) == 8 for r in rows) and rows[0][:2] == ["Pt-0", "true"]
    assert p.read_text().startswith('"Pt-0","true","')
    mx, my, mz, fx, fy, fz = (float(v) for v in rows[-1][2:])
    assert (fx, fy, fz) == pytest.approx((127 * 0.05, 127 * 0.05, 19 * 0.1))     # last EM corner, world units
    m = apply_to_points3d(A, [[127, 127, 19]])[0] * (0.2, 0.2, 0.8)
    assert (mx, my, mz) == pytest.approx(tuple(m))
    assert np.allclose(read_bigwarp_csv3d(p, fixed_pixel_size=EM, moving_pixel_size=LM), A, atol=1e-9)


def test_xml_round_trip_and_order(tmp_path):
    p = write_bigwarp_xml3d(tmp_path / "moving-bigWarp.xml", A, (12, 96, 80), moving_file="lm.tif",
                            fixed_pixel_size=EM, moving_pixel_size=LM)
    text = p.read_text()
    assert "<size>80 96 12</size>" in text and text.index("Big Warp: Affine") < text.index("calibration")
    assert "0.2 0.2 0.8" in text
    assert np.allclose(read_bigwarp_xml3d(p, fixed_pixel_size=EM), A, atol=1e-9)


def test_write_all3d_and_bad_files(tmp_path):
    reg = Registration(fixed_to_moving=A, fixed_shape=(20, 128, 128), moving_shape=(12, 96, 80), method="mine3d",
                       fixed_pixel_size=EM, moving_pixel_size=LM, ndim=3)
    files = write_all3d(reg, tmp_path, moving_file="lm_warped.tif")
    assert np.allclose(read_bigwarp_csv3d(files["bigwarp_csv"], fixed_pixel_size=EM, moving_pixel_size=LM), A)
    bad = tmp_path / "bad.csv"
    bad.write_text('"Pt-0","true","1","2","3","4"\n')
    with pytest.raises(InputError, match="8"):
        read_bigwarp_csv3d(bad)
    flat = tmp_path / "flat.csv"
    flat.write_text("".join(f'"Pt-{i}","true","{i}","{i * i}","0","{i}","{i}","0"\n' for i in range(5)))
    with pytest.raises(InputError, match="plane"):
        read_bigwarp_csv3d(flat)
    with pytest.raises(InputError, match="XML"):
        read_bigwarp_xml3d(bad)
