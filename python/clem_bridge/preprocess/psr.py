"""Pixel-size ratio (PSR) and field of view of the EM inside the LM by coarse-to-fine template matching.

The EM binned by a candidate PSR and Gaussian-filtered is the template, the LM the source; the
search runs over scale and angle.  :func:`estimate_psr` returns a :class:`PSREstimate`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .. import transforms as T
from ..errors import InputError
from ..intensity import percentile_normalise
from ..io import check_image, convert_length, normalize_unit
from ..peaks import parabola_vertex, subpixel_peak
from ..schema import PixelSize

METHODS = {"ccoeff_normed": cv2.TM_CCOEFF_NORMED, "ccorr_normed": cv2.TM_CCORR_NORMED}


@dataclass
class PSREstimate:
    """Where the EM field of view lies in the LM image.

    ``fixed_to_moving`` maps EM pixels to LM pixels (a similarity: scale ``1/psr``,
    rotation ``rotation_deg``); ``center`` is the LM pixel under the EM centre; ``score``
    is the correlation at the peak, ``sharpness`` the peak minus the best correlation
    outside the peak's neighbourhood (a quarter of the template size).
    """
    psr: float
    rotation_deg: float
    fixed_to_moving: np.ndarray
    center: tuple[float, float]
    score: float
    sharpness: float
    evaluations: int = 0


def psr_from_pixel_sizes(em: Optional[PixelSize], lm: Optional[PixelSize]) -> Optional[float]:
    """PSR (LM pixel size / EM pixel size) from metadata, or None when either is missing."""
    if em is None or lm is None:
        return None
    eu, lu = normalize_unit(em.unit), normalize_unit(lm.unit)
    if eu is None or lu is None:
        raise InputError(f"unknown pixel size unit {em.unit!r} or {lm.unit!r}.")
    return float(convert_length(lm.x, lu, "um") / convert_length(em.x, eu, "um"))


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0.3 else img


def _gradient(img: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def _masked_match(src: np.ndarray, valid: np.ndarray, tmpl: np.ndarray, method: str,
                  min_overlap: float = 0.5) -> np.ndarray:
    """Normalised correlation over the valid source pixels only (source partly padded).

    Equals ``cv2.matchTemplate`` with ``method`` where the window is fully valid; placements
    with less than ``min_overlap`` of the template on valid pixels score -1.
    """
    th, tw = tmpl.shape
    v = valid.astype(np.float32)
    if method == "ccoeff_normed":                # centred first: less cancellation in the sums
        s, t = (src - float(src[valid].mean())) * v, tmpl - float(tmpl.mean())
    else:
        s, t = src * v, tmpl

    def box(img):                                # window sums, float64
        ii = cv2.integral(img.astype(np.float64))
        return ii[th:, tw:] - ii[:-th, tw:] - ii[th:, :-tw] + ii[:-th, :-tw]

    n = box(v)
    st = cv2.matchTemplate(s, t, cv2.TM_CCORR).astype(np.float64)
    t1 = cv2.matchTemplate(v, t, cv2.TM_CCORR).astype(np.float64)
    t2 = cv2.matchTemplate(v, t * t, cv2.TM_CCORR).astype(np.float64)
    s1, s2 = box(s), box(s * s)
    nn = np.maximum(n, 1.0)
    if method == "ccoeff_normed":
        num = st - s1 * t1 / nn
        den = (s2 - s1 * s1 / nn) * (t2 - t1 * t1 / nn)
    else:
        num, den = st, s2 * t2
    out = np.where(den > 1e-12, num / np.sqrt(np.maximum(den, 1e-12)), -1.0)
    out[n < min_overlap * th * tw] = -1.0
    return out.astype(np.float32)


class _Matcher:
    """Template matching of the EM (template) in the LM (source) at one LM pyramid level."""

    def __init__(self, em_base, base_to_em, em_shape, lm, level: int, *, method: str, edges: bool,
                 src_sigma: float, tmpl_sigma: float, lam: float, pad: float, exact: bool = False):
        lm_level, self.level_to_lm = T.area_resize(lm, (max(1, lm.shape[0] // level), max(1, lm.shape[1] // level)))
        self.level = level
        self.em_base, self.base_to_em = em_base, base_to_em
        self.em_shape = em_shape
        self.method, self.edges, self.lam, self.pad = method, edges, lam, pad
        self.tmpl_sigma, self.exact = tmpl_sigma, exact
        src = _blur(lm_level, src_sigma)
        self.src = _blur(_gradient(src), 1.0) if edges else src
        self.fill = float(np.median(self.src))
        self.evaluations = 0
        self._blurred: dict[float, np.ndarray] = {}

    def template(self, psr: float, angle: float, sign: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Template for (psr, angle) and the matrix mapping its pixels to EM pixels.

        ``sign=-1`` inverts the template contrast (LM and EM with opposite contrast).
        """
        step = psr * self.level                     # EM pixels per template pixel
        h, w = self.em_shape
        th = max(4, int(math.floor(self.lam * h / step)))
        tw = max(4, int(math.floor(self.lam * w / step)))
        ce, ct = T.center_of(self.em_shape), T.center_of((th, tw))
        m = T.compose(np.array([[1, 0, ce[0] - ct[0]], [0, 1, ce[1] - ct[1]], [0, 0, 1.0]]),
                      T.from_params(rotation_deg=angle, scale=step, center=ct))
        return self._sample(m, (th, tw), psr, sign), m

    def _sample(self, to_em: np.ndarray, shape, psr: float, sign: int) -> np.ndarray:
        """The EM (anti-aliased for ``psr``) sampled on a grid of ``shape`` whose pixels map to EM by ``to_em``."""
        base_sigma = 0.5 * psr * self.level / self.base_to_em[0, 0]
        key = round(base_sigma * 20) / 20           # pre-blur re-used across nearby scales
        if key not in self._blurred:
            if len(self._blurred) >= 4:
                self._blurred.pop(next(iter(self._blurred)))
            self._blurred[key] = _blur(self.em_base, key)
        to_base = np.linalg.inv(self.base_to_em) @ to_em
        out = cv2.warpAffine(self._blurred[key], to_base[:2].astype(np.float64), (int(shape[1]), int(shape[0])),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        if sign < 0:
            out = 1.0 - out
        if self.edges:
            out = _gradient(out)
        return _blur(out, self.tmpl_sigma)

    def footprint_match(self, em_to_lm: np.ndarray, psr: float, sign: int, r: int = 2):
        """Re-match the whole EM field of view (not only the inscribed template) within ``r`` level pixels.

        Returns (score, refined EM→LM matrix), or None when the field of view leaves the LM.
        """
        to_level = np.linalg.inv(self.level_to_lm) @ em_to_lm
        h, w = self.em_shape
        c = T.apply_to_points(to_level, [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]])
        x0, y0 = int(math.floor(c[:, 0].min())), int(math.floor(c[:, 1].min()))
        x1, y1 = int(math.ceil(c[:, 0].max())), int(math.ceil(c[:, 1].max()))
        if x0 - r < 0 or y0 - r < 0 or x1 + r >= self.src.shape[1] or y1 + r >= self.src.shape[0]:
            return None
        shape = (y1 - y0 + 1, x1 - x0 + 1)
        box_to_em = np.linalg.inv(to_level) @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])
        tmpl = self._sample(box_to_em, shape, psr, sign)
        mask = cv2.erode(T.valid_mask(box_to_em, shape, self.em_shape).astype(np.uint8), np.ones((5, 5), np.uint8))
        win = self.src[y0 - r:y1 + r + 1, x0 - r:x1 + r + 1]
        resp = cv2.matchTemplate(win, tmpl, METHODS[self.method], mask=mask.astype(np.float32))
        resp = np.nan_to_num(resp, nan=-1.0, posinf=-1.0, neginf=-1.0)
        _, _, _, loc = cv2.minMaxLoc(resp)
        sx, sy, peak = subpixel_peak(resp, loc)
        shift = np.array([[1, 0, sx - r], [0, 1, sy - r], [0, 0, 1.0]])
        return peak, self.level_to_lm @ shift @ to_level

    def match(self, psr: float, angle: float, around: Optional[np.ndarray] = None, margin: int = 0,
              sign: int = 1):
        """(score, sharpness, EM→LM matrix) of the best placement of the template.

        ``around``: previous EM→LM matrix; the search is then restricted to ``margin``
        level pixels around its prediction.
        """
        tmpl, t_to_em = self.template(psr, angle, sign=sign)
        th, tw = tmpl.shape
        pad_y, pad_x = int(self.pad * th), int(self.pad * tw)
        src = cv2.copyMakeBorder(self.src, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=self.fill)
        valid = np.pad(np.ones(self.src.shape, bool), ((pad_y, pad_y), (pad_x, pad_x)))
        ox, oy = -pad_x, -pad_y                     # level coords of src[0, 0]
        if around is not None:
            lvl = np.linalg.inv(self.level_to_lm) @ around @ t_to_em
            px, py = int(round(lvl[0, 2])) - ox, int(round(lvl[1, 2])) - oy
            x0, y0 = max(0, px - margin), max(0, py - margin)
            x1 = min(src.shape[1], px + tw + margin)
            y1 = min(src.shape[0], py + th + margin)
            if x1 - x0 < tw or y1 - y0 < th:
                return -np.inf, 0.0, None
            src, valid = src[y0:y1, x0:x1], valid[y0:y1, x0:x1]
            ox, oy = ox + x0, oy + y0
        if src.shape[0] < th or src.shape[1] < tw:
            return -np.inf, 0.0, None
        masked = self.exact and not valid.all()
        resp = _masked_match(src, valid, tmpl, self.method) if masked else cv2.matchTemplate(
            src, tmpl, METHODS[self.method])
        self.evaluations += 1
        resp = np.nan_to_num(resp, nan=-1.0, posinf=-1.0, neginf=-1.0)
        _, peak, _, loc = cv2.minMaxLoc(resp)
        sx, sy, peak = subpixel_peak(resp, loc)
        r = max(2, min(th, tw) // 4)
        rest = resp.copy()
        rest[max(0, loc[1] - r):loc[1] + r + 1, max(0, loc[0] - r):loc[0] + r + 1] = -np.inf
        second = float(rest.max()) if np.isfinite(rest.max()) else float(resp.min())
        sharp = peak - second
        shift = np.array([[1, 0, sx + ox], [0, 1, sy + oy], [0, 0, 1.0]])
        em_to_lm = self.level_to_lm @ shift @ np.linalg.inv(t_to_em)
        if self.exact:                              # score with the whole EM field of view where possible
            full = self.footprint_match(em_to_lm, psr, sign)
            if full is not None:
                peak, em_to_lm = full
        return float(peak), float(sharp), em_to_lm


def _fit_ratio(em_shape, lm_shape) -> float:
    """Smallest PSR at which the EM field of view still fits inside the LM image."""
    return max(em_shape[0] / lm_shape[0], em_shape[1] / lm_shape[1])


def estimate_psr(em, lm, *, psr_hint: Optional[float] = None, search: float = 0.1,
                 psr_range: tuple[float, float] = (1.5, 16.0), rotations: float = 8.0,
                 method: str = "ccoeff_normed", edges: bool = False, polarity: str = "auto",
                 rank: str = "sharpness",
                 coarse_template: int = 64, fine_template: int = 512, template_sigma: float = 1.0,
                 partial: float = 0.25,
                 top: int = 3, tol: float = 5e-4) -> PSREstimate:
    """Find the PSR (LM pixel size / EM pixel size), position and rotation of the EM in the LM.

    ``psr_hint`` (e.g. from metadata) restricts the scale search to ``hint·(1 ± search)``;
    ``search=0`` keeps the PSR fixed and only locates the field of view.  Without a hint
    ``psr_range`` is searched.  ``rotations``: largest absolute rotation searched (degrees).
    ``method``: 'ccoeff_normed' (default) or 'ccorr_normed'; ``edges`` matches gradient
    magnitudes instead of intensities.  Measured on phantoms (``benchmarks/bench_prepare.py``,
    PSR 2–10): both correlations reach ≤ 0.2 % PSR error up to PSR 5 and ~0.5 % at 8–10
    (ccorr slightly better there), gradients are not better; the default keeps the
    correlation coefficient, which is also invariant to intensity offsets between modalities.  ``polarity``: 'same' or 'inverted' contrast of the
    LM relative to the EM, or 'auto' (both tried).  ``rank``: how coarse candidates are ordered,
    'sharpness' (peak over runner-up, a sharp unique peak wins) or 'score' (peak value).
    ``partial``: fraction of the template allowed to lie outside the LM image.
    """
    em = check_image(em, "the EM image")
    lm = check_image(lm, "the LM image")
    if method not in METHODS:
        raise InputError(f"method must be one of {sorted(METHODS)}, got {method!r}.")
    if rank not in ("sharpness", "score"):
        raise InputError(f"rank must be 'sharpness' or 'score', got {rank!r}.")
    if polarity not in ("auto", "same", "inverted"):
        raise InputError(f"polarity must be 'auto', 'same' or 'inverted', got {polarity!r}.")
    if psr_hint is not None and not (np.isfinite(psr_hint) and psr_hint > 0):
        raise InputError(f"the pixel size ratio must be a positive number, got {psr_hint}.")
    em_shape, lm_shape = em.shape, lm.shape
    if psr_hint is not None:
        lo, hi = psr_hint * (1 - search), psr_hint * (1 + search)
    else:
        lo, hi = psr_range
    lam = 1.0 / (abs(math.cos(math.radians(rotations))) + abs(math.sin(math.radians(rotations))))
    if psr_hint is None:                                   # without metadata the EM must lie inside the LM
        lo = max(lo, _fit_ratio(em_shape, lm_shape) * lam)
    if lo > hi:
        raise InputError("the EM field of view is larger than the LM image at every candidate pixel size ratio.")

    em_long = max(em_shape)
    matchers: dict[tuple[int, bool], _Matcher] = {}

    def level_for(s: float, target: int) -> int:          # LM binning giving templates of ~target px
        return max(1, int(em_long * lam / (s * target)))

    # the EM binned once to ~2x the finest template sampling (it may be huge), then normalised
    base_factor = max(1, int(math.floor(lo * level_for(hi, fine_template) / 2)))
    em_base, base_to_em = T.area_resize(em, (max(1, em.shape[0] // base_factor), max(1, em.shape[1] // base_factor)))
    em_base, lm_n = (percentile_normalise(a, 0.5, 99.5, max_samples=512 * 512) for a in (em_base, lm))

    def matcher(level: int, fine: bool) -> _Matcher:
        if (level, fine) not in matchers:
            matchers[(level, fine)] = _Matcher(em_base, base_to_em, em_shape, lm_n, level, method=method,
                                               edges=edges, src_sigma=0.0 if fine else 1.0,
                                               tmpl_sigma=template_sigma, lam=lam, pad=partial, exact=fine)
        return matchers[(level, fine)]

    def s_step_at(s: float, target: int) -> float:
        return min(0.03, max(0.002, 1.5 * s * level_for(s, target) / (em_long * lam)))

    scales = [lo]
    while scales[-1] < hi * (1 - 1e-9):
        scales.append(min(hi, scales[-1] * math.exp(s_step_at(scales[-1], coarse_template))))
    a_step = min(2.0, math.degrees(2.0 / coarse_template))
    n_a = int(math.ceil(2 * rotations / a_step)) + 1 if rotations > 0 else 1
    angles = np.linspace(-rotations, rotations, n_a) if n_a > 1 else np.array([0.0])
    signs = {"same": (1,), "inverted": (-1,), "auto": (1, -1)}[polarity] if not edges else (1,)
    cands = []
    for s in scales:
        m = matcher(level_for(s, coarse_template), False)
        for a in angles:
            for sign in signs:
                sc, sh, mat = m.match(float(s), float(a), sign=sign)
                if mat is not None:
                    cands.append((sh if rank == "sharpness" else sc, float(s), float(a), mat, m.level, sign))
    if not cands:
        raise InputError("the EM image could not be placed inside the LM image (check the pixel sizes).")
    cands.sort(key=lambda c: -c[0])
    chosen: list[tuple] = []
    for c in cands:                                        # top distinct candidates
        if all(np.linalg.norm(T.apply_to_points(c[3], [T.center_of(em_shape)])
                              - T.apply_to_points(o[3], [T.center_of(em_shape)])) > 2 * c[4]
               or abs(math.log(c[1] / o[1])) > 0.05 or abs(c[2] - o[2]) > 2 * a_step or c[5] != o[5]
               for o in chosen):
            chosen.append(c)
        if len(chosen) == top:
            break

    best = None
    for _, s, a, mat, clevel, sign in chosen:
        fm = matcher(level_for(s, fine_template), True)
        res = _refine(fm, s, a, mat, s_step=0.0 if hi <= lo else s_step_at(s, coarse_template),
                      a_step=a_step if rotations > 0 else 0.0,
                      margin=2 + int(math.ceil(3 * clevel / fm.level)), tol=tol, bounds=(lo, hi, rotations),
                      sign=sign)
        if res is not None and (best is None or res[0] > best[0]):
            best = res
    if best is None:
        raise InputError("the EM image could not be placed inside the LM image (check the pixel sizes).")
    score, sharp, s, a, mat = best
    center = tuple(float(v) for v in T.apply_to_points(mat, [T.center_of(em_shape)])[0])
    return PSREstimate(psr=s, rotation_deg=-a, fixed_to_moving=mat, center=center, score=score,
                       sharpness=sharp, evaluations=sum(m.evaluations for m in matchers.values()))


def _refine(m: _Matcher, s: float, a: float, mat, *, s_step: float, a_step: float, margin: int,
            tol: float, bounds, sign: int):
    """Pattern search over (log scale, angle) at the fine level, then a parabolic vertex."""
    lo, hi, amax = bounds
    cache: dict[tuple[float, float], tuple] = {}

    def ev(s_, a_):
        key = (round(s_, 9), round(a_, 7))
        if key not in cache:
            s_c = float(np.clip(s_, lo, hi))
            a_c = float(np.clip(a_, -amax, amax))
            cache[key] = m.match(s_c, a_c, around=mat, margin=margin, sign=sign) if (s_c, a_c) == (s_, a_) else (
                -np.inf, 0.0, None)
        return cache[key]

    cur = ev(s, a)
    if cur[2] is None:
        return None
    mat = cur[2]
    ds, da = s_step, a_step
    for _ in range(60):
        moves = [(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)
                 and not (ds == 0 and i) and not (da == 0 and j)]
        vals = {(i, j): ev(s * math.exp(i * ds), a + j * da) for i, j in moves}
        (bi, bj), bv = max(vals.items(), key=lambda kv: kv[1][0]) if vals else ((0, 0), cur)
        if bv[0] > cur[0]:
            s, a, cur = s * math.exp(bi * ds), a + bj * da, bv
            mat = cur[2]
            continue
        if ds <= tol and da <= math.degrees(tol):
            break
        ds, da = ds / 2, da / 2
    ds_, da_ = ds, da                   # parabolic vertex on the last neighbourhood
    if ds_ > 0:
        fm_, fp_ = ev(s * math.exp(-ds_), a)[0], ev(s * math.exp(ds_), a)[0]
        if np.isfinite(fm_) and np.isfinite(fp_):
            s = s * math.exp(parabola_vertex(fm_, cur[0], fp_) * ds_)
    if da_ > 0:
        fm_, fp_ = ev(s, a - da_)[0], ev(s, a + da_)[0]
        if np.isfinite(fm_) and np.isfinite(fp_):
            a = a + parabola_vertex(fm_, cur[0], fp_) * da_
    final = m.match(s, a, around=mat, margin=margin, sign=sign)
    if final[2] is None:
        final = cur
    return final[0], final[1], s, a, final[2]
