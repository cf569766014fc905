"""Transform files for Fiji: BigWarp landmarks CSV, BigWarp/BDV ``-bigWarp.xml``, mpicbg XML; and readers.

Every writer takes our ``fixed_to_moving`` (see :mod:`clem_bridge.transforms`); every reader
returns it.  Format facts (directions, units, layouts) are those of ``fiji-interop.md``:

* **BigWarp landmarks CSV** (2-D): no header, every field double-quoted, one row per landmark:
  ``name, active, moving_x, moving_y, fixed_x, fixed_y`` — the **moving (LM) point first**, then the
  fixed (EM) point, each in its own image's world units (``pixel index · pixel size``, origin 0).
  The points are a grid spread over the EM image and their LM images, so BigWarp in *Affine*
  mode (least squares moving→fixed, used inverted) reproduces our matrix exactly.
* **BigWarp/BDV XML** for the moving image (SpimData 0.2): the moving image's ViewRegistration is
  ``[BigWarp: Affine (moving world → fixed world), calibration (moving pixel → moving world)]``
  (the first listed transform is applied last), with a z row ``0 0 1 0``.  Written with
  ``xml.etree``: npy2bdv/pybdv write HDF5 copies of 3-D uint16/ZYX data, round affines to 6
  decimals (npy2bdv) or replace the calibration entry (pybdv), while we only need to describe the
  existing LM TIFF (``spimreconstruction.filemap2`` loader) with exact numbers.
* **mpicbg/TrakEM2 XML**: ``<iict_transform class="mpicbg.trakem2.transform.AffineModel2D"
  data="m00 m10 m01 m11 m02 m12" />`` (column-major) of ``moving_to_fixed`` in raw pixels, as
  Register/Transform Virtual Stack Slices and DeepCLEM use it.
"""
from __future__ import annotations

import csv
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import InputError
from .result import Registration, load_transform_json
from .schema import PixelSize
from .transforms import apply_to_points, as_matrix

MPICBG_AFFINE = "mpicbg.trakem2.transform.AffineModel2D"
FILE_NAMES = {"bigwarp_csv": "bigwarp_landmarks.csv", "bigwarp_xml": "moving-bigWarp.xml",
              "mpicbg_xml": "mpicbg_affine.xml"}


def _scale(ps: Optional[PixelSize]) -> np.ndarray:
    """Pixel → world matrix ``diag(pw, ph, 1)`` (identity when the pixel size is unknown)."""
    return np.diag([ps.x, ps.y, 1.0]) if ps is not None else np.eye(3)


def landmark_grid(fixed_shape, n: int = 4) -> np.ndarray:
    """``(n·n, 2)`` fixed pixel points ``(x, y)`` on a grid spanning the EM image, corners included."""
    h, w = int(fixed_shape[0]), int(fixed_shape[1])
    xs, ys = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


# --- BigWarp landmarks CSV --------------------------------------------------------------

def bigwarp_landmarks(fixed_to_moving, fixed_shape, *, fixed_pixel_size: Optional[PixelSize] = None,
                      moving_pixel_size: Optional[PixelSize] = None, n: int = 4) -> np.ndarray:
    """``(N, 4)`` rows ``moving_x, moving_y, fixed_x, fixed_y`` in world units (BigWarp's column order)."""
    fixed_px = landmark_grid(fixed_shape, n)
    moving_px = apply_to_points(fixed_to_moving, fixed_px)
    return np.hstack([apply_to_points(_scale(moving_pixel_size), moving_px),
                      apply_to_points(_scale(fixed_pixel_size), fixed_px)])


def write_bigwarp_csv(path, fixed_to_moving, fixed_shape, *, fixed_pixel_size: Optional[PixelSize] = None,
                      moving_pixel_size: Optional[PixelSize] = None, n: int = 4) -> Path:
    """Write a BigWarp 2-D landmarks CSV (moving columns first, world units) reproducing the affine."""
    rows = bigwarp_landmarks(fixed_to_moving, fixed_shape, fixed_pixel_size=fixed_pixel_size,
                             moving_pixel_size=moving_pixel_size, n=n)
    return write_landmark_rows(path, rows)


def write_landmark_pairs_csv(path, moving_px, fixed_px, *, fixed_pixel_size: Optional[PixelSize] = None,
                             moving_pixel_size: Optional[PixelSize] = None) -> Path:
    """Write point pairs given in pixels (e.g. matched fiducial beads) as a BigWarp 2-D landmarks CSV."""
    moving_px, fixed_px = np.asarray(moving_px, float).reshape(-1, 2), np.asarray(fixed_px, float).reshape(-1, 2)
    return write_landmark_rows(path, np.hstack([apply_to_points(_scale(moving_pixel_size), moving_px),
                                                 apply_to_points(_scale(fixed_pixel_size), fixed_px)]))


def write_landmark_rows(path, rows: np.ndarray) -> Path:
    """BigWarp landmark rows (``Pt-i``, active, moving then fixed world coordinates), quoted as BigWarp writes them."""
    p = Path(path)
    with p.open("w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for i, r in enumerate(rows):
            w.writerow([f"Pt-{i}", "true", *(repr(float(v)) for v in r)])
    return p


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares homogeneous affine with ``dst ≈ A · src`` for ``(N, d)`` point arrays, d = 2 (3×3; N ≥ 3,
    not collinear) or 3 (4×4; N ≥ 4, not coplanar)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    d = src.shape[1]
    design = np.hstack([src, np.ones((len(src), 1))])
    if len(src) < d + 1 or np.linalg.matrix_rank(design) < d + 1:
        raise InputError("an affine needs at least 3 active landmark pairs that are not on one line" if d == 2 else
                         "a 3-D affine needs at least 4 active landmark pairs that are not in one plane")
    sol, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return np.vstack([sol.T, np.eye(d + 1)[d]])


def read_bigwarp_landmarks(path, ndim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Active landmark pairs of a BigWarp CSV (``ndim`` 2 or 3) as ``(moving (N, ndim), fixed (N, ndim))``
    world coordinates."""
    fields = 2 + 2 * ndim
    names = "moving x, moving y, fixed x, fixed y" if ndim == 2 else "moving x, y, z, fixed x, y, z"
    moving, fixed = [], []
    try:
        with Path(path).open(newline="") as f:
            for i, row in enumerate(csv.reader(f)):
                if not row:
                    continue
                if len(row) != fields:
                    raise InputError(f"{path} row {i + 1} has {len(row)} fields; a {ndim}-D BigWarp landmarks CSV "
                                     f"has {fields} (name, active, {names})")
                if row[1].strip().lower() != "true":
                    continue
                vals = [float(v) for v in row[2:]]
                moving.append(vals[:ndim])
                fixed.append(vals[ndim:])
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path} is not a BigWarp landmarks CSV (non-numeric coordinate: {e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read landmarks file {path}: {e}") from None
    m, fx = np.asarray(moving, np.float64).reshape(-1, ndim), np.asarray(fixed, np.float64).reshape(-1, ndim)
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(fx))):
        raise InputError(f"{path} has active landmarks with an unset (infinite) point")
    return m, fx


def read_bigwarp_csv(path, *, fixed_pixel_size: Optional[PixelSize] = None,
                     moving_pixel_size: Optional[PixelSize] = None) -> np.ndarray:
    """``fixed_to_moving`` (pixels) that BigWarp's Affine mode derives from a landmarks CSV."""
    moving, fixed = read_bigwarp_landmarks(path)
    a_world = fit_affine(moving, fixed)  # moving world -> fixed world, as mpicbg AffineModel2D.fit
    return np.linalg.inv(np.linalg.inv(_scale(fixed_pixel_size)) @ a_world @ _scale(moving_pixel_size))


# --- BigWarp / BigDataViewer SpimData XML -----------------------------------------------

def embed_2d(m2) -> np.ndarray:
    """A 2-D 3×3 affine as the 4×4 that leaves z alone (how BigWarp stores 2-D transforms)."""
    a, m4 = as_matrix(m2), np.eye(4)
    m4[:2, :2], m4[:2, 3] = a[:2, :2], a[:2, 2]
    return m4


def write_spimdata_xml(path, world, calibration, size_xyz, *, unit: str = "pixel",
                       moving_file: str = "moving.tif") -> Path:
    """A SpimData XML (BigWarp's ``-bigWarp.xml``) for one moving image: ``world`` (4×4, moving world → fixed
    world) and ``calibration`` (4×4, voxels → moving world) as its two ViewTransforms, row-major 3×4."""
    root = ET.Element("SpimData", version="0.2")
    ET.SubElement(root, "BasePath", type="relative").text = "."
    seq = ET.SubElement(root, "SequenceDescription")
    loader = ET.SubElement(seq, "ImageLoader", format="spimreconstruction.filemap2")
    ET.SubElement(loader, "ZGrouped").text = "false"
    mapping = ET.SubElement(ET.SubElement(loader, "files"), "FileMapping", view_setup="0", timepoint="0",
                            series="0", channel="0")
    ET.SubElement(mapping, "file", type="relative").text = moving_file
    setups = ET.SubElement(seq, "ViewSetups")
    setup = ET.SubElement(setups, "ViewSetup")
    ET.SubElement(setup, "id").text = "0"
    ET.SubElement(setup, "name").text = Path(moving_file).stem
    ET.SubElement(setup, "size").text = " ".join(str(int(v)) for v in size_xyz)
    vox = ET.SubElement(setup, "voxelSize")
    ET.SubElement(vox, "unit").text = unit
    ET.SubElement(vox, "size").text = " ".join(repr(float(v)) for v in np.diag(calibration)[:3])
    ET.SubElement(ET.SubElement(setup, "attributes"), "channel").text = "0"
    channel = ET.SubElement(ET.SubElement(setups, "Attributes", name="channel"), "Channel")
    ET.SubElement(channel, "id").text = "0"
    ET.SubElement(channel, "name").text = "0"
    tps = ET.SubElement(seq, "Timepoints", type="range")
    ET.SubElement(tps, "first").text = "0"
    ET.SubElement(tps, "last").text = "0"
    reg = ET.SubElement(ET.SubElement(root, "ViewRegistrations"), "ViewRegistration", timepoint="0", setup="0")
    for name, m in (("Big Warp: Affine", world), ("calibration", calibration)):
        vt = ET.SubElement(reg, "ViewTransform", type="affine")
        ET.SubElement(vt, "Name").text = name
        ET.SubElement(vt, "affine").text = " ".join(repr(float(v)) for v in np.asarray(m, dtype=float)[:3].ravel())
    ET.indent(root)
    p = Path(path)
    ET.ElementTree(root).write(p, encoding="UTF-8", xml_declaration=True)
    return p


def write_bigwarp_xml(path, fixed_to_moving, moving_shape, *, moving_file: str = "moving.tif",
                      fixed_pixel_size: Optional[PixelSize] = None,
                      moving_pixel_size: Optional[PixelSize] = None) -> Path:
    """Write a SpimData XML for the moving (LM) image carrying the registration like BigWarp's ``-bigWarp.xml``.

    ``moving_file`` is the LM TIFF the XML refers to (relative to the XML's folder).
    """
    s_m, s_f = _scale(moving_pixel_size), _scale(fixed_pixel_size)
    world = s_f @ np.linalg.inv(as_matrix(fixed_to_moving)) @ np.linalg.inv(s_m)  # moving world -> fixed world
    return write_spimdata_xml(path, embed_2d(world), embed_2d(s_m), (moving_shape[1], moving_shape[0], 1),
                              unit=moving_pixel_size.unit if moving_pixel_size else "pixel", moving_file=moving_file)


def spimdata_model(path) -> np.ndarray:
    """The 4×4 product of the ViewTransforms of a SpimData XML's first ViewRegistration (moving voxels →
    fixed world), for the 2-D and 3-D readers."""
    root = _parse_xml(path)
    reg = root.find("./ViewRegistrations/ViewRegistration")
    if root.tag != "SpimData" or reg is None:
        raise InputError(f"{path} is not a SpimData XML with a ViewRegistration")
    model = np.eye(4)
    for vt in reg.findall("ViewTransform"):
        try:
            v = [float(t) for t in vt.findtext("affine", "").split()]
        except ValueError:
            v = []
        if len(v) != 12:
            raise InputError(f"{path}: a ViewTransform <affine> must hold 12 numbers")
        model = model @ np.vstack([np.reshape(v, (3, 4)), [0.0, 0.0, 0.0, 1.0]])
    return model


def read_bigwarp_xml(path, *, fixed_pixel_size: Optional[PixelSize] = None) -> np.ndarray:
    """``fixed_to_moving`` (pixels) from a moving-image SpimData XML (ViewRegistration of setup 0).

    The ViewRegistration maps moving pixels to fixed world units; ``fixed_pixel_size`` turns those
    into EM pixels (the XML does not describe the EM image).
    """
    m4 = spimdata_model(path)
    model = np.array([[m4[0, 0], m4[0, 1], m4[0, 3]], [m4[1, 0], m4[1, 1], m4[1, 3]], [0.0, 0.0, 1.0]])
    try:
        return np.linalg.inv(np.linalg.inv(_scale(fixed_pixel_size)) @ as_matrix(model))
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None


# --- mpicbg / TrakEM2 XML ---------------------------------------------------------------

def mpicbg_data(fixed_to_moving) -> str:
    """The ``data`` string of an mpicbg AffineModel2D (moving → fixed, column-major ``m00 m10 m01 m11 m02 m12``)."""
    m = np.linalg.inv(as_matrix(fixed_to_moving))
    return " ".join(repr(float(v)) for v in (m[0, 0], m[1, 0], m[0, 1], m[1, 1], m[0, 2], m[1, 2]))


def write_mpicbg_xml(path, fixed_to_moving) -> Path:
    """Write a single ``iict_transform`` AffineModel2D (one line, ``data`` right after ``class``)."""
    p = Path(path)
    p.write_text(f'<iict_transform class="{MPICBG_AFFINE}" data="{mpicbg_data(fixed_to_moving)}" />\n')
    return p


def _mpicbg_model(cls: str, data: str) -> np.ndarray:
    v = [float(t) for t in data.split()]
    kind = cls.rsplit(".", 1)[-1]
    expected = {"AffineModel2D": 6, "SimilarityModel2D": 4, "RigidModel2D": 3, "TranslationModel2D": 2}
    if kind not in expected or len(v) != expected[kind]:
        raise InputError(f"unsupported mpicbg transform {cls!r} with {len(v)} values; "
                         "expected a 2-D Affine, Similarity, Rigid or Translation model")
    if kind == "AffineModel2D":
        return np.array([[v[0], v[2], v[4]], [v[1], v[3], v[5]], [0.0, 0.0, 1.0]])
    if kind == "SimilarityModel2D":
        return np.array([[v[0], -v[1], v[2]], [v[1], v[0], v[3]], [0.0, 0.0, 1.0]])
    if kind == "RigidModel2D":
        c, s = math.cos(v[0]), math.sin(v[0])
        return np.array([[c, -s, v[1]], [s, c, v[2]], [0.0, 0.0, 1.0]])
    return np.array([[1.0, 0.0, v[0]], [0.0, 1.0, v[1]], [0.0, 0.0, 1.0]])


def read_mpicbg_xml(path) -> np.ndarray:
    """``fixed_to_moving`` from an mpicbg XML; read line by line like Transform Virtual Stack Slices.

    Every line with ``class="…"`` contributes one model, applied in file order (a transform list).
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read transform file {path}: {e}") from None
    total = np.eye(3)
    found = False
    for line in text.splitlines():
        m = re.search(r'class="([^"]+)"\s+\w+="([^"]*)"', line)
        if m and "transform_list" not in line:
            try:
                total = _mpicbg_model(m.group(1), m.group(2)) @ total
            except ValueError:
                raise InputError(f"{path}: non-numeric data in {m.group(1)}") from None
            found = True
    if not found:
        raise InputError(f"{path} has no mpicbg transform (a line with class=\"...\" data=\"...\")")
    try:
        return np.linalg.inv(as_matrix(total))
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None


# --- any file, and all files at once ----------------------------------------------------

def _parse_xml(path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise InputError(f"cannot read XML file {path}: {e}") from None


def read_transform(path, *, fixed_pixel_size: Optional[PixelSize] = None,
                   moving_pixel_size: Optional[PixelSize] = None) -> np.ndarray:
    """``fixed_to_moving`` from any supported file: our JSON, BigWarp CSV, SpimData XML or mpicbg XML.

    Pixel sizes are needed only for BigWarp files of calibrated images (world units).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"transform file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            return load_transform_json(p).fixed_to_moving
        except (ValueError, OSError) as e:
            raise InputError(f"{p} is not a clem-bridge transform JSON: {str(e).splitlines()[0]}") from None
    if suffix == ".csv":
        return read_bigwarp_csv(p, fixed_pixel_size=fixed_pixel_size, moving_pixel_size=moving_pixel_size)
    if suffix == ".xml":
        head = p.read_text(errors="replace")[:4096]
        if "<SpimData" in head:
            return read_bigwarp_xml(p, fixed_pixel_size=fixed_pixel_size)
        return read_mpicbg_xml(p)
    raise InputError(f"unknown transform file type {p.name!r}; expected .json, .csv or .xml")


def write_all(reg: Registration, out_dir, *, moving_file: str = "moving.tif") -> dict[str, Path]:
    """Write the BigWarp CSV, BigWarp XML and mpicbg XML of ``reg`` into ``out_dir`` (see ``FILE_NAMES``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ps = dict(fixed_pixel_size=reg.fixed_pixel_size, moving_pixel_size=reg.moving_pixel_size)
    return {
        "bigwarp_csv": write_bigwarp_csv(out / FILE_NAMES["bigwarp_csv"], reg.fixed_to_moving, reg.fixed_shape,
                                         **ps),
        "bigwarp_xml": write_bigwarp_xml(out / FILE_NAMES["bigwarp_xml"], reg.fixed_to_moving, reg.moving_shape,
                                         moving_file=moving_file, **ps),
        "mpicbg_xml": write_mpicbg_xml(out / FILE_NAMES["mpicbg_xml"], reg.fixed_to_moving),
    }
