"""3-D transform files for Fiji: BigWarp 3-D landmarks CSV and the moving stack's ``-bigWarp.xml``; readers.

Every writer takes the 4×4 ``fixed_to_moving`` of :mod:`clem_bridge.transforms3d` (EM voxel → LM voxel);
every reader returns it.  Formats as in ``fiji-interop.md`` (§1, §2), in 3-D:

* **BigWarp landmarks CSV**: no header, all fields quoted, 8 per row:
  ``"Pt-n","true",moving_x,moving_y,moving_z,fixed_x,fixed_y,fixed_z`` — moving (LM) point first, each
  in its own stack's world units (``voxel index · voxel size``, origin 0).  The points are a 3×3×3 grid
  spanning the EM volume and their LM images, so BigWarp's *Affine* mode (least squares moving → fixed,
  used inverted) reproduces the matrix exactly.
* **``-bigWarp.xml``** (SpimData 0.2) for the LM stack: its ViewRegistration lists
  ``[BigWarp: Affine (moving world → fixed world), calibration (moving voxel → moving world)]`` as
  row-major 3×4 affines (the first listed is applied last); the TIFF is referenced through the
  ``spimreconstruction.filemap2`` loader.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .errors import InputError
from .export import fit_affine, read_bigwarp_landmarks, spimdata_model, write_landmark_rows, write_spimdata_xml
from .result import Registration
from .schema import PixelSize
from .transforms3d import apply_to_points3d, as_matrix4, voxel_matrix

FILE_NAMES_3D = {"bigwarp_csv": "bigwarp_landmarks3d.csv", "bigwarp_xml": "moving-bigWarp.xml"}


def _voxel(ps: Optional[PixelSize]) -> tuple[float, float, float]:
    """(x, y, z) voxel size; 1 where unknown (BigWarp's default calibration)."""
    if ps is None:
        return (1.0, 1.0, 1.0)
    return (ps.x, ps.y, ps.z if ps.z is not None else ps.x)


def landmark_grid3d(fixed_shape, n: int = 3) -> np.ndarray:
    """``(n³, 3)`` EM voxel points ``(x, y, z)`` on a grid spanning the volume, corners included."""
    d, h, w = (int(s) for s in fixed_shape)
    zs, ys, xs = np.meshgrid(np.linspace(0, d - 1, n), np.linspace(0, h - 1, n), np.linspace(0, w - 1, n),
                             indexing="ij")
    return np.stack([xs.ravel(), ys.ravel(), zs.ravel()], axis=1)


def bigwarp_landmarks3d(fixed_to_moving, fixed_shape, *, fixed_pixel_size: Optional[PixelSize] = None,
                        moving_pixel_size: Optional[PixelSize] = None, n: int = 3) -> np.ndarray:
    """``(N, 6)`` rows ``mx, my, mz, fx, fy, fz`` in world units (BigWarp's 3-D column order)."""
    fixed_vox = landmark_grid3d(fixed_shape, n)
    moving_vox = apply_to_points3d(fixed_to_moving, fixed_vox)
    return np.hstack([moving_vox * _voxel(moving_pixel_size), fixed_vox * _voxel(fixed_pixel_size)])


def write_bigwarp_csv3d(path, fixed_to_moving, fixed_shape, *, fixed_pixel_size: Optional[PixelSize] = None,
                        moving_pixel_size: Optional[PixelSize] = None, n: int = 3) -> Path:
    """Write a BigWarp 3-D landmarks CSV (moving columns first, world units) reproducing the affine."""
    rows = bigwarp_landmarks3d(fixed_to_moving, fixed_shape, fixed_pixel_size=fixed_pixel_size,
                               moving_pixel_size=moving_pixel_size, n=n)
    return write_landmark_rows(path, rows)


def read_bigwarp_csv3d(path, *, fixed_pixel_size: Optional[PixelSize] = None,
                       moving_pixel_size: Optional[PixelSize] = None) -> np.ndarray:
    """``fixed_to_moving`` (voxels) that BigWarp's Affine mode derives from a 3-D landmarks CSV."""
    m, fx = read_bigwarp_landmarks(path, ndim=3)
    world = fit_affine(m, fx)          # moving world → fixed world (mpicbg AffineModel3D.fit)
    return np.linalg.inv(np.linalg.inv(voxel_matrix(_voxel(fixed_pixel_size))) @ world
                         @ voxel_matrix(_voxel(moving_pixel_size)))


def write_bigwarp_xml3d(path, fixed_to_moving, moving_shape, *, moving_file: str = "moving.tif",
                        fixed_pixel_size: Optional[PixelSize] = None,
                        moving_pixel_size: Optional[PixelSize] = None) -> Path:
    """Write the SpimData XML of the LM stack ``moving_file`` (relative to the XML) carrying the registration."""
    s_m, s_f = voxel_matrix(_voxel(moving_pixel_size)), voxel_matrix(_voxel(fixed_pixel_size))
    world = s_f @ np.linalg.inv(as_matrix4(fixed_to_moving)) @ np.linalg.inv(s_m)   # moving world → fixed world
    d, h, w = (int(s) for s in moving_shape)
    return write_spimdata_xml(path, world, s_m, (w, h, d), moving_file=moving_file,
                              unit=moving_pixel_size.unit if moving_pixel_size else "pixel")


def read_bigwarp_xml3d(path, *, fixed_pixel_size: Optional[PixelSize] = None) -> np.ndarray:
    """``fixed_to_moving`` (voxels) from a moving-stack SpimData XML (its ViewRegistration maps LM voxels
    to EM world units; ``fixed_pixel_size`` turns those into EM voxels)."""
    model = spimdata_model(path)
    try:
        return np.linalg.inv(np.linalg.inv(voxel_matrix(_voxel(fixed_pixel_size))) @ as_matrix4(model))
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None


def write_all3d(reg: Registration, out_dir, *, moving_file: str = "moving.tif") -> dict[str, Path]:
    """Write the 3-D Fiji transform files of ``reg`` (ndim 3) into ``out_dir``; returns their paths by kind."""
    if reg.ndim != 3:
        raise InputError("write_all3d needs a 3-D registration (ndim 3)")
    out = Path(out_dir)
    kw = dict(fixed_pixel_size=reg.fixed_pixel_size, moving_pixel_size=reg.moving_pixel_size)
    return {"bigwarp_csv": write_bigwarp_csv3d(out / FILE_NAMES_3D["bigwarp_csv"], reg.fixed_to_moving,
                                               reg.fixed_shape, **kw),
            "bigwarp_xml": write_bigwarp_xml3d(out / FILE_NAMES_3D["bigwarp_xml"], reg.fixed_to_moving,
                                               reg.moving_shape, moving_file=moving_file, **kw)}
