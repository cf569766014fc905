"""Bead candidates: bright spots in the LM, dark or bright discs in the EM, of the expected size and shape.

The expected sizes come from the calibration: an EM bead is a disc of ``bead_nm / em_pixel_nm`` pixels
across; an LM bead is a spot of σ = √(σ_PSF² + R²/5) (the PSF convolved with a projected sphere of
radius R).  Candidates are local maxima of a band-pass (LM: difference of Gaussians; EM: scale-normalised
Laplacian of Gaussian at the disc's scale) above a robust noise threshold; each is kept only when its
half-maximum region has the expected area (×0.45–2.2) and is round (eccentricity < 0.8, solidity > 0.85).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from skimage.feature import peak_local_max
from skimage.measure import label, regionprops

PSF_SIGMA_NM = 170.0            # widefield PSF σ at ~600 nm emission with an NA 0.75 air objective
AREA_RANGE = (0.45, 2.2)
MAX_ECCENTRICITY = 0.8
MIN_SOLIDITY = 0.85


@dataclass
class Candidates:
    """Integer peak positions ``xy`` (N, 2) as (x, y), their band-pass ``score`` (N,), the ``signal``
    image the peaks are bright in (for localisation), the ``polarity`` used and the blob size used
    (``sigma_px``: LM spot σ, or EM disc radius)."""
    xy: np.ndarray
    score: np.ndarray
    signal: np.ndarray
    polarity: str = "bright"
    sigma_px: float = 0.0


def lm_spot_sigma_px(bead_nm: float, lm_pixel_nm: float, psf_sigma_nm: float = PSF_SIGMA_NM) -> float:
    """Expected Gaussian σ (LM pixels) of a bead's image: the PSF convolved with the projected sphere."""
    return float(np.sqrt(psf_sigma_nm ** 2 + (bead_nm / 2) ** 2 / 5) / lm_pixel_nm)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _mad_sigma(a: np.ndarray) -> float:
    sub = a.ravel()[:: max(1, a.size // 200_000)]
    return float(1.4826 * np.median(np.abs(sub - np.median(sub)))) or float(sub.std()) or 1.0


def _blob_shape(signal: np.ndarray, x: int, y: int, half: int) -> Optional[tuple[float, float, float]]:
    """(area, eccentricity, solidity) of the half-maximum region at (x, y) above the patch's border median."""
    h, w = signal.shape
    y0, y1, x0, x1 = max(y - half, 0), min(y + half + 1, h), max(x - half, 0), min(x + half + 1, w)
    patch = signal[y0:y1, x0:x1]
    ring = np.concatenate([patch[0], patch[-1], patch[:, 0], patch[:, -1]])
    bg = np.median(ring)
    amp = signal[y, x] - bg
    if amp <= 0:
        return None
    lab = label(patch - bg > amp / 2)
    region = lab[y - y0, x - x0]
    if region == 0:
        return None
    p = regionprops((lab == region).astype(np.uint8))[0]
    return float(p.area), float(p.eccentricity), float(p.solidity)


def _accept(shapes, expected_area: float) -> np.ndarray:
    """Which blobs have the expected area (× AREA_RANGE) and are round."""
    return np.array([s is not None and AREA_RANGE[0] <= s[0] / expected_area <= AREA_RANGE[1]
                     and s[1] < MAX_ECCENTRICITY and s[2] > MIN_SOLIDITY for s in shapes], bool)


def _peaks(response: np.ndarray, min_distance: int, threshold: float, border: int, max_peaks: int):
    xy = peak_local_max(response, min_distance=max(min_distance, 1), threshold_abs=threshold,
                        exclude_border=max(border, 1), num_peaks=max_peaks)
    return xy[:, ::-1], response[xy[:, 0], xy[:, 1]]


def detect_lm_spots(lm: np.ndarray, *, sigma_px: float, snr: float = 5.0, max_spots: int = 300,
                    adapt: bool = True) -> Candidates:
    """Bright, round, diffraction-sized spots in a fluorescence image (8/16-bit or float).

    ``sigma_px`` is the expected spot σ; with ``adapt``, when the ten strongest round spots are more than
    30 % wider or narrower (another PSF, beads out of focus), their size (×0.5–3) is tried too and the size
    finding more spots is kept.  The σ used is returned as ``Candidates.sigma_px``.
    """
    img = np.asarray(lm, dtype=np.float32)
    smooth = _blur(img, max(sigma_px * 0.5, 0.5))
    dog = _blur(img, sigma_px) - _blur(img, 3 * sigma_px)
    noise = _mad_sigma(dog)
    xy, score = _peaks(dog, int(round(1.5 * sigma_px)), float(np.median(dog) + snr * noise),
                       int(np.ceil(1.5 * sigma_px)), max_spots)
    eff = np.sqrt(sigma_px ** 2 + (0.5 * sigma_px) ** 2)      # σ after the smoothing
    shapes = [_blob_shape(smooth, x, y, int(np.ceil(4 * eff))) for x, y in xy]
    keep = _accept(shapes, 2 * np.log(2) * np.pi * eff ** 2)
    found = Candidates(xy[keep], score[keep] / noise, img, sigma_px=float(sigma_px))
    if adapt:
        round_ = [s for s in shapes[:10] if s is not None and s[1] < MAX_ECCENTRICITY and s[2] > MIN_SOLIDITY]
        if len(round_) >= 3:
            measured = np.median([s[0] for s in round_]) / (2 * np.log(2) * np.pi) - (0.5 * sigma_px) ** 2
            ratio = float(np.sqrt(max(measured, 0.0))) / sigma_px
            if 0.5 <= ratio <= 3 and abs(np.log(ratio)) > np.log(1.3):
                other = detect_lm_spots(img, sigma_px=sigma_px * ratio, snr=snr, max_spots=max_spots, adapt=False)
                return other if len(other.xy) > len(found.xy) else found
    return found


def detect_em_discs(em: np.ndarray, *, radius_px: float, polarity: str = "auto", snr: float = 4.0,
                    max_candidates: int = 300) -> Candidates:
    """Round discs of ``radius_px`` in an EM/SXT image, dark (absorbing) or bright; ``polarity="auto"``
    keeps the polarity with more round discs of the right size (ties: the stronger)."""
    if polarity not in ("auto", "dark", "bright"):
        raise ValueError(f"polarity must be auto, dark or bright, got {polarity!r}")
    img = np.asarray(em, dtype=np.float32)
    s = max(radius_px / np.sqrt(2), 1.0)
    log = cv2.Laplacian(_blur(img, s), cv2.CV_32F, borderType=cv2.BORDER_REFLECT) * s * s  # > 0 at dark blobs
    noise = _mad_sigma(log)
    smooth = _blur(img, max(0.5 * radius_px, 1.0))
    half = int(np.ceil(2 * radius_px + 2))
    area = np.pi * radius_px ** 2
    found = {}
    for pol, sign in (("dark", 1.0), ("bright", -1.0)):
        if polarity not in ("auto", pol):
            continue
        resp = sign * log
        xy, score = _peaks(resp, int(round(radius_px)), float(np.median(resp) + snr * noise),
                           int(np.ceil(radius_px + 2)), max_candidates)
        sig = -smooth if pol == "dark" else smooth
        keep = _accept([_blob_shape(sig, x, y, half) for x, y in xy], area)
        found[pol] = Candidates(xy[keep], score[keep] / noise, sig, pol, radius_px)
    return max(found.values(), key=lambda c: (len(c.xy), float(np.sum(c.score))))
