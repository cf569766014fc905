"""How sure a correlation is: each stained nucleus aligned on its own, and the expected error that follows.

Under the registration, every stained nucleus (a component of the nuclei mask of :func:`.nuclei.nuclei_view`)
is shifted on its own to where its chromatin best matches the EM's dense heterochromatin (NCC inside that
nucleus, integer search within ``LOCAL_RADIUS`` plus a parabola through the peak).  A small similarity
fitted to these local shifts says what the nuclei, taken one by one, would change; the scatter of the
shifts about that fit is the noise of one nucleus.  The expected error
(:func:`expected_error`) is the root mean square over the EM field of that change plus the fit's
standard error: a field whose nuclei sit in one corner has a poorly known rotation, and the expected error
grows with the distance from them.

Measured (``benchmarks/bench_correlate.py --cases 6``, leave-one-out models, 36 results on s6–s8): 6–11
nuclei a pair, 1.4–2.2 px scatter per nucleus (sections deform, puncta differ), expected error 1.1–4.6 px
(median 2.4 px free scale, 3.1 px with the scale from the pixel sizes); the error against DeepCLEM's manual
registration lies within twice the estimate in 34 of 36, the distance to the optimum of the EM criterion
within the estimate in 36 of 36.  By the same measure the manual registrations (made by eye) have expected
errors of 3.7, 4.3 and 4.0 px: their nuclei, aligned one by one, ask for 3.5, 3.5 and 3.6 px changes.
Pixel sizes 2–4 % off show as the scale change the nuclei ask for (expected errors 8–25 px).  On a phantom,
a registration biased by 4.0 px is estimated at 4.1 px, and 0.6 px once the bias is removed (tests).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..peaks import subpixel_peak
from .nuclei import NUCLEI_MIN_NCC, nuclei_view
from .score import ncc

LOCAL_RADIUS = 8          # largest local shift searched (px at the working size)
LOCAL_MIN_AREA = 1000     # EM px: smaller nuclei (grazing sections) give no reliable shift
MIN_LOCAL_NUCLEI = 3      # fewer resolved nuclei: no estimate
SIGMA_FLOOR = 0.5         # px: a per-nucleus scatter below this is not believed (few nuclei, sub-pixel limit)
GRID_STEP = 16            # px: the EM grid the expected error is averaged over


@dataclass
class LocalShifts:
    """Per nucleus: centre (x, y) on the EM and the shift (EM px) that aligns it best; the number of nuclei
    whose best shift lay at the search's edge (unresolved, left out); and the ``contrast``: |NCC| of the EM and
    the registered chromatin inside all the nuclei (0.5–0.7 where the chromatin lies on the EM's dense
    heterochromatin on the DeepCLEM pairs, under 0.17 at wrong positions)."""
    centres: np.ndarray
    shifts: np.ndarray
    unresolved: int
    contrast: float


def local_shifts(em: np.ndarray, chromatin: np.ndarray, fixed_to_moving: np.ndarray, *, size: int = 1024,
                 sigma: float = 2.0) -> Optional[LocalShifts]:
    """Each stained nucleus' best shift under ``fixed_to_moving`` (EM px → chromatin px); None without nuclei
    (no EM contrast under the chromatin).

    A shift ``d`` at centre ``p`` means that the chromatin seen at EM pixel ``p + d`` under the registration
    belongs at ``p``: the nucleus would be better aligned by ``fixed_to_moving`` composed with ``+d``."""
    view = nuclei_view(em, chromatin, fixed_to_moving, size, sigma)
    if view is None:
        return None
    from skimage.measure import label, regionprops
    r = LOCAL_RADIUS
    e = np.sign(view.start) * cv2.GaussianBlur(view.em, (0, 0), sigma)
    c = np.pad(cv2.GaussianBlur(view.warped, (0, 0), sigma), r)
    lin = view.em_bin[:2, :2]
    min_area = LOCAL_MIN_AREA * abs(np.linalg.det(np.linalg.inv(lin)))
    centres, shifts, unresolved = [], [], 0
    for region in regionprops(label(view.mask)):
        if region.area < min_area:
            continue
        y0, x0, y1, x1 = region.bbox
        inside = region.image
        scores = np.array([[ncc(e[y0:y1, x0:x1], c[y0 + r + dy:y1 + r + dy, x0 + r + dx:x1 + r + dx], inside)
                            for dx in range(-r, r + 1)] for dy in range(-r, r + 1)])
        ky, kx = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if scores[ky, kx] < NUCLEI_MIN_NCC:
            continue
        if min(ky, kx) == 0 or max(ky, kx) == 2 * r:
            unresolved += 1
            continue
        px, py, _ = subpixel_peak(scores, (kx, ky))
        d = np.array([px - r, py - r])
        cy, cx = region.centroid
        centres.append(view.em_bin[:2] @ np.array([cx, cy, 1.0]))
        shifts.append(lin @ d)
    return LocalShifts(np.reshape(centres, (-1, 2)), np.reshape(shifts, (-1, 2)), unresolved, abs(view.start))


def _design(points: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Rows (x then y per point) of the small-motion similarity: shift, rotation and scale about ``centre``,
    the angle and scale in px of motion at ``radius``."""
    x, y = ((points - centre) / radius).T
    one, zero = np.ones_like(x), np.zeros_like(x)
    a = np.empty((2 * len(points), 4))
    a[0::2], a[1::2] = np.stack([one, zero, -y, x], 1), np.stack([zero, one, x, y], 1)
    return a


def expected_error(local: Optional[LocalShifts], shape) -> Optional[dict]:
    """Expected error of the registration (EM px, root mean square over the EM field of ``shape``) from the
    per-nucleus shifts; None with fewer than ``MIN_LOCAL_NUCLEI`` resolved nuclei.

    Returns ``expected_error_px``, ``local_correction_px`` (RMS over the field of the motion the nuclei
    ask for), ``local_scale_change`` (its relative scale change), ``local_sigma_px`` (one nucleus' scatter
    about it), ``local_nuclei`` and ``local_unresolved``.  The scale is free even where the registration's
    came from the pixel sizes: a wrong calibration then shows as the change the nuclei ask for."""
    if local is None or len(local.centres) < MIN_LOCAL_NUCLEI:
        return None
    h, w = shape
    centre, radius = local.centres.mean(0), 0.5 * max(h, w)
    a = _design(local.centres, centre, radius)
    beta, *_ = np.linalg.lstsq(a, local.shifts.ravel(), rcond=None)
    dof = a.shape[0] - a.shape[1]
    sigma = max(SIGMA_FLOOR, float(np.sqrt(np.sum((local.shifts.ravel() - a @ beta) ** 2) / dof)))
    cov = sigma ** 2 * np.linalg.inv(a.T @ a)
    ys, xs = np.mgrid[0:h:GRID_STEP, 0:w:GRID_STEP]
    g = _design(np.stack([xs.ravel(), ys.ravel()], 1).astype(float), centre, radius)
    correction = float(np.mean((g @ beta) ** 2) * 2)             # two rows (x, y) per grid point
    variance = float(np.einsum("ij,jk,ik->", g, cov, g) / (len(g) / 2))
    return {"expected_error_px": float(np.sqrt(correction + variance)),
            "local_correction_px": float(np.sqrt(correction)),
            "local_scale_change": float(beta[3] / radius), "local_sigma_px": sigma,
            "local_nuclei": float(len(local.centres)), "local_unresolved": float(local.unresolved)}
