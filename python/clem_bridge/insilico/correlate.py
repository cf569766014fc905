"""DeepCLEM correlation: register the predicted chromatin (fixed, EM grid) to the measured chromatin (moving).

1. Global search (:mod:`.search`): several distinct rotation/scale/translation hypotheses.
2. Each hypothesis is refined at half the refinement size (:mod:`.refine`, similarity maximising
   :func:`.score.overlap_score`, scale confined to the searched range like every later stage); duplicates
   merge, the best by that score wins and is refined at the full refinement size.  The margin to the best *distinct* runner-up says how sure the choice is.
3. With both images calibrated, the scale is snapped to the pixel sizes' ratio (units converted) when the
   fit is within ``SCALE_SNAP`` of it; with ``model="affine"`` affine ECC follows (kept only if it scores
   better).
4. Heterochromatin refinement on the EM itself (:mod:`.nuclei`): judged by the same overlap score on the
   EM inside the nuclei, never worse than its start, and kept only when it moves the result by less than
   ``NUCLEI_MAX_SHIFT``.  It (and the contrast check) sees the measured chromatin as given, not the saturated
   correlation input: the brightest few per cent are the heterochromatin puncta it aligns.
5. Expected error (:mod:`.uncertainty`, with the EM): each stained nucleus aligned on its own; the motion
   they ask for and their scatter give the error to expect over the EM field (``expected_error_px``).
   When the scale came from the pixel sizes and the expected error exceeds ``MAX_EXPECTED_ERROR``, stage 4
   is repeated with the fitted scale, which is kept (with a warning about the calibration) if the nuclei
   agree with it better: a calibration a few per cent off is caught, not obeyed.
6. Outcome (:func:`outcome`): ``failed`` / ``uncertain`` / ``ok`` with the reasons as warnings (stained
   nuclei in common, margin between hypotheses, fitted vs calibrated scale, overlap, expected error).

Measured (``benchmarks/bench_correlate.py``, ``benchmarks/results/bench_correlate-loo*-2core-cpu.json``;
leave-one-out models): wherever the prediction leads to the right place, the result lies 0.1–2 px (median
0.4–0.8 px) from the optimum of the network-free heterochromatin criterion, and the free-scale fit agrees
with that optimum's scale within 0.1 % (median).  That optimum itself sits 2.3–3.8 px (TRE over the EM grid)
from DeepCLEM's manual registration (made by eye), in a direction of its own for each pair (s6 shift
(+0.4, −2.3) px, s8 (−3.1, +1.6) px and scale −0.4 %), which the leave-one-out and shipped predictions
share: the few-pixel error against the manual registration and s8's free vs calibrated scale difference
are the reference's.  Weak models fail on whole pairs whose prediction scores wrong poses higher than the
true one (s7 with a 4-epoch model: 0.22–0.25 vs 0.19–0.21; s6 with a 6-epoch model: 0.29–0.32 vs 0.19),
reported ``failed`` each time (the EM contrast check): no silent failure, every fitted scale inside the
searched range.  4–9 s per case on the shared 2-core CPU (load 2–6), plus under 1 s of prediction.
Every such result carries its expected error (1.1–4.6 px, median 2.4 / 3.1 px free / calibrated, all under
``MAX_EXPECTED_ERROR``); the error against the manual registration lies within twice it in 34 of 36 cases.
Pixel sizes 2–4 % off the truth (inside the snap range; 9 cases): the nuclei reject the snapped scale
(expected error 8–25 px), the fitted scale is kept and lands 2.3–4.1 px from the manual registration,
status ``uncertain`` with the calibration warning (snapped, these were 9–23 px off).  Mirrored chromatin
images (3 pairs): all found (det < 0), 2.3–4.1 px, ``ok``; the mirror search costs about 1.3 s a case on one
core (its coarse grid; the wrong handedness is not searched further).
DeepCLEM's example (shipped model): ``ok``, its three EM nuclei 6–14 px from the stained nuclei' centres,
expected error 1.5 px.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import NamedTuple, Optional

import numpy as np

from .. import transforms as T
from ..errors import Cancelled, InputError
from ..io import check_image, convert_length, normalize_unit
from ..progress import CancelFn, Progress, ProgressFn
from ..result import Registration
from ..schema import PixelSize
from . import DEFAULT_MODEL
from .normalize import correlation_input
from .nuclei import MIN_BLOBS, NUCLEI_MIN_NCC, count_blobs, refine_nuclei
from .refine import blur, refine_ecc, refine_pyramid
from .score import ncc, overlap_score
from .search import Hypothesis, SearchParams, binned, coarse_hypotheses, distinct_hypotheses
from .uncertainty import MIN_LOCAL_NUCLEI, LocalShifts, expected_error, local_shifts

__all__ = ["SearchParams", "choose_hypothesis", "register_chromatin", "correlate", "chromatin_channel", "scale_prior",
           "outcome"]

SCALE_SNAP = 0.06              # fitted scale within ±6 % of the pixel sizes' ratio: use the ratio
MIN_MARGIN = 0.1               # best vs distinct runner-up (relative score difference) below this: uncertain
MIN_OVERLAP = 0.3              # fraction of the EM covered by the chromatin image below this: uncertain
FAIL_SCORE = 0.1               # best overlap score below this: failed (no correlation found)
FAIL_BLOBS = 2                 # fewer stained nuclei in common: failed
EDGE = 1.03                    # a fitted scale within 3 % of the searched range's ends: failed
FAIL_CONTRAST = 0.1            # EM vs registered chromatin inside the nuclei (|NCC|) below this: failed
MAX_EXPECTED_ERROR = 6.0       # EM px: a larger expected error is uncertain (DeepCLEM pairs: results 1.1–4.6 px, manual 3.7–4.3)


class _OnEm(NamedTuple):
    """What the stages on the EM give for one registration (:func:`register_chromatin`)."""
    m: np.ndarray
    score: float
    extra: dict                     # the nuclei_* metrics of refine_nuclei
    warnings: list
    local: Optional[LocalShifts]
    error: Optional[dict]           # expected_error's metrics; {}: not estimable; None: no EM


def scale_prior(fixed_pixel_size: Optional[PixelSize], moving_pixel_size: Optional[PixelSize]) -> Optional[float]:
    """Expected scale (moving px per fixed px) from both calibrations, any length units; None unless both known."""
    if fixed_pixel_size is None or moving_pixel_size is None:
        return None
    fu, mu = normalize_unit(fixed_pixel_size.unit), normalize_unit(moving_pixel_size.unit)
    if fu is None or mu is None:
        return None
    mx, my = (convert_length(v, mu, fu) for v in (moving_pixel_size.x, moving_pixel_size.y))
    return float(np.sqrt(fixed_pixel_size.x * fixed_pixel_size.y / (mx * my)))


def outcome(score: float, margin: Optional[float], blobs: int, overlap: float,
            contrast: Optional[float] = None, scale_edge: Optional[str] = None,
            error: Optional[dict] = None, scale_fixed: bool = False) -> tuple[str, list[str]]:
    """Status and reasons from the evidence (the caller adds stage warnings, which make ``ok`` uncertain).

    ``contrast``: :attr:`.uncertainty.LocalShifts.contrast` when the EM is known (the check that does not
    depend on the prediction: a weak prediction can score a wrong position higher than the right one).
    ``scale_edge``: a description when the fitted scale lies at the edge of the searched range (the
    signature of a match that shrank or blew up the field: failed).
    ``error``: :func:`.uncertainty.expected_error`'s metrics when the EM is known (``{}``: not estimable);
    ``scale_fixed``: the scale came from the pixel sizes (a large error then points at the calibration)."""
    failed, uncertain = [], []
    if scale_edge:
        failed.append(scale_edge)
    if contrast is not None and contrast < NUCLEI_MIN_NCC:
        (failed if contrast < FAIL_CONTRAST else uncertain).append(
            f"the EM shows {'no' if contrast < FAIL_CONTRAST else 'little'} dense heterochromatin under the "
            f"registered chromatin (NCC {contrast:.2f} inside the nuclei): the match is probably wrong")
    if score < FAIL_SCORE:
        failed.append(f"the prediction and the chromatin correlate at only {score:.2f} (overlap score): "
                      "no match found")
    if blobs < FAIL_BLOBS:
        failed.append(f"{blobs} stained nuclei in common with the EM: nothing to correlate on")
    elif blobs < MIN_BLOBS:
        uncertain.append(f"only {blobs} stained {'nucleus overlaps' if blobs == 1 else 'nuclei overlap'} the EM: "
                         "rotation and scale are poorly constrained; check the overlay")
    if margin is not None and margin < MIN_MARGIN:
        uncertain.append(f"a different position scores within {100 * margin:.0f} % of the chosen one "
                         "(ambiguous match); check the overlay")
    if overlap < MIN_OVERLAP:
        uncertain.append(f"the chromatin image covers only {100 * overlap:.0f} % of the EM")
    if error == {} and not failed:
        uncertain.append(f"fewer than {MIN_LOCAL_NUCLEI} stained nuclei could be aligned one by one: the "
                         "registration's error cannot be estimated; check the overlay")
    elif error and error["expected_error_px"] > MAX_EXPECTED_ERROR:
        uncertain.append(f"the stained nuclei, aligned one by one, put the expected error at "
                         f"{error['expected_error_px']:.1f} EM px (they ask for a {error['local_correction_px']:.1f} px "
                         f"change, scale {100 * error['local_scale_change']:+.1f} %"
                         f"{'; check the pixel sizes' if scale_fixed else ''}); check the overlay")
    return ("failed" if failed else "uncertain" if uncertain else "ok"), failed + uncertain


def choose_hypothesis(fixed: np.ndarray, moving: np.ndarray, hyps: list[Hypothesis], size: int,
                      check_cancel=None, scale_range: Optional[tuple[float, float]] = None
                      ) -> tuple[Hypothesis, Optional[float], int]:
    """Refine every hypothesis at working size ``size`` (scale confined to ``scale_range``, the searched
    range) and keep the best by :func:`.score.overlap_score`.

    Returns (best, margin, distinct count): refined hypotheses that converge together count once; the
    margin is the relative score difference to the best distinct runner-up (None when there is none).
    The coarse scores only order the work: the coarse search's best peak is not always the right one.
    """
    refined = []
    for h in hyps:
        if check_cancel:
            check_cancel()
        m, s = refine_pyramid(fixed, moving, h.matrix, [size], scale_range=scale_range)
        refined.append(Hypothesis(m, s, h.angle, h.scale))
    refined = distinct_hypotheses(refined, fixed.shape, len(refined))
    best = refined[0]
    margin = (best.score - refined[1].score) / max(best.score, 1e-6) if len(refined) > 1 else None
    return best, margin, len(refined)


def register_chromatin(predicted: np.ndarray, chromatin: np.ndarray, *, params: SearchParams = SearchParams(),
                       em: Optional[np.ndarray] = None, fixed_pixel_size: Optional[PixelSize] = None,
                       moving_pixel_size: Optional[PixelSize] = None,
                       progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> Registration:
    """Register the predicted chromatin (fixed, EM grid) to the measured chromatin (moving).

    With both pixel sizes (any length units) the scale search is centred on their ratio and narrowed to
    ±25 %.  With ``em`` (same grid as ``predicted``) and ``params.nuclei_refinement`` the heterochromatin
    refinement finishes.  Metrics: ``ncc`` (prediction vs registered chromatin over the overlap),
    ``score`` (:func:`.score.overlap_score` at the refinement size, the criterion every stage is judged
    by), ``coarse_score``, ``margin`` (relative, best vs distinct runner-up), ``hypotheses``,
    ``fitted_scale``, ``overlap``, ``chromatin_blobs``, the ``nuclei_*`` metrics of :func:`refine_nuclei`,
    ``nuclei_contrast`` and the :func:`.uncertainty.expected_error` metrics (with the EM; ``expected_error_px``
    in EM pixels, absent when fewer than ``MIN_LOCAL_NUCLEI`` nuclei could be aligned).
    ``status``: see :func:`outcome`.
    """
    t0 = time.perf_counter()
    if params.model not in ("similarity", "affine"):
        raise InputError(f"the transform model must be similarity or affine (got {params.model!r})")
    fixed = correlation_input(_check(predicted, "predicted chromatin"))
    if em is not None:
        em = _check(em, "EM")
        if em.shape != fixed.shape:
            raise InputError(f"the EM ({em.shape}) and the predicted chromatin ({fixed.shape}) must share a grid")
    measured = _check(chromatin, "chromatin")
    moving = correlation_input(measured)
    prior = scale_prior(fixed_pixel_size, moving_pixel_size)
    if prior is not None:
        params = replace(params, scale_range=(0.8, 1.25))

    def check_cancel():
        if cancelled is not None and cancelled():
            raise Cancelled("correlation was cancelled")

    def report(stage, fraction):
        if progress:
            progress(Progress(stage, 0, None, None, fraction))

    report("coarse search", 0.0)
    hyps = coarse_hypotheses(fixed, moving, params, prior or 1.0, cancelled)
    t1 = time.perf_counter()
    report("refinement", 0.5)
    half, full = params.refine_size // 2, params.refine_size
    lo, hi = (prior or 1.0) * params.scale_range[0], (prior or 1.0) * params.scale_range[1]
    best, margin, n_distinct = choose_hypothesis(fixed, moving, hyps, half, check_cancel, (lo, hi))
    check_cancel()
    m, score = best.matrix, best.score
    if min(1.0, full / max(fixed.shape)) > min(1.0, half / max(fixed.shape)):   # else already refined at that size
        m, score = refine_pyramid(fixed, moving, best.matrix, [full], scale_range=(lo, hi))
    f = min(1.0, full / max(fixed.shape))
    (fw, bf), (mw, bm) = binned(fixed, f), binned(moving, f)
    fs, ms = blur(fw, 1.0), blur(mw, 1.0)
    on_level = lambda a: np.linalg.inv(bm) @ a @ bf   # noqa: E731

    def on_em(m, score, fix_scale) -> _OnEm:
        """Heterochromatin refinement (when asked for), then the nuclei one by one and the expected error."""
        extra, stage = {}, []
        if em is not None and params.nuclei_refinement:
            check_cancel()
            report("heterochromatin refinement", 0.9)
            nm, extra, warning = refine_nuclei(em, measured, m, fix_scale=fix_scale, scale_range=(lo, hi))
            stage = [warning] if warning else []
            if extra["nuclei_applied"]:
                m, score = nm, overlap_score(fs, ms, on_level(nm))
        local = None if em is None else local_shifts(em, measured, m)
        return _OnEm(m, score, extra, stage, local, None if em is None else expected_error(local, em.shape) or {})

    warnings, fix_scale, fitted, free = [], False, T.scale_of(m), (m, score)
    if prior is not None:
        if abs(np.log(fitted / prior)) > SCALE_SNAP:
            warnings.append(f"the fitted scale differs by {100 * (fitted / prior - 1):+.1f} % from the pixel sizes' "
                            "ratio: one image's calibration may be wrong (kept the fitted scale)")
        elif params.scale_from_pixel_size and params.model == "similarity":
            fix_scale = True
            snapped = m @ T.from_params(scale=prior / fitted, center=T.center_of(fixed.shape))
            m, score = refine_pyramid(fixed, moving, snapped, [full], fix_scale=True)
    if params.model == "affine":
        lm, score = refine_ecc(fw, mw, on_level(m), iterations=params.ecc_iterations)
        m = bm @ lm @ np.linalg.inv(bf)
    m, score, extra, stage, local, error = on_em(m, score, fix_scale)
    if fix_scale and error and error["expected_error_px"] > MAX_EXPECTED_ERROR:
        # the nuclei contradict the pixel sizes' ratio: the fitted scale, if the nuclei agree with it better
        alt = on_em(*free, False)
        if alt.error and alt.error["expected_error_px"] < error["expected_error_px"]:
            warnings.append(f"with the pixel sizes' ratio as the scale the stained nuclei put the expected error at "
                            f"{error['expected_error_px']:.1f} EM px, with the fitted scale "
                            f"({100 * (T.scale_of(alt.m) / prior - 1):+.1f} % from the ratio) at "
                            f"{alt.error['expected_error_px']:.1f} px: one image's calibration may be wrong "
                            "(kept the fitted scale)")
            (m, score, extra, stage, local, error), fix_scale = alt, False
    warnings += stage
    t2 = time.perf_counter()
    warped, valid = T.warp_channels([moving], m, fixed.shape)
    q = ncc(fixed, warped[0], valid) if valid.sum() > 16 else 0.0
    blobs = count_blobs(warped[0], valid)
    contrast = None if em is None else 0.0 if local is None else local.contrast
    edge = None
    if not lo * EDGE < T.scale_of(m) < hi / EDGE:
        edge = (f"the fitted scale {T.scale_of(m):.3f} lies at the edge of the searched range {lo:.3f}–{hi:.3f}: "
                "no consistent match" + ("" if prior else " (pixel sizes on both images fix the scale)"))
    status, reasons = outcome(score, margin, blobs, float(valid.mean()), contrast, edge, error, fix_scale)
    warnings = reasons + warnings
    if status == "ok" and warnings:
        status = "uncertain"
    report("done", 1.0)
    return Registration(fixed_to_moving=m, fixed_shape=tuple(fixed.shape), moving_shape=tuple(moving.shape),
                        method=f"deepclem-{params.model}",
                        params={**params.__dict__, "scale_prior": prior or 1.0, "scale_fixed": fix_scale},
                        metrics={"ncc": q, "score": score, "coarse_score": hyps[0].score,
                                 "margin": 1.0 if margin is None else margin, "hypotheses": float(n_distinct),
                                 "fitted_scale": fitted, "overlap": float(valid.mean()),
                                 "mirrored": float(np.linalg.det(m[:2, :2]) < 0),
                                 "chromatin_blobs": float(blobs), **extra, **(error or {}),
                                 **({} if contrast is None else {"nuclei_contrast": contrast})},
                        warnings=warnings, status=status,
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
