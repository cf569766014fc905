"""``register_fiducials`` (beads in both images → transform + error budget) and ``fit_landmarks``
(clicked point pairs → the same report)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from ..errors import InputError
from ..io import check_image, convert_length, normalize_unit
from ..result import Registration
from ..schema import PixelSize
from . import budget as bud
from .detect import PSF_SIGMA_NM, detect_em_discs, detect_lm_spots, lm_spot_sigma_px
from .localise import localise_gaussian, localise_quadratic
from .match import MODELS, PointFit, check_spread, fit_points, map_points, match_points

PixelSizeLike = Union[None, float, PixelSize]
MAX_SCALE_DEVIATION = 0.05      # fitted vs calibrated scale, above which a warning is given
MIN_CONFIDENT_PAIRS = 6
SCALE_TOL = 0.15                # calibrated matching searches scales within ±15 % of the pixel sizes' ratio
MAX_CHI = 4.0                   # residuals above this many times the localisation precision: a warning
GRID = 32                       # predicted TRE sampled on GRID × GRID EM positions


def _nm(ps: PixelSizeLike, name: str) -> Optional[float]:
    """Pixel size in nm from a number (nm) or a PixelSize; None when uncalibrated."""
    if ps is None:
        return None
    if isinstance(ps, PixelSize):
        unit = normalize_unit(ps.unit)
        if unit is None:
            raise InputError(f"the {name} pixel size has an unknown unit {ps.unit!r}")
        if not np.isclose(ps.x, ps.y, rtol=0.01):
            raise InputError(f"the {name} pixels are not square ({ps.x} x {ps.y} {ps.unit}); resample first")
        return convert_length(ps.x, unit, "nm")
    v = float(ps)
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"the {name} pixel size must be a positive number of nm, got {ps!r}")
    return v


def _pixel_size(nm: Optional[float]) -> Optional[PixelSize]:
    return PixelSize(x=nm, y=nm, unit="nm") if nm else None


def _budget_fit(fit: PointFit, src_scale: float, dst_scale: float) -> dict:
    """What :func:`predicted_tre` needs, stored in the error budget (JSON-able)."""
    return {"model": fit.model, "mirrored": fit.mirrored, "theta": fit.theta, "matrix": fit.matrix.tolist(),
            "covariance": fit.cov.tolist(), "moving_unit_per_px": src_scale, "fixed_unit_per_px": dst_scale}


def predicted_tre(error_budget: dict, em_points) -> np.ndarray:
    """Predicted 2-D RMS registration error (budget unit) at EM pixel positions ``em_points`` (N, 2)."""
    f = error_budget["fit"]
    fit = PointFit(np.asarray(f["matrix"]), np.zeros(0, int), np.asarray(f["covariance"]), 1.0, f["model"],
                   bool(f["mirrored"]), float(f["theta"]))
    dst = np.asarray(em_points, float).reshape(-1, 2) * f["fixed_unit_per_px"]
    return fit.predicted_sigma(map_points(np.linalg.inv(fit.matrix), dst))


def tre_grid(error_budget: dict, em_shape, n: int = GRID) -> np.ndarray:
    """Predicted TRE on an ``n`` × ``n`` grid spanning the EM field (rows = y)."""
    h, w = em_shape
    xs, ys = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n))
    return predicted_tre(error_budget, np.stack([xs.ravel(), ys.ravel()], 1)).reshape(n, n)


@dataclass
class _Report:
    fit: PointFit
    scale: float                # fitted similarity scale, fixed units per moving unit
    sigma_alignment: float
    fre: float
    tre_loo: Optional[float]
    expected_loo: Optional[float]
    pairs: list
    entry: dict                 # the budget's "fit" entry
    grid: np.ndarray            # predicted TRE over the EM field


def _report(src, dst, sig_src, sig_dst, model, mirrored, *, em_shape, src_scale, dst_scale, reject) -> _Report:
    """Fit src (moving units) → dst (fixed units); residuals, leave-one-out errors and the predicted TRE."""
    check_spread(dst)
    s0 = fit_points(src, dst, np.hypot(sig_dst, sig_src), model="similarity", mirrored=mirrored, reject=False)
    scale = float(np.sqrt(abs(np.linalg.det(s0.matrix[:2, :2]))))
    sig = np.hypot(sig_dst, scale * sig_src)
    fit = fit_points(src, dst, sig, model=model, mirrored=mirrored, reject=reject)
    k = fit.inliers
    check_spread(dst[k])
    res = np.linalg.norm(map_points(fit.matrix, src[k]) - dst[k], axis=1)
    loo = bud.leave_one_out(src[k], dst[k], sig[k], model=model, mirrored=mirrored)
    entry = _budget_fit(fit, src_scale, dst_scale)
    grid = tre_grid({"fit": entry}, em_shape)
    at_beads = predicted_tre({"fit": entry}, dst[k] / dst_scale)
    pairs = [{"fixed_px": [float(v) for v in dst[i] / dst_scale], "moving_px": [float(v) for v in src[i] / src_scale],
              "residual": round(float(r), 3), "loo": None if not np.isfinite(e) else round(float(e), 3)}
             for i, r, e in zip(k, res, loo)]
    return _Report(fit, scale, bud.rms(grid), bud.rms(res), bud.rms(loo),
                   bud.rms(np.sqrt(sig[k] ** 2 * fit.factor + at_beads ** 2)), pairs, entry, grid)


def _warnings(n: int, rep: _Report, unit: str, sigma_known: bool = True) -> list[str]:
    out = []
    if n < MIN_CONFIDENT_PAIRS:
        out.append(f"only {n} point pairs fit the transform; the error estimate is rough (use "
                   f"{MIN_CONFIDENT_PAIRS}+ beads spread over the field)")
    if not sigma_known:
        return out
    chi = float(np.sqrt(rep.fit.chi2))
    if chi > MAX_CHI:
        out.append(f"the residuals are {chi:.1f}x the localisation precision: wrong pairs, distortion or a too "
                   f"simple model ({rep.fit.model})")
    if rep.tre_loo is not None and rep.expected_loo and rep.tre_loo > 2.5 * rep.expected_loo:
        out.append(f"leave-one-out error {rep.tre_loo:.1f} {unit} is much larger than the predicted "
                   f"{rep.expected_loo:.1f} {unit}: the points do not agree with a {rep.fit.model} transform "
                   "(distortion, or a wrong pair)")
    return out


def register_fiducials(em: np.ndarray, lm: np.ndarray, *, em_pixel_size: PixelSizeLike,
                       lm_pixel_size: PixelSizeLike, bead_nm: float = 200.0, model: Optional[str] = None,
                       polarity: str = "auto", localisation: str = "quadratic", bead_px: Optional[float] = None,
                       lm_spot_px: Optional[float] = None, allow_mirror: bool = True,
                       psf_sigma_nm: float = PSF_SIGMA_NM) -> Registration:
    """Register the LM onto the EM by fiducial beads visible in both, with an error budget.

    Beads: dark or bright discs of ``bead_nm`` in the EM (``polarity``), bright spots in the LM.
    Pixel sizes are numbers in nm or :class:`~clem_bridge.schema.PixelSize`; both or neither must be
    given (uncalibrated: pass ``bead_px``, the EM bead diameter in pixels, and the budget is in EM pixels).
    ``model``: rigid, similarity or affine (default: similarity when calibrated, affine otherwise).
    The LM may be rotated by any angle and mirrored.  The LM spot size is predicted from ``psf_sigma_nm`` (or
    ``lm_spot_px``) and adapted to the strongest spots.  Bad input raises :class:`InputError`.
    """
    t0 = time.perf_counter()
    em = check_image(em, "the EM image")
    lm = check_image(lm, "the LM image")
    em_nm, lm_nm = _nm(em_pixel_size, "EM"), _nm(lm_pixel_size, "LM")
    if (em_nm is None) != (lm_nm is None):
        raise InputError("mismatched calibration: the " + ("LM" if lm_nm is None else "EM") + " image has no pixel "
                         "size while the other has one; give both (the bead size and scale depend on them)")
    calibrated = em_nm is not None
    model = model or ("similarity" if calibrated else "affine")
    if model not in MODELS:
        raise InputError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    if localisation not in ("quadratic", "gaussian"):
        raise InputError(f"localisation must be quadratic or gaussian, got {localisation!r}")
    if calibrated:
        radius = bead_nm / 2 / em_nm
        spot = lm_spot_px or lm_spot_sigma_px(bead_nm, lm_nm, psf_sigma_nm)
    else:
        if not bead_px:
            raise InputError("the images are not calibrated: give both pixel sizes, or the bead diameter in EM "
                             "pixels (bead_px)")
        radius, spot = bead_px / 2, lm_spot_px or 2.0
    if radius < 1.5:
        raise InputError(f"the {bead_nm:g} nm beads are only {2 * radius:.1f} EM pixels across; beads need 3+ pixels")

    em_c = detect_em_discs(em, radius_px=radius, polarity=polarity)
    lm_c = detect_lm_spots(lm, sigma_px=spot)
    for name, c, what in (("EM", em_c, f"discs of ~{2 * radius:.0f} px"), ("LM", lm_c, "bright spots")):
        if len(c.xy) == 0:
            raise InputError(f"no beads found in the {name} image (looked for round {what}); check the bead size, "
                             "pixel size and polarity")
    smooth = max(0.5 * radius, 1.0)
    loc = localise_gaussian if localisation == "gaussian" else localise_quadratic
    kw_em = {"width": radius} if localisation == "gaussian" else {}
    kw_lm = {"width": lm_c.sigma_px} if localisation == "gaussian" else {}
    e = loc(em_c.signal, em_c.xy, half=int(np.ceil(radius)), noise_factor=4 * np.pi * smooth ** 2, **kw_em)
    m = loc(lm_c.signal, lm_c.xy, half=int(np.ceil(1.5 * lm_c.sigma_px)), **kw_lm)
    e_ok, m_ok = np.flatnonzero(e.ok), np.flatnonzero(m.ok)
    e_ok, m_ok = e_ok[np.argsort(-em_c.score[e_ok])], m_ok[np.argsort(-lm_c.score[m_ok])]
    t_detect = time.perf_counter() - t0

    for name, idx, loc_ in (("EM", e_ok, e), ("LM", m_ok, m)):
        if len(idx) < 3:
            raise InputError(f"only {len(idx)} bead(s) found in the {name} image; at least 3 are needed")
        check_spread(loc_.xy[idx], f"the beads found in the {name} image")
    es, ms = (em_nm, lm_nm) if calibrated else (1.0, 1.0)
    unit = "nm" if calibrated else "px"
    fixed, moving = e.xy[e_ok] * es, m.xy[m_ok] * ms
    sig_f, sig_m = e.sigma[e_ok] * es, m.sigma[m_ok] * ms
    tol = max(radius * es, 5 * float(np.median(np.hypot(np.median(sig_f), sig_m))))
    match = match_points(fixed, moving, radius=tol, scale=1.0 if calibrated else None, scale_tol=SCALE_TOL,
                         allow_mirror=allow_mirror)
    if calibrated:
        free = match_points(fixed, moving, radius=tol, scale=None, allow_mirror=allow_mirror)
        s = float(np.sqrt(abs(np.linalg.det(free.moving_to_fixed[:2, :2]))))
        if len(free.pairs) >= max(4, 1.5 * len(match.pairs)) and abs(np.log(s)) > np.log(1 + SCALE_TOL):
            raise InputError(f"mismatched calibration: the bead patterns match at {s:.3f}x the scale the pixel sizes "
                             f"give (EM {em_nm:g} nm, LM {lm_nm:g} nm); check the pixel sizes")
    if len(match.pairs) < 3:
        raise InputError(f"only {len(match.pairs)} bead pairs matched between the EM ({len(fixed)} beads) and the "
                         f"LM ({len(moving)} beads); at least 3 are needed")
    t_match = time.perf_counter() - t0 - t_detect
    fi, mi = match.pairs[:, 0], match.pairs[:, 1]
    rep = _report(moving[mi], fixed[fi], sig_m[mi], sig_f[fi], model, match.mirrored, em_shape=em.shape,
                  src_scale=ms, dst_scale=es, reject=True)
    k, c = rep.fit.inliers, np.sqrt(rep.fit.factor)   # c > 1: the residuals show the fit-based precisions too small
    for p, j in zip(rep.pairs, k):
        p.update({"sigma_em": round(float(c * sig_f[fi][j]), 3), "sigma_lm": round(float(c * sig_m[mi][j]), 3)})
    sigma_em, sigma_lm = c * float(np.median(sig_f[fi][k])), c * float(np.median(sig_m[mi][k] * rep.scale))
    warnings = _warnings(len(k), rep, unit)
    if calibrated and abs(rep.scale - 1) > MAX_SCALE_DEVIATION:
        warnings.append(f"the fitted scale differs from the pixel sizes' ratio by {100 * (rep.scale - 1):+.1f} %; "
                        "check the calibration")
    status = None
    if len(k) == 3 and min(len(fixed), len(moving)) >= 4:
        status = "failed"
        warnings.append(f"only 3 of {len(fixed)} EM and {len(moving)} LM beads matched: three points can match by "
                        "chance, so this transform is unverified")
    if len(k) < len(match.pairs):
        warnings.append(f"{len(match.pairs) - len(k)} matched bead pair(s) rejected as outliers")
    budget = bud.error_budget(sigma_em=sigma_em, sigma_lm=sigma_lm, sigma_alignment=rep.sigma_alignment,
                              fre=rep.fre, tre_loo=rep.tre_loo, pairs=rep.pairs, unit=unit,
                              tre_loo_expected=rep.expected_loo, tre_max=float(rep.grid.max()),
                              n_em_beads=len(fixed), n_lm_beads=len(moving), mirrored=bool(match.mirrored),
                              fit=rep.entry)
    m2f_px = np.diag([1 / es, 1 / es, 1.0]) @ rep.fit.matrix @ np.diag([ms, ms, 1.0])
    metrics = {"n_matched": float(len(k)), "n_em_beads": float(len(fixed)), "n_lm_beads": float(len(moving)),
               f"fre_{unit}": rep.fre, f"sigma_alignment_{unit}": rep.sigma_alignment,
               f"sigma_total_{unit}": budget[f"sigma_total_{unit}"], "scale_vs_calibration": rep.scale,
               "chi": float(np.sqrt(rep.fit.chi2))}
    if rep.tre_loo is not None:
        metrics[f"tre_loo_{unit}"] = rep.tre_loo
    return Registration(
        fixed_to_moving=np.linalg.inv(m2f_px), fixed_shape=tuple(em.shape), moving_shape=tuple(lm.shape),
        method="fiducials", params={"bead_nm": bead_nm, "model": model, "polarity": em_c.polarity,
                                    "localisation": localisation, "mirrored": bool(match.mirrored)},
        metrics=metrics, timings={"detect_s": t_detect, "match_s": t_match,
                                  "total_s": time.perf_counter() - t0},
        fixed_pixel_size=_pixel_size(em_nm), moving_pixel_size=_pixel_size(lm_nm), warnings=warnings,
        status=status, error_budget=budget)


def fit_landmarks(fixed_pts, moving_pts, *, fixed_pixel_size: PixelSizeLike = None,
                  moving_pixel_size: PixelSizeLike = None, model: str = "affine", fixed_shape=None,
                  moving_shape=None, sigma_fixed: Optional[float] = None,
                  sigma_moving: Optional[float] = None) -> Registration:
    """Fit clicked landmark pairs (pixel coordinates, ``fixed`` = EM, ``moving`` = LM) with the error report.

    Click precision is unknown unless ``sigma_fixed``/``sigma_moving`` (nm, or px when uncalibrated) are
    given; the alignment error is then scaled by the observed residuals (FRE), and ``sigma_total`` covers the
    alignment only.  No pair is dropped.
    ``fixed_shape`` (default: the landmarks' extent) is the field the TRE is averaged over.
    """
    f, mv = np.asarray(fixed_pts, float).reshape(-1, 2), np.asarray(moving_pts, float).reshape(-1, 2)
    if len(f) != len(mv):
        raise InputError(f"{len(f)} fixed but {len(mv)} moving landmarks; they must come in pairs")
    if len(f) < 3:
        raise InputError(f"only {len(f)} landmark pairs; at least 3 are needed")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(mv))):
        raise InputError("landmarks must be finite numbers")
    if model not in MODELS:
        raise InputError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    em_nm, lm_nm = _nm(fixed_pixel_size, "EM"), _nm(moving_pixel_size, "LM")
    if (em_nm is None) != (lm_nm is None):
        raise InputError("mismatched calibration: give both pixel sizes or neither")
    calibrated = em_nm is not None
    es, ms = (em_nm, lm_nm) if calibrated else (1.0, 1.0)
    unit = "nm" if calibrated else "px"
    fixed_shape = tuple(fixed_shape or (int(np.ceil(f[:, 1].max())) + 1, int(np.ceil(f[:, 0].max())) + 1))
    moving_shape = tuple(moving_shape or (int(np.ceil(mv[:, 1].max())) + 1, int(np.ceil(mv[:, 0].max())) + 1))
    check_spread(f, "the fixed landmarks")
    check_spread(mv, "the moving landmarks")
    det = np.linalg.det(fit_points(mv, f, np.ones(len(f)), model="affine", reject=False).matrix[:2, :2])
    known = bool(sigma_fixed or sigma_moving)
    sf = np.full(len(f), (sigma_fixed or 0.0) if known else 1.0)   # unknown: unit weights, scaled by the residuals
    sm = np.full(len(f), sigma_moving or 0.0)
    rep = _report(mv * ms, f * es, sm, sf, model, bool(det < 0), em_shape=fixed_shape, src_scale=ms, dst_scale=es,
                  reject=False)
    budget = bud.error_budget(sigma_em=sigma_fixed, sigma_lm=sigma_moving * rep.scale if sigma_moving else None,
                              sigma_alignment=rep.sigma_alignment, fre=rep.fre, tre_loo=rep.tre_loo, pairs=rep.pairs,
                              unit=unit, tre_max=float(rep.grid.max()), mirrored=bool(det < 0), fit=rep.entry)
    m2f_px = np.diag([1 / es, 1 / es, 1.0]) @ rep.fit.matrix @ np.diag([ms, ms, 1.0])
    metrics = {"n_matched": float(len(f)), f"fre_{unit}": rep.fre, f"sigma_alignment_{unit}": rep.sigma_alignment}
    if rep.tre_loo is not None:
        metrics[f"tre_loo_{unit}"] = rep.tre_loo
    return Registration(fixed_to_moving=np.linalg.inv(m2f_px), fixed_shape=fixed_shape, moving_shape=moving_shape,
                        method="landmarks", params={"model": model, "mirrored": bool(det < 0)}, metrics=metrics,
                        fixed_pixel_size=_pixel_size(em_nm), moving_pixel_size=_pixel_size(lm_nm),
                        warnings=_warnings(len(f), rep, unit, known), error_budget=budget)
