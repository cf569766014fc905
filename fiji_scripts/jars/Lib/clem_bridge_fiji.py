# -*- coding: utf-8 -*-
"""clem-bridge shared Jython library for the Fiji menu commands (ImageJ 1 API and the JDK only).

Convention (as clem_bridge.transforms): pixel centres at integer (x, y), x right, y down; a
registration is the 3x3 ``fixed_to_moving`` matrix (EM pixel -> LM pixel) as nested lists.
Transform files: our transform JSON, BigWarp landmarks CSV (moving columns first, world units),
BigWarp/BDV SpimData XML and mpicbg AffineModel2D XML, written exactly like clem_bridge.export.
"""
import codecs
import json
import math
import re
import time

from java.awt import Color, GraphicsEnvironment
from java.io import ByteArrayOutputStream, File, IOException
from java.lang import Exception as JException, String as JString, System
from java.net import ConnectException, MalformedURLException, SocketTimeoutException, \
    UnknownHostException, URL
from javax.xml.parsers import DocumentBuilderFactory
from jarray import zeros

from ij import CompositeImage, IJ, ImagePlus, ImageStack
from ij.io import FileSaver
from ij.process import FloatProcessor, LUT

EPS = 1e-6
MPICBG_AFFINE = "mpicbg.trakem2.transform.AffineModel2D"
FILE_NAMES = {"bigwarp_csv": "bigwarp_landmarks.csv", "bigwarp_xml": "moving-bigWarp.xml",
              "mpicbg_xml": "mpicbg_affine.xml", "json": "transform.json"}
CHANNEL_COLORS = [Color.green, Color.magenta, Color.cyan, Color.red, Color.yellow, Color.blue]


class ClemError(Exception):
    """A user-facing problem; the message is one sentence."""


# --- running scripts: one-line errors, never a stack trace --------------------------------

def is_headless():
    return GraphicsEnvironment.isHeadless()


def log(msg):
    """A line in the Log window (GUI) or on stdout (headless)."""
    if is_headless():
        System.out.println(msg)
    else:
        IJ.log(msg)


def run_main(main):
    """Run ``main()``; a ClemError (or Java I/O error) becomes a dialog (GUI) or ``error:`` + exit 2 (headless)."""
    try:
        main()
    except ClemError as e:
        _fail(str(e))
    except IOException as e:
        _fail("I/O error: %s" % e.getMessage())
    except (Exception, JException) as e:  # a bug or an unforeseen case: still one line, non-zero exit
        _fail("unexpected %s: %s (please report it)" % (type(e).__name__, e))


def _fail(msg):
    IJ.showStatus("")
    IJ.showProgress(1.0)
    if System.getProperty("clem_bridge.raise") == "true":  # run from Python (clem_bridge.fiji)
        raise ClemError(msg)
    if is_headless():
        System.err.println("error: " + msg)
        System.err.flush()
        System.exit(2)
    IJ.error("CLEM", msg)


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


# --- warping with ImageJ 1 interpolation ---------------------------------------------------

def warp_processor(ip, fixed_to_moving, width, height):
    """LM processor -> new processor of the same type on the EM grid (width x height).

    Output pixel (x, y) = bilinear ``ip.getInterpolatedValue`` at fixed_to_moving * (x, y) where that
    point lies inside [0, w-1] x [0, h-1] (clem_bridge.transforms.valid_mask), else 0 -- the same
    values and valid region as clem_bridge.transforms.warp_image(order="bilinear").
    """
    a = fixed_to_moving
    w, h = ip.getWidth(), ip.getHeight()
    ip.setInterpolationMethod(ip.BILINEAR)
    get = ip.getInterpolatedValue
    pixels = zeros(width * height, "f")
    xmax, ymax = w - 1 + EPS, h - 1 + EPS
    for y in xrange(height):
        bx, by, row = a[0][1] * y + a[0][2], a[1][1] * y + a[1][2], y * width
        for x in xrange(width):
            xm = a[0][0] * x + bx
            ym = a[1][0] * x + by
            if -EPS <= xm <= xmax and -EPS <= ym <= ymax:
                pixels[row + x] = get(xm, ym)
        if y % 64 == 0:
            IJ.showProgress(y, height)
    IJ.showProgress(1.0)
    out = ip.createProcessor(width, height)
    out.setPixels(0, FloatProcessor(width, height, pixels))  # rounds (+0.5) and clips for 8/16-bit
    return out


def channel_processors(imp):
    """The 2-D processors of every channel (or slice) of an ImagePlus; an RGB image gives red, green, blue."""
    stack = imp.getStack()
    procs = [stack.getProcessor(i + 1) for i in range(stack.getSize())]
    if imp.getType() == ImagePlus.COLOR_RGB:
        procs = [ip.getChannel(c, None) for ip in procs for c in (1, 2, 3)]
    return procs


def warp_image(lm_imp, fixed_to_moving, em_imp, title=None):
    """Warp every channel of ``lm_imp`` onto the EM canvas; returns an ImagePlus with the EM calibration."""
    w, h = em_imp.getWidth(), em_imp.getHeight()
    stack = ImageStack(w, h)
    procs = channel_processors(lm_imp)
    for i, ip in enumerate(procs):
        IJ.showStatus("CLEM: warping channel %d/%d" % (i + 1, len(procs)))
        stack.addSlice("C%d" % i, warp_processor(ip, fixed_to_moving, w, h))
    out = ImagePlus(title or ("warped_" + lm_imp.getTitle()), stack)
    if stack.getSize() > 1:
        out.setDimensions(stack.getSize(), 1, 1)
    out.setCalibration(em_imp.getCalibration().copy())
    return out


def composite(em_imp, warped_imps, title="CLEM overlay"):
    """EM in grey plus every warped channel in colour, as a CompositeImage with the EM calibration."""
    w, h = em_imp.getWidth(), em_imp.getHeight()
    stack = ImageStack(w, h)
    stack.addSlice("EM", em_imp.getProcessor().convertToFloat())
    for imp in warped_imps:
        for i, ip in enumerate(channel_processors(imp)):
            stack.addSlice("%s C%d" % (imp.getTitle(), i), ip.convertToFloat())
    imp = ImagePlus(title, stack)
    imp.setDimensions(stack.getSize(), 1, 1)
    comp = CompositeImage(imp, CompositeImage.COMPOSITE)
    for c in range(stack.getSize()):
        color = Color.gray if c == 0 else CHANNEL_COLORS[(c - 1) % len(CHANNEL_COLORS)]
        comp.setChannelLut(LUT.createLutFromColor(color), c + 1)
        comp.setPositionWithoutUpdate(c + 1, 1, 1)
        comp.resetDisplayRange()
    comp.setPosition(1, 1, 1)
    comp.setCalibration(em_imp.getCalibration().copy())
    return comp


def save_tiff(imp, path):
    if not FileSaver(imp).saveAsTiff(path):
        raise ClemError("could not save %s" % path)
    return path


def open_image(path, what="image"):
    """Open an image file with ImageJ 1; a clear error for a missing or unreadable file."""
    if path is None or not File(str(path)).isFile():
        raise ClemError("%s file not found: %s" % (what, path))
    imp = IJ.openImage(str(path))
    if imp is None:
        raise ClemError("ImageJ cannot open the %s file %s" % (what, path))
    return imp


def select_channels(imp, channels):
    """ImagePlus of the 0-based ``channels`` (list or comma-separated text; empty = all) of a stack."""
    if isinstance(channels, basestring):
        try:
            channels = [int(c) for c in channels.replace(" ", "").split(",") if c != ""]
        except ValueError:
            raise ClemError("channels must be numbers like 0,2 (got '%s')" % channels)
    procs = channel_processors(imp)
    channels = list(channels) if channels else range(len(procs))
    stack = ImageStack(imp.getWidth(), imp.getHeight())
    for c in channels:
        if not 0 <= c < len(procs):
            raise ClemError("channel %d does not exist in %s (it has %d)" % (c, imp.getTitle(), len(procs)))
        stack.addSlice("C%d" % c, procs[c])
    out = ImagePlus(imp.getTitle(), stack)
    out.setCalibration(imp.getCalibration().copy())
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


def read_bigwarp_csv(path, fixed_cal=None, moving_cal=None):
    """fixed_to_moving from a BigWarp landmarks CSV (BigWarp Affine mode: fit moving->fixed, inverted)."""
    moving, fixed = [], []
    for i, line in enumerate(_read_text(path).splitlines()):
        if not line.strip():
            continue
        row = [v.strip().strip('"') for v in line.split(",")]
        if len(row) != 6:
            raise ClemError("%s row %d has %d fields; a 2-D BigWarp landmarks CSV has 6" % (path, i + 1, len(row)))
        if row[1].lower() != "true":
            continue
        try:
            v = [float(t) for t in row[2:]]
        except ValueError:
            raise ClemError("%s is not a BigWarp landmarks CSV (non-numeric coordinate in row %d)" % (path, i + 1))
        if any(math.isinf(t) or math.isnan(t) for t in v):
            raise ClemError("%s has active landmarks with an unset (infinite) point" % path)
        moving.append(v[:2])
        fixed.append(v[2:])
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


def read_json_transform(path):
    try:
        rec = json.loads(_read_text(path))
        return check_matrix(rec["fixed_to_moving"], "fixed_to_moving in %s" % path)
    except (ValueError, KeyError, TypeError):
        raise ClemError("%s is not a clem-bridge transform JSON" % path)


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


def _cal_unit(cal):
    """ASCII unit name as clem_bridge writes it (ImageJ's micro sign becomes 'um')."""
    if cal is None or not cal.scaled():
        return "pixel"
    unit = cal.getUnit()
    return "um" if unit in (u"\u00b5m", u"\u03bcm", "micron", "microns") else unit


def write_transform_files(out_dir, f2m, em_imp, lm_imp, moving_file="moving.tif", record=None):
    """Write transform.json (the server's record, or a minimal one), the BigWarp CSV/XML and the mpicbg XML."""
    d = File(str(out_dir))
    d.mkdirs()
    fixed_cal, moving_cal = _calibration(em_imp), _calibration(lm_imp)
    paths = dict((k, File(d, v).getPath()) for k, v in FILE_NAMES.items())
    write_bigwarp_csv(paths["bigwarp_csv"], f2m, em_imp.getWidth(), em_imp.getHeight(), fixed_cal, moving_cal)
    write_bigwarp_xml(paths["bigwarp_xml"], f2m, lm_imp.getWidth(), lm_imp.getHeight(), moving_file,
                      fixed_cal, moving_cal, _cal_unit(lm_imp.getCalibration()))
    write_mpicbg_xml(paths["mpicbg_xml"], f2m)
    if record is None:
        record = {"fixed_to_moving": f2m, "moving_to_fixed": inverse(f2m),
                  "fixed_shape": [em_imp.getHeight(), em_imp.getWidth()],
                  "moving_shape": [lm_imp.getHeight(), lm_imp.getWidth()], "method": "fiji"}
    _write_text(paths["json"], json.dumps(record, indent=2))
    return paths


def _calibration(imp):
    """The image's Calibration when it is spatially calibrated, else None (pixel units)."""
    cal = imp.getCalibration()
    return cal if cal.scaled() else None


def _write_text(path, text):
    with codecs.open(str(path), "w", "utf-8") as fh:
        fh.write(text)


# --- HTTP: JSON, multipart upload, polling -------------------------------------------------

class Server(object):
    """A clem-bridge server at ``url`` (e.g. http://127.0.0.1:8000), optional bearer ``token``."""

    def __init__(self, url, token=None, timeout_s=30):
        url = (url or "").strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise ClemError("invalid server URL '%s'; expected e.g. http://127.0.0.1:8000" % url)
        self.url, self.token, self.timeout_ms = url, token or None, int(timeout_s * 1000)

    def request(self, method, path, payload=None, content_type=None, read_timeout_s=None):
        """One HTTP request; returns the JSON answer. Every failure is a one-sentence ClemError."""
        try:
            conn = URL(self.url + path).openConnection()
        except MalformedURLException:
            raise ClemError("invalid server URL %s" % self.url)
        conn.setRequestMethod(method)
        conn.setConnectTimeout(self.timeout_ms)
        conn.setReadTimeout(int(read_timeout_s * 1000) if read_timeout_s else self.timeout_ms)
        conn.setRequestProperty("Accept", "application/json")
        if self.token:
            conn.setRequestProperty("Authorization", "Bearer " + self.token)
        try:
            if payload is not None:
                conn.setRequestProperty("Content-Type", content_type)
                conn.setDoOutput(True)
                conn.setFixedLengthStreamingMode(len(payload))
                out = conn.getOutputStream()
                out.write(payload)
                out.close()
            status = conn.getResponseCode()
        except (ConnectException, UnknownHostException, SocketTimeoutException) as e:
            raise ClemError(_unreachable(self.url, e))
        except IOException as e:
            raise ClemError("cannot talk to the CLEM server at %s: %s" % (self.url, e.getMessage()))
        stream = conn.getInputStream() if status < 400 else conn.getErrorStream()
        body = _read_all(stream) if stream is not None else ""
        if status >= 400:
            raise ClemError(_http_error(status, path, body, self.url))
        try:
            return json.loads(JString(body, "UTF-8").toString()) if body else {}
        except ValueError:
            raise ClemError("the server at %s did not answer JSON for %s" % (self.url, path))

    def get_json(self, path):
        return self.request("GET", path)

    def post_multipart(self, path, fields, files):
        """POST form ``fields`` {name: text} and ``files`` [(name, filename, byte[])] as multipart/form-data."""
        boundary = "----clem-bridge-%d" % System.nanoTime()
        buf = ByteArrayOutputStream()

        def put(text):
            buf.write(JString(text).getBytes("UTF-8"))
        for name, value in fields.items():
            put('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary, name, value))
        for name, filename, data in files:
            put('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                'Content-Type: image/tiff\r\n\r\n' % (boundary, name, filename))
            buf.write(data)
            put("\r\n")
        put("--%s--\r\n" % boundary)
        return self.request("POST", path, buf.toByteArray(), "multipart/form-data; boundary=" + boundary,
                            read_timeout_s=900)

    def wait_job(self, job_id, label="CLEM", timeout_s=24 * 3600):
        """Long-poll /v1/jobs/{id} until it ends, showing stage and progress in the status bar."""
        t0 = time.time()
        while True:
            if not is_headless() and IJ.escapePressed():
                self.request("DELETE", "/v1/jobs/%s" % job_id)
                raise ClemError("cancelled: the server job %s was cancelled (Esc)" % job_id)
            job = self.get_json("/v1/jobs/%s?wait=1" % job_id)
            state = job.get("status")
            IJ.showProgress(float(job.get("progress") or 0.0))
            IJ.showStatus("%s: %s %s" % (label, state, job.get("stage") or ""))
            if state == "done":
                IJ.showProgress(1.0)
                IJ.showStatus("%s: done" % label)
                return job
            if state in ("failed", "cancelled", "interrupted"):
                raise ClemError("the server's %s job %s: %s" % (label, state, _job_error(job)))
            if time.time() - t0 > timeout_s:
                raise ClemError("the server's job %s did not finish within %d s" % (job_id, timeout_s))


def submit_and_wait(server, endpoint, files, params, label):
    """POST a job (multipart ``files`` [(field, filename, byte[])] + JSON ``params``), wait for it, return
    (its result record with a checked fixed_to_moving, the job)."""
    IJ.showStatus("%s: uploading" % label)
    job = server.post_multipart(endpoint, {"params": json.dumps(params)}, files)
    job = server.wait_job(job["id"], label)
    record = server.get_json("/v1/jobs/%s/result" % job["id"])
    check_matrix(record.get("fixed_to_moving"), "the server's fixed_to_moving")
    for warning in record.get("warnings") or []:
        log("warning: " + warning)
    return record, job


def register_on_server(server, em_imp, lm_reg_imp, preset="fast", seed=0, label="CLEM registration"):
    """MINE registration of EM and the LM registration channel on the server; returns (record, job)."""
    files = [("em", "em.tif", tiff_bytes(em_imp)), ("lm", "lm.tif", tiff_bytes(lm_reg_imp))]
    params = {"preset": preset, "seed": int(seed), "reg_channel": 0, "channels": [0]}
    return submit_and_wait(server, "/v1/register", files, params, label)


def _unreachable(url, e):
    why = {"ConnectException": "connection refused", "UnknownHostException": "unknown host",
           "SocketTimeoutException": "no answer in time"}.get(e.getClass().getSimpleName(), e.getMessage())
    return "cannot reach the CLEM server at %s (%s); is 'clem-bridge serve' running?" % (url, why)


def _job_error(job):
    err = job.get("error") or job.get("detail") or job.get("message") or "no details"
    if isinstance(err, dict):
        err = err.get("message") or err.get("detail") or json.dumps(err)
    return err


def _read_all(stream):
    buf = ByteArrayOutputStream()
    chunk = zeros(65536, "b")
    while True:
        n = stream.read(chunk)
        if n < 0:
            break
        buf.write(chunk, 0, n)
    stream.close()
    return buf.toByteArray()


def _http_error(status, path, body, url):
    detail = ""
    try:
        obj = json.loads(JString(body, "UTF-8").toString())
        detail = obj.get("detail") or obj.get("error") or obj.get("message") or ""
        if isinstance(detail, dict):
            detail = detail.get("message") or detail.get("detail") or json.dumps(detail)
        elif isinstance(detail, list):
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    except (ValueError, AttributeError, TypeError):
        pass
    if status in (401, 403):
        return "the CLEM server at %s rejected the token (HTTP %d)" % (url, status)
    if status == 404:
        return "the CLEM server at %s has no %s (HTTP 404)%s" % (url, path.split("?")[0],
                                                                  ": " + detail if detail else "")
    return "the CLEM server answered HTTP %d for %s%s" % (status, path.split("?")[0], ": " + detail if detail else "")


def tiff_bytes(imp):
    """The image as ImageJ TIFF bytes (calibration kept), for upload."""
    data = FileSaver(imp).serialize()
    if data is None:
        raise ClemError("cannot encode %s as TIFF" % imp.getTitle())
    return data


def input_image(path, title, what):
    """An image from a file (when given) or else the open image with that title."""
    if path is not None and str(path).strip() not in ("", "."):
        return open_image(path, what)
    if title:
        from ij import WindowManager
        imp = WindowManager.getImage(title)
        if imp is None:
            raise ClemError("there is no open image titled '%s' for the %s" % (title, what))
        return imp
    raise ClemError("choose a file or an open image for the %s" % what)


def output_dir(path):
    if path is None or str(path).strip() in ("", "."):
        raise ClemError("choose an output folder")
    d = File(str(path))
    if not d.isDirectory() and not d.mkdirs():
        raise ClemError("cannot create the output folder %s" % path)
    return d.getPath()


def register_and_apply(server, em_imp, lm_imp, reg_channel, channels, out_dir, preset="fast", seed=0,
                       f2m=None, record=None, label="CLEM registration"):
    """Register (unless ``f2m`` is given), warp the LM ``channels`` with ImageJ, save everything in ``out_dir``.

    Returns (fixed_to_moving, warped ImagePlus, composite, record).  Files: transform.json,
    bigwarp_landmarks.csv, moving-bigWarp.xml, mpicbg_affine.xml, warped_channels.tif, composite.tif.
    """
    if f2m is None:
        record, _ = register_on_server(server, em_imp, select_channels(lm_imp, [reg_channel]), preset, seed, label)
        f2m = check_matrix(record["fixed_to_moving"], "the server's fixed_to_moving")
    warped = warp_image(select_channels(lm_imp, channels), f2m, em_imp, "warped_" + lm_imp.getTitle())
    comp = composite(em_imp, [warped], "CLEM_" + em_imp.getTitle())
    save_tiff(warped, File(out_dir, "warped_channels.tif").getPath())
    save_tiff(comp, File(out_dir, "composite.tif").getPath())
    write_transform_files(out_dir, f2m, em_imp, lm_imp, lm_imp.getTitle(), record)
    return f2m, warped, comp, record


def match_pairs(folder, em_pattern, lm_pattern):
    """{pair name: (em path, lm path)} for files matching the glob patterns, ``*`` = the pair name."""
    def rx(pattern):
        if pattern.count("*") != 1:
            raise ClemError("a file name pattern needs exactly one * for the pair name, got '%s'" % pattern)
        return re.compile("^" + re.escape(pattern).replace("\\*", "(.+)") + "$")
    d = File(str(folder))
    if not d.isDirectory():
        raise ClemError("input folder not found: %s" % folder)
    em_rx, lm_rx = rx(em_pattern), rx(lm_pattern)
    ems, lms = {}, {}
    for name in sorted(d.list()):
        for found, r in ((ems, em_rx), (lms, lm_rx)):
            m = r.match(name)
            if m:
                found[m.group(1)] = File(d, name).getPath()
    pairs = dict((k, (ems[k], lms[k])) for k in ems if k in lms)
    for k in sorted(set(ems) ^ set(lms)):
        log("CLEM batch: %s has no partner; skipped" % (ems.get(k) or lms.get(k)))
    if not pairs:
        raise ClemError("no EM/LM pairs in %s match %s and %s" % (folder, em_pattern, lm_pattern))
    return pairs


def write_summary_csv(path, rows, columns):
    def cell(v):
        return '"%s"' % ("" if v is None else str(v)).replace('"', '""')
    _write_text(path, "\n".join([",".join(columns)] + [",".join(cell(r.get(c)) for c in columns) for r in rows])
                + "\n")
