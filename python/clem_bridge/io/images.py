"""Image I/O: TIFF (ImageJ, OME, plain; CYX/YXC, 8/16/32-bit, RGB), PNG, JPEG; calibrated ImageJ TIFF output.
MRC, DM3/DM4, CZI, LIF, ND2 and OME-Zarr are read through :mod:`.formats`.

Every reader returns channels first, ``(C, H, W)``, in the file's own dtype, and the
pixel size when the file states one.  Bad files raise :class:`~clem_bridge.errors.InputError`
with one sentence naming the file.
"""
from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tifffile
from PIL import Image

from ..errors import InputError
from ..schema import PixelSize
from .layout import check_size, to_cyx
from .units import convert_length, normalize_unit

MAX_PIXELS = 2 ** 31
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass
class ImageData:
    """An image as channels-first ``data`` (C, H, W), its ``pixel_size`` (or None), source ``path`` and the
    file's ``channel_names`` where it has them."""
    data: np.ndarray
    pixel_size: Optional[PixelSize]
    path: Path
    rgb: bool = False
    channel_names: Optional[list[str]] = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.data.shape[1]), int(self.data.shape[2])


# --- validation ------------------------------------------------------------------------

def check_image(arr, name: str = "image", *, need_structure: bool = True, min_side: int = 16) -> np.ndarray:
    """Validate a 2-D registration image; returns it, or raises :class:`InputError` saying what is wrong."""
    a = np.asarray(arr)
    if a.ndim != 2:
        raise InputError(f"{name} must be a 2-D image, got an array of shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{name} is empty (shape {a.shape})")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise InputError(f"{name} has unsupported pixel type {a.dtype}; expected real numbers")
    if min(a.shape) < min_side:
        raise InputError(f"{name} is too small ({a.shape[0]}x{a.shape[1]} pixels); need at least "
                         f"{min_side} pixels per side")
    if np.issubdtype(a.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise InputError(f"{name} contains {bad} NaN/inf pixels; replace them (e.g. by the background "
                             f"value) before registering")
    if need_structure and float(np.ptp(a)) == 0.0:
        raise InputError(f"{name} is constant (every pixel is {a.flat[0]}); registration needs image structure")
    return a


# --- reading ---------------------------------------------------------------------------

def read_image(path, *, max_pixels: int = MAX_PIXELS) -> ImageData:
    """Read an image as ``(C, H, W)`` plus pixel size; the file type is detected from its content (else its
    suffix, see :func:`.formats.kind_of`): TIFF/PNG/JPEG here, MRC, DM3/4, CZI, LIF, ND2, OME-Zarr in :mod:`.formats`."""
    from .formats import HEAD_BYTES, kind_of, read_format

    p = Path(path)
    if p.is_dir() and p.suffix.lower() == ".zarr":
        head = b""
    elif not p.is_file():
        raise InputError(f"file not found: {p}")
    else:
        with open(p, "rb") as fh:
            head = fh.read(HEAD_BYTES)
        if not head:
            raise InputError(f"{p.name} is an empty file")
    names = None
    kind = None if head[:4] in _TIFF_MAGIC else kind_of(p, head)
    if kind is not None:
        data, px, rgb, names = read_format(kind, p, max_pixels)
    elif head[:4] in _TIFF_MAGIC:
        data, px, rgb, names = _read_tiff(p, max_pixels)
    else:
        data, px, rgb = _read_pil(p, max_pixels)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype == np.float16:
        data = data.astype(np.float32)
    elif np.iscomplexobj(data) or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{p.name} has unsupported pixel type {data.dtype}")
    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise InputError(f"{p.name} contains {bad} NaN/inf pixels; replace them before registering")
    return ImageData(data=np.ascontiguousarray(data), pixel_size=px, path=p, rgb=rgb, channel_names=names)


def read_channel(path, channel: Optional[int] = None, *, max_pixels: int = MAX_PIXELS
                 ) -> tuple[np.ndarray, Optional[PixelSize]]:
    """One 2-D channel and the pixel size; ``channel=None`` takes the only channel (or the grey of RGB)."""
    img = read_image(path, max_pixels=max_pixels)
    return select_channel(img, channel), img.pixel_size


def select_channel(img: ImageData, channel: Optional[int] = None) -> np.ndarray:
    """Channel ``channel`` of ``img``; None → the single channel, or luminance for RGB."""
    n = img.data.shape[0]
    if channel is None:
        if n == 1:
            return img.data[0]
        if img.rgb:
            if all(np.array_equal(img.data[0], img.data[i]) for i in range(1, 3)):
                return img.data[0]
            return np.tensordot([0.299, 0.587, 0.114], img.data[:3].astype(np.float32), axes=1).astype(np.float32)
        raise InputError(f"{img.path.name} has {n} channels; choose one (channel 0-{n - 1})")
    if not -n <= channel < n:
        raise InputError(f"channel {channel} requested but {img.path.name} has {n} channel(s) (0-{n - 1})")
    return img.data[channel]


def _read_pil(p: Path, max_pixels: int):
    try:
        with Image.open(p) as im:
            w, h = im.size
            check_size(w * h * len(im.getbands()), p, max_pixels)
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
            arr = np.asarray(im)
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(f"{p.name} declares an image too large to open safely ({e})") from None
    except Exception as e:  # PIL raises many types for bad files
        raise InputError(f"cannot read {p.name}: not a TIFF, PNG or JPEG image, or the file is damaged "
                         f"({type(e).__name__})") from None
    rgb = arr.ndim == 3
    if rgb:
        arr = np.moveaxis(arr[..., :3], -1, 0)     # drop alpha
    else:
        arr = arr[None]
    return arr, None, rgb


@contextmanager
def _quiet_tifffile():
    """Drop tifffile's log warnings about damaged files; the InputError we raise says it once."""
    log = logging.getLogger("tifffile")
    drop = logging.Filter("\0")        # a name no record has: rejects everything
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


def _read_tiff(p: Path, max_pixels: int):
    from .formats import ome_channel_names

    try:
        with _quiet_tifffile(), tifffile.TiffFile(p) as tf:
            if not tf.series:
                raise InputError(f"{p.name} contains no image")
            s = tf.series[0]
            check_size(int(np.prod(s.shape)), p, max_pixels)
            axes, shape = s.axes, s.shape
            page = s.pages[0] if s.pages and s.pages[0] is not None else tf.pages[0]
            rgb = getattr(page, "photometric", None) == tifffile.PHOTOMETRIC.RGB
            data = s.asarray()
            px = _tiff_pixel_size(tf, page)
            names = ome_channel_names(tf.ome_metadata) if tf.is_ome and tf.ome_metadata else None
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot read {p.name}: truncated or damaged TIFF ({type(e).__name__}: {e})") from None
    data = to_cyx(data, axes, shape, p, rgb)
    return data, px, rgb, names if names and len(names) == data.shape[0] else None


def _tiff_pixel_size(tf: tifffile.TiffFile, page) -> Optional[PixelSize]:
    """Pixel size from OME (PhysicalSizeX/Y), ImageJ (X/YResolution + unit=), FEI/Thermo or Zeiss SEM
    metadata, or a centimetre ResolutionUnit."""
    if tf.is_ome and tf.ome_metadata:
        px = _ome_pixel_size(tf.ome_metadata)
        if px is not None:
            return px
    xres, yres = _resolution(page, "XResolution"), _resolution(page, "YResolution")
    if tf.is_imagej:
        meta = tf.imagej_metadata or {}
        unit = normalize_unit(meta.get("unit"))
        if unit is None or xres is None:
            return None
        yres = yres or xres
        return PixelSize(x=1.0 / xres, y=1.0 / yres, unit=unit)
    sem = _sem_pixel_size(tf)
    if sem is not None:
        return sem
    unit_tag = page.tags.get("ResolutionUnit")
    if xres is not None and unit_tag is not None and int(unit_tag.value) == 3:   # centimetre
        yres = yres or xres
        return PixelSize(x=1e4 / xres, y=1e4 / yres, unit="um")
    return None     # inch/none without ImageJ/OME metadata is a display dpi, not a microscope calibration


def _sem_pixel_size(tf: tifffile.TiffFile) -> Optional[PixelSize]:
    """FEI/Thermo (``[Scan] PixelWidth`` in metres) or Zeiss SEM (``AP_IMAGE_PIXEL_SIZE``) pixel size."""
    try:
        if tf.is_fei:
            scan = (tf.fei_metadata or {}).get("Scan") or (tf.fei_metadata or {}).get("EScan") or {}
            x, y = float(scan["PixelWidth"]), float(scan.get("PixelHeight", scan["PixelWidth"]))
            if x > 0 and y > 0:
                return PixelSize(x=x * 1e9, y=y * 1e9, unit="nm")
        if tf.is_sem:
            entry = (tf.sem_metadata or {}).get("ap_image_pixel_size")
            if entry and len(entry) >= 3 and normalize_unit(entry[2]) and float(entry[1]) > 0:
                return PixelSize(x=float(entry[1]), y=float(entry[1]), unit=normalize_unit(entry[2]))
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _resolution(page, name: str) -> Optional[float]:
    tag = page.tags.get(name)
    if tag is None:
        return None
    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
    if not num or not den:
        return None
    r = num / den
    return r if r > 0 and np.isfinite(r) else None


def _ome_pixel_size(xml: str) -> Optional[PixelSize]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pix = root.find(".//{*}Pixels")
    if pix is None or pix.get("PhysicalSizeX") is None:
        return None
    ux = normalize_unit(pix.get("PhysicalSizeXUnit", "µm"))
    uy = normalize_unit(pix.get("PhysicalSizeYUnit", "µm"))
    if ux is None:
        return None
    x = float(pix.get("PhysicalSizeX"))
    y = float(pix.get("PhysicalSizeY", x))
    if uy is not None and uy != ux:
        y = convert_length(y, uy, ux)
    if x <= 0 or y <= 0:
        return None
    return PixelSize(x=x, y=y, unit=ux)


# --- writing ---------------------------------------------------------------------------

def imagej_compatible(a: np.ndarray) -> np.ndarray:
    """``a`` in a type ImageJ stores: uint8/uint16/float32 kept, bool → uint8, anything else → float32."""
    if a.dtype == bool:
        return a.astype(np.uint8)
    return a if a.dtype in (np.uint8, np.uint16, np.float32) else a.astype(np.float32)


def write_tiff(path, array: np.ndarray, pixel_size: Optional[PixelSize] = None) -> Path:
    """Write a (H, W) or (C, H, W) image as an ImageJ TIFF that Fiji opens with the right pixel size.

    uint8/uint16/float32 are kept; other types are stored as float32 (ImageJ has no other 2-D types).
    """
    a = np.asarray(array)
    if a.ndim not in (2, 3) or a.size == 0:
        raise InputError(f"cannot write an image of shape {a.shape}; expected (H, W) or (C, H, W)")
    if a.ndim == 3 and a.shape[2] <= 4 < a.shape[0]:
        raise InputError(f"write_tiff expects channels first (C, H, W), got shape {a.shape} (looks like H, W, C)")
    a = imagej_compatible(a)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"axes": "YX" if a.ndim == 2 else "CYX"}
    kw = {}
    if pixel_size is not None:
        unit = normalize_unit(pixel_size.unit) or re.sub(r"[^\x20-\x7e]", "", pixel_size.unit) or "um"
        meta["unit"] = unit
        kw["resolution"] = (1.0 / pixel_size.x, 1.0 / pixel_size.y)
    tifffile.imwrite(p, a, imagej=True, metadata=meta, **kw)
    return p
