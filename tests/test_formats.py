"""Microscope formats through their own libraries: MRC (mrcfile), OME-TIFF channel names, CZI written by
pylibCZIrw and read by bioio-czi, OME-Zarr output read back by bioio-ome-zarr, detection of uploads saved
under any name, and an MRC EM + OME-TIFF LM bead pair registered by the batch task with both calibrations."""
import json
import shutil
from io import BytesIO

import mrcfile
import numpy as np
import pytest
import tifffile

from clem_bridge.errors import InputError
from clem_bridge.io import read_image, write_ome_zarr
from clem_bridge.schema import PixelSize
from clem_bridge.transforms import tre
from clem_bridge.workflows.batch import read_manifest, run_pair


def write_mrc(path, data, angstrom):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data))
        m.voxel_size = angstrom
    return path


def test_mrc_pixel_size_from_angstrom_and_stacks_refused(tmp_path):
    a = np.random.default_rng(0).normal(size=(40, 50)).astype(np.float32)
    img = read_image(write_mrc(tmp_path / "em.mrc", a, 12.5))
    np.testing.assert_array_equal(img.data[0], a)
    assert img.pixel_size == PixelSize(x=1.25, y=1.25, unit="nm")
    assert read_image(write_mrc(tmp_path / "raw.rec", a.astype(np.int16), 0.0)).pixel_size is None
    with pytest.raises(InputError, match="a Z stack of 3 planes"):
        read_image(write_mrc(tmp_path / "tomo.mrc", np.stack([a] * 3), 10.0))
    (tmp_path / "bad.mrc").write_bytes(b"\0" * 300)
    with pytest.raises(InputError, match="not a valid MRC file"):
        read_image(tmp_path / "bad.mrc")


def test_ome_tiff_channel_names(tmp_path):
    a = np.arange(2 * 20 * 30, dtype=np.uint16).reshape(2, 20, 30)
    tifffile.imwrite(tmp_path / "lm.ome.tif", a, ome=True, metadata={
        "axes": "CYX", "PhysicalSizeX": 0.065, "PhysicalSizeY": 0.065, "Channel": {"Name": ["Reflection", "GFP"]}})
    img = read_image(tmp_path / "lm.ome.tif")
    assert img.channel_names == ["Reflection", "GFP"] and img.pixel_size == PixelSize(x=0.065, y=0.065, unit="um")


def test_czi_written_by_pylibczirw_read_with_calibration(tmp_path):
    czi = pytest.importorskip("pylibCZIrw.czi", reason="the optional formats extra is not installed")
    pytest.importorskip("bioio_czi", reason="the optional formats extra is not installed")
    a = np.random.default_rng(1).integers(0, 4000, (2, 48, 64), dtype=np.uint16)
    with czi.create_czi(str(tmp_path / "lm.czi"), exist_ok=True) as w:
        for c in range(2):
            w.write(a[c], plane={"C": c, "T": 0, "Z": 0})
        w.write_metadata(document_name="lm", channel_names={0: "Reflection", 1: "mCherry"},
                         scale_x=0.11e-6, scale_y=0.11e-6)
    img = read_image(tmp_path / "lm.czi")
    np.testing.assert_array_equal(img.data, a)
    assert img.channel_names == ["Reflection", "mCherry"]
    assert img.pixel_size.unit == "um" and img.pixel_size.x == pytest.approx(0.11)
    # an upload saved under another name is still told by its content (ZISRAWFILE), as the server saves them
    shutil.copy(tmp_path / "lm.czi", tmp_path / "upload")
    assert read_image(tmp_path / "upload").data.shape == (2, 48, 64)


def test_mrc_upload_without_suffix_and_unknown_file(tmp_path):
    write_mrc(tmp_path / "em.mrc", np.ones((20, 20), np.float32), 10.0)
    shutil.copy(tmp_path / "em.mrc", tmp_path / "em_upload")                   # MAP at byte 208
    assert read_image(tmp_path / "em_upload").pixel_size == PixelSize(x=1.0, y=1.0, unit="nm")
    (tmp_path / "x.lif").write_bytes(b"not a leica file" * 10)
    with pytest.raises(InputError, match="cannot read x.lif as a LIF file|x.lif is a LIF file; install"):
        read_image(tmp_path / "x.lif")


def test_ome_zarr_output_is_ngff_multiscale_with_calibration(tmp_path):
    pytest.importorskip("bioio_ome_zarr", reason="the optional formats extra is not installed")
    a = np.random.default_rng(2).random((2, 100, 70)).astype(np.float32)
    p = write_ome_zarr(tmp_path / "w.ome.zarr", a, PixelSize(x=8.0, y=8.0, unit="nm"), ["EM-grid GFP", "DAPI"],
                       min_side=32)
    ms = json.loads((p / ".zattrs").read_text())["multiscales"][0]
    assert ms["version"] == "0.4" and [d["path"] for d in ms["datasets"]] == ["0", "1"]
    assert [ax.get("unit") for ax in ms["axes"]] == [None, "nanometer", "nanometer"]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [1.0, 16.0, 16.0]
    back = read_image(p)
    np.testing.assert_array_equal(back.data, a)
    assert back.pixel_size == PixelSize(x=8.0, y=8.0, unit="nm") and back.channel_names == ["EM-grid GFP", "DAPI"]


def test_mrc_em_and_ome_tiff_lm_pair_registered_with_both_calibrations(tmp_path):
    """Bead registration needs both pixel sizes (bead size in px, scale prior): EM 10 nm from the MRC's
    100 Å voxel, LM 65 nm from OME-TIFF; the known matrix is recovered."""
    from clem_bridge.fiducials.simulate import make_bead_phantom

    ph = make_bead_phantom(4, em_shape=(512, 512), lm_shape=(120, 160), n_beads=(10, 14), mirror=True)
    write_mrc(tmp_path / "em.mrc", ph.em, 100.0)
    tifffile.imwrite(tmp_path / "lm.ome.tif", ph.lm, ome=True, metadata={
        "axes": "YX", "PhysicalSizeX": 0.065, "PhysicalSizeY": 0.065, "Channel": {"Name": ["beads"]}})
    (tmp_path / "m.csv").write_text("em,lm,method,reg_channel\nem.mrc,lm.ome.tif,fiducials,beads\n")
    (pair,) = read_manifest(tmp_path / "m.csv")
    rec = run_pair(pair, tmp_path / "out")
    assert rec["status"] in ("ok", "uncertain"), rec["error"]
    t = json.loads((tmp_path / "out" / "em" / "transform.json").read_text())
    assert t["pixel_size"]["fixed"] == {"x": 10.0, "y": 10.0, "unit": "nm"}
    assert t["pixel_size"]["moving"] == {"x": 0.065, "y": 0.065, "unit": "um"}
    assert tre(t["fixed_to_moving"], ph.fixed_to_moving, (512, 512)) < 0.5
    assert read_image(tmp_path / "out" / "em" / "lm_warped.tif").pixel_size == PixelSize(x=10.0, y=10.0, unit="nm")


def test_server_apply_accepts_mrc_and_czi_uploads(tmp_path):
    """The server saves an upload under its own (sanitised) name and reads it with read_image."""
    czi = pytest.importorskip("pylibCZIrw.czi", reason="the optional formats extra is not installed")
    from server_utils import app_client

    rng = np.random.default_rng(3)
    em_like = rng.random((30, 40)).astype(np.float32)
    lm = rng.integers(0, 4000, (30, 40), dtype=np.uint16)
    mrc = write_mrc(tmp_path / "a.mrc", em_like, 10.0).read_bytes()
    with czi.create_czi(str(tmp_path / "b.czi"), exist_ok=True) as w:
        w.write(lm, plane={"C": 0, "T": 0, "Z": 0})
    params = {"fixed_to_moving": np.eye(3).tolist(), "fixed_shape": [30, 40]}
    files = [("images", ("scan.mrc", mrc)), ("images", ("lm.czi", (tmp_path / "b.czi").read_bytes()))]
    with app_client(tmp_path / "data") as client:
        r = client.post("/v1/apply", files=files, data={"params": json.dumps(params)})
    assert r.status_code == 200, r.text
    out = tifffile.imread(BytesIO(r.content))
    np.testing.assert_allclose(out[0], em_like, atol=1e-6)             # identity warp: the pixels themselves
    np.testing.assert_allclose(out[1], lm, atol=0.5)
