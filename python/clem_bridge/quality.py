"""Registration quality on the overlap (NCC, histogram MI, MS-SSIM) and preview images (overlay, MI curve)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from pytorch_msssim import ms_ssim, ssim

from .intensity import percentile_normalise
from .transforms import area_resize

COLOURS = {"magenta": (1.0, 0.0, 1.0), "green": (0.0, 1.0, 0.0), "cyan": (0.0, 1.0, 1.0),
           "yellow": (1.0, 1.0, 0.0), "red": (1.0, 0.0, 0.0), "blue": (0.2, 0.4, 1.0), "orange": (1.0, 0.5, 0.0)}
DEFAULT_COLOURS = ("magenta", "green", "cyan", "yellow", "orange")
MIN_OVERLAP = 64            # pixels; below this the metrics are reported as 0
SSIM_MAX_SIDE = 1024        # MS-SSIM is computed on the overlap box binned to at most this size


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally long value arrays."""
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0


def histogram_mi(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Mutual information (nats) of two value arrays from a ``bins``×``bins`` joint histogram."""
    joint, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins)
    p = joint / max(joint.sum(), 1)
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


def inner_box(mask: np.ndarray, max_side: int = 64) -> Optional[tuple[slice, slice]]:
    """Largest axis-aligned rectangle fully inside ``mask`` (found on a grid of at most ``max_side`` cells)."""
    h, w = mask.shape
    f = max(1, int(np.ceil(max(h, w) / max_side)))
    gh, gw = h // f, w // f
    if gh == 0 or gw == 0:
        return None
    grid = mask[:gh * f, :gw * f].reshape(gh, f, gw, f).all(axis=(1, 3))
    best, box = 0, None
    heights = np.zeros(gw, int)
    for r in range(gh):                                  # maximal rectangle in a histogram, row by row
        heights = np.where(grid[r], heights + 1, 0)
        stack: list[int] = []
        for c in range(gw + 1):
            hc = heights[c] if c < gw else 0
            while stack and heights[stack[-1]] >= hc:
                top = stack.pop()
                left = stack[-1] + 1 if stack else 0
                area = heights[top] * (c - left)
                if area > best:
                    best, box = area, (r - heights[top] + 1, r + 1, left, c)
            stack.append(c)
    if box is None:
        return None
    r0, r1, c0, c1 = box
    return slice(r0 * f, r1 * f), slice(c0 * f, c1 * f)


def _ssim_score(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM when the box is large enough (> 160 px a side), else SSIM with the largest window that fits."""
    s = max(a.shape) / SSIM_MAX_SIDE
    if s > 1:
        size = (max(int(a.shape[0] / s), 1), max(int(a.shape[1] / s), 1))
        a, b = area_resize(a, size)[0], area_resize(b, size)[0]
    ta, tb = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None] for x in (a, b))
    side = min(a.shape)
    with torch.no_grad():
        if side > 160:
            return float(ms_ssim(ta, tb, data_range=1.0))
        win = min(11, side if side % 2 else side - 1)
        if win < 3:
            return 0.0
        return float(ssim(ta, tb, data_range=1.0, win_size=win))


def overlap_metrics(fixed: np.ndarray, warped_moving: np.ndarray, mask: Optional[np.ndarray] = None,
                    bins: int = 32) -> dict[str, float]:
    """NCC, histogram MI (nats) and MS-SSIM between the EM and the warped LM where ``mask`` is True.

    MS-SSIM is taken on the largest rectangle inside the overlap, after flipping the LM's
    contrast when it anti-correlates with the EM (multimodal pairs).  Also reports ``overlap`` (fraction of the fixed grid covered).  With fewer than
    ``MIN_OVERLAP`` overlapping pixels every score is 0.
    """
    f = np.asarray(fixed, dtype=np.float32)
    m = np.asarray(warped_moving, dtype=np.float32)
    if f.shape != m.shape:
        raise ValueError(f"fixed {f.shape} and warped moving {m.shape} differ in shape")
    mask = np.ones(f.shape, bool) if mask is None else np.asarray(mask, bool)
    n = int(mask.sum())
    out = {"overlap": n / mask.size, "ncc": 0.0, "mi": 0.0, "ms_ssim": 0.0}
    if n < MIN_OVERLAP:
        return out
    fv, mv = f[mask], m[mask]
    out["ncc"] = ncc(fv, mv)
    out["mi"] = histogram_mi(fv, mv, bins)
    box = inner_box(mask)
    if box is not None:
        mb = m[box] if out["ncc"] >= 0 else -m[box]
        out["ms_ssim"] = _ssim_score(percentile_normalise(f[box], 1, 99), percentile_normalise(mb, 1, 99))
    return out


# --- previews --------------------------------------------------------------------------

def _rgb(colour) -> np.ndarray:
    if isinstance(colour, str):
        if colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}; use one of {sorted(COLOURS)} or an (r, g, b) tuple")
        return np.array(COLOURS[colour], np.float32)
    c = np.asarray(colour, np.float32)
    return c / 255.0 if c.max() > 1 else c


def overlay_rgb(em: np.ndarray, channels: Sequence[np.ndarray], colours: Optional[Sequence] = None,
                mask: Optional[np.ndarray] = None) -> np.ndarray:
    """EM in grey plus each LM channel added in its colour (percentile-normalised) → uint8 (H, W, 3)."""
    grey = percentile_normalise(em, 0.5, 99.5)
    colours = list(colours) if colours is not None else list(DEFAULT_COLOURS)
    if len(colours) < len(channels):
        colours += [DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)] for i in range(len(colours), len(channels))]
    out = 0.75 * np.repeat(grey[..., None], 3, axis=2)
    for ch, col in zip(channels, colours):
        if ch.shape != grey.shape:
            raise ValueError(f"channel shape {ch.shape} differs from the EM {grey.shape}")
        c = percentile_normalise(ch, 1.0, 99.5, mask=mask)
        if mask is not None:
            c = c * mask
        out += 0.8 * c[..., None] * _rgb(col)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_overlay_png(path, em: np.ndarray, channels: Sequence[np.ndarray], colours: Optional[Sequence] = None,
                     mask: Optional[np.ndarray] = None, max_side: Optional[int] = 4096) -> Path:
    """Write :func:`overlay_rgb` as PNG, binned so the longer side is at most ``max_side``."""
    rgb = overlay_rgb(em, channels, colours, mask)
    if max_side and max(rgb.shape[:2]) > max_side:
        s = max_side / max(rgb.shape[:2])
        rgb = area_resize(rgb, (max(int(rgb.shape[0] * s), 1), max(int(rgb.shape[1] * s), 1)))[0]
    p = Path(path)
    Image.fromarray(rgb).save(p, compress_level=1)   # zlib level 1: a third of the default's time, ~2 % larger
    return p


def save_mi_curve_png(path, mi_curve: Sequence[float], title: str = "MINE mutual-information estimate") -> Path:
    """Plot the MI estimate per iteration as a 600×350 PNG with Pillow (matplotlib's import alone would take
    about a fifth of a command-line registration)."""
    w, h, left, right, top, bottom = 600, 350, 64, 16, 34, 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.text((w // 2, 10), title, fill="black", anchor="mt")
    draw.text((w // 2, h - 12), "iteration", fill="black", anchor="mb")
    draw.text((6, top - 14), "MI (nats)", fill="black")
    x0, y0, x1, y1 = left, top, w - right, h - bottom
    draw.rectangle((x0, y0, x1, y1), outline="black")
    y = np.asarray(list(mi_curve), dtype=float)
    y = y[np.isfinite(y)]
    if not y.size:
        draw.text(((x0 + x1) // 2, (y0 + y1) // 2), "no MI curve recorded", fill="black", anchor="mm")
    else:
        lo, hi = float(y.min()), float(y.max())
        lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-12 else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        xs = x0 + (x1 - x0) * (np.arange(y.size) / max(y.size - 1, 1))
        ys = y1 - (y1 - y0) * (y - lo) / (hi - lo)
        for v in np.linspace(lo, hi, 5):                                    # y ticks with labels
            ty = y1 - (y1 - y0) * (v - lo) / (hi - lo)
            draw.line((x0 - 4, ty, x0, ty), fill="black")
            draw.text((x0 - 6, ty), f"{v:.3g}", fill="black", anchor="rm")
        for k in np.unique(np.linspace(1, y.size, min(y.size, 6)).round().astype(int)):   # x ticks
            tx = x0 + (x1 - x0) * ((k - 1) / max(y.size - 1, 1))
            draw.line((tx, y1, tx, y1 + 4), fill="black")
            draw.text((tx, y1 + 6), str(k), fill="black", anchor="mt")
        draw.line(list(zip(xs.tolist(), ys.tolist())) if y.size > 1 else [(x0, ys[0]), (x1, ys[0])],
                  fill=(31, 119, 180), width=2)
    p = Path(path)
    img.save(p)
    return p
