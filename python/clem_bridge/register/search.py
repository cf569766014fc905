"""Coarse global initialisation: rotation × scale sweep with translation search by template matching.

Both images are reduced to the gradient magnitude of a blurred copy (invariant to contrast inversion,
which is common between EM and LM), the moving gradient is resampled onto an enlarged fixed grid for
every candidate rotation/scale, and ``cv2.matchTemplate`` (normalised correlation coefficient) finds the
best translation.  Matrices follow :mod:`clem_bridge.transforms` (fixed pixel → moving pixel).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..transforms import center_of, from_params


@dataclass(frozen=True)
class SearchResult:
    fixed_to_moving: np.ndarray
    rotation_deg: float
    scale: float
    translation: tuple[float, float]
    score: float


def gradient_magnitude(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gradient magnitude of a Gaussian-blurred float32 copy of ``image``."""
    img = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma) if sigma > 0 else image.astype(np.float32)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def _subpixel(resp: np.ndarray, loc: tuple[int, int]) -> tuple[float, float]:
    """Parabolic sub-pixel refinement of a 2-D correlation peak at ``loc`` = (x, y)."""
    x, y = loc
    dx = dy = 0.0
    if 0 < x < resp.shape[1] - 1:
        a, b, c = resp[y, x - 1], resp[y, x], resp[y, x + 1]
        den = a - 2 * b + c
        dx = 0.5 * (a - c) / den if den < 0 else 0.0
    if 0 < y < resp.shape[0] - 1:
        a, b, c = resp[y - 1, x], resp[y, x], resp[y + 1, x]
        den = a - 2 * b + c
        dy = 0.5 * (a - c) / den if den < 0 else 0.0
    return x + float(np.clip(dx, -0.5, 0.5)), y + float(np.clip(dy, -0.5, 0.5))


def _match(fixed_grad: np.ndarray, moving_grad: np.ndarray, base: np.ndarray, margin: tuple[int, int]):
    """Best translation for one candidate ``base`` (fixed px → moving px); returns (score, matrix)."""
    h, w = fixed_grad.shape
    my, mx = margin
    shift = np.array([[1, 0, -mx], [0, 1, -my], [0, 0, 1.0]])  # canvas px → fixed px
    canvas = cv2.warpAffine(moving_grad, (base @ shift)[:2], (w + 2 * mx, h + 2 * my),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0.0)
    resp = cv2.matchTemplate(canvas, fixed_grad, cv2.TM_CCOEFF_NORMED)
    _, score, _, loc = cv2.minMaxLoc(resp)
    u, v = _subpixel(resp, loc)
    t = np.array([[1, 0, u - mx], [0, 1, v - my], [0, 0, 1.0]])
    return float(score), base @ t


def global_search(fixed: np.ndarray, moving: np.ndarray, *, rotation_range_deg: float = 45.0,
                  rotation_step_deg: float = 3.0, scales=(1.0,), max_shift_frac: float = 0.25,
                  sigma: float = 1.0) -> SearchResult:
    """Search rotation (about the image centres), scale and translation; return the best candidate.

    ``fixed`` and ``moving`` are small (about 100–200 px) images with similar pixel sizes.
    Translations of up to ``max_shift_frac`` of the fixed size are searched in every candidate.
    """
    fg = gradient_magnitude(fixed, sigma)
    mg = gradient_magnitude(moving, sigma)
    margin = (int(np.ceil(max_shift_frac * fixed.shape[0])), int(np.ceil(max_shift_frac * fixed.shape[1])))
    cf, cm = center_of(fixed.shape), center_of(moving.shape)

    def candidate(angle: float, scale: float) -> np.ndarray:
        # fixed px → moving px: rotate/scale about the fixed centre, land on the moving centre
        return from_params(rotation_deg=angle, scale=scale, center=cf,
                           translation=(cm[0] - cf[0], cm[1] - cf[1]))

    def sweep(angles, scale_list):
        out = []
        for s in scale_list:
            for a in angles:
                score, mat = _match(fg, mg, candidate(a, s), margin)
                out.append((score, a, s, mat))
        return max(out, key=lambda r: r[0])

    n = int(round(rotation_range_deg / rotation_step_deg))
    best = sweep([k * rotation_step_deg for k in range(-n, n + 1)], scales)
    # local refinement: rotation in steps of 1/6 of the sweep, then scale in quarter steps of the sweep
    fine = sweep([best[1] + k * rotation_step_deg / 6.0 for k in range(-5, 6)], [best[2]])
    best = max(best, fine, key=lambda r: r[0])
    if len(scales) > 1:
        ratio = (max(scales) / min(scales)) ** (1.0 / (len(scales) - 1))
        fine = sweep([best[1]], [best[2] * ratio ** (k / 4.0) for k in range(-3, 4)])
        best = max(best, fine, key=lambda r: r[0])
    score, angle, scale, mat = best
    return SearchResult(fixed_to_moving=mat, rotation_deg=float(angle), scale=float(scale),
                        translation=(float(mat[0, 2]), float(mat[1, 2])), score=score)
