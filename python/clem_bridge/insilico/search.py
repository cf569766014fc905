"""Global rotation/scale/translation search of the predicted chromatin (fixed) in the measured one (moving).

Both images are binned to a working size (the moving one for each scale, so that every scale is scored at
the same resolution); for every rotation and scale on a grid the prediction is rotated and scaled into the
moving frame and slid over the zero-padded chromatin with ``cv2.matchTemplate``
(normalised cross-correlation by FFT), which gives the translation and allows partial overlap (different
fields of view).  Each (rotation, scale) contributes its best few translation peaks.  The best candidates
are searched again on a finer grid at a finer working size, and :func:`coarse_hypotheses` returns several
distinct ones: the best peak is not always the right one (repeated nuclei, a prediction that is better in
one part of the field), so the caller refines each and chooses by :func:`.score.overlap_score`.  The
mirrored chromatin image (the LM seen from the other side of the section) is searched alike, and the
hypotheses of both handednesses compete (a mirrored one has det < 0).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import cv2
import numpy as np

from .. import transforms as T
from ..errors import Cancelled, InputError
from ..peaks import distinct
from ..progress import CancelFn
from .score import weighted


@dataclass(frozen=True)
class SearchParams:
    """Search ranges and refinement; ``scale`` is moving pixels per fixed pixel (before any pixel-size prior).

    ``hypotheses``: distinct coarse results refined and compared (the best by the common score wins).
    ``model``: ``"similarity"`` (default) or ``"affine"`` (similarity, then affine ECC).
    ``nuclei_refinement``: finish with :func:`.nuclei.refine_nuclei` on the EM itself (when the EM is given).
    ``scale_from_pixel_size``: when both pixel sizes are known and the fitted scale is within
    ``SCALE_SNAP`` of their ratio, the scale is set to that ratio and rotation and shift are refined again.
    ``mirror``: also search the mirrored chromatin image (the LM seen from the other side: det < 0).
    """
    max_rotation: float = 180.0
    scale_range: tuple[float, float] = (0.5, 2.0)
    coarse_size: int = 96
    coarse_angle_step: float = 8.0
    coarse_scale_step: float = 0.1
    fine_size: int = 192
    candidates: int = 6
    hypotheses: int = 4
    refine_size: int = 768
    model: str = "similarity"
    ecc_iterations: int = 100
    nuclei_refinement: bool = True
    scale_from_pixel_size: bool = True
    mirror: bool = True


@dataclass
class Hypothesis:
    """A candidate ``fixed_to_moving`` (full-resolution pixels) and its score at the stage that produced it."""
    matrix: np.ndarray
    score: float
    angle: float = 0.0
    scale: float = 1.0


PEAKS_PER_POSE = 3        # translation peaks kept per (rotation, scale)
DISTINCT = 0.03           # hypotheses closer than this fraction of the fixed long side (mean error) are one
HAND_MARGIN = 0.8         # a handedness whose best coarse score is below this fraction of the best: not refined


def binned(img: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """``img`` area-resized by factor ``f`` (at least 8 px a side) and the matrix binned → original pixels."""
    return T.area_resize(img, T.scaled_shape(img.shape, f, min_side=8))


def _match(fixed: np.ndarray, moving: np.ndarray, lin: np.ndarray, peaks: int = PEAKS_PER_POSE):
    """Best translations for linear part ``lin`` (fixed→moving); list of (score, 3×3 fixed_to_moving).

    The *moving* image is resampled into the fixed frame (by ``lin``⁻¹) and zero-padded (chromatin
    background) so that the prediction may hang over its edges by half its size; the prediction itself is
    the template, unchanged.  Every (rotation, scale) is thus scored on the same number of template pixels:
    warping the prediction instead shrinks the template at small scales, and a small template's NCC
    peaks high by chance (the collapse to scale 0.5).  The score is the overlap-weighted NCC of
    :mod:`.score` (NCC over the template window times √ of the fraction of it inside the chromatin
    image).  Windows without signal are skipped; peaks closer than a quarter of the template to a
    better one are suppressed.
    """
    h, w = fixed.shape
    inv = np.linalg.inv(lin)
    mh, mw = moving.shape
    corners = np.array([[0, 0], [mw - 1, 0], [0, mh - 1], [mw - 1, mh - 1]], float) @ inv.T
    lo = np.floor(corners.min(0))
    cw, ch = (np.ceil(corners.max(0) - lo).astype(int) + 1).tolist()
    px, py = max(w // 2, w - cw + w // 4), max(h // 2, h - ch + h // 4)
    a = np.hstack([inv, (np.array([px, py]) - lo)[:, None]])      # moving px → canvas px
    size = (cw + 2 * px, ch + 2 * py)
    canvas = cv2.warpAffine(moving, a, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    if float(canvas.std()) < 1e-6 or float(fixed.std()) < 1e-6:
        return []
    res = cv2.matchTemplate(canvas, fixed, cv2.TM_CCOEFF_NORMED)
    res[~np.isfinite(res)] = -1.0
    inside = cv2.warpAffine(np.ones_like(moving), a, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0.0)
    ii = cv2.integral(inside, sdepth=cv2.CV_64F)   # coverage of every template window by box sums
    covered = (ii[h:, w:] - ii[:-h, w:] - ii[h:, :-w] + ii[:-h, :-w]) / float(fixed.size)
    res = weighted(res, covered)
    floor = 1e-2 * float(moving.std())
    ry, rx = max(2, h // 4), max(2, w // 4)
    out = []
    for _ in range(8 + peaks):
        _, score, _, (x0, y0) = cv2.minMaxLoc(res)
        if score <= -1.0:
            break
        # OpenCV scores signal-free (constant) windows as ±1 or 0: those are no peaks
        real = float(canvas[y0:y0 + h, x0:x0 + w].std()) > floor
        r_y, r_x = (ry, rx) if real else (2, 2)
        res[max(0, y0 - r_y):y0 + r_y + 1, max(0, x0 - r_x):x0 + r_x + 1] = -1.0
        if real:
            m = np.eye(3)
            m[:2, :2] = lin
            m[:2, 2] = lin @ (np.array([x0 - px, y0 - py]) + lo)
            out.append((float(score), m))
            if len(out) >= peaks:
                break
    return out


def _lin(angle: float, scale: float) -> np.ndarray:
    t = np.deg2rad(angle)
    return scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _grid_search(fixed_w: np.ndarray, bf: np.ndarray, moving: np.ndarray, f: float, angles, scales,
                 prior_scale: float, cancelled=None) -> list[Hypothesis]:
    """Score every (angle, scale) of the binned fixed image ``fixed_w`` (``bf``: binned → full pixels, binning
    ``f``) against ``moving`` (full pixels) → hypotheses in full pixels.

    For each scale the moving image is binned to the fixed working pixel size (by ``f / (prior_scale·scale)``),
    so the warp into the template frame is a pure rotation and every scale is scored at the same resolution.
    Binning once and magnifying by ``1/scale`` instead makes small scales smoother: fewer independent pixels
    under the template, a higher chance NCC, and a coarse stage that prefers half scale to the true pose."""
    out, to_binned = [], np.linalg.inv(bf)
    for s in scales:
        if cancelled is not None and cancelled():
            raise Cancelled("correlation was cancelled")
        mw, bm = binned(moving, min(1.0, f / (prior_scale * s)))
        prior = np.linalg.inv(bm[:2, :2]) @ (prior_scale * bf[:2, :2])
        for a in angles:
            out += [Hypothesis(bm @ m @ to_binned, score, float(a), float(s))
                    for score, m in _match(fixed_w, mw, _lin(a, s) @ prior)]
    return out


def _angles(center: float, half: float, step: float) -> np.ndarray:
    if half >= 180.0:
        return np.arange(-180.0, 180.0, step)
    n = int(np.ceil(half / step))
    return center + step * np.arange(-n, n + 1)


def distinct_hypotheses(hyps: list[Hypothesis], shape, limit: int) -> list[Hypothesis]:
    """The best ``limit`` hypotheses (by score) that differ by more than ``DISTINCT`` of the long side of
    ``shape`` (the grid ``matrix`` maps from)."""
    step = max(4, max(shape) // 16)   # about 16 × 12 grid points at any size
    return distinct(sorted(hyps, key=lambda r: -r.score), limit,
                    lambda h, k: T.tre(h.matrix, k.matrix, shape, step=step) <= DISTINCT * max(shape))


def coarse_hypotheses(fixed: np.ndarray, moving: np.ndarray, params: SearchParams = SearchParams(),
                      prior_scale: float = 1.0, cancelled: Optional[CancelFn] = None) -> list[Hypothesis]:
    """Global rotation/scale/translation search (both handednesses with ``params.mirror``); up to
    ``params.hypotheses`` distinct hypotheses (``fixed_to_moving`` in full pixels), best coarse score first.

    ``prior_scale`` (e.g. fixed / moving pixel size) multiplies the searched ``params.scale_range``.
    The coarse grid runs for each handedness; the finer one only for a handedness whose best coarse score
    is within ``HAND_MARGIN`` of the best of both (the wrong one's best coarse score is 0.67–0.76× the right
    one's on the DeepCLEM pairs and example with leave-one-out and shipped models, 0.40–0.54× on phantoms).
    """
    flip = np.array([[-1.0, 0.0, moving.shape[1] - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])   # its own inverse
    hands = [(np.eye(3), moving)] + ([(flip, np.ascontiguousarray(moving[:, ::-1]))] if params.mirror else [])
    coarse = [_stage(fixed, img, params, prior_scale, cancelled) for _, img in hands]
    top = max(c[0].score for c in coarse)
    found = [replace(h, matrix=to_moving @ h.matrix) for (to_moving, img), c in zip(hands, coarse)
             if c[0].score >= HAND_MARGIN * top for h in _stage(fixed, img, params, prior_scale, cancelled, c)]
    return distinct_hypotheses(found, fixed.shape, params.hypotheses)


def _stage(fixed: np.ndarray, moving: np.ndarray, params: SearchParams, prior_scale: float,
           cancelled: Optional[CancelFn], seeds: Optional[list[Hypothesis]] = None) -> list[Hypothesis]:
    """One handedness: the coarse grid (no ``seeds``), or a finer grid about the best ``params.candidates``
    seeds; distinct hypotheses, best first."""
    lo, hi = params.scale_range
    # the fixed image sets the working size; the moving one is binned to it at each scale (_grid_search)
    size, astep, sstep = ((params.coarse_size, params.coarse_angle_step, params.coarse_scale_step) if seeds is None else
                          (params.fine_size, params.coarse_angle_step / 4, params.coarse_scale_step / 4))
    f = min(1.0, size / max(fixed.shape))
    fw, bf = binned(fixed, f)
    if seeds is None:
        n = max(1, int(np.ceil(np.log(hi / lo) / np.log1p(sstep))))
        found = _grid_search(fw, bf, moving, f, _angles(0.0, params.max_rotation, astep), np.geomspace(lo, hi, n + 1),
                             prior_scale, cancelled)
    else:
        found = []
        for h in seeds[:params.candidates]:
            angles = _angles(h.angle, 2 * astep, astep)
            scales = np.unique(np.clip(h.scale * np.exp(np.log1p(sstep) * np.arange(-2, 3)), lo, hi))
            found += _grid_search(fw, bf, moving, f, angles, scales, prior_scale, cancelled)
    if not found:
        raise InputError("the chromatin image is too small for this EM field of view at the searched scales")
    return distinct_hypotheses(found, fixed.shape, max(params.candidates, params.hypotheses))


def coarse_search(fixed: np.ndarray, moving: np.ndarray, params: SearchParams = SearchParams(),
                  prior_scale: float = 1.0, cancelled: Optional[CancelFn] = None) -> tuple[np.ndarray, float]:
    """The best coarse hypothesis: (``fixed_to_moving`` in full pixels, coarse score)."""
    h = coarse_hypotheses(fixed, moving, params, prior_scale, cancelled)[0]
    return h.matrix, h.score
