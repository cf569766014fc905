"""Z stacks: read ImageJ hyperstacks, OME-TIFF and plain multi-page TIFF with their voxel size (x, y and z
spacing, with units); write calibrated ImageJ hyperstacks (``ZCYX``) that Fiji opens with the right voxel size.

Readers return channels first, ``(C, Z, Y, X)``.  A stack without z spacing is read with isotropic voxels
assumed (z = x) and says so in ``Stack.warnings``; bad input raises :class:`~clem_bridge.errors.InputError`.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import tifffile

from ..errors import InputError
from ..io import convert_length, normalize_unit
from ..io.images import imagej_compatible
from ..schema import PixelSize

MAX_VOXELS = 2 ** 31
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass
class Stack:
    """A stack as ``data`` (C, Z, Y, X), its ``voxel`` size (None when uncalibrated) and source ``path``."""
    data: np.ndarray
    voxel: Optional[PixelSize]
    path: Path
    z_assumed: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape[1:])


def stack_axes(path) -> Optional[str]:
    """Axes of the first series of a TIFF (e.g. 'ZCYX'), or None for anything that is not a readable TIFF."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            if fh.read(4) not in _TIFF_MAGIC:
                return None
        with tifffile.TiffFile(p) as tf:
            s = tf.series[0]
            return "".join(a for a, n in zip(s.axes, s.shape) if n > 1 or a in "YX")
    except Exception:
        return None


def is_stack(path) -> bool:
    """True when ``path`` is a TIFF with more than one z plane (a Z axis, or unnamed planes beyond 8)."""
    axes = stack_axes(path)
    if axes is None:
        return False
    if "Z" in axes:
        return True
    with tifffile.TiffFile(path) as tf:
        s = tf.series[0]
        return any(a in "IQ" and n > 8 for a, n in zip(s.axes, s.shape))


def read_stack(path, *, max_voxels: int = MAX_VOXELS) -> Stack:
    """Read a Z stack as ``(C, Z, Y, X)`` with its voxel size; 2-D images and one-slice stacks are refused."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"file not found: {p}")
    with open(p, "rb") as fh:
        if fh.read(4) not in _TIFF_MAGIC:
            raise InputError(f"{p.name} is not a TIFF; Z stacks are read from ImageJ or OME-TIFF files")
    try:
        with tifffile.TiffFile(p) as tf:
            if not tf.series:
                raise InputError(f"{p.name} contains no image")
            s = tf.series[0]
            n = int(np.prod(s.shape))
            if n > max_voxels:
                raise InputError(f"{p.name} holds {n:,} voxels, more than the limit of {max_voxels:,} "
                                 "(--max-voxels); crop or bin it first")
            axes, shape = s.axes, tuple(s.shape)
            data = s.asarray()
            voxel, z_known = _voxel_size(tf, s)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot read {p.name}: truncated or damaged TIFF ({type(e).__name__}: {e})") from None
    data = _to_czyx(data.reshape(shape), axes, p)
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise InputError(f"{p.name} contains NaN/inf voxels; replace them before registering")
    warnings = []
    if voxel is None:
        warnings.append(f"{p.name} has no voxel size in its metadata")
    elif not z_known:
        voxel = PixelSize(x=voxel.x, y=voxel.y, z=voxel.x, unit=voxel.unit)
        warnings.append(f"{p.name} has no z spacing; assumed isotropic voxels (z = x = {voxel.x:g} {voxel.unit})")
    return Stack(data=np.ascontiguousarray(data), voxel=voxel, path=p, z_assumed=voxel is not None and not z_known,
                 warnings=warnings)


def _to_czyx(data: np.ndarray, axes: str, p: Path) -> np.ndarray:
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape)) if n > 1 or a in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "Z" not in axes:     # unnamed planes (plain multi-page TIFF, ImageJ stack without hyperstack info)
        for a in "IQ":
            if a in axes:
                axes = axes.replace(a, "Z", 1)
                break
    if "T" in axes:
        raise InputError(f"{p.name} is a time series of {data.shape[axes.index('T')]} time points; save one "
                         "time point as a Z stack")
    if "S" in axes:
        raise InputError(f"{p.name} is an RGB stack; save the channels as grey images")
    if "Z" not in axes:
        raise InputError(f"{p.name} is a 2-D image (axes {axes}), not a Z stack; 3-D registration needs stacks "
                         "for both EM and LM")
    other = [a for a in axes if a not in "CZYX"]
    if other:
        raise InputError(f"{p.name} has axes {axes}; expected a Z stack with optional channels (ZCYX)")
    if "C" not in axes:
        data, axes = data[None], "C" + axes
    return np.transpose(data, [axes.index(a) for a in "CZYX"])


def _voxel_size(tf: tifffile.TiffFile, series) -> tuple[Optional[PixelSize], bool]:
    """(x, y[, z]) voxel size from OME or ImageJ metadata, and whether the z spacing was stated."""
    if tf.is_ome and tf.ome_metadata:
        found = _ome_voxel(tf.ome_metadata)
        if found[0] is not None:
            return found
    if tf.is_imagej:
        meta = tf.imagej_metadata or {}
        unit = normalize_unit(meta.get("unit"))
        page = series.pages[0] if series.pages and series.pages[0] is not None else tf.pages[0]
        xres, yres = _resolution(page, "XResolution"), _resolution(page, "YResolution")
        if unit is None or xres is None:
            return None, False
        spacing = meta.get("spacing")
        z = float(spacing) if spacing is not None and float(spacing) > 0 else None
        zunit = normalize_unit(meta.get("zunit")) if meta.get("zunit") else unit
        if z is not None and zunit and zunit != unit:
            z = convert_length(z, zunit, unit)
        return PixelSize(x=1.0 / xres, y=1.0 / (yres or xres), z=z, unit=unit), z is not None
    return None, False


def _resolution(page, name: str) -> Optional[float]:
    tag = page.tags.get(name)
    if tag is None:
        return None
    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
    r = num / den if num and den else 0.0
    return r if r > 0 and np.isfinite(r) else None


def _ome_voxel(xml: str) -> tuple[Optional[PixelSize], bool]:
    try:
        pix = ET.fromstring(xml).find(".//{*}Pixels")
    except ET.ParseError:
        return None, False
    if pix is None or pix.get("PhysicalSizeX") is None:
        return None, False
    unit = normalize_unit(pix.get("PhysicalSizeXUnit", "µm"))
    if unit is None:
        return None, False
    vals = {}
    for a in "XYZ":
        v = pix.get(f"PhysicalSize{a}")
        u = normalize_unit(pix.get(f"PhysicalSize{a}Unit", "µm"))
        if v is not None and float(v) > 0 and u is not None:
            vals[a] = convert_length(float(v), u, unit)
    if "X" not in vals:
        return None, False
    return PixelSize(x=vals["X"], y=vals.get("Y", vals["X"]), z=vals.get("Z"), unit=unit), "Z" in vals


def write_stack(path, data: np.ndarray, voxel: Optional[PixelSize] = None) -> Path:
    """Write ``(Z, Y, X)`` or ``(C, Z, Y, X)`` as a calibrated ImageJ hyperstack (axes ZCYX).

    uint8/uint16/float32 are kept, other types stored as float32; the z spacing is written when known.
    """
    a = np.asarray(data)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.size == 0:
        raise InputError(f"cannot write a stack of shape {np.shape(data)}; expected (Z, Y, X) or (C, Z, Y, X)")
    a = imagej_compatible(a)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"axes": "ZCYX"}
    kw = {}
    if voxel is not None:
        meta["unit"] = normalize_unit(voxel.unit) or "um"
        if voxel.z is not None:
            meta["spacing"] = float(voxel.z)
        kw["resolution"] = (1.0 / voxel.x, 1.0 / voxel.y)
    tifffile.imwrite(p, np.ascontiguousarray(np.transpose(a, (1, 0, 2, 3))), imagej=True, metadata=meta, **kw)
    return p


def wants_3d(em_path, lm_path, *, force: bool = False) -> bool:
    """Whether ``clem-bridge register`` should run the 3-D workflow: both files are Z stacks, or ``force``
    (``--3d``).  One stack with one 2-D image is an :class:`InputError` (no silent 2-D fallback)."""
    em3, lm3 = is_stack(em_path), is_stack(lm_path)
    if em3 != lm3:
        stack, flat = (em_path, lm_path) if em3 else (lm_path, em_path)
        raise InputError(f"{Path(stack).name} is a Z stack but {Path(flat).name} is a 2-D image; register two "
                         "stacks (3-D) or two 2-D images (make a projection or pick a slice in Fiji)")
    return force or em3
