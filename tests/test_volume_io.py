"""Z-stack I/O: calibrated ImageJ hyperstacks and OME-TIFF read back with their voxel sizes; bad input."""
import subprocess

import numpy as np
import pytest
import tifffile

from clem_bridge.errors import InputError
from clem_bridge.schema import PixelSize
from clem_bridge.volume.stack_io import is_stack, read_stack, write_stack
from fiji_utils import CLASSPATH, FAST_START, jvm_missing


def _data(c=2, z=5, y=20, x=24, dtype=np.uint16):
    return (np.arange(c * z * y * x) % 4000).reshape(c, z, y, x).astype(dtype)


def test_imagej_hyperstack_round_trip(tmp_path):
    data = _data()
    p = write_stack(tmp_path / "lm.tif", data, PixelSize(x=0.2, y=0.25, z=1.6, unit="um"))
    with tifffile.TiffFile(p) as tf:
        assert tf.is_imagej and tf.series[0].axes == "ZCYX"
        assert tf.imagej_metadata["spacing"] == pytest.approx(1.6)
    s = read_stack(p)
    assert s.data.shape == (2, 5, 20, 24) and s.data.dtype == np.uint16 and np.array_equal(s.data, data)
    assert (s.voxel.x, s.voxel.y, s.voxel.z, s.voxel.unit) == (pytest.approx(0.2), pytest.approx(0.25),
                                                               pytest.approx(1.6), "um")
    assert not s.z_assumed and not s.warnings and s.shape == (5, 20, 24)
    assert is_stack(p)


def test_single_channel_float_and_nm(tmp_path):
    vol = np.random.default_rng(0).random((4, 16, 18)).astype(np.float32)
    s = read_stack(write_stack(tmp_path / "em.tif", vol, PixelSize(x=10, y=10, z=50, unit="nm")))
    assert s.data.shape == (1, 4, 16, 18) and np.array_equal(s.data[0], vol)
    assert s.voxel.unit == "nm" and s.voxel.z == pytest.approx(50)


def test_ome_tiff_with_units(tmp_path):
    data = _data(c=2, z=3)
    p = tmp_path / "lm.ome.tif"
    tifffile.imwrite(p, data, metadata={"axes": "CZYX", "PhysicalSizeX": 0.22, "PhysicalSizeXUnit": "µm",
                                        "PhysicalSizeY": 0.22, "PhysicalSizeYUnit": "µm",
                                        "PhysicalSizeZ": 600, "PhysicalSizeZUnit": "nm"})
    s = read_stack(p)
    assert s.data.shape == (2, 3, 20, 24) and np.array_equal(s.data, data)
    assert s.voxel.x == pytest.approx(0.22) and s.voxel.z == pytest.approx(0.6) and s.voxel.unit == "um"


def test_missing_z_spacing_assumes_isotropic(tmp_path):
    p = tmp_path / "noz.tif"
    tifffile.imwrite(p, _data(c=1, z=4)[0], imagej=True, resolution=(1 / 0.3, 1 / 0.3),
                     metadata={"axes": "ZYX", "unit": "um"})
    s = read_stack(p)
    assert s.z_assumed and s.voxel.z == pytest.approx(0.3)
    assert "no z spacing" in s.warnings[0] and "isotropic" in s.warnings[0]


def test_plain_multipage_tiff_is_a_stack_without_calibration(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, _data(c=1, z=12)[0])
    s = read_stack(p)
    assert s.data.shape == (1, 12, 20, 24) and s.voxel is None and "no voxel size" in s.warnings[0]


def test_bad_input(tmp_path):
    two_d = tmp_path / "flat.tif"
    tifffile.imwrite(two_d, np.zeros((20, 20), np.uint8), imagej=True)
    with pytest.raises(InputError, match="2-D image"):
        read_stack(two_d)
    assert not is_stack(two_d)
    one = tmp_path / "one.tif"
    write_stack(one, np.ones((1, 16, 16), np.uint8))
    with pytest.raises(InputError, match="2-D image"):
        read_stack(one)
    with pytest.raises(InputError, match="--max-voxels"):
        read_stack(write_stack(tmp_path / "big.tif", _data()), max_voxels=1000)
    series = tmp_path / "t.tif"
    tifffile.imwrite(series, np.zeros((3, 4, 16, 16), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(InputError, match="time series"):
        read_stack(series)
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(InputError, match="not a TIFF"):
        read_stack(tmp_path / "x.png")
    with pytest.raises(InputError, match="not found"):
        read_stack(tmp_path / "missing.tif")


@pytest.mark.skipif(jvm_missing() is not None, reason=str(jvm_missing()))
def test_imagej_reads_the_calibration(tmp_path):
    """The real ImageJ 1 reads the voxel size and hyperstack layout written by write_stack."""
    p = write_stack(tmp_path / "s.tif", _data(c=2, z=3), PixelSize(x=0.2, y=0.25, z=1.6, unit="um"))
    script = tmp_path / "read.py"
    script.write_text(f"from ij import IJ\nimp = IJ.openImage({str(p)!r})\ncal = imp.getCalibration()\n"
                      "print('%s %s %s %s %d %d' % (cal.pixelWidth, cal.pixelHeight, cal.pixelDepth, "
                      "cal.getUnit(), imp.getNChannels(), imp.getNSlices()))\n")
    out = subprocess.run(["java", *FAST_START, "-cp", CLASSPATH, "org.python.util.jython", str(script)],
                         capture_output=True, text=True, timeout=300).stdout.split()
    assert [float(v) for v in out[:3]] == pytest.approx([0.2, 0.25, 1.6]) and out[4:6] == ["2", "3"]
    assert out[3] in ("\u00b5m", "um", "micron")
