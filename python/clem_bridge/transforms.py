"""The one coordinate convention of clem-bridge, and the geometry built on it.

Convention (used by every module, exporter, server response and Fiji script):

* Pixel coordinates ``(x, y)``: x to the right (column), y down (row), the origin
  at the **centre** of the top-left pixel, so pixel ``img[r, c]`` is centred at
  ``(x, y) = (c, r)``.  This matches ImageJ's ``getInterpolatedValue`` and
  OpenCV's ``warpAffine``.
* A registration result is a 3×3 homogeneous matrix ``fixed_to_moving`` that maps
  a **fixed (EM) pixel → moving (LM) pixel**: ``[xm, ym, 1]ᵀ = A · [xf, yf, 1]ᵀ``.
  This is the direction needed to resample the LM onto the EM grid.
* Its inverse is always named explicitly ``moving_to_fixed``.
* Image shapes are numpy shapes ``(height, width)``.

Helpers here convert to and from the normalised ``[-1, 1]`` grid of
``torch.nn.functional.grid_sample(align_corners=True)``, rescale a matrix found
at a binned working resolution to full resolution, compose, invert, apply to
points and warp any number of LM channels onto the EM grid.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

Shape = Sequence[int]

INTERPOLATION_ORDERS = {"nearest": 0, "bilinear": 1, "bicubic": 3}


def as_matrix(m) -> np.ndarray:
    """Return ``m`` (3×3 or 2×3, nested lists or array) as a float64 3×3 matrix."""
    a = np.asarray(m, dtype=np.float64)
    if a.shape == (2, 3):
        a = np.vstack([a, [0.0, 0.0, 1.0]])
    if a.shape != (3, 3) or not np.all(np.isfinite(a)):
        raise ValueError(f"expected a finite 3x3 (or 2x3) affine matrix, got shape {a.shape}")
    if not np.allclose(a[2], [0.0, 0.0, 1.0]):
        raise ValueError("the last row of an affine matrix must be [0, 0, 1]")
    if abs(np.linalg.det(a[:2, :2])) < 1e-12:
        raise ValueError("the affine matrix is singular")
    return a


def identity() -> np.ndarray:
    return np.eye(3)


def invert(m) -> np.ndarray:
    """Inverse matrix (``fixed_to_moving`` ↔ ``moving_to_fixed``)."""
    return np.linalg.inv(as_matrix(m))


def compose(*matrices) -> np.ndarray:
    """Matrix product ``M1 @ M2 @ …``: the **last** matrix is applied first to points."""
    out = np.eye(3)
    for m in matrices:
        out = out @ as_matrix(m)
    return out


def apply_to_points(m, points) -> np.ndarray:
    """Map an ``(N, 2)`` array of ``(x, y)`` points through the 3×3 matrix ``m``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    a = as_matrix(m)
    return p @ a[:2, :2].T + a[:2, 2]


def from_params(*, rotation_deg: float = 0.0, scale: float | tuple[float, float] = 1.0,
                shear: float = 0.0, translation: tuple[float, float] = (0.0, 0.0),
                center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Build ``T(center + translation) · R · Shear · S · T(-center)``.

    ``rotation_deg`` is counter-clockwise on screen for positive angles in the
    y-down frame only in the sense of the matrix ``[[c, -s], [s, c]]``; ``shear`` is
    the x-shear factor.  Used to build known transforms in tests and phantoms.
    """
    sx, sy = (scale, scale) if np.isscalar(scale) else scale
    t = np.deg2rad(rotation_deg)
    c, s = np.cos(t), np.sin(t)
    r = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    sh = np.array([[1, shear, 0], [0, 1, 0], [0, 0, 1.0]])
    sc = np.diag([sx, sy, 1.0])
    cx, cy = center
    tx, ty = translation
    return (np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1.0]]) @ r @ sh @ sc
            @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]]))


def scale_of(m) -> float:
    """Isotropic scale of a 3×3 matrix: √|det| of its linear part (area ratio, moving px per fixed px)."""
    return float(np.sqrt(abs(np.linalg.det(as_matrix(m)[:2, :2]))))


def center_of(shape: Shape) -> tuple[float, float]:
    """Pixel coordinates ``(x, y)`` of the centre of an image of ``shape`` (h, w)."""
    return ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)


# --- normalised grid_sample coordinates ------------------------------------------------

def pixel_to_normalized(shape: Shape, align_corners: bool = True) -> np.ndarray:
    """Matrix mapping pixel ``(x, y)`` to grid_sample ``[-1, 1]`` coords.

    ``align_corners=True``: ±1 are the centres of the border pixels; ``False``: ±1 are the outer pixel edges.
    """
    h, w = int(shape[0]), int(shape[1])
    if align_corners:
        return np.array([[2.0 / max(w - 1, 1), 0, -1.0], [0, 2.0 / max(h - 1, 1), -1.0], [0, 0, 1.0]])
    return np.array([[2.0 / w, 0, 1.0 / w - 1.0], [0, 2.0 / h, 1.0 / h - 1.0], [0, 0, 1.0]])


def to_normalized(fixed_to_moving, fixed_shape: Shape, moving_shape: Shape) -> np.ndarray:
    """Pixel ``fixed_to_moving`` → the 3×3 matrix in normalised coordinates (``theta``)."""
    return pixel_to_normalized(moving_shape) @ as_matrix(fixed_to_moving) @ np.linalg.inv(
        pixel_to_normalized(fixed_shape))


def from_normalized(theta, fixed_shape: Shape, moving_shape: Shape) -> np.ndarray:
    """Normalised ``theta`` (3×3 or 2×3, fixed→moving) → pixel ``fixed_to_moving``."""
    return np.linalg.inv(pixel_to_normalized(moving_shape)) @ as_matrix(theta) @ pixel_to_normalized(
        fixed_shape)


# --- resolution changes ----------------------------------------------------------------

def resize_matrix(src_shape: Shape, dst_shape: Shape) -> np.ndarray:
    """Matrix mapping pixel coords of an image resized to ``dst_shape`` back to ``src_shape``.

    Uses the pixel-area convention of ``cv2.resize``/``skimage.transform.resize``:
    ``x_src = (x_dst + 0.5) · (w_src / w_dst) − 0.5``.  For binning by an integer
    factor ``b`` this gives ``x_src = b·x_dst + (b − 1)/2``.
    """
    sx = src_shape[1] / dst_shape[1]
    sy = src_shape[0] / dst_shape[0]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def rescale(fixed_to_moving, fixed_full: Shape, fixed_work: Shape,
            moving_full: Shape, moving_work: Shape) -> np.ndarray:
    """Turn a ``fixed_to_moving`` found between working-size images into full resolution."""
    return (resize_matrix(moving_full, moving_work) @ as_matrix(fixed_to_moving)
            @ np.linalg.inv(resize_matrix(fixed_full, fixed_work)))


# --- warping ---------------------------------------------------------------------------

def working_shape(shape: Shape, work_size: int | None) -> tuple[int, int]:
    """``shape`` scaled so its long side is at most ``work_size`` (unchanged when None or smaller)."""
    h, w = int(shape[0]), int(shape[1])
    if not work_size or max(h, w) <= work_size:
        return h, w
    f = work_size / max(h, w)
    return max(1, int(round(h * f))), max(1, int(round(w * f)))


def scaled_shape(shape: Shape, factor: float, min_side: int = 1) -> tuple[int, int]:
    """``shape`` times ``factor`` (rounded), each side at least ``min_side``."""
    return max(min_side, int(round(shape[0] * factor))), max(min_side, int(round(shape[1] * factor)))


def area_resize(img: np.ndarray, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """``img`` resampled to ``shape`` by area averaging (binning), and the matrix mapping the new pixels
    to ``img`` pixels (:func:`resize_matrix`).  The same array and the identity when the shape is unchanged."""
    shape = (int(shape[0]), int(shape[1]))
    if shape == tuple(img.shape[:2]):
        return img, np.eye(3)
    src = img if img.dtype in (np.uint8, np.uint16, np.float32) else img.astype(np.float32)
    return cv2.resize(src, (shape[1], shape[0]), interpolation=cv2.INTER_AREA), resize_matrix(img.shape, shape)


def _scipy_matrix(fixed_to_moving) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) matrix and offset for ``scipy.ndimage.affine_transform``."""
    a = as_matrix(fixed_to_moving)
    swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1.0]])
    b = swap @ a @ swap
    return b[:2, :2], b[:2, 2]


def _mapped(a: np.ndarray, rows: int, cols: int, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Moving-image coordinates (xm, ym) of a block of the output grid (``rows`` × ``cols`` from ``offset``)."""
    ys = np.arange(rows, dtype=np.float64)[:, None] + offset[0]
    xs = np.arange(cols, dtype=np.float64)[None, :] + offset[1]
    return a[0, 0] * xs + a[0, 1] * ys + a[0, 2], a[1, 0] * xs + a[1, 1] * ys + a[1, 2]


def _inside(xm: np.ndarray, ym: np.ndarray, moving_shape: Shape) -> np.ndarray:
    eps = 1e-6
    return ((xm >= -eps) & (xm <= moving_shape[1] - 1 + eps)
            & (ym >= -eps) & (ym <= moving_shape[0] - 1 + eps))


def valid_mask(fixed_to_moving, out_shape: Shape, moving_shape: Shape,
               offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Boolean mask over the output grid: True where the mapped point falls inside the moving image.

    ``offset`` = (row, col) of the output block's top-left pixel in the full output grid
    (for tiled warping).
    """
    xm, ym = _mapped(as_matrix(fixed_to_moving), int(out_shape[0]), int(out_shape[1]), offset)
    return _inside(xm, ym, moving_shape)


def warp_image(image: np.ndarray, fixed_to_moving, out_shape: Shape, *, order: str = "bilinear",
               fill: float = 0.0, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Resample one 2-D moving image onto the fixed grid: ``out[y, x] = image(A · (x, y))``.

    Output dtype equals input dtype (integer outputs are rounded and clipped).
    ``offset`` (row, col) warps only a block of the output grid starting there.
    """
    if order not in INTERPOLATION_ORDERS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATION_ORDERS)}, got {order!r}")
    if image.ndim != 2:
        raise ValueError(f"warp_image expects a 2-D image, got shape {image.shape}")
    src = image.astype(np.float64 if image.dtype == np.float64 else np.float32, copy=False)
    if order == "bilinear":
        out = _bilinear(src, as_matrix(fixed_to_moving), out_shape, float(fill), offset)
    else:
        from scipy import ndimage    # imported here: a quarter second that the bilinear path does not need

        k = INTERPOLATION_ORDERS[order]
        mat, off = _scipy_matrix(fixed_to_moving)
        off = off + mat @ np.asarray(offset, dtype=np.float64)
        out = ndimage.affine_transform(src, mat, offset=off, output_shape=(int(out_shape[0]), int(out_shape[1])),
                                       order=k, mode="constant", cval=float(fill), prefilter=k > 1)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(image.dtype, copy=False)


def _bilinear(src: np.ndarray, a: np.ndarray, out_shape: Shape, fill: float, offset: tuple[int, int],
              block_pixels: int = 1 << 16) -> np.ndarray:
    """Exact bilinear resampling (the result of ``scipy.ndimage.affine_transform(order=1, mode="constant")``),
    in row blocks of about ``block_pixels``; points outside the moving image (as :func:`valid_mask`) get ``fill``."""
    h, w = int(out_shape[0]), int(out_shape[1])
    out = np.empty((h, w), dtype=src.dtype)
    mh, mw = src.shape
    flat = src.ravel()
    dx, dy = int(mw > 1), mw if mh > 1 else 0           # a one-pixel-wide (or -high) image has no neighbour there
    step = max(1, block_pixels // max(w, 1))
    for r0 in range(0, h, step):
        xm, ym = _mapped(a, min(step, h - r0), w, (r0 + offset[0], offset[1]))
        inside = _inside(xm, ym, src.shape)
        np.clip(xm, 0, mw - 1, out=xm)
        np.clip(ym, 0, mh - 1, out=ym)
        x0 = np.minimum(xm.astype(np.intp), max(mw - 2, 0))
        y0 = np.minimum(ym.astype(np.intp), max(mh - 2, 0))
        fx = (xm - x0).astype(src.dtype)
        fy = (ym - y0).astype(src.dtype)
        i = y0 * mw + x0
        top = flat[i] + fx * (flat[i + dx] - flat[i])
        bottom = flat[i + dy] + fx * (flat[i + dy + dx] - flat[i + dy])
        block = top + fy * (bottom - top)
        block[~inside] = fill
        out[r0:r0 + block.shape[0]] = block
    return out


def warp_channels(channels: Iterable[np.ndarray], fixed_to_moving, out_shape: Shape, *,
                  order: str = "bilinear", fill: float = 0.0) -> tuple[list[np.ndarray], np.ndarray]:
    """Warp any number of 2-D LM channels onto the EM grid; returns ``(warped, valid_mask)``."""
    chans = list(channels)
    if not chans:
        raise ValueError("no channels to warp")
    shape0 = chans[0].shape[:2]
    for c in chans:
        if c.shape[:2] != shape0:
            raise ValueError(f"LM channels differ in size: {shape0} vs {c.shape[:2]}")
    warped = [warp_image(c, fixed_to_moving, out_shape, order=order, fill=fill) for c in chans]
    return warped, valid_mask(fixed_to_moving, out_shape, shape0)


def tre(estimated_fixed_to_moving, true_fixed_to_moving, fixed_shape: Shape, *, step: int = 8) -> float:
    """Mean target registration error in moving pixels over a grid of fixed pixels."""
    h, w = int(fixed_shape[0]), int(fixed_shape[1])
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    d = apply_to_points(estimated_fixed_to_moving, pts) - apply_to_points(true_fixed_to_moving, pts)
    return float(np.mean(np.linalg.norm(d, axis=1)))
