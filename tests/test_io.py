"""Image I/O: formats, layouts, calibration round trips (read back by ImageJ 1 itself), and bad input."""
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from clem_bridge.errors import InputError
from clem_bridge.io import check_image, normalize_unit, read_channel, read_image, write_tiff
from clem_bridge.schema import PixelSize
from fiji_utils import FAST_START

IJ_JAR = Path("/usr/share/java/ij.jar")
JYTHON_JAR = Path("/usr/share/java/jython.jar")


@pytest.fixture
def cyx():
    rng = np.random.default_rng(0)
    return (rng.random((3, 40, 56)) * 60000).astype(np.uint16)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [1, 3])
def test_write_read_round_trip_keeps_data_and_calibration(tmp_path, dtype, channels):
    rng = np.random.default_rng(1)
    a = (rng.random((channels, 30, 50)) * 200).astype(dtype)
    px = PixelSize(x=0.3, y=0.5, unit="um")
    p = write_tiff(tmp_path / "a.tif", a[0] if channels == 1 else a, px)
    img = read_image(p)
    assert img.data.shape == (channels, 30, 50) and img.data.dtype == dtype
    assert np.array_equal(img.data, a)
    assert img.pixel_size.unit == "um"
    assert img.pixel_size.x == pytest.approx(0.3, rel=1e-6) and img.pixel_size.y == pytest.approx(0.5, rel=1e-6)


def test_write_converts_unsupported_dtypes_and_ascii_unit(tmp_path):
    a = np.linspace(0, 1, 20 * 20).reshape(20, 20)          # float64 -> float32
    p = write_tiff(tmp_path / "f.tif", a, PixelSize(x=2.0, y=2.0, unit="µm"))
    img = read_image(p)
    assert img.data.dtype == np.float32 and np.allclose(img.data[0], a, atol=1e-6)
    assert img.pixel_size == PixelSize(x=2.0, y=2.0, unit="um")
    assert read_image(write_tiff(tmp_path / "u.tif", a)).pixel_size is None
    with pytest.raises(InputError, match="channels first"):
        write_tiff(tmp_path / "yxc.tif", np.zeros((20, 30, 3), np.uint8))


def test_imagej_micro_sign_and_micron_units(tmp_path, cyx):
    for unit in ("\\u00B5m", "micron", "um"):        # as ImageJ itself, old plugins and tifffile write it
        p = tmp_path / "m.tif"
        tifffile.imwrite(p, cyx, imagej=True, resolution=(1 / 0.25, 1 / 0.25), metadata={"axes": "CYX", "unit": unit})
        assert read_image(p).pixel_size == PixelSize(x=0.25, y=0.25, unit="um")
    assert normalize_unit("µm") == normalize_unit("μm") == normalize_unit("\\u00B5m") == "um"
    assert normalize_unit("pixel") is None and normalize_unit("nm") == "nm"


def test_ome_tiff_pixel_size_and_units(tmp_path, cyx):
    p = tmp_path / "a.ome.tif"
    tifffile.imwrite(p, cyx, metadata={"axes": "CYX", "PhysicalSizeX": 4.0, "PhysicalSizeXUnit": "nm",
                                        "PhysicalSizeY": 0.005, "PhysicalSizeYUnit": "µm"})
    img = read_image(p)
    assert img.data.shape == (3, 40, 56) and np.array_equal(img.data, cyx)
    assert img.pixel_size.unit == "nm"
    assert img.pixel_size.x == pytest.approx(4.0) and img.pixel_size.y == pytest.approx(5.0)


def test_sem_vendor_pixel_sizes(tmp_path):
    """FEI/Thermo and Zeiss SEM TIFFs carry the pixel size in their own tags (34682, 34118)."""
    em = np.zeros((32, 32), np.uint8)
    em[::4] = 200
    fei = "[User]\r\nDate=01/02/2024\r\n[Scan]\r\nPixelWidth=4.5e-09\r\nPixelHeight=5e-09\r\n"
    tifffile.imwrite(tmp_path / "fei.tif", em, extratags=[(34682, "s", 0, fei, True)])
    zeiss = "0\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 3.2 nm\r\nAP_WD\r\nWD = 5.0 mm\r\n"
    tifffile.imwrite(tmp_path / "zeiss.tif", em, extratags=[(34118, "s", 0, zeiss, True)])
    fpx = read_image(tmp_path / "fei.tif").pixel_size
    assert fpx.unit == "nm" and fpx.x == pytest.approx(4.5) and fpx.y == pytest.approx(5.0)
    assert read_image(tmp_path / "zeiss.tif").pixel_size == PixelSize(x=3.2, y=3.2, unit="nm")


def test_yxc_planar_and_rgb_layouts(tmp_path, cyx):
    yxc = np.moveaxis(cyx, 0, -1)
    tifffile.imwrite(tmp_path / "yxc.tif", yxc, photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(tmp_path / "planar.tif", cyx, photometric="minisblack", planarconfig="separate")
    rgb = (np.moveaxis(cyx, 0, -1) // 256).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    for name in ("yxc.tif", "planar.tif"):
        img = read_image(tmp_path / name)
        assert img.data.shape == (3, 40, 56) and np.array_equal(img.data, cyx), name
    img = read_image(tmp_path / "rgb.tif")
    assert img.rgb and np.array_equal(img.data, np.moveaxis(rgb, -1, 0))
    grey, px = read_channel(tmp_path / "rgb.tif")                  # RGB -> luminance
    assert grey.shape == (40, 56) and px is None
    assert np.allclose(grey, 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2], atol=1e-3)
    second, _ = read_channel(tmp_path / "planar.tif", 1)
    assert np.array_equal(second, cyx[1])


def test_png_and_jpeg(tmp_path):
    g = (np.arange(48 * 64) % 251).reshape(48, 64).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "g3.png")
    Image.fromarray(g).save(tmp_path / "g.jpg", quality=95)
    g16 = (g.astype(np.uint16) * 200)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert np.array_equal(read_channel(tmp_path / "g.png")[0], g)
    assert np.array_equal(read_channel(tmp_path / "g3.png")[0], g)        # equal RGB channels -> exact grey
    assert np.array_equal(read_channel(tmp_path / "g16.png")[0], g16)
    j = read_image(tmp_path / "g.jpg")
    assert j.data.shape == (1, 48, 64) and np.abs(j.data[0].astype(int) - g).mean() < 8
    # content, not extension, decides the reader
    shutil.copy(tmp_path / "g.png", tmp_path / "named.tif")
    assert np.array_equal(read_channel(tmp_path / "named.tif")[0], g)


def _err(path, **kw):
    with pytest.raises(InputError) as e:
        read_image(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_bad_files_give_one_line_errors(tmp_path, cyx):
    assert "not found" in _err(tmp_path / "missing.tif")
    (tmp_path / "empty.tif").write_bytes(b"")
    assert "empty file" in _err(tmp_path / "empty.tif")
    (tmp_path / "notes.png").write_text("these are not pixels\n")
    assert "not a TIFF, PNG or JPEG" in _err(tmp_path / "notes.png")
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, cyx, photometric="minisblack")
    (tmp_path / "trunc.tif").write_bytes(good.read_bytes()[:2000])
    assert "truncated or damaged" in _err(tmp_path / "trunc.tif")
    (tmp_path / "trunc_header.tif").write_bytes(good.read_bytes()[:6])
    assert "truncated or damaged" in _err(tmp_path / "trunc_header.tif")


def test_stacks_are_refused_with_their_kind(tmp_path):
    z = np.zeros((12, 2, 16, 16), np.uint8)
    tifffile.imwrite(tmp_path / "z.tif", z, imagej=True, metadata={"axes": "ZCYX"})
    assert "Z stack of 12 planes" in _err(tmp_path / "z.tif")
    tifffile.imwrite(tmp_path / "t.tif", np.zeros((5, 16, 16), np.uint8), imagej=True, metadata={"axes": "TYX"})
    assert "time series of 5 planes" in _err(tmp_path / "t.tif")
    tifffile.imwrite(tmp_path / "many.tif", np.zeros((40, 16, 16), np.uint8))
    assert "40 planes" in _err(tmp_path / "many.tif")


def test_nan_pixels_and_pixel_limit(tmp_path):
    a = np.ones((20, 20), np.float32)
    a[3, 4] = np.nan
    a[5, 5] = np.inf
    write_tiff(tmp_path / "nan.tif", a)
    assert "2 NaN/inf pixels" in _err(tmp_path / "nan.tif")
    write_tiff(tmp_path / "ok.tif", np.ones((64, 64), np.uint8))
    assert "more than the limit" in _err(tmp_path / "ok.tif", max_pixels=1000)
    Image.fromarray(np.ones((64, 64), np.uint8)).save(tmp_path / "ok.png")
    assert "more than the limit" in _err(tmp_path / "ok.png", max_pixels=1000)


def test_decompression_bomb_tiff_is_refused_before_decoding(tmp_path):
    """A tiny file whose header declares 200000 x 200000 pixels is rejected without allocating them."""
    p = tmp_path / "bomb.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint8))
    raw = bytearray(p.read_bytes())
    with tifffile.TiffFile(p) as tf:
        offs = [tf.pages[0].tags[n].valueoffset for n in ("ImageWidth", "ImageLength")]
        dtypes = [tf.pages[0].tags[n].dtype for n in ("ImageWidth", "ImageLength")]
    for off, dt in zip(offs, dtypes):
        fmt = "<I" if dt == 4 else "<H"
        raw[off:off + struct.calcsize(fmt)] = struct.pack(fmt, 200000 if dt == 4 else 60000)
    p.write_bytes(bytes(raw))
    assert "40,000,000,000 pixel values, more than the limit" in _err(p)


def test_read_channel_choices(tmp_path, cyx):
    p = write_tiff(tmp_path / "c.tif", cyx)
    with pytest.raises(InputError, match="has 3 channels; choose one"):
        read_channel(p)
    with pytest.raises(InputError, match="channel 5 requested but c.tif has 3"):
        read_channel(p, 5)


@pytest.mark.parametrize("arr,msg", [
    (np.zeros((0, 10)), "empty"),
    (np.zeros((3, 20, 20)), "2-D image"),
    (np.full((20, 20), 7.0), "constant"),
    (np.array([[np.nan] * 20] * 20), "NaN/inf"),
    (np.ones((8, 300)), "too small"),
    (np.array([["a"] * 20] * 20), "unsupported pixel type"),
])
def test_check_image_errors(arr, msg):
    with pytest.raises(InputError, match=msg):
        check_image(arr, "EM")
    a = np.arange(400.0).reshape(20, 20)
    assert check_image(a, "EM") is not None


@pytest.mark.jvm
@pytest.mark.skipif(not (IJ_JAR.exists() and JYTHON_JAR.exists() and shutil.which("java")),
                    reason="needs java, /usr/share/java/ij.jar and jython.jar")
def test_imagej_reads_our_calibration(tmp_path, cyx):
    files = {
        "um.tif": (cyx, PixelSize(x=0.3, y=0.5, unit="um")),
        "nm.tif": (cyx[0].astype(np.float32), PixelSize(x=4.0, y=4.0, unit="nm")),
        "u8.tif": ((cyx[0] // 256).astype(np.uint8), PixelSize(x=0.0123, y=0.0123, unit="µm")),
    }
    for name, (a, px) in files.items():
        write_tiff(tmp_path / name, a, px)
    script = tmp_path / "calib.py"
    script.write_text(
        "import sys\nfrom ij import IJ\n"
        "for f in sys.argv[1:]:\n"
        "    imp = IJ.openImage(f)\n"
        "    c = imp.getCalibration()\n"
        "    print('%s %r %r %s %d %d %d %d' % (f.split('/')[-1], c.pixelWidth, c.pixelHeight,\n"
        "          c.getUnit().encode('unicode_escape'), imp.getWidth(), imp.getHeight(), imp.getNChannels(),\n"
        "          imp.getBitDepth()))\n")
    out = subprocess.run(["java", *FAST_START, "-Djava.awt.headless=true", "-cp", f"{JYTHON_JAR}:{IJ_JAR}",
                          "org.python.util.jython", str(script)] + [str(tmp_path / n) for n in files],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {r.split()[0]: r.split()[1:] for r in out.stdout.strip().splitlines()}
    expect = {"um.tif": (0.3, 0.5, "\\xb5m", 3, 16), "nm.tif": (4.0, 4.0, "nm", 1, 32),
              "u8.tif": (0.0123, 0.0123, "\\xb5m", 1, 8)}
    for name, (pw, ph, unit, nc, bits) in expect.items():
        r = rows[name]
        assert float(r[0]) == pytest.approx(pw, rel=1e-5) and float(r[1]) == pytest.approx(ph, rel=1e-5), r
        assert r[2] == unit and (int(r[3]), int(r[4])) == (56, 40) and int(r[5]) == nc and int(r[6]) == bits, r
