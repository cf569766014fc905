"""Microscope file formats beyond TIFF/PNG/JPEG, through their maintained readers.

- MRC/REC (``mrcfile``, in the default install): EM images; the voxel size (Å) becomes a pixel size in nm.
- DM3/DM4 (``rosettasciio``), CZI, LIF, ND2 and OME-Zarr (``bioio`` with ``bioio-czi``, ``bioio-lif``,
  ``bioio-nd2``, ``bioio-ome-zarr``): the optional extra ``pip install 'clem-bridge[formats]'``.
  bioio reports pixel sizes in µm unless the file names a unit; the first scene is read; channel names
  come with the data.
- OME-TIFF stays with tifffile (:mod:`.images`); :func:`ome_channel_names` gives its channel names.

The kind of file is told from its content where the format has a signature (MRC ``MAP`` at byte 208,
CZI ``ZISRAWFILE``, ND2 magic) and else from its suffix (.mrc/.rec/.st/.ali/.map, .dm3/.dm4, .lif, .zarr),
so uploads saved under their own name work; each bioio plugin is named, never guessed.
:func:`write_ome_zarr` writes a ``(C, H, W)`` result as an NGFF 0.4 multiscale image (bioio-ome-zarr's writer).
"""
from __future__ import annotations

import importlib
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from ..schema import PixelSize
from .layout import check_size, to_cyx
from .units import convert_length, normalize_unit

HEAD_BYTES = 212                                     # enough for every signature below
MRC_SUFFIXES = {".mrc", ".mrcs", ".rec", ".st", ".ali", ".map"}
DM_SUFFIXES = {".dm3", ".dm4"}
BIOIO_PLUGINS = {"czi": ("CZI", "bioio_czi"), "lif": ("LIF", "bioio_lif"), "nd2": ("ND2", "bioio_nd2"),
                 "zarr": ("OME-Zarr", "bioio_ome_zarr")}        # kind -> (label, plugin module)
_EXTRA = "install the optional readers: pip install 'clem-bridge[formats]'"


def kind_of(path: Path, head: bytes) -> Optional[str]:
    """``mrc``, ``dm``, ``czi``, ``lif``, ``nd2`` or ``zarr``; None for TIFF/PNG/JPEG (or unknown)."""
    if head[208:212] == b"MAP ":
        return "mrc"
    if head.startswith(b"ZISRAWFILE"):
        return "czi"
    if head.startswith(b"\xda\xce\xbe\x0a"):
        return "nd2"
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        return "mrc"
    if suffix in DM_SUFFIXES:
        return "dm"
    return suffix[1:] if suffix[1:] in BIOIO_PLUGINS else None


def read_format(kind: str, path: Path, max_pixels: int):
    """``(data (C,H,W), pixel_size, rgb, channel_names)`` of a file of ``kind`` (see :func:`kind_of`)."""
    if kind in BIOIO_PLUGINS:
        return _read_bioio(path, kind, max_pixels)
    return {"mrc": _read_mrc, "dm": _read_dm}[kind](path, max_pixels)


def _read_mrc(p: Path, max_pixels: int):
    import mrcfile

    try:
        with mrcfile.mmap(p, mode="r") as mrc:
            h = mrc.header
            check_size(int(h.nx) * int(h.ny) * int(h.nz), p, max_pixels)
            data = np.array(mrc.data)
            vs = mrc.voxel_size
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"cannot read {p.name}: not a valid MRC file ({e})") from None
    axes = "ZYX" if data.ndim == 3 else "YX"
    px = None
    if float(vs.x) > 0 and float(vs.y) > 0:      # Å → nm
        px = PixelSize(x=float(vs.x) / 10.0, y=float(vs.y) / 10.0, unit="nm")
    return to_cyx(data, axes, data.shape, p, False), px, False, None


def _read_dm(p: Path, max_pixels: int):
    try:
        from rsciio.digitalmicrograph import file_reader
    except ImportError:
        raise InputError(f"{p.name} is a DigitalMicrograph file; {_EXTRA}") from None
    try:
        found = file_reader(str(p), lazy=True)
    except Exception as e:  # rosettasciio raises many types for bad files
        raise InputError(f"cannot read {p.name}: not a readable DM3/DM4 file ({type(e).__name__}: {e})") from None
    images = [d for d in found if d["data"].ndim >= 2]
    if not images:
        raise InputError(f"{p.name} contains no image")
    d = images[0]
    signal = [a for a in d["axes"] if not a.get("navigate", False)]
    nav = [a for a in d["axes"] if a.get("navigate", False)]
    if nav:
        raise InputError(f"{p.name} is a stack of {int(np.prod([a['size'] for a in nav]))} images; clem-bridge "
                         "registers 2-D images - pick one first")
    check_size(int(np.prod(d["data"].shape)), p, max_pixels)
    data = np.asarray(d["data"])
    rgb = data.dtype.names is not None
    if rgb:                                       # DM RGB: a record array with fields R, G, B(, A)
        data = np.stack([data[c] for c in ("R", "G", "B")])
    else:
        data = data[None]
    px = None
    if len(signal) == 2:
        unit = normalize_unit(signal[1].get("units"))
        sy, sx = float(signal[0].get("scale", 0) or 0), float(signal[1].get("scale", 0) or 0)
        if unit is not None and sx > 0 and sy > 0:
            uy = normalize_unit(signal[0].get("units")) or unit
            px = PixelSize(x=sx, y=convert_length(sy, uy, unit), unit=unit)
    return data, px, rgb, None


def _read_bioio(p: Path, kind: str, max_pixels: int):
    label, plugin = BIOIO_PLUGINS[kind]
    try:
        from bioio import BioImage
        reader = importlib.import_module(plugin).Reader
    except ImportError:
        raise InputError(f"{p.name} is a {label} file; {_EXTRA}") from None
    try:
        img = BioImage(p, reader=reader)
        dims, shape = img.dims.order, tuple(int(n) for n in img.shape)
        check_size(int(np.prod(shape)), p, max_pixels)
        data = np.asarray(img.data)
        names = [str(c) for c in img.channel_names] if "C" in dims else None
        px = _bioio_pixel_size(img)
    except InputError:
        raise
    except Exception as e:  # bioio and its plugins raise many types for bad files
        raise InputError(f"cannot read {p.name} as a {label} file ({type(e).__name__}: {str(e)[:200]})") from None
    rgb = "S" in dims and shape[dims.index("S")] in (3, 4)
    data = to_cyx(data, dims, shape, p, rgb)
    if rgb:
        data, names = data[:3], None
    return data, px, rgb, names if names and len(names) == data.shape[0] else None


def _bioio_pixel_size(img) -> Optional[PixelSize]:
    pps = img.physical_pixel_sizes
    if not pps.X or not pps.Y or pps.X <= 0 or pps.Y <= 0:
        return None
    unit = "um"                                   # bioio's convention unless the file names a unit
    props = getattr(img, "dimension_properties", None)
    named = getattr(getattr(props, "X", None), "unit", None)
    if named is not None:
        unit = normalize_unit(str(named))
        if unit is None:
            return None
    return PixelSize(x=float(pps.X), y=float(pps.Y), unit=unit)


def ome_channel_names(xml: str) -> Optional[list[str]]:
    """Channel names of the first image of OME-XML (``Channel/@Name``); None when any is missing."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pix = root.find(".//{*}Pixels")
    names = [c.get("Name") for c in pix.findall("{*}Channel")] if pix is not None else []
    return names if names and all(names) else None


# --- writing ---------------------------------------------------------------------------

_NGFF_UNITS = {"pm": "picometer", "A": "angstrom", "nm": "nanometer", "um": "micrometer", "mm": "millimeter",
               "cm": "centimeter", "m": "meter"}


def write_ome_zarr(path, stack: np.ndarray, pixel_size: Optional[PixelSize] = None,
                   channel_names: Optional[Sequence[str]] = None, min_side: int = 256) -> Path:
    """Write ``(C, H, W)`` as an OME-Zarr (NGFF 0.4, Zarr v2) multiscale image: levels halve until the
    smaller side is below ``min_side``; the scale is the pixel size in its unit (napari, MoBIE, BigDataViewer)."""
    try:
        from bioio_ome_zarr.writers import Channel, OMEZarrWriter
    except ImportError:
        raise InputError(f"OME-Zarr output needs bioio-ome-zarr; {_EXTRA}") from None
    a = np.asarray(stack)
    if a.ndim != 3:
        raise InputError(f"write_ome_zarr expects (C, H, W), got shape {a.shape}")
    c, h, w = a.shape
    levels = max(1, int(math.floor(math.log2(max(min(h, w) / min_side, 1)))) + 1)
    shapes = [(c, -(-h // 2 ** i), -(-w // 2 ** i)) for i in range(levels)]
    unit = _NGFF_UNITS.get(normalize_unit(pixel_size.unit)) if pixel_size else None
    scale = [1.0, pixel_size.y, pixel_size.x] if pixel_size and unit else [1.0, 1.0, 1.0]
    names = list(channel_names) if channel_names and len(channel_names) == c else [f"C{i}" for i in range(c)]
    colours = ["FFFFFF", "00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000", "0000FF"]
    lo, hi = float(a.min()), float(a.max())
    window = {"min": lo, "max": hi, "start": lo, "end": hi}
    p = Path(path)
    writer = OMEZarrWriter(str(p), level_shapes=shapes, dtype=a.dtype, zarr_format=2, image_name=p.name,
                           axes_names=["c", "y", "x"], axes_types=["channel", "space", "space"],
                           axes_units=[None, unit, unit], physical_pixel_size=scale,
                           channels=[Channel(label=n, color=colours[i % len(colours)], window=window)
                                     for i, n in enumerate(names)])
    writer.write_full_volume(a)
    return p
