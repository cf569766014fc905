"""Pictures of a fiducial registration: the predicted-TRE map over the EM field and the HSI fusion
(hue and saturation from the LM, intensity from the EM, as in the seed method)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from matplotlib.colors import hsv_to_rgb
from PIL import Image

from ..intensity import percentile_normalise


def save_tre_map_png(path, tre: np.ndarray, em_shape, *, em: Optional[np.ndarray] = None,
                     beads: Optional[np.ndarray] = None, unit: str = "nm") -> Path:
    """Plot the predicted TRE grid ``tre`` (sampled evenly over an EM field of ``em_shape``), with the EM
    underneath when given and the matched beads (EM pixels, (N, 2)) as circles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, w = em_shape
    fig = Figure(figsize=(6.4, 5.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    if em is not None:
        ax.imshow(percentile_normalise(em[::max(1, max(em.shape) // 1024), ::max(1, max(em.shape) // 1024)]),
                  cmap="gray", extent=extent)
    im = ax.imshow(tre, cmap="viridis", extent=extent, alpha=0.55 if em is not None else 1.0,
                   interpolation="bilinear")
    ys, xs = np.linspace(0, h - 1, tre.shape[0]), np.linspace(0, w - 1, tre.shape[1])
    if np.ptp(tre) > 0:
        cs = ax.contour(xs, ys, tre, levels=6, colors="white", linewidths=0.7)
        ax.clabel(cs, fmt="%.0f", fontsize=7)
    if beads is not None and len(beads):
        ax.scatter(beads[:, 0], beads[:, 1], s=40, facecolors="none", edgecolors="red", linewidths=1.2)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(f"predicted target registration error ({unit})")
    fig.colorbar(im, ax=ax, label=unit)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    return p


def fusion_rgb(em: np.ndarray, lm: np.ndarray, *, hue: float = 0.0, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """HSI fusion → uint8 (H, W, 3): hue ``hue`` (0 red, 1/3 green, …) with saturation from the LM signal
    (warped onto the EM grid; its median, taken as background, is unsaturated), intensity from the EM."""
    if em.shape != lm.shape:
        raise ValueError(f"the LM ({lm.shape}) must be warped onto the EM grid ({em.shape}) first")
    sat = percentile_normalise(lm, 50.0, 99.8, mask=mask)
    if mask is not None:
        sat = sat * mask
    val = 0.15 + 0.85 * percentile_normalise(em, 0.5, 99.5)
    hsv = np.stack([np.full(em.shape, hue % 1.0, np.float32), sat, val], axis=-1)
    return (hsv_to_rgb(hsv) * 255 + 0.5).astype(np.uint8)


def save_fusion_png(path, em: np.ndarray, lm: np.ndarray, **kw) -> Path:
    p = Path(path)
    Image.fromarray(fusion_rgb(em, lm, **kw)).save(p, compress_level=1)
    return p
