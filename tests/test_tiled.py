"""Strip-wise warping onto a large EM grid equals the in-memory warp, streams to a memory-mapped TIFF."""
import tracemalloc

import numpy as np
import pytest
import tifffile

from clem_bridge import transforms as T
from clem_bridge.errors import InputError
from clem_bridge.io import read_image
from clem_bridge.schema import PixelSize
from clem_bridge.synthetic import centred_affine
from clem_bridge.tiled import warp_tiled, warp_to_tiff

OUT = (700, 900)


@pytest.fixture(scope="module")
def lm():
    rng = np.random.default_rng(0)
    a = rng.random((120, 150)).astype(np.float32)
    b = (rng.random((120, 150)) * 60000).astype(np.uint16)
    return a, b


F2M = centred_affine(OUT, (120, 150), rotation_deg=4.0, scale=(0.18, 0.19), shear=0.02, translation=(3.0, -2.0))


@pytest.mark.parametrize("order", ["bilinear", "bicubic", "nearest"])
def test_tiled_equals_in_memory(lm, order):
    ref, ref_mask = T.warp_channels(list(lm), F2M, OUT, order=order, fill=0.25)
    assert 0.05 < 1 - ref_mask.mean() < 0.95                # some output falls outside the LM
    out = warp_tiled(list(lm), F2M, OUT, order=order, fill=0.25, strip_bytes=4 * 900 * 37)  # 37-row strips
    assert out.shape == (2, *OUT) and out.dtype == np.float32      # one stack, common dtype
    # equal up to float rounding of the strip offset (1e-6 on 0-1 floats, 1 count on uint16)
    np.testing.assert_allclose(out[0], ref[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[1], ref[1].astype(np.float32), rtol=0, atol=1.0)
    assert np.mean(out[1] == ref[1]) > 0.999


def test_tiff_written_through_memory_map_reads_back(lm, tmp_path):
    seen = []
    path = warp_to_tiff(tmp_path / "warped.tif", [lm[0]], F2M, OUT, pixel_size=PixelSize(x=0.01, y=0.01, unit="um"),
                        fill=0.5, strip_bytes=4 * 900 * 100, progress=seen.append)
    back = read_image(path)
    assert back.data.shape == (1, *OUT)
    np.testing.assert_allclose(back.data[0], T.warp_image(lm[0], F2M, OUT, fill=0.5), rtol=0, atol=1e-6)
    assert back.pixel_size.x == pytest.approx(0.01) and back.pixel_size.unit == "um"
    assert tifffile.TiffFile(path).is_imagej
    assert seen[-1] == pytest.approx(1.0) and len(seen) == 7


def test_memory_stays_at_one_strip(tmp_path):
    """A 3000x3000x2 float32 output (72 MB) is written with < 20 MB of Python/numpy allocations."""
    rng = np.random.default_rng(1)
    chans = [rng.random((300, 300)).astype(np.float32) for _ in range(2)]
    f2m = np.diag([0.1, 0.1, 1.0])
    tracemalloc.start()
    warp_to_tiff(tmp_path / "big.tif", chans, f2m, (3000, 3000), strip_bytes=2 << 20)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20e6
    mm = tifffile.memmap(tmp_path / "big.tif", mode="r")
    np.testing.assert_allclose(mm[1, 1500:1510], T.warp_image(chans[1], f2m, (10, 3000), offset=(1500, 0)),
                               rtol=0, atol=1e-6)


def test_bad_arguments(lm):
    with pytest.raises(InputError, match="one size"):
        warp_tiled([lm[0], np.zeros((5, 5), np.float32)], F2M, OUT)
    with pytest.raises(InputError, match="fill"):
        warp_tiled(list(lm), F2M, OUT, fill=[0.0])


def test_preview_matches_binned_full_resolution_warp():
    """The overlay preview of a large EM equals the full-resolution warp binned to the preview size."""
    import cv2

    from clem_bridge.tiled import preview
    yy, xx = np.mgrid[0:120, 0:150]
    smooth = (np.sin(xx / 9.0) * np.cos(yy / 7.0)).astype(np.float32)
    em = np.random.default_rng(2).random((800, 1000)).astype(np.float32)
    small, warped, valid = preview(em, [smooth], F2M @ np.diag([0.7, 0.7, 1.0]), max_side=250)
    assert small.shape == (200, 250) and warped[0].shape == (200, 250) and valid.shape == (200, 250)
    full = T.warp_image(smooth, F2M @ np.diag([0.7, 0.7, 1.0]), (800, 1000))
    binned = cv2.resize(full, (250, 200), interpolation=cv2.INTER_AREA)
    inner = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert inner.mean() > 0.3
    assert np.abs(warped[0] - binned)[inner].max() < 0.02
    same, w2, _ = preview(em[:200, :250], [smooth], F2M, max_side=250)     # small EM: no binning
    assert same.shape == (200, 250) and np.array_equal(w2[0], T.warp_image(smooth, F2M, (200, 250)))
