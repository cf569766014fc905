# -*- coding: utf-8 -*-
"""Transforms for the clem-bridge Fiji commands: 3x3 and 4x4 matrices, transform files, warping.

Convention (as clem_bridge.transforms): pixel centres at integer (x, y), x right, y down; a
registration is the 3x3 ``fixed_to_moving`` matrix (EM pixel -> LM pixel) as nested lists; det < 0
(a mirrored LM) is allowed.  3-D (transform JSON with ``ndim`` 3, as clem_bridge.transforms3d): a 4x4
matrix over voxel (x, y, z), z = slice index, applied to stacks with :func:`warp_stack`.
Transform files: our transform JSON, BigWarp landmarks CSV (moving columns first, world units),
BigWarp/BDV SpimData XML and mpicbg AffineModel2D XML, written exactly like clem_bridge.export.
Warping runs in the compiled Groovy helper ClemWarp.groovy (shared with the Groovy commands), never
pixel by pixel in Jython.
"""
import codecs
import json
import math
import os
import re

from groovy.lang import GroovyClassLoader
from java.io import File
from javax.xml.parsers import DocumentBuilderFactory

from ij import IJ, ImagePlus, ImageStack

from clem_bridge_host import ClemError
from clem_bridge_images import calibration, channel_processors, unit_name

MPICBG_AFFINE = "mpicbg.trakem2.transform.AffineModel2D"
FILE_NAMES = {"bigwarp_csv": "bigwarp_landmarks.csv", "bigwarp_xml": "moving-bigWarp.xml",
              "mpicbg_xml": "mpicbg_affine.xml", "json": "transform.json"}
_HERE = os.path.dirname(os.path.abspath(__file__))
_warp_class = []


# --- 3x3 matrices as nested lists ----------------------------------------------------------

def matmul(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def inverse(m):
    """Inverse of a 3x3 affine matrix (last row 0 0 1)."""
    det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
    if abs(det) < 1e-12:
        raise ClemError("the transform is singular (it collapses the image)")
    a, b, c, d = m[1][1] / det, -m[0][1] / det, -m[1][0] / det, m[0][0] / det
    return [[a, b, -(a * m[0][2] + b * m[1][2])], [c, d, -(c * m[0][2] + d * m[1][2])], [0.0, 0.0, 1.0]]


def apply(m, x, y):
    return (m[0][0] * x + m[0][1] * y + m[0][2], m[1][0] * x + m[1][1] * y + m[1][2])


def scale_matrix(cal):
    """Pixel -> world matrix of an ImageJ Calibration (or a (pw, ph) pair); identity for None."""
    if cal is None:
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    pw, ph = (cal.pixelWidth, cal.pixelHeight) if hasattr(cal, "pixelWidth") else cal
    return [[float(pw), 0.0, 0.0], [0.0, float(ph), 0.0], [0.0, 0.0, 1.0]]


def check_matrix(m, what):
    try:
        m = [[float(v) for v in row] for row in m]
    except (TypeError, ValueError):
        raise ClemError("%s is not a 3x3 matrix of numbers" % what)
    if len(m) == 2:
        m.append([0.0, 0.0, 1.0])
    if len(m) != 3 or any(len(r) != 3 for r in m) or any(math.isnan(v) or math.isinf(v) for r in m for v in r):
        raise ClemError("%s is not a finite 3x3 matrix" % what)
    inverse(m)
    return m


# --- warping: the compiled helper ClemWarp.groovy ------------------------------------------

def _warper():
    """The ClemWarp class, compiled once per interpreter from ClemWarp.groovy next to this module."""
    if not _warp_class:
        source = File(_HERE, "ClemWarp.groovy")
        if not source.isFile():
            raise ClemError("the clem-bridge helper %s is missing; run clem-bridge install-fiji again" % source)
        _warp_class.append(GroovyClassLoader(IJ.getClassLoader()).parseClass(source))
    return _warp_class[0]


def warp_processor(ip, fixed_to_moving, width, height):
    """LM processor -> new processor of the same type on the EM grid (width x height): bilinear at
    fixed_to_moving * (x, y) inside the LM, 0 outside, as clem_bridge.transforms.warp_image + valid_mask."""
    return _warper().warp(ip, fixed_to_moving, width, height)


def warp_image(lm_imp, fixed_to_moving, em_imp, title=None):
    """Warp every channel of ``lm_imp`` onto the EM canvas; returns an ImagePlus with the EM calibration."""
    w, h = em_imp.getWidth(), em_imp.getHeight()
    stack = ImageStack(w, h)
    procs = channel_processors(lm_imp)
    for i, ip in enumerate(procs):
        IJ.showStatus("CLEM: warping channel %d/%d" % (i + 1, len(procs)))
        IJ.showProgress(i, len(procs))
        stack.addSlice("C%d" % i, warp_processor(ip, fixed_to_moving, w, h))
    IJ.showProgress(1.0)
    out = ImagePlus(title or ("warped_" + lm_imp.getTitle()), stack)
    if stack.getSize() > 1:
        out.setDimensions(stack.getSize(), 1, 1)
    out.setCalibration(em_imp.getCalibration().copy())
    return out


# --- transform files: read --------------------------------------------------------------

def _read_text(path):
    f = File(str(path))
    if not f.isFile():
        raise ClemError("transform file not found: %s" % path)
    with open(str(path)) as fh:
        return fh.read()


def fit_affine(src, dst):
    """Least squares 3x3 affine with dst ~ A src (lists of (x, y)); >= 3 points not on one line."""
    n = len(src)
    if n < 3:
        raise ClemError("an affine needs at least 3 active landmark pairs that are not on one line")
    cx, cy = sum(p[0] for p in src) / n, sum(p[1] for p in src) / n
    qx, qy = sum(p[0] for p in dst) / n, sum(p[1] for p in dst) / n
    a00 = a01 = a11 = b00 = b01 = b10 = b11 = 0.0
    for (px, py), (tx, ty) in zip(src, dst):
        px, py, tx, ty = px - cx, py - cy, tx - qx, ty - qy
        a00 += px * px
        a01 += px * py
        a11 += py * py
        b00 += px * tx
        b01 += px * ty
        b10 += py * tx
        b11 += py * ty
    det = a00 * a11 - a01 * a01
    if abs(det) <= 1e-12 * max(a00 * a11, 1e-300):
        raise ClemError("an affine needs at least 3 active landmark pairs that are not on one line")
    m00, m01 = (a11 * b00 - a01 * b10) / det, (a00 * b10 - a01 * b00) / det
    m10, m11 = (a11 * b01 - a01 * b11) / det, (a00 * b11 - a01 * b01) / det
    return [[m00, m01, qx - m00 * cx - m01 * cy], [m10, m11, qy - m10 * cx - m11 * cy], [0.0, 0.0, 1.0]]


def _landmark_rows(path, fields, what):
    """(moving, fixed) points of the active rows of a BigWarp landmarks CSV with ``fields`` fields a row."""
    moving, fixed = [], []
    half = (fields - 2) // 2
    for i, line in enumerate(_read_text(path).splitlines()):
        if not line.strip():
            continue
        row = [v.strip().strip('"') for v in line.split(",")]
        if len(row) != fields:
            raise ClemError("%s row %d has %d fields; %s" % (path, i + 1, len(row), what))
        if row[1].lower() != "true":
            continue
        try:
            v = [float(t) for t in row[2:]]
        except ValueError:
            raise ClemError("%s is not a BigWarp landmarks CSV (non-numeric coordinate in row %d)" % (path, i + 1))
        if any(math.isinf(t) or math.isnan(t) for t in v):
            raise ClemError("%s has active landmarks with an unset (infinite) point" % path)
        moving.append(v[:half])
        fixed.append(v[half:])
    return moving, fixed


def read_bigwarp_csv(path, fixed_cal=None, moving_cal=None):
    """fixed_to_moving from a BigWarp landmarks CSV (BigWarp Affine mode: fit moving->fixed, inverted)."""
    moving, fixed = _landmark_rows(path, 6, "a 2-D BigWarp landmarks CSV has 6")
    world = fit_affine(moving, fixed)
    return inverse(matmul(matmul(inverse(scale_matrix(fixed_cal)), world), scale_matrix(moving_cal)))


def _xml(path):
    try:
        return DocumentBuilderFactory.newInstance().newDocumentBuilder().parse(File(str(path)))
    except Exception as e:
        raise ClemError("cannot read XML file %s: %s" % (path, e))


def read_bigwarp_xml(path, fixed_cal=None):
    """fixed_to_moving from a moving-image SpimData XML (ViewTransforms: first listed is applied last)."""
    doc = _xml(path)
    regs = doc.getElementsByTagName("ViewRegistration")
    if doc.getDocumentElement().getTagName() != "SpimData" or regs.getLength() == 0:
        raise ClemError("%s is not a SpimData XML with a ViewRegistration" % path)
    model = scale_matrix(None)
    affines = regs.item(0).getElementsByTagName("affine")
    for i in range(affines.getLength()):
        try:
            v = [float(t) for t in affines.item(i).getTextContent().split()]
        except ValueError:
            v = []
        if len(v) != 12:
            raise ClemError("%s: a ViewTransform <affine> must hold 12 numbers" % path)
        model = matmul(model, [[v[0], v[1], v[3]], [v[4], v[5], v[7]], [0.0, 0.0, 1.0]])
    return inverse(matmul(inverse(scale_matrix(fixed_cal)), model))


def _mpicbg_model(cls, data):
    try:
        v = [float(t) for t in data.split()]
    except ValueError:
        raise ClemError("non-numeric data in mpicbg transform %s" % cls)
    kind = cls.split(".")[-1]
    n = {"AffineModel2D": 6, "SimilarityModel2D": 4, "RigidModel2D": 3, "TranslationModel2D": 2}.get(kind)
    if n != len(v):
        raise ClemError("unsupported mpicbg transform %s with %d values" % (cls, len(v)))
    if kind == "AffineModel2D":
        return [[v[0], v[2], v[4]], [v[1], v[3], v[5]], [0.0, 0.0, 1.0]]
    if kind == "SimilarityModel2D":
        return [[v[0], -v[1], v[2]], [v[1], v[0], v[3]], [0.0, 0.0, 1.0]]
    if kind == "RigidModel2D":
        c, s = math.cos(v[0]), math.sin(v[0])
        return [[c, -s, v[1]], [s, c, v[2]], [0.0, 0.0, 1.0]]
    return [[1.0, 0.0, v[0]], [0.0, 1.0, v[1]], [0.0, 0.0, 1.0]]


def read_mpicbg_xml(path):
    """fixed_to_moving from an mpicbg XML, line by line like Transform Virtual Stack Slices."""
    total, found = scale_matrix(None), False
    for line in _read_text(path).splitlines():
        m = re.search(r'class="([^"]+)"\s+\w+="([^"]*)"', line)
        if m and "transform_list" not in line:
            total = matmul(_mpicbg_model(m.group(1), m.group(2)), total)
            found = True
    if not found:
        raise ClemError('%s has no mpicbg transform (a line with class="..." data="...")' % path)
    return inverse(total)


def read_json_record(path):
    """Our transform JSON as a dict (``fixed_to_moving`` checked to be there)."""
    try:
        rec = json.loads(_read_text(path))
        rec["fixed_to_moving"]
        return rec
    except (ValueError, KeyError, TypeError):
        raise ClemError("%s is not a clem-bridge transform JSON" % path)


def read_json_transform(path):
    rec = read_json_record(path)
    if rec.get("ndim") == 3:
        raise ClemError("%s is a 3-D transform (ndim 3); apply it to stacks" % path)
    return check_matrix(rec["fixed_to_moving"], "fixed_to_moving in %s" % path)


def read_transform(path, fixed_cal=None, moving_cal=None):
    """fixed_to_moving from our JSON, a BigWarp CSV, a SpimData XML or an mpicbg XML."""
    path = str(path)
    low = path.lower()
    if low.endswith(".json"):
        return read_json_transform(path)
    if low.endswith(".csv"):
        return read_bigwarp_csv(path, fixed_cal, moving_cal)
    if low.endswith(".xml"):
        if "<SpimData" in _read_text(path)[:4096]:
            return read_bigwarp_xml(path, fixed_cal)
        return read_mpicbg_xml(path)
    raise ClemError("unknown transform file type %s; expected .json, .csv or .xml" % File(path).getName())


# --- 3-D: 4x4 fixed_to_moving over voxel (x, y, z), stacks -------------------------------

def check_matrix4(m, what):
    """A finite, invertible 4x4 affine (last row 0 0 0 1) as nested lists, else a ClemError."""
    msg = "%s is not a finite 4x4 matrix with last row 0 0 0 1" % what
    try:
        m = [[float(v) for v in row] for row in m]
    except (TypeError, ValueError):
        raise ClemError(msg)
    if len(m) != 4 or any(len(r) != 4 for r in m) or m[3] != [0.0, 0.0, 0.0, 1.0] or \
            any(math.isnan(v) or math.isinf(v) for r in m for v in r):
        raise ClemError(msg)
    det = (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
           + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))
    if abs(det) < 1e-12:
        raise ClemError("the transform is singular (it collapses the image)")
    return m


def _inv3(m):
    """Inverse of a 3x3 matrix (nested lists); None when singular relative to its scale."""
    def cof(i, j):
        a, b, c, d = (i + 1) % 3, (i + 2) % 3, (j + 1) % 3, (j + 2) % 3
        return m[c][a] * m[d][b] - m[c][b] * m[d][a]
    c = [[cof(i, j) for j in range(3)] for i in range(3)]
    det = sum(m[0][k] * c[k][0] for k in range(3))
    scale = max(abs(v) for r in m for v in r) ** 3
    if scale == 0 or abs(det) <= 1e-12 * scale:
        return None
    return [[v / det for v in r] for r in c]


def inverse4(m):
    """Inverse of a 4x4 affine (last row 0 0 0 1)."""
    li = _inv3([r[:3] for r in m[:3]])
    if li is None:
        raise ClemError("the transform is singular (it collapses the image)")
    t = [-sum(li[i][k] * m[k][3] for k in range(3)) for i in range(3)]
    return [li[i] + [t[i]] for i in range(3)] + [[0.0, 0.0, 0.0, 1.0]]


def matmul4(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(4)) for j in range(4)] for i in range(4)]


def voxel_matrix(cal):
    """Voxel (x, y, z) -> world of an ImageJ Calibration (1 where uncalibrated, as BigWarp)."""
    v = (cal.pixelWidth, cal.pixelHeight, cal.pixelDepth) if cal is not None and cal.scaled() else (1.0, 1.0, 1.0)
    return [[float(v[0]), 0.0, 0.0, 0.0], [0.0, float(v[1]), 0.0, 0.0], [0.0, 0.0, float(v[2]), 0.0],
            [0.0, 0.0, 0.0, 1.0]]


def fit_affine3d(src, dst):
    """Least squares 4x4 affine with dst ~ A src (lists of (x, y, z)); >= 4 points not in one plane."""
    n = len(src)
    msg = "a 3-D affine needs at least 4 active landmark pairs that are not in one plane"
    if n < 4:
        raise ClemError(msg)
    ps, qs = [sum(p[i] for p in src) / n for i in range(3)], [sum(q[i] for q in dst) / n for i in range(3)]
    ss = [[sum((p[i] - ps[i]) * (p[j] - ps[j]) for p in src) for j in range(3)] for i in range(3)]
    qp = [[sum((q[i] - qs[i]) * (p[j] - ps[j]) for p, q in zip(src, dst)) for j in range(3)] for i in range(3)]
    si = _inv3(ss)
    if si is None:
        raise ClemError(msg)
    lin = [[sum(qp[i][k] * si[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    return [lin[i] + [qs[i] - sum(lin[i][k] * ps[k] for k in range(3))] for i in range(3)] + [[0.0, 0.0, 0.0, 1.0]]


def read_bigwarp_csv3d(path, fixed_cal=None, moving_cal=None):
    """fixed_to_moving (4x4, voxels) from a 3-D BigWarp landmarks CSV (Affine mode: moving -> fixed world,
    inverted), as clem_bridge.export3d.read_bigwarp_csv3d."""
    moving, fixed = _landmark_rows(path, 8, "a 3-D BigWarp landmarks CSV has 8")
    world = fit_affine3d(moving, fixed)
    return inverse4(matmul4(matmul4(inverse4(voxel_matrix(fixed_cal)), world), voxel_matrix(moving_cal)))


def csv_ndim(path):
    """3 for a 3-D BigWarp landmarks CSV (8 fields a row), else 2."""
    rows = [ln for ln in _read_text(path).splitlines() if ln.strip()]
    return 3 if rows and len(rows[0].split(",")) == 8 else 2


def warp_stack(lm_imp, f2m, em_imp, record=None, path="the transform", title=None):
    """Every channel of an LM stack warped onto the EM stack's voxel grid with a 4x4 ``f2m`` (trilinear, as
    clem_bridge.transforms3d.warp_volume); a C x Z hyperstack with the EM calibration.  The stacks must have
    the ``fixed_shape``/``moving_shape`` of the transform ``record`` when it gives them."""
    f2m = check_matrix4(f2m, "fixed_to_moving in %s" % path)
    record = record or {}
    for imp, what in ((em_imp, "EM"), (lm_imp, "LM")):
        if imp.getNFrames() > 1:
            raise ClemError("the %s image %s is a time series; a 3-D transform takes z stacks" % (what, imp.getTitle()))
    for key, imp, what in (("fixed_shape", em_imp, "EM"), ("moving_shape", lm_imp, "LM")):
        got = [imp.getNSlices(), imp.getHeight(), imp.getWidth()]
        want = record.get(key)
        if want is not None and [int(v) for v in want] != got:
            raise ClemError("%s is for a %s %s stack (depth x height x width), but %s is %s"
                            % (File(str(path)).getName(), "x".join(str(v) for v in want), what, imp.getTitle(),
                               "x".join(str(v) for v in got)))
    return _warper().warpStack(lm_imp, f2m, em_imp, title or ("warped_" + lm_imp.getTitle()))


def apply_transform_file(lm_imp, path, em_imp, title=None):
    """``lm_imp`` warped onto ``em_imp``'s canvas with a saved transform: a 3-D transform JSON (ndim 3) on
    stacks, else any 2-D file :func:`read_transform` reads; returns the warped ImagePlus."""
    if str(path).lower().endswith(".json"):
        rec = read_json_record(path)
        if rec.get("ndim") == 3:
            return warp_stack(lm_imp, rec["fixed_to_moving"], em_imp, rec, path, title)
    if str(path).lower().endswith(".csv") and csv_ndim(path) == 3:
        f2m = read_bigwarp_csv3d(path, calibration(em_imp), calibration(lm_imp))
        return warp_stack(lm_imp, f2m, em_imp, None, path, title)
    return warp_image(lm_imp, read_transform(path, calibration(em_imp), calibration(lm_imp)), em_imp, title)


# --- transform files: write (same content as clem_bridge.export) ------------------------

def _num(v):
    return repr(float(v))


def landmark_grid(width, height, n=4):
    """n x n EM pixel points spanning the image, corners included (numpy.linspace order)."""
    def lin(stop):
        step = stop / float(n - 1)
        return [i * step for i in range(n - 1)] + [float(stop)]
    return [(x, y) for y in lin(height - 1) for x in lin(width - 1)]


def write_bigwarp_csv(path, f2m, width, height, fixed_cal=None, moving_cal=None, n=4):
    sf, sm = scale_matrix(fixed_cal), scale_matrix(moving_cal)
    lines = []
    for i, (x, y) in enumerate(landmark_grid(width, height, n)):
        mx, my = apply(sm, *apply(f2m, x, y))
        fx, fy = apply(sf, x, y)
        lines.append(",".join('"%s"' % v for v in ["Pt-%d" % i, "true", _num(mx), _num(my), _num(fx), _num(fy)]))
    _write_text(path, "\n".join(lines) + "\n")
    return path


def _affine3d(m):
    return " ".join(_num(v) for v in [m[0][0], m[0][1], 0.0, m[0][2], m[1][0], m[1][1], 0.0, m[1][2],
                                     0.0, 0.0, 1.0, 0.0])


def write_bigwarp_xml(path, f2m, moving_width, moving_height, moving_file="moving.tif", fixed_cal=None,
                      moving_cal=None, unit="pixel"):
    """SpimData XML for the moving image: [Big Warp: Affine (moving world -> fixed world), calibration]."""
    sm = scale_matrix(moving_cal)
    world = matmul(matmul(scale_matrix(fixed_cal), inverse(f2m)), inverse(sm))
    name = File(moving_file).getName().rsplit(".", 1)[0]
    text = """<?xml version='1.0' encoding='UTF-8'?>
<SpimData version="0.2">
  <BasePath type="relative">.</BasePath>
  <SequenceDescription>
    <ImageLoader format="spimreconstruction.filemap2">
      <ZGrouped>false</ZGrouped>
      <files>
        <FileMapping view_setup="0" timepoint="0" series="0" channel="0">
          <file type="relative">%s</file>
        </FileMapping>
      </files>
    </ImageLoader>
    <ViewSetups>
      <ViewSetup>
        <id>0</id>
        <name>%s</name>
        <size>%d %d 1</size>
        <voxelSize>
          <unit>%s</unit>
          <size>%s %s 1.0</size>
        </voxelSize>
        <attributes>
          <channel>0</channel>
        </attributes>
      </ViewSetup>
      <Attributes name="channel">
        <Channel>
          <id>0</id>
          <name>0</name>
        </Channel>
      </Attributes>
    </ViewSetups>
    <Timepoints type="range">
      <first>0</first>
      <last>0</last>
    </Timepoints>
  </SequenceDescription>
  <ViewRegistrations>
    <ViewRegistration timepoint="0" setup="0">
      <ViewTransform type="affine">
        <Name>Big Warp: Affine</Name>
        <affine>%s</affine>
      </ViewTransform>
      <ViewTransform type="affine">
        <Name>calibration</Name>
        <affine>%s</affine>
      </ViewTransform>
    </ViewRegistration>
  </ViewRegistrations>
</SpimData>""" % (moving_file, name, moving_width, moving_height, unit, _num(sm[0][0]), _num(sm[1][1]),
                  _affine3d(world), _affine3d(sm))
    _write_text(path, text)
    return path


def write_mpicbg_xml(path, f2m):
    m = inverse(f2m)
    data = " ".join(_num(v) for v in [m[0][0], m[1][0], m[0][1], m[1][1], m[0][2], m[1][2]])
    _write_text(path, '<iict_transform class="%s" data="%s" />\n' % (MPICBG_AFFINE, data))
    return path


def write_transform_files(out_dir, f2m, em_imp, lm_imp, moving_file="moving.tif", record=None):
    """Write transform.json (the server's record, or a minimal one), the BigWarp CSV/XML and the mpicbg XML."""
    d = File(str(out_dir))
    d.mkdirs()
    fixed_cal, moving_cal = calibration(em_imp), calibration(lm_imp)
    paths = dict((k, File(d, v).getPath()) for k, v in FILE_NAMES.items())
    write_bigwarp_csv(paths["bigwarp_csv"], f2m, em_imp.getWidth(), em_imp.getHeight(), fixed_cal, moving_cal)
    write_bigwarp_xml(paths["bigwarp_xml"], f2m, lm_imp.getWidth(), lm_imp.getHeight(), moving_file,
                      fixed_cal, moving_cal, unit_name(lm_imp))
    write_mpicbg_xml(paths["mpicbg_xml"], f2m)
    if record is None:
        record = {"fixed_to_moving": f2m, "moving_to_fixed": inverse(f2m),
                  "fixed_shape": [em_imp.getHeight(), em_imp.getWidth()],
                  "moving_shape": [lm_imp.getHeight(), lm_imp.getWidth()], "method": "fiji"}
    _write_text(paths["json"], json.dumps(record, indent=2))
    return paths


def _write_text(path, text):
    with codecs.open(str(path), "w", "utf-8") as fh:
        fh.write(text)

