"""The 3-D coordinate convention of clem-bridge (volume EM vs LM stacks), and the geometry built on it.

Convention (the 2-D one of :mod:`clem_bridge.transforms`, extended by z):

* Voxel coordinates ``(x, y, z)``: x to the right (column), y down (row), z down the stack (slice
  index); the origin is the **centre** of the first voxel, so ``vol[k, r, c]`` is centred at
  ``(x, y, z) = (c, r, k)``.  Volume shapes are numpy shapes ``(depth, height, width)``.
* A registration is a 4×4 homogeneous matrix ``fixed_to_moving`` mapping a **fixed (EM) voxel → moving
  (LM) voxel**: ``[xm, ym, zm, 1]ᵀ = A · [xf, yf, zf, 1]ᵀ``; ``det < 0`` is allowed (mirrored LM).
  Its inverse is named ``moving_to_fixed``.
* Physical coordinates are voxel coordinates times the voxel size (no origin offset):
  ``p = diag(vx, vy, vz) · v``.  :func:`physical_matrix` / :func:`from_physical` convert a voxel
  ``fixed_to_moving`` to the physical (world-unit) one and back.

Warping: :func:`warp_volume` resamples one LM volume onto (a slab of) the EM grid with scipy or torch;
:func:`warp_volume_tiled` fills a preallocated or memory-mapped output slab by slab, so a 500×1024×1024
EM grid needs only one slab of working memory beyond the LM volume.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

Shape3 = Sequence[int]
Voxel = Sequence[float]

INTERPOLATION_ORDERS = {"nearest": 0, "linear": 1, "cubic": 3}


def as_matrix4(m) -> np.ndarray:
    """Return ``m`` (4×4 or 3×4, nested lists or array) as a finite, invertible float64 4×4 matrix."""
    a = np.asarray(m, dtype=np.float64)
    if a.shape == (3, 4):
        a = np.vstack([a, [0.0, 0.0, 0.0, 1.0]])
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"expected a finite 4x4 (or 3x4) affine matrix, got shape {a.shape}")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError("the last row of a 3-D affine matrix must be [0, 0, 0, 1]")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise ValueError("the affine matrix is singular")
    return a


def translation(t) -> np.ndarray:
    """4×4 translation by ``t = (tx, ty, tz)``."""
    m = np.eye(4)
    m[:3, 3] = np.asarray(t, dtype=np.float64)
    return m


def scaling(s) -> np.ndarray:
    """4×4 diagonal scaling by ``s = (sx, sy, sz)`` (or one number)."""
    s = np.broadcast_to(np.asarray(s, dtype=np.float64), (3,))
    return np.diag([s[0], s[1], s[2], 1.0])


def rotation(axis: str, angle_deg: float) -> np.ndarray:
    """4×4 rotation about ``axis`` ('x', 'y' or 'z'); about z it is the 2-D ``[[c, -s], [s, c]]``."""
    t = np.deg2rad(angle_deg)
    c, s = np.cos(t), np.sin(t)
    i, j = {"z": (0, 1), "x": (1, 2), "y": (2, 0)}[axis]
    m = np.eye(4)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def from_params3d(*, rot_z_deg: float = 0.0, rot_x_deg: float = 0.0, rot_y_deg: float = 0.0,
                  mirror: bool = False, scale=1.0, translation_xyz=(0.0, 0.0, 0.0),
                  center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Build ``T(center + t) · Rz · Rx · Ry · M · S · T(-center)`` (``M`` flips x when ``mirror``).

    Used to build known transforms in tests and phantoms; all quantities in one unit (voxels or µm).
    """
    m = scaling((-1.0, 1.0, 1.0)) if mirror else np.eye(4)
    c = np.asarray(center, dtype=np.float64)
    return (translation(c + np.asarray(translation_xyz, dtype=np.float64)) @ rotation("z", rot_z_deg)
            @ rotation("x", rot_x_deg) @ rotation("y", rot_y_deg) @ m @ scaling(scale) @ translation(-c))


def apply_to_points3d(m, points) -> np.ndarray:
    """Map an ``(N, 3)`` array of ``(x, y, z)`` points through the 4×4 matrix ``m``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    a = as_matrix4(m)
    return p @ a[:3, :3].T + a[:3, 3]


def center_of3d(shape: Shape3) -> np.ndarray:
    """Voxel coordinates ``(x, y, z)`` of the centre of a volume of ``shape`` (d, h, w)."""
    return np.array([(shape[2] - 1) / 2.0, (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0])


# --- physical units ----------------------------------------------------------------------

def voxel_matrix(voxel: Voxel) -> np.ndarray:
    """Voxel ``(x, y, z)`` → physical coordinates for voxel sizes ``(vx, vy, vz)``."""
    return scaling(tuple(float(v) for v in voxel))


def physical_matrix(fixed_to_moving, fixed_voxel: Voxel, moving_voxel: Voxel) -> np.ndarray:
    """Voxel ``fixed_to_moving`` → the same map between physical coordinates (one unit for both)."""
    return voxel_matrix(moving_voxel) @ as_matrix4(fixed_to_moving) @ np.linalg.inv(voxel_matrix(fixed_voxel))


def from_physical(physical, fixed_voxel: Voxel, moving_voxel: Voxel) -> np.ndarray:
    """Physical fixed → moving map → voxel ``fixed_to_moving`` (inverse of :func:`physical_matrix`)."""
    return np.linalg.inv(voxel_matrix(moving_voxel)) @ as_matrix4(physical) @ voxel_matrix(fixed_voxel)


def resize_matrix3d(src_shape: Shape3, dst_shape: Shape3) -> np.ndarray:
    """Voxel coords of a volume resized to ``dst_shape`` → coords in ``src_shape`` (pixel-area convention,
    ``x_src = (x_dst + 0.5) · (w_src / w_dst) − 0.5``, as :func:`clem_bridge.transforms.resize_matrix`)."""
    s = np.array([src_shape[2] / dst_shape[2], src_shape[1] / dst_shape[1], src_shape[0] / dst_shape[0]])
    m = scaling(s)
    m[:3, 3] = 0.5 * s - 0.5
    return m


# --- normalised grid_sample coordinates -----------------------------------------------------

def voxel_to_normalized(shape: Shape3, align_corners: bool = True) -> np.ndarray:
    """Matrix mapping voxel ``(x, y, z)`` to 3-D ``grid_sample`` coordinates in ``[-1, 1]``.

    ``align_corners=True``: ±1 are the centres of the border voxels; ``False``: the outer voxel faces.
    """
    d, h, w = (int(n) for n in shape)
    if align_corners:
        s = np.array([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1), 2.0 / max(d - 1, 1)])
        off = -np.ones(3)
    else:
        s = np.array([2.0 / w, 2.0 / h, 2.0 / d])
        off = s / 2.0 - 1.0
    m = scaling(s)
    m[:3, 3] = off
    return m


def to_normalized3d(fixed_to_moving, fixed_shape: Shape3, moving_shape: Shape3,
                    align_corners: bool = True) -> np.ndarray:
    """Voxel ``fixed_to_moving`` → the 4×4 ``theta`` of ``affine_grid``/``grid_sample`` (fixed → moving)."""
    return (voxel_to_normalized(moving_shape, align_corners) @ as_matrix4(fixed_to_moving)
            @ np.linalg.inv(voxel_to_normalized(fixed_shape, align_corners)))


def from_normalized3d(theta, fixed_shape: Shape3, moving_shape: Shape3, align_corners: bool = True) -> np.ndarray:
    """Normalised ``theta`` (4×4 or 3×4, fixed → moving) → voxel ``fixed_to_moving``."""
    return (np.linalg.inv(voxel_to_normalized(moving_shape, align_corners)) @ as_matrix4(theta)
            @ voxel_to_normalized(fixed_shape, align_corners))


# --- warping -----------------------------------------------------------------------------

def _scipy_matrix(fixed_to_moving) -> tuple[np.ndarray, np.ndarray]:
    """(z, y, x) matrix and offset for ``scipy.ndimage.affine_transform``."""
    rev = np.eye(4)[[2, 1, 0, 3]]
    b = rev @ as_matrix4(fixed_to_moving) @ rev
    return b[:3, :3], b[:3, 3]


def _cast(out: np.ndarray, dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(dtype, copy=False)


def valid_mask3d(fixed_to_moving, out_shape: Shape3, moving_shape: Shape3,
                 offset: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """True where the fixed voxel maps inside the moving volume; ``offset`` = (z, y, x) of the block."""
    a = as_matrix4(fixed_to_moving)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) + o for n, o in zip(out_shape, offset)),
                          indexing="ij", sparse=True)
    ok = np.ones(tuple(int(n) for n in out_shape), dtype=bool)
    eps = 1e-6
    for i, size in enumerate((moving_shape[2], moving_shape[1], moving_shape[0])):
        c = a[i, 0] * x + a[i, 1] * y + a[i, 2] * z + a[i, 3]
        ok &= (c >= -eps) & (c <= size - 1 + eps)
    return ok


def warp_volume(volume: np.ndarray, fixed_to_moving, out_shape: Shape3, *, order: str = "linear",
                fill: float = 0.0, offset: tuple[int, int, int] = (0, 0, 0), backend: str = "scipy") -> np.ndarray:
    """Resample a moving volume onto the fixed grid: ``out[k, r, c] = volume(A · (c, r, k))``.

    ``offset`` (z, y, x) warps only the block of the fixed grid starting there.  ``backend='torch'``
    uses ``grid_sample`` (nearest/linear only).  The output has the input's dtype (integers rounded, clipped).
    """
    if order not in INTERPOLATION_ORDERS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATION_ORDERS)}, got {order!r}")
    if volume.ndim != 3:
        raise ValueError(f"warp_volume expects a 3-D volume (z, y, x), got shape {volume.shape}")
    out_shape = tuple(int(n) for n in out_shape)
    block = translation(np.asarray(offset, dtype=np.float64)[::-1])    # block voxel → full fixed voxel
    a = as_matrix4(fixed_to_moving) @ block
    src = volume.astype(np.float64 if volume.dtype == np.float64 else np.float32, copy=False)
    if backend == "scipy":
        k = INTERPOLATION_ORDERS[order]
        mat, off = _scipy_matrix(a)
        out = ndimage.affine_transform(src, mat, offset=off, output_shape=out_shape, order=k,
                                       mode="constant", cval=float(fill), prefilter=k > 1)
    elif backend == "torch":
        if order == "cubic":
            raise ValueError("the torch backend interpolates 'nearest' or 'linear' only")
        out = _warp_torch(src, a, out_shape, order, fill)
    else:
        raise ValueError(f"backend must be 'scipy' or 'torch', got {backend!r}")
    return _cast(out, volume.dtype)


def _warp_torch(src: np.ndarray, a: np.ndarray, out_shape, order: str, fill: float) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    theta = to_normalized3d(a, out_shape, src.shape)
    t = torch.from_numpy(np.ascontiguousarray(src))[None, None]
    th = torch.from_numpy(theta[:3]).to(t.dtype)[None]
    grid = F.affine_grid(th, [1, 1, *out_shape], align_corners=True)
    mode = "bilinear" if order == "linear" else "nearest"
    both = torch.cat([t, torch.ones_like(t)], dim=1)
    s = F.grid_sample(both, grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
    return (s[0] + (1.0 - s[1]) * fill).numpy()


def warp_volume_tiled(volume: np.ndarray, fixed_to_moving, out_shape: Shape3, *, out=None,
                      slab: int = 16, order: str = "linear", fill: float = 0.0, dtype=None) -> np.ndarray:
    """Warp ``volume`` onto a large fixed grid slab by slab (along z) into ``out``.

    ``out`` is a preallocated array, a path (a ``.npy`` memory map is created there) or None (a new array).
    Each slab reads only the part of the moving volume it maps into, so the working memory is one slab of
    output plus that sub-volume.  Returns ``out``.
    """
    out_shape = tuple(int(n) for n in out_shape)
    dtype = np.dtype(dtype or volume.dtype)
    if out is None:
        out = np.empty(out_shape, dtype=dtype)
    elif not isinstance(out, np.ndarray):
        out = np.lib.format.open_memmap(str(out), mode="w+", dtype=dtype, shape=out_shape)
    if tuple(out.shape) != out_shape:
        raise ValueError(f"out has shape {out.shape}, expected {out_shape}")
    a = as_matrix4(fixed_to_moving)
    margin = 2 if order != "cubic" else 4
    for z0 in range(0, out_shape[0], slab):
        z1 = min(z0 + slab, out_shape[0])
        block = translation((0.0, 0.0, float(z0)))
        corners = np.array([[x, y, z] for x in (0, out_shape[2] - 1) for y in (0, out_shape[1] - 1)
                            for z in (0, z1 - z0 - 1)], dtype=np.float64)
        mc = apply_to_points3d(a @ block, corners)
        lo = np.maximum(np.floor(mc.min(0)).astype(int) - margin, 0)                  # (x, y, z)
        hi = np.minimum(np.ceil(mc.max(0)).astype(int) + margin + 1, np.array(volume.shape[::-1]))
        if np.any(hi <= lo):
            out[z0:z1] = _cast(np.full((z1 - z0,) + out_shape[1:], fill, dtype=np.float64), dtype)
            continue
        sub = np.asarray(volume[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]).astype(dtype, copy=False)
        local = translation(-lo.astype(np.float64)) @ a @ block
        out[z0:z1] = warp_volume(sub, local, (z1 - z0,) + out_shape[1:], order=order, fill=fill)
    if isinstance(out, np.memmap):
        out.flush()
    return out


# --- errors ------------------------------------------------------------------------------

def _grid_points(shape: Shape3, step: int) -> np.ndarray:
    d, h, w = (int(n) for n in shape)
    zs, ys, xs = np.mgrid[0:d:max(1, min(step, d // 4 or 1)), 0:h:step, 0:w:step]
    return np.stack([xs.ravel(), ys.ravel(), zs.ravel()], axis=1).astype(np.float64)


def tre3d(estimated_fixed_to_moving, true_fixed_to_moving, fixed_shape: Shape3, *, step: int = 8) -> float:
    """Mean target registration error in moving voxels over a grid of fixed voxels."""
    pts = _grid_points(fixed_shape, step)
    d = apply_to_points3d(estimated_fixed_to_moving, pts) - apply_to_points3d(true_fixed_to_moving, pts)
    return float(np.mean(np.linalg.norm(d, axis=1)))


def tre3d_components(estimated_fixed_to_moving, true_fixed_to_moving, fixed_shape: Shape3, *,
                     fixed_voxel: Voxel, moving_voxel: Voxel, step: int = 8) -> dict[str, float]:
    """Mean errors split as the 3-D CLEM targets state them, over a grid of fixed voxels.

    ``xy_fixed_voxels``: lateral error in EM voxel widths; ``z_moving_slices``: axial error in LM slices;
    ``physical``: full 3-D error in the voxel sizes' unit.
    """
    pts = _grid_points(fixed_shape, step)
    d = (apply_to_points3d(estimated_fixed_to_moving, pts)
         - apply_to_points3d(true_fixed_to_moving, pts)) * np.asarray(moving_voxel, dtype=np.float64)
    return {"xy_fixed_voxels": float(np.mean(np.hypot(d[:, 0], d[:, 1]))) / float(fixed_voxel[0]),
            "z_moving_slices": float(np.mean(np.abs(d[:, 2]))) / float(moving_voxel[2]),
            "physical": float(np.mean(np.linalg.norm(d, axis=1)))}

