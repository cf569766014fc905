# -*- coding: utf-8 -*-
"""Images for the clem-bridge Fiji commands: open, pick channels, calibration, save, composite (ImageJ 1)."""
from java.awt import Color
from java.io import File

from ij import CompositeImage, IJ, ImagePlus, ImageStack, WindowManager
from ij.gui import Roi
from ij.io import FileSaver
from ij.process import LUT

from clem_bridge_host import ClemError

CHANNEL_COLORS = [Color.green, Color.magenta, Color.cyan, Color.red, Color.yellow, Color.blue]
BLUE = 2  # index of blue among an RGB image's channels
UM_PER_UNIT = {"nm": 1e-3, "nanometer": 1e-3, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "A": 1e-4,
               u"\u00c5": 1e-4, "angstrom": 1e-4}


def _given(path):
    return path is not None and str(path).strip() not in ("", ".")


def open_image(path, what="image"):
    """Open an image file with ImageJ 1; a clear error for a missing or unreadable file."""
    if not _given(path) or not File(str(path)).isFile():
        raise ClemError("%s file not found: %s" % (what, path))
    imp = IJ.openImage(str(path))
    if imp is None:
        raise ClemError("ImageJ cannot open the %s file %s" % (what, path))
    return imp


def input_image(path, title, what):
    """An image from a file (when given) or else the open image with that title."""
    if _given(path):
        return open_image(path, what)
    if title:
        imp = WindowManager.getImage(title)
        if imp is None:
            raise ClemError("there is no open image titled '%s' for the %s" % (title, what))
        return imp
    raise ClemError("choose a file or an open image for the %s" % what)


def output_dir(path):
    if not _given(path):
        raise ClemError("choose an output folder")
    d = File(str(path))
    if not d.isDirectory() and not d.mkdirs():
        raise ClemError("cannot create the output folder %s" % path)
    return d.getPath()


def channel_processors(imp):
    """The 2-D processors of every channel (or slice) of an ImagePlus; an RGB image gives red, green, blue."""
    stack = imp.getStack()
    procs = [stack.getProcessor(i + 1) for i in range(stack.getSize())]
    if imp.getType() == ImagePlus.COLOR_RGB:
        procs = [ip.getChannel(c, None) for ip in procs for c in (1, 2, 3)]
    return procs


def parse_channels(channels):
    """0-based channel numbers from a list or comma-separated text (empty = [])."""
    if not isinstance(channels, basestring):
        return list(channels or [])
    try:
        return [int(c) for c in channels.replace(" ", "").split(",") if c != ""]
    except ValueError:
        raise ClemError("channels must be numbers like 0,2 (got '%s')" % channels)


def select_channels(imp, channels):
    """ImagePlus of the 0-based ``channels`` (list or comma-separated text; empty = all) of a stack."""
    channels = parse_channels(channels)
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


def chromatin_channel(imp, channel):
    """The chromatin channel as the CLI picks it: ``channel`` when >= 0, else blue of an RGB image, else
    the only channel."""
    n = len(channel_processors(imp))
    if channel is not None and int(channel) >= 0:
        if int(channel) >= n:
            raise ClemError("chromatin channel %d does not exist in %s (it has %d)" % (channel, imp.getTitle(), n))
        return int(channel)
    if imp.getType() == ImagePlus.COLOR_RGB:
        return BLUE
    if n == 1:
        return 0
    raise ClemError("%s has %d channels; set the chromatin channel (0-based)" % (imp.getTitle(), n))


def calibration(imp):
    """The image's Calibration when it is spatially calibrated, else None (pixel units)."""
    cal = imp.getCalibration()
    return cal if cal.scaled() else None


def unit_name(imp):
    """ASCII unit name as clem_bridge writes it (ImageJ's micro sign becomes 'um')."""
    cal = calibration(imp)
    if cal is None:
        return "pixel"
    unit = cal.getUnit()
    return "um" if unit in (u"\u00b5m", u"\u03bcm", "micron", "microns") else unit


def pixel_size(imp):
    """The calibration as the server's ``{"x", "y", "unit"}`` pixel size, or None when uncalibrated."""
    cal = calibration(imp)
    if cal is None:
        return None
    return {"x": float(cal.pixelWidth), "y": float(cal.pixelHeight), "unit": unit_name(imp)}


def voxel_um(imp):
    """The voxel size ``[x, y, z]`` in µm (z = the voxel depth of Image > Properties), or None when the image is
    uncalibrated or its unit is not a length."""
    cal = calibration(imp)
    factor = UM_PER_UNIT.get(unit_name(imp)) if cal is not None else None
    if factor is None:
        return None
    return [float(cal.pixelWidth) * factor, float(cal.pixelHeight) * factor, float(cal.pixelDepth) * factor]


def point_selection(imp):
    """The points [[x, y], ...] of the image's multi-point selection, or None without one.

    Coordinates as ImageJ holds them (the clicked pixel's index; sub-pixel clicks at high zoom as they are),
    taken as pixel centres, as Fiji's mpicbg Landmark Correspondences does.
    """
    roi = imp.getRoi()
    if roi is None or roi.getType() != Roi.POINT:
        return None
    poly = roi.getFloatPolygon()
    return [[float(poly.xpoints[i]), float(poly.ypoints[i])] for i in range(poly.npoints)]


def save_tiff(imp, path):
    if not FileSaver(imp).saveAsTiff(str(path)):
        raise ClemError("could not save %s" % path)
    return path


def tiff_bytes(imp):
    """The image as ImageJ TIFF bytes (calibration kept), for upload."""
    data = FileSaver(imp).serialize()
    if data is None:
        raise ClemError("cannot encode %s as TIFF" % imp.getTitle())
    return data


def composite(em_imp, warped_imps, title="CLEM overlay"):
    """EM in grey plus every warped channel in colour, as a CompositeImage with the EM calibration."""
    stack = ImageStack(em_imp.getWidth(), em_imp.getHeight())
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
