"""Register predicted chromatin (fixed, EM grid) to measured chromatin (moving): global search + refinement.

1. Coarse search (:func:`coarse_search`): both images are binned to a working size; for every rotation and
   scale on a grid the prediction is rotated/scaled into the moving frame and slid over the zero-padded
   chromatin with ``cv2.matchTemplate`` (normalised cross-correlation, FFT), which gives the translation
   and allows partial overlap (different fields of view).  The best candidates are re-searched on a finer
   grid at a finer working size.
2. Refinement at most ``refine_size`` pixels on the long side, two levels: a similarity transform
   (rotation, isotropic scale, shift; :func:`refine_similarity`, NCC maximised with Powell's method) and,
   with ``model="affine"``, then ``cv2.findTransformECC`` (affine ECC = NCC maximisation).
   Chosen by measurement (``benchmarks/bench_correlate.py``, 3 DeepCLEM pairs × 5 perturbations,
   leave-one-out chromatin-v1 models): median error vs the manual registration 3.9 px (similarity), 5.3 px
   (affine ECC: drifts along y-scale/shear where few nuclei are in view), 5.3 px (MINE refinement,
   4× slower); agreement with the method's own unperturbed solution < 3 px in 100 % / 80 % / 83 %
   of the cases (median 0.5 / 0.4 / 1.2 px).
   NCC rather than MI: after prediction both images are chromatin images.
3. Heterochromatin refinement (:func:`refine_nuclei`) on the EM itself: the prediction fixes the capture
   range, but its NCC optimum inherits the network's small biases (a chromatin-v2 model trained on a pair
   registers that same pair 2–6 px away from its reference).  Inside the nuclei, the EM's electron density
   is aligned with the Hoechst signal, the criterion the manual ground truth was made with.  Its optimum is
   unique (0.01 px apart from four starts) and stable to blur/threshold choices (≤ 0.35 px).
   Measured (``benchmarks/results/bench_correlate-chromatin-v2-2core-cpu.json``, 3 pairs × 8 perturbations,
   leave-one-out models): vs the manual registration 62 % < 3 px, median 2.5 px (prediction only: 4 %,
   3.7 px); own-solution agreement 100 % < 3 px, median 0.38 px; 2.7 s per 1k² pair including prediction.
   EM crops (1000×530 and 600×600) against the full chromatin: 6/12 within 3 px, 8/12 within 8 px; with
   both images calibrated (scale snapped to the pixel sizes' ratio) 10/12 within 3 px, 11/12 within 8 px.
   Every crop off by more than 8 px carries a warning (too few nuclei in view, a refused refinement, or a
   fitted scale far from the calibration).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from scipy import optimize

from .. import transforms as T
from ..errors import Cancelled, InputError
from ..io import check_image
from ..progress import CancelFn, Progress, ProgressFn
from ..result import Registration
from ..schema import PixelSize
from . import DEFAULT_MODEL
from ..intensity import percentile_normalise
from .normalize import normalize_chromatin


@dataclass(frozen=True)
class SearchParams:
    """Search ranges and refinement; ``scale`` is moving pixels per fixed pixel (before any pixel-size prior).

    ``model``: ``"similarity"`` (default) or ``"affine"`` (similarity, then affine ECC).
    ``nuclei_refinement``: finish with :func:`refine_nuclei` on the EM itself (when the EM is given).
    ``scale_from_pixel_size``: when both pixel sizes are known and the fitted scale is within
    ``SCALE_SNAP`` of their ratio, the scale is set to that ratio and rotation and shift are refined again
    (few nuclei in view leave the fitted scale a few % off; the calibration is better).
    """
    max_rotation: float = 180.0
    scale_range: tuple[float, float] = (0.5, 2.0)
    coarse_size: int = 96
    coarse_angle_step: float = 8.0
    coarse_scale_step: float = 0.1
    fine_size: int = 192
    candidates: int = 4
    refine_size: int = 768
    model: str = "similarity"
    ecc_iterations: int = 100
    nuclei_refinement: bool = True
    scale_from_pixel_size: bool = True


def _binned(img: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """``img`` area-resized by factor ``f`` (at least 8 px a side) and the matrix binned → original pixels."""
    return T.area_resize(img, T.scaled_shape(img.shape, f, min_side=8))


def _match(fixed: np.ndarray, moving: np.ndarray, lin: np.ndarray):
    """Best translation for linear part ``lin`` (fixed→moving); returns (score, 3×3 fixed_to_moving).

    The moving image is zero-padded (chromatin background) so that the warped prediction may hang over
    its edges by half its size; windows without signal are excluded.  The score is the NCC times the square
    root of the fraction of the prediction that lies inside the chromatin image, so that a partial overlap
    wins only on clearly better correlation (zero padding correlates with empty prediction).
    """
    h, w = fixed.shape
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float) @ lin.T
    lo = np.floor(corners.min(0))
    tw, th = (np.ceil(corners.max(0) - lo).astype(int) + 1).tolist()
    tpl = cv2.warpAffine(fixed, np.hstack([lin, -lo[:, None]]), (tw, th), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    if float(tpl.std()) < 1e-6:
        return -np.inf, None
    py = max(th // 2, th - moving.shape[0] + th // 4)
    px = max(tw // 2, tw - moving.shape[1] + tw // 4)
    mpad = cv2.copyMakeBorder(moving, py, py, px, px, cv2.BORDER_CONSTANT, value=0.0)
    res = cv2.matchTemplate(mpad, tpl, cv2.TM_CCOEFF_NORMED)
    res[~np.isfinite(res)] = -1.0
    support = cv2.warpAffine(np.ones_like(fixed), np.hstack([lin, -lo[:, None]]), (tw, th), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    inside = cv2.copyMakeBorder(np.ones_like(moving), py, py, px, px, cv2.BORDER_CONSTANT, value=0.0)
    covered = cv2.matchTemplate(inside, support, cv2.TM_CCORR) / max(float(support.sum()), 1e-6)
    res = np.where(res > 0, res * np.sqrt(np.clip(covered, 0.0, 1.0)), res)
    floor = 1e-2 * float(moving.std())
    for _ in range(8):  # OpenCV scores signal-free (constant) windows as ±1 or 0: skip those peaks
        _, score, _, (x0, y0) = cv2.minMaxLoc(res)
        if float(mpad[y0:y0 + th, x0:x0 + tw].std()) > floor:
            break
        res[max(0, y0 - 2):y0 + 3, max(0, x0 - 2):x0 + 3] = -1.0
    out = np.eye(3)
    out[:2, :2] = lin
    out[:2, 2] = [x0 - px - lo[0], y0 - py - lo[1]]
    return float(score), out


def _lin(angle: float, scale: float) -> np.ndarray:
    t = np.deg2rad(angle)
    return scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _grid_search(fixed, moving, angles, scales, prior: np.ndarray, cancelled=None):
    """Score every (angle, scale) → list of (score, angle, scale, f2m in these images' pixels)."""
    out = []
    for a in angles:
        if cancelled is not None and cancelled():
            raise Cancelled("correlation was cancelled")
        for s in scales:
            score, m = _match(fixed, moving, _lin(a, s) @ prior)
            if m is not None:
                out.append((score, float(a), float(s), m))
    return out


def _angles(center: float, half: float, step: float) -> np.ndarray:
    if half >= 180.0:
        return np.arange(-180.0, 180.0, step)
    n = int(np.ceil(half / step))
    return center + step * np.arange(-n, n + 1)


def coarse_search(fixed: np.ndarray, moving: np.ndarray, params: SearchParams = SearchParams(),
                  prior_scale: float = 1.0, cancelled: Optional[CancelFn] = None) -> tuple[np.ndarray, float]:
    """Global rotation/scale/translation search; returns (``fixed_to_moving`` in full pixels, NCC score).

    ``prior_scale`` (e.g. fixed / moving pixel size) multiplies the searched ``params.scale_range``.
    """
    best = []
    lo, hi = params.scale_range
    # the fixed image sets the working size; the moving one is binned to the same physical pixel size
    stages = [(params.coarse_size, params.coarse_angle_step, params.coarse_scale_step, None),
              (params.fine_size, params.coarse_angle_step / 4, params.coarse_scale_step / 4, params.candidates)]
    for size, astep, sstep, keep in stages:
        f = min(1.0, size / max(fixed.shape))
        fw, bf = _binned(fixed, f)
        mw, bm = _binned(moving, min(1.0, f / prior_scale))
        prior = np.linalg.inv(bm[:2, :2]) @ (prior_scale * bf[:2, :2])
        if keep is None:
            n = max(1, int(np.ceil(np.log(hi / lo) / np.log1p(sstep))))
            scales = np.geomspace(lo, hi, n + 1)
            found = _grid_search(fw, mw, _angles(0.0, params.max_rotation, astep), scales, prior, cancelled)
        else:
            found = []
            for _, a, s, _m in sorted(best, key=lambda r: -r[0])[:keep]:
                angles = _angles(a, 2 * astep, astep)
                scales = s * np.exp(np.log1p(sstep) * np.arange(-2, 3))
                found += _grid_search(fw, mw, angles, scales, prior, cancelled)
        if not found:
            raise InputError("the chromatin image is too small for this EM field of view at the searched scales")
        best = _dedupe(found, astep)
        score, a, s, m = max(best, key=lambda r: r[0])
    return T.compose(bm, m, np.linalg.inv(bf)), score


def _dedupe(found, astep):
    """Keep local maxima only: a candidate is dropped when a better one is within 2 angle steps and 10 % scale."""
    found = sorted(found, key=lambda r: -r[0])
    keep = []
    for r in found:
        if all(abs((r[1] - k[1] + 180) % 360 - 180) > 2 * astep or abs(np.log(r[2] / k[2])) > 0.1 for k in keep):
            keep.append(r)
        if len(keep) >= 32:
            break
    return keep


def refine_similarity(fixed: np.ndarray, moving: np.ndarray, init: np.ndarray, *, sigma: float = 1.0,
                      max_evals: int = 1500, mask: Optional[np.ndarray] = None,
                      fix_scale: bool = False) -> tuple[np.ndarray, float]:
    """Similarity refinement of ``init`` (fixed→moving): maximise NCC over rotation, log-scale and shift.

    Parameters are scaled to pixels of displacement at half the long side; Powell's method, no gradients.
    ``mask`` (fixed grid) restricts the NCC; ``fix_scale`` keeps the scale of ``init`` (rigid correction).
    Returns (matrix, NCC of the Gaussian-smoothed images).
    """
    fs, ms = cv2.GaussianBlur(fixed, (0, 0), sigma), cv2.GaussianBlur(moving, (0, 0), sigma)
    h, w = fixed.shape
    c, r = T.center_of(fixed.shape), 0.5 * max(h, w)
    init = T.as_matrix(init)

    def mat(p):
        rot, log_scale, tx, ty = (p[0], 0.0, p[1], p[2]) if fix_scale else p
        return init @ T.from_params(rotation_deg=float(np.rad2deg(rot / r)), scale=float(np.exp(log_scale / r)),
                                    translation=(tx, ty), center=c)

    def cost(p):
        warped = cv2.warpAffine(ms, mat(p)[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return -ncc(fs, warped, mask)

    res = optimize.minimize(cost, np.zeros(3 if fix_scale else 4), method="Powell",
                            options={"xtol": 1e-3, "ftol": 1e-7, "maxfev": max_evals})
    return mat(res.x), float(-res.fun)


def refine_ecc(fixed: np.ndarray, moving: np.ndarray, init: np.ndarray, *, iterations: int = 200,
               levels: int = 2) -> tuple[np.ndarray, float]:
    """Affine ECC refinement of ``init`` (fixed→moving) on a pyramid; returns (matrix, ECC value)."""
    m = T.as_matrix(init)
    cc = np.nan
    for lev in reversed(range(levels)):
        f = 0.5 ** lev
        fw, bf = _binned(fixed, f) if lev else (fixed, np.eye(3))
        mw, bm = _binned(moving, f) if lev else (moving, np.eye(3))
        w = (np.linalg.inv(bm) @ m @ bf)[:2].astype(np.float32)
        try:
            cc, w = cv2.findTransformECC(fw, mw, w, cv2.MOTION_AFFINE,
                                         (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-6),
                                         None, 5)
        except cv2.error:
            continue  # ECC did not converge at this level: keep the current estimate
        m = bm @ T.as_matrix(w.astype(np.float64)) @ np.linalg.inv(bf)
    return m, float(cc)


def _stained(chromatin_on_em: np.ndarray, region: np.ndarray) -> Optional[np.ndarray]:
    """Otsu foreground (threshold from ``region``) of the σ=4 px blurred chromatin; None if ``region`` is
    under 64 px or flat."""
    from skimage.filters import threshold_otsu
    blurred = cv2.GaussianBlur(chromatin_on_em.astype(np.float32, copy=False), (0, 0), 4.0)
    if region.sum() < 64 or float(blurred[region].std()) < 1e-6:
        return None
    return blurred > threshold_otsu(blurred[region])


NUCLEI_MIN_NCC = 0.2      # below this |NCC| the EM shows no chromatin contrast (noise: |NCC| < 0.06): stage skipped
NUCLEI_MAX_SHIFT = 0.02   # largest accepted change, as a fraction of the EM's long side (mean over the grid)


def refine_nuclei(em: np.ndarray, chromatin: np.ndarray, init: np.ndarray, *, size: int = 1024,
                  sigma: float = 2.0, fix_scale: bool = False) -> tuple[np.ndarray, dict, Optional[str]]:
    """Heterochromatin refinement of ``init`` (EM px → chromatin px) on the EM itself.

    DeepCLEM's ground truth was made by hand "until the Hoechst signal coincided with the electron-dense
    heterochromatin puncta"; this stage automates that criterion.  Inside the nuclei (Otsu threshold of the
    blurred chromatin mapped onto the EM, dilated), NCC between the EM (sign chosen so that it correlates
    positively: dense = dark or bright) and the chromatin is maximised over a similarity correction
    (rigid with ``fix_scale``).
    The prediction-based result only has to be close: this criterion has a narrow capture range.
    Returns (matrix, metrics, warning or None); the stage keeps ``init`` when the EM shows no chromatin
    contrast (|NCC| < ``NUCLEI_MIN_NCC``) or when the change would exceed ``NUCLEI_MAX_SHIFT``.
    """
    f = min(1.0, size / max(em.shape))
    (ew, be), (cw, bc) = _binned(percentile_normalise(em, 1.0, 99.8, clip=False), f), _binned(chromatin, f)
    m0 = np.linalg.inv(bc) @ T.as_matrix(init) @ be
    (warped,), valid = T.warp_channels([cw], m0, ew.shape)
    inside = cv2.erode(valid.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    metrics = {"nuclei_ncc": 0.0, "nuclei_shift_px": 0.0, "nuclei_applied": 0.0}
    stained = _stained(warped, inside)
    if stained is None:
        return init, metrics, None
    nuclei = cv2.dilate(stained.astype(np.uint8), np.ones((15, 15), np.uint8))
    mask = (nuclei > 0) & inside
    if mask.sum() < 64:
        return init, metrics, None
    start = ncc(cv2.GaussianBlur(ew, (0, 0), sigma), cv2.GaussianBlur(warped, (0, 0), sigma), mask)
    metrics["nuclei_ncc"] = abs(start)
    if abs(start) < NUCLEI_MIN_NCC:
        return init, metrics, None
    m, score = refine_similarity(np.sign(start) * ew, cw, m0, sigma=sigma, mask=mask, fix_scale=fix_scale)
    out = bc @ m @ np.linalg.inv(be)
    shift = T.tre(out, init, em.shape)
    metrics.update(nuclei_ncc=score, nuclei_shift_px=shift)
    if shift > NUCLEI_MAX_SHIFT * max(em.shape):
        return init, metrics, (f"the heterochromatin refinement would move the result by {shift:.1f} px; "
                               "kept the prediction-based registration")
    metrics["nuclei_applied"] = 1.0
    return out, metrics, None


SCALE_SNAP = 0.06      # fitted scale within ±6 % of the pixel sizes' ratio: use the ratio (DeepCLEM 600² crops: 2–5 % off)
MIN_BLOBS = 8         # fewer chromatin blobs over the EM: rotation and scale are poorly constrained (warning)
BLOB_MIN_AREA = 400   # EM pixels (at the chromatin model's training pixel size) for a blob to count


def count_blobs(chromatin_on_em: np.ndarray, valid: np.ndarray) -> int:
    """Chromatin blobs (Otsu threshold of the σ=4 px blurred signal, ≥ ``BLOB_MIN_AREA`` px) inside ``valid``.

    On the DeepCLEM pairs: 12–18 in a full 1280×954 field, 9–14 in 1000×530 crops, 4–5 in 600×600 crops
    (where the scale or rotation came out 2–7 % / 2° wrong without pixel sizes).
    """
    from skimage.measure import label
    stained = _stained(chromatin_on_em, valid)
    if stained is None:
        return 0
    blobs = label(stained & valid)
    return int((np.bincount(blobs.ravel())[1:] >= BLOB_MIN_AREA).sum())


def ncc(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Zero-normalised cross-correlation of two images (inside ``mask`` when given)."""
    x, y = (a[mask], b[mask]) if mask is not None else (a.ravel(), b.ravel())
    x = x.astype(np.float64) - x.mean()
    y = y.astype(np.float64) - y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else 0.0


def register_chromatin(predicted: np.ndarray, chromatin: np.ndarray, *, params: SearchParams = SearchParams(),
                       em: Optional[np.ndarray] = None, fixed_pixel_size: Optional[PixelSize] = None,
                       moving_pixel_size: Optional[PixelSize] = None,
                       progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> Registration:
    """Register the predicted chromatin (fixed, EM grid) to the measured chromatin (moving).

    With both pixel sizes the scale search is centred on their ratio and narrowed to ±25 %; the fitted scale
    is then snapped to the ratio (``params.scale_from_pixel_size``, within ``SCALE_SNAP``) or a warning says
    that it differs.
    With ``em`` (same grid as ``predicted``) and ``params.nuclei_refinement``, :func:`refine_nuclei` finishes.
    Metrics: ``ncc`` (prediction vs registered chromatin over the overlap), ``coarse_ncc``, ``refined_ncc``
    (smoothed, at the refinement size), ``overlap`` (fraction of the EM covered by the chromatin image),
    ``chromatin_blobs`` (:func:`count_blobs`; fewer than ``MIN_BLOBS`` gives a warning) and the ``nuclei_*``
    metrics of :func:`refine_nuclei`.
    """
    t0 = time.perf_counter()
    if params.model not in ("similarity", "affine"):
        raise InputError(f"the transform model must be similarity or affine (got {params.model!r})")
    fixed = normalize_chromatin(_check(predicted, "predicted chromatin"))
    if em is not None:
        em = _check(em, "EM")
        if em.shape != fixed.shape:
            raise InputError(f"the EM ({em.shape}) and the predicted chromatin ({fixed.shape}) must share a grid")
    moving = normalize_chromatin(_check(chromatin, "chromatin"))
    prior = None
    if fixed_pixel_size is not None and moving_pixel_size is not None:
        if fixed_pixel_size.unit != moving_pixel_size.unit:
            raise InputError(f"pixel size units differ ({fixed_pixel_size.unit} vs {moving_pixel_size.unit}); "
                             "convert one image's calibration first")
        prior = float(np.sqrt(fixed_pixel_size.x * fixed_pixel_size.y / (moving_pixel_size.x * moving_pixel_size.y)))
        params = SearchParams(**{**params.__dict__, "scale_range": (0.8, 1.25)})
    if progress:
        progress(Progress("coarse search", 0, None, None, 0.0))
    init, coarse = coarse_search(fixed, moving, params, prior or 1.0, cancelled)
    t1 = time.perf_counter()
    if progress:
        progress(Progress("refinement", 0, None, None, 0.7))
    m, score = init, coarse
    for size in (params.refine_size // 2, params.refine_size):
        if cancelled is not None and cancelled():
            raise Cancelled("correlation was cancelled")
        f = min(1.0, size / max(fixed.shape))
        (fw, bf), (mw, bm) = _binned(fixed, f), _binned(moving, f)
        m, score = refine_similarity(fw, mw, np.linalg.inv(bm) @ m @ bf)
        m = bm @ m @ np.linalg.inv(bf)
    warnings, fix_scale, fitted = [], False, T.scale_of(m)
    if prior is not None and params.scale_from_pixel_size and params.model == "similarity":
        if abs(np.log(fitted / prior)) <= SCALE_SNAP:
            fix_scale = True
            m = m @ T.from_params(scale=prior / fitted, center=T.center_of(fixed.shape))
            m, score = refine_similarity(fw, mw, np.linalg.inv(bm) @ m @ bf, fix_scale=True)
            m = bm @ m @ np.linalg.inv(bf)
        else:
            warnings.append(f"the fitted scale differs by {100 * (fitted / prior - 1):+.1f} % from the pixel sizes' "
                            "ratio: one image's calibration may be wrong (kept the fitted scale)")
    if params.model == "affine":
        m, score = refine_ecc(fw, mw, np.linalg.inv(bm) @ m @ bf, iterations=params.ecc_iterations)
        m = bm @ m @ np.linalg.inv(bf)
    extra = {}
    if em is not None and params.nuclei_refinement:
        if cancelled is not None and cancelled():
            raise Cancelled("correlation was cancelled")
        if progress:
            progress(Progress("heterochromatin refinement", 0, None, None, 0.9))
        m, extra, warning = refine_nuclei(em, moving, m, fix_scale=fix_scale)
        warnings += [warning] if warning else []
    t2 = time.perf_counter()
    warped, valid = T.warp_channels([moving], m, fixed.shape)
    q = ncc(fixed, warped[0], valid) if valid.sum() > 16 else 0.0
    blobs = count_blobs(warped[0], valid)
    if blobs < MIN_BLOBS:
        warnings.append(f"only {blobs} stained {'nucleus overlaps' if blobs == 1 else 'nuclei overlap'} the EM: "
                        "rotation and scale are poorly constrained; "
                        "check the overlay" + ("" if prior else " (pixel sizes on both images fix the scale)"))
    if progress:
        progress(Progress("done", 1, 1, None, 1.0))
    return Registration(fixed_to_moving=m, fixed_shape=tuple(fixed.shape), moving_shape=tuple(moving.shape),
                        method=f"deepclem-{params.model}",
                        params={**params.__dict__, "scale_prior": prior or 1.0, "scale_fixed": fix_scale},
                        metrics={"ncc": q, "fitted_scale": fitted, "coarse_ncc": coarse, "refined_ncc": score,
                                 "overlap": float(valid.mean()), "chromatin_blobs": float(blobs), **extra},
                        warnings=warnings,
                        timings={"coarse_search_s": t1 - t0, "refine_s": t2 - t1},
                        fixed_pixel_size=fixed_pixel_size, moving_pixel_size=moving_pixel_size)


def _check(img, name: str) -> np.ndarray:
    return check_image(img, f"the {name} image").astype(np.float32, copy=False)


# --- the DeepCLEM workflow on arrays ----------------------------------------------------

def _stage(progress: Optional[ProgressFn], start: float, end: float) -> Optional[ProgressFn]:
    """Map a sub-task's progress fractions into ``[start, end]`` of the whole workflow."""
    if progress is None:
        return None
    return lambda p: progress(Progress(p.stage, p.iteration, p.total, p.mi, start + (end - start) * p.fraction))


def correlate(em: np.ndarray, chromatin: np.ndarray, *, model=DEFAULT_MODEL, params: SearchParams = SearchParams(),
              em_pixel_size: Optional[PixelSize] = None, chromatin_pixel_size: Optional[PixelSize] = None,
              device="auto", progress: Optional[ProgressFn] = None,
              cancelled: Optional[CancelFn] = None) -> tuple[Registration, np.ndarray]:
    """Predict chromatin from the EM and register it to the measured chromatin; returns (registration, prediction)."""
    from .predict import predict_chromatin
    t0 = time.perf_counter()
    pred = predict_chromatin(em, model, device=device, progress=_stage(progress, 0.0, 0.4), cancelled=cancelled)
    t1 = time.perf_counter()
    reg = register_chromatin(pred, chromatin, params=params, em=em, fixed_pixel_size=em_pixel_size,
                             moving_pixel_size=chromatin_pixel_size, progress=_stage(progress, 0.4, 1.0),
                             cancelled=cancelled)
    reg.timings = {"predict_s": t1 - t0, **reg.timings}
    reg.params["model"] = str(getattr(model, "path", None) or model)
    return reg, pred


def chromatin_channel(n_channels: int, rgb: bool, channel: Optional[int], name: str) -> int:
    """Index of the chromatin channel: the named one, else blue for RGB (DeepCLEM), else the only one."""
    if channel is not None:
        if not 0 <= channel < n_channels:
            raise InputError(f"chromatin channel {channel} does not exist; {name} has {n_channels} channel(s)")
        return channel
    if rgb:
        return 2
    if n_channels == 1:
        return 0
    raise InputError(f"{name} has {n_channels} channels; name the chromatin channel (--chromatin-channel)")
