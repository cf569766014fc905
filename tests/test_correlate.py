"""Chromatin-to-chromatin correlation: global search + ECC recovers known affines (TRE in moving pixels)."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from PIL import Image

from clem_bridge import synthetic as S
from clem_bridge import transforms as T
from clem_bridge.errors import Cancelled, InputError
from clem_bridge.insilico.correlate import (MAX_EXPECTED_ERROR, MIN_MARGIN, SearchParams, choose_hypothesis, chromatin_channel, outcome,
                                           register_chromatin, scale_prior)
from clem_bridge.insilico.normalize import correlation_input
from clem_bridge.insilico.refine import blur, refine_pyramid, refine_similarity
from clem_bridge.insilico.search import Hypothesis, binned, coarse_hypotheses
from clem_bridge.insilico.score import ncc, overlap_score
from clem_bridge.io import convert_length, normalize_unit
from clem_bridge.schema import PixelSize
from clem_bridge.insilico.nuclei import MIN_BLOBS, NUCLEI_MAX_SHIFT, count_blobs, refine_nuclei
from clem_bridge.insilico.uncertainty import MIN_LOCAL_NUCLEI, expected_error, local_shifts
from clem_bridge.io import read_image

SHAPE = (256, 256)
# rotation searched ±30° (the cases turn by ≤ 18°) and no mirror where the test is about a later stage, not the
# global search (test_recovers_known_affine and the mirror test search both handednesses)
LOCAL = SearchParams(max_rotation=30.0, mirror=False)


def case(rotation, scale, moving_shape, seed, shift=(9.0, -6.0), lm_pixel_ratio=1.0):
    f2m = S.centred_affine(SHAPE, moving_shape, rotation_deg=rotation, scale=scale, translation=shift)
    pair = S.make_pair(SHAPE, fixed_to_moving=f2m, moving_shape=moving_shape, seed=seed,
                       lm_pixel_ratio=lm_pixel_ratio)
    m = pair.masks   # the ideal prediction: the phantom's chromatin on the EM grid
    pred = cv2.GaussianBlur(0.04 + 0.12 * m["nucleus"] + 0.85 * m["heterochromatin"], (0, 0), 1.5)
    return pair, pred, f2m


@pytest.mark.parametrize("rotation,scale,moving_shape,max_rotation", [
    (28.0, 1.0, (256, 256), 180.0),
    (-30.0, 0.8, (230, 300), 180.0),      # smaller, wider LM canvas
    (12.0, 1.25, (352, 330), 45.0),       # larger LM canvas
    (-8.0, (1.06, 0.95), (256, 256), 45.0),   # anisotropic scale: model="affine" (ECC)
    (20.0, 0.9, (480, 440), 45.0),        # LM field of view ~3x the EM's (DeepCLEM's example situation)
])
def test_recovers_known_affine(rotation, scale, moving_shape, max_rotation):
    """Global search (rotation ±``max_rotation``, scale 0.5–2, translation over the whole LM canvas)."""
    pair, pred, f2m = case(rotation, scale, moving_shape, seed=11)
    model = "similarity" if np.isscalar(scale) else "affine"
    reg = register_chromatin(pred, pair.lm["chromatin"], params=SearchParams(model=model, max_rotation=max_rotation))
    err = T.tre(reg.fixed_to_moving, f2m, SHAPE)
    assert err < 1.5, f"TRE {err:.2f} px, metrics {reg.metrics}"
    assert reg.metrics["ncc"] > 0.8
    assert reg.fixed_shape == SHAPE and reg.moving_shape == tuple(moving_shape)


def test_pixel_sizes_set_the_scale_prior():
    """LM pixels twice the EM pixels: the scale (0.5) lies outside a unit-centred ±25 % search but is found."""
    pair, pred, f2m = case(-15.0, 0.5, (160, 150), seed=12, shift=(3.0, 2.0), lm_pixel_ratio=2.0)
    reg = register_chromatin(pred, pair.lm["chromatin"], fixed_pixel_size=pair.fixed_pixel_size,
                             moving_pixel_size=pair.moving_pixel_size, params=LOCAL)
    assert reg.params["scale_prior"] == pytest.approx(0.5)
    assert T.tre(reg.fixed_to_moving, f2m, SHAPE) < 1.5


def test_pixel_sizes_fix_a_poorly_fitted_scale():
    """A prediction 3 % too large (a network's bias; in real crops, few nuclei) pulls the fitted scale off;
    with calibrated images the scale is snapped to the pixel sizes' ratio and the error goes away."""
    pair, pred, f2m = case(-15.0, 0.5, (160, 150), seed=12, shift=(3.0, 2.0), lm_pixel_ratio=2.0)
    zoomed = T.warp_image(pred, T.from_params(scale=1 / 1.03, center=T.center_of(SHAPE)), SHAPE,
                          fill=float(np.median(pred)))
    sizes = dict(fixed_pixel_size=pair.fixed_pixel_size, moving_pixel_size=pair.moving_pixel_size)
    free = register_chromatin(zoomed, pair.lm["chromatin"], params=replace(LOCAL, scale_from_pixel_size=False), **sizes)
    snapped = register_chromatin(zoomed, pair.lm["chromatin"], params=LOCAL, **sizes)
    assert not free.params["scale_fixed"] and T.tre(free.fixed_to_moving, f2m, SHAPE) > 1.5
    assert snapped.params["scale_fixed"] and snapped.metrics["fitted_scale"] == pytest.approx(0.5 / 1.03, rel=0.01)
    assert np.sqrt(np.linalg.det(snapped.fixed_to_moving[:2, :2])) == pytest.approx(0.5, rel=1e-9)
    assert T.tre(snapped.fixed_to_moving, f2m, SHAPE) < 1.0


def test_wrong_calibration_keeps_the_fitted_scale_and_warns():
    """Pixel sizes say equal, the LM is really 10 % coarser: the fit is kept and the user is told."""
    pair, pred, f2m = case(10.0, 1.1, (288, 272), seed=5)
    reg = register_chromatin(pred, pair.lm["chromatin"], fixed_pixel_size=pair.fixed_pixel_size,
                             moving_pixel_size=pair.moving_pixel_size, params=LOCAL)
    assert T.tre(reg.fixed_to_moving, f2m, SHAPE) < 1.5 and not reg.params["scale_fixed"]
    assert reg.metrics["fitted_scale"] == pytest.approx(1.1, rel=0.01)
    assert any("pixel sizes' ratio" in w and "calibration" in w for w in reg.warnings), reg.warnings


def test_a_wrong_calibration_shows_in_the_expected_error():
    """Pixel sizes 4 % off the truth: the scale is snapped to their ratio (within ``SCALE_SNAP``), and the nuclei,
    aligned one by one, ask for the 4 % back; the expected error follows the true one (RMS over the field)."""
    pair, pred, f2m = case(18.0, 1.0, (280, 270), seed=14)
    ys, xs = np.mgrid[0:SHAPE[0]:4, 0:SHAPE[1]:4]
    grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    for wrong in (1.0, 1.04):
        reg = register_chromatin(pred, pair.lm["chromatin"], em=pair.em, params=LOCAL,
                                 fixed_pixel_size=PixelSize(x=10.0, y=10.0, unit="nm"),
                                 moving_pixel_size=PixelSize(x=0.01 / wrong, y=0.01 / wrong, unit="um"))
        assert reg.params["scale_fixed"]
        rms = np.sqrt(np.mean(np.sum((T.apply_to_points(reg.fixed_to_moving, grid)
                                      - T.apply_to_points(f2m, grid)) ** 2, 1)))
        if wrong == 1.0:
            assert rms < 1.0 and reg.metrics["expected_error_px"] < 1.2, reg.metrics
        else:
            assert rms > 3.0 and 0.75 * rms < reg.metrics["expected_error_px"] < 1.35 * rms, (rms, reg.metrics)
            assert reg.metrics["local_scale_change"] == pytest.approx(1 / wrong - 1, abs=0.01)


def test_nuclei_that_contradict_the_calibration_keep_the_fitted_scale():
    """Pixel sizes 5.5 % off (inside the snap range) on a 384 px field: with their ratio as the scale the nuclei
    put the expected error above ``MAX_EXPECTED_ERROR``, with the fitted scale far below: the fitted scale is
    kept, the user told to check the calibration; a right calibration is used as it is."""
    shape = (384, 384)
    f2m = S.centred_affine(shape, (400, 390), rotation_deg=12, scale=1.0, translation=(9, -6))
    pair = S.make_pair(shape, fixed_to_moving=f2m, moving_shape=(400, 390), seed=21)
    pred = cv2.GaussianBlur(0.04 + 0.12 * pair.masks["nucleus"] + 0.85 * pair.masks["heterochromatin"], (0, 0), 1.5)
    for wrong in (1.0, 1.055):
        reg = register_chromatin(pred, pair.lm["chromatin"], em=pair.em, params=LOCAL,
                                 fixed_pixel_size=PixelSize(x=10.0, y=10.0, unit="nm"),
                                 moving_pixel_size=PixelSize(x=0.01 / wrong, y=0.01 / wrong, unit="um"))
        assert T.tre(reg.fixed_to_moving, f2m, shape) < 1.0 and reg.metrics["expected_error_px"] < 1.5
        if wrong == 1.0:
            assert reg.params["scale_fixed"] and reg.status == "ok", reg.warnings
        else:
            assert not reg.params["scale_fixed"] and reg.status == "uncertain"
            assert any("calibration may be wrong" in w and "kept the fitted scale" in w for w in reg.warnings)


def test_a_mirrored_chromatin_image_is_found():
    """The LM seen from the other side of the section: the mirrored hypotheses win (det < 0) and land on the
    truth; without the mirror search nothing fits, and the result says so."""
    pair, pred, f2m = case(18.0, 1.1, (280, 270), seed=14)
    flip = np.array([[-1.0, 0.0, 269.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])   # x mirrored in the 270 px wide LM
    chrom = np.ascontiguousarray(pair.lm["chromatin"][:, ::-1])
    reg = register_chromatin(pred, chrom, em=pair.em, params=replace(LOCAL, mirror=True))
    assert reg.metrics["mirrored"] == 1.0 and np.linalg.det(reg.fixed_to_moving[:2, :2]) < 0
    assert T.tre(reg.fixed_to_moving, flip @ f2m, SHAPE) < 1.0 and reg.status == "ok", reg.warnings
    plain = register_chromatin(pred, chrom, em=pair.em, params=LOCAL)
    assert plain.metrics["mirrored"] == 0.0 and plain.outcome != "ok"
    # the wrong handedness scores far lower on the coarse grid (0.5x here) and is not searched further
    for image, sign in ((chrom, -1), (pair.lm["chromatin"], 1)):
        hyps = coarse_hypotheses(correlation_input(pred), correlation_input(image), replace(LOCAL, mirror=True))
        assert all(np.sign(np.linalg.det(h.matrix[:2, :2])) == sign for h in hyps)


def test_few_nuclei_in_view_warn():
    blobs = np.zeros((300, 400), np.float32)
    for i in range(5):
        cv2.circle(blobs, (40 + 75 * i, 80), 20, 1.0, -1)     # 5 nuclei (area ~1250 px)
        cv2.circle(blobs, (40 + 75 * i, 220), 5, 1.0, -1)     # 5 specks below BLOB_MIN_AREA
    assert count_blobs(blobs, np.ones(blobs.shape, bool)) == 5
    assert count_blobs(blobs, np.zeros(blobs.shape, bool)) == 0
    pair, pred, f2m = case(5.0, 1.0, (256, 256), seed=11)
    reg = register_chromatin(pred, pair.lm["chromatin"], params=LOCAL)
    assert reg.metrics["chromatin_blobs"] >= MIN_BLOBS and not reg.warnings
    big = S.make_pair(SHAPE, fixed_to_moving=f2m, moving_shape=(256, 256), seed=3, cell_diameter=150.0)
    few = cv2.GaussianBlur(0.04 + 0.12 * big.masks["nucleus"] + 0.85 * big.masks["heterochromatin"], (0, 0), 1.5)
    reg = register_chromatin(few, big.lm["chromatin"], params=LOCAL)
    assert reg.metrics["chromatin_blobs"] < MIN_BLOBS
    assert any("stained nucle" in w and "poorly constrained" in w for w in reg.warnings), reg.warnings


def biased_prediction(pred, dx=3.0, dy=-2.0, rotation=0.6):
    """A prediction displaced like a biased network's: the correlation alone inherits the bias."""
    bias = T.from_params(rotation_deg=rotation, translation=(dx, dy), center=T.center_of(pred.shape))
    return T.warp_image(pred, bias, pred.shape, fill=float(np.median(pred)))


def test_heterochromatin_refinement_removes_a_prediction_bias():
    """EM heterochromatin is dark (or, inverted, bright): the final stage on the EM itself removes a 3-4 px bias."""
    pair, pred, f2m = case(18.0, 1.1, (280, 270), seed=14)
    biased, params = biased_prediction(pred), LOCAL
    off = replace(params, nuclei_refinement=False)
    plain = register_chromatin(biased, pair.lm["chromatin"], em=pair.em, params=off)
    assert T.tre(plain.fixed_to_moving, f2m, SHAPE) > 2.5           # the bias survives the correlation
    refined = register_chromatin(biased, pair.lm["chromatin"], em=pair.em, params=params)
    assert T.tre(refined.fixed_to_moving, f2m, SHAPE) < 0.8, refined.metrics
    assert refined.metrics["nuclei_applied"] == 1.0 and refined.metrics["nuclei_ncc"] > 0.5
    assert refined.metrics["nuclei_shift_px"] > 2.5 and not refined.warnings
    assert np.allclose(refined.metrics["coarse_score"], plain.metrics["coarse_score"])   # same search, then the stage
    # each result's own error estimate (nuclei aligned one by one) sees the bias, and its removal
    plain_error = T.tre(plain.fixed_to_moving, f2m, SHAPE)
    assert 0.7 * plain_error < plain.metrics["expected_error_px"] < 1.4 * plain_error, plain.metrics
    assert refined.metrics["expected_error_px"] < 1.2, refined.metrics
    inverted, metrics, warning = refine_nuclei(1.0 - pair.em, pair.lm["chromatin"], plain.fixed_to_moving)
    assert T.tre(inverted, f2m, SHAPE) < 0.8 and metrics["nuclei_applied"] == 1.0 and warning is None


def test_heterochromatin_refinement_sees_the_unsaturated_chromatin():
    """The stained nuclear body fills more than 3 % of the field and the heterochromatin puncta (the EM's dense
    spots) are brighter still, as in SIM Hoechst images: the correlation input saturates at its 97th percentile,
    which erases the puncta, so the stage on the EM must get the chromatin as measured.  (On DeepCLEM's s8
    the saturated chromatin left the result 2 px from the criterion's own optimum.)"""
    pair, pred, f2m = case(18.0, 1.1, (280, 270), seed=15)
    lm = pair.lm["chromatin"]
    chrom = (0.04 + 0.3 * (lm > 0.1) + 0.7 * (lm > 0.9)).astype(np.float32)   # nuclear body, puncta < 1 %
    noise = np.random.default_rng(15).normal(0, 0.03, SHAPE)
    em = (0.6 - 0.4 * (pair.masks["heterochromatin"] > 0.9) + noise).astype(np.float32)   # dense puncta only
    biased, params = biased_prediction(pred), LOCAL
    reg = register_chromatin(biased, chrom, em=em, params=params)
    assert T.tre(reg.fixed_to_moving, f2m, SHAPE) < 1.0, reg.metrics
    assert reg.metrics["nuclei_applied"] == 1.0 and reg.status == "ok", reg.warnings
    saturated = register_chromatin(biased, correlation_input(chrom), em=em, params=params)   # what the stage saw
    assert T.tre(saturated.fixed_to_moving, f2m, SHAPE) > 2.5


def test_heterochromatin_refinement_keeps_the_result_without_contrast_or_on_a_large_move():
    pair, pred, f2m = case(-10.0, 1.0, SHAPE, seed=15)
    flat = np.random.default_rng(0).normal(0.5, 0.05, SHAPE).astype(np.float32)   # EM without chromatin contrast
    m, metrics, warning = refine_nuclei(flat, pair.lm["chromatin"], f2m)
    assert np.array_equal(m, f2m) and metrics["nuclei_applied"] == 0.0 and warning is None
    far = f2m @ T.from_params(translation=(8.0, -5.0))   # beyond NUCLEI_MAX_SHIFT of a 256 px field
    assert 8.0 > NUCLEI_MAX_SHIFT * max(SHAPE)
    m, metrics, warning = refine_nuclei(pair.em, pair.lm["chromatin"], far)
    assert np.array_equal(m, far) and metrics["nuclei_applied"] == 0.0
    assert "kept the prediction-based registration" in warning
    with pytest.raises(InputError, match="share a grid"):
        register_chromatin(pred, pair.lm["chromatin"], em=pair.em[:100])
    with pytest.raises(InputError, match="NaN"):
        register_chromatin(pred, pair.lm["chromatin"], em=np.full(SHAPE, np.nan, np.float32))


def test_progress_cancel_and_bad_input():
    pair, pred, _ = case(5.0, 1.0, SHAPE, seed=13)
    seen = []
    register_chromatin(pred, pair.lm["chromatin"], params=SearchParams(max_rotation=20), progress=seen.append)
    assert [p.stage for p in seen][0] == "coarse search" and seen[-1].fraction == 1.0
    with pytest.raises(Cancelled):
        register_chromatin(pred, pair.lm["chromatin"], cancelled=lambda: True)
    with pytest.raises(InputError, match="similarity or affine"):
        register_chromatin(pred, pair.lm["chromatin"], params=SearchParams(model="projective"))
    with pytest.raises(InputError, match="constant"):
        register_chromatin(pred, np.zeros((100, 100)))
    with pytest.raises(InputError, match="NaN"):
        register_chromatin(np.full(SHAPE, np.nan), pair.lm["chromatin"])


def test_rgb_chromatin_uses_blue(tmp_path):
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 2] = np.arange(50, dtype=np.uint8)[None, :]
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    img = read_image(tmp_path / "c.png")
    ci = chromatin_channel(img.data.shape[0], img.rgb, None, "c.png")
    assert ci == 2 and np.array_equal(img.data[ci], rgb[..., 2])
    assert chromatin_channel(img.data.shape[0], img.rgb, 0, "c.png") == 0
    with pytest.raises(InputError, match="name the chromatin channel"):
        chromatin_channel(2, False, None, "two.tif")


def test_ncc():
    a = np.random.default_rng(0).random((20, 20))
    assert ncc(a, 3 * a + 1) == pytest.approx(1.0)
    assert ncc(a, -a) == pytest.approx(-1.0)


def test_the_best_coarse_peak_is_wrong_and_the_second_is_right():
    """Hypotheses are refined and chosen by the common overlap score, not by the coarse score: a wrong
    position handed over first with the higher coarse score loses to the right one handed over second."""
    pair, pred, f2m = case(28.0, 1.0, SHAPE, seed=11)
    wrong = Hypothesis(f2m @ T.from_params(translation=(70.0, -40.0)), score=0.9)
    near = Hypothesis(f2m @ T.from_params(rotation_deg=2.0, translation=(3.0, -2.0), center=T.center_of(SHAPE)),
                      score=0.4)
    fixed, moving = correlation_input(pred), correlation_input(pair.lm["chromatin"])
    best, margin, n = choose_hypothesis(fixed, moving, [wrong, near], 256)
    assert n == 2 and T.tre(best.matrix, f2m, SHAPE) < 1.0
    assert margin > MIN_MARGIN and best.score == pytest.approx(overlap_score(blur(fixed, 1.0), blur(moving, 1.0),
                                                                             best.matrix))
    again, _, _ = choose_hypothesis(fixed, moving, [near, wrong], 256)
    assert np.allclose(again.matrix, best.matrix)


def test_a_diverging_refinement_is_rejected():
    """Fine dots agree at the identity; a faint broad blob agrees 15 px away.  The coarse level (dots
    averaged out) walks to the blob and a plain coarse-to-fine chain stays there; the pyramid compares
    every level's start with the original one on that level's score and keeps the identity."""
    rng = np.random.default_rng(0)
    dots = np.zeros(SHAPE, np.float32)
    dots[rng.integers(0, 256, 900), rng.integers(0, 256, 900)] = 1.0
    dots = cv2.GaussianBlur(dots, (0, 0), 1.0)
    yy, xx = np.mgrid[0:256, 0:256]
    blob = lambda x0: np.exp(-((xx - x0) ** 2 + (yy - 128) ** 2) / (2 * 20.0 ** 2)).astype(np.float32)  # noqa: E731
    fixed, moving = dots + 0.1 * blob(110), dots + 0.1 * blob(125)
    fw, bf = binned(fixed, 32 / 256)
    mw, bm = binned(moving, 32 / 256)
    coarse, _ = refine_similarity(fw, mw, np.eye(3))
    walked = bm @ coarse @ np.linalg.inv(bf)
    stuck, stuck_score = refine_similarity(fixed, moving, walked)
    assert T.tre(walked, np.eye(3), SHAPE) > 8 and T.tre(stuck, np.eye(3), SHAPE) > 8   # the chain diverges
    m, score = refine_pyramid(fixed, moving, np.eye(3), [32, 256])
    assert T.tre(m, np.eye(3), SHAPE) < 0.5 and score > stuck_score
    assert score >= overlap_score(blur(fixed, 1.0), blur(moving, 1.0), np.eye(3))


def test_nm_em_and_um_chromatin_give_the_scale_prior():
    """EM calibrated in nm, chromatin in µm (the usual CLEM files): units are converted, never refused."""
    pair, pred, f2m = case(-15.0, 0.5, (160, 150), seed=12, shift=(3.0, 2.0), lm_pixel_ratio=2.0)
    fx = convert_length(pair.fixed_pixel_size.x, normalize_unit(pair.fixed_pixel_size.unit), "nm")
    mx = convert_length(pair.moving_pixel_size.x, normalize_unit(pair.moving_pixel_size.unit), "um")
    em_nm, lm_um = PixelSize(x=fx, y=fx, unit="nm"), PixelSize(x=mx, y=mx, unit="µm")
    reg = register_chromatin(pred, pair.lm["chromatin"], fixed_pixel_size=em_nm, moving_pixel_size=lm_um,
                             params=LOCAL)
    assert reg.params["scale_prior"] == pytest.approx(0.5) and reg.params["scale_fixed"]
    assert T.tre(reg.fixed_to_moving, f2m, SHAPE) < 1.5
    assert scale_prior(PixelSize(x=5.0, y=5.0, unit="nm"), PixelSize(x=0.1, y=0.1, unit="um")) == pytest.approx(0.05)
    angstrom_mm = scale_prior(PixelSize(x=50.0, y=50.0, unit="Å"), PixelSize(x=1e-4, y=1e-4, unit="mm"))
    assert angstrom_mm == pytest.approx(0.05)
    assert scale_prior(PixelSize(x=5.0, y=5.0, unit="nm"), None) is None


def test_outcome_rules():
    assert outcome(0.5, 0.4, 14, 0.9, 0.6) == ("ok", [])
    status, why = outcome(0.5, 0.02, 14, 0.9, 0.6)
    assert status == "uncertain" and "ambiguous" in why[0]
    status, why = outcome(0.5, None, 5, 0.2, None)
    assert status == "uncertain" and len(why) == 2
    status, why = outcome(0.5, 0.4, 14, 0.9, 0.05)
    assert status == "failed" and "heterochromatin" in why[0]
    assert outcome(0.05, 0.4, 14, 0.9)[0] == "failed" and outcome(0.5, 0.4, 1, 0.9)[0] == "failed"
    assert outcome(0.5, 0.4, 14, 0.9, 0.6, "the fitted scale lies at the edge")[0] == "failed"
    small = {"expected_error_px": 1.2, "local_correction_px": 0.4}
    assert outcome(0.5, 0.4, 14, 0.9, 0.6, error=small) == ("ok", [])
    status, why = outcome(0.5, 0.4, 14, 0.9, 0.6, error={"expected_error_px": MAX_EXPECTED_ERROR + 1,
                                                         "local_correction_px": 5.5, "local_scale_change": 0.0})
    assert status == "uncertain" and "expected error" in why[0] and "5.5 px change" in why[0]
    status, why = outcome(0.5, 0.4, 14, 0.9, 0.6, error={})       # the EM is known, too few nuclei to align
    assert status == "uncertain" and "cannot be estimated" in why[0]
    assert outcome(0.05, 0.4, 14, 0.9, error={})[1] == outcome(0.05, 0.4, 14, 0.9)[1]   # failed says why it failed


def test_nuclei_aligned_one_by_one_measure_a_known_error():
    """Registrations off by a known shift or rotation: each nucleus' own best shift undoes the offset, and the
    expected error (RMS over the field) matches the true one; at the truth it is small."""
    pair, _, f2m = case(18.0, 1.1, (280, 270), seed=14)
    chrom = pair.lm["chromatin"]
    ys, xs = np.mgrid[0:SHAPE[0]:4, 0:SHAPE[1]:4]
    grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    for offset in (T.from_params(translation=(3.0, -2.0)),
                   T.from_params(rotation_deg=1.5, center=T.center_of(SHAPE)),
                   T.from_params(scale=1.02, center=T.center_of(SHAPE))):
        local = local_shifts(pair.em, chrom, f2m @ offset)
        assert len(local.centres) >= MIN_LOCAL_NUCLEI and local.unresolved == 0
        true_shift = T.apply_to_points(np.linalg.inv(offset), local.centres) - local.centres
        assert np.abs(local.shifts - true_shift).max() < 1.2, (local.shifts, true_shift)
        rms = np.sqrt(np.mean(np.sum((T.apply_to_points(offset, grid) - grid) ** 2, 1)))
        err = expected_error(local, SHAPE)
        assert 0.75 * rms < err["expected_error_px"] < 1.35 * rms, (err, rms)
    at_truth = expected_error(local_shifts(pair.em, chrom, f2m), SHAPE)
    assert at_truth["expected_error_px"] < 1.2 and at_truth["local_nuclei"] >= MIN_LOCAL_NUCLEI
    flat = np.random.default_rng(0).normal(0.5, 0.05, SHAPE).astype(np.float32)   # no chromatin contrast
    assert expected_error(local_shifts(flat, chrom, f2m), SHAPE) is None


def test_nothing_in_common_fails():
    """Chromatin of another field (a different phantom): the registration says it failed."""
    pair, pred, _ = case(5.0, 1.0, SHAPE, seed=13)
    other = S.make_pair(SHAPE, seed=99, cell_diameter=150.0)
    reg = register_chromatin(pred, other.lm["chromatin"], em=pair.em, params=SearchParams(max_rotation=20))
    assert reg.outcome == "failed" and any("edge of the searched range" in w for w in reg.warnings), reg.warnings


def test_the_coarse_search_scores_every_scale_at_the_same_resolution():
    """A textured chromatin image (SIM puncta) and a smooth, imperfect prediction (false positives).  Binned
    once and magnified for small scales, the chromatin looks smoother at half scale than at the true one, and
    the coarse stage kept only half-scale poses (s8 with a leave-one-out model: the true pose never reached the
    refinement).  Binned to the working pixel size per scale, the true pose comes first."""
    shape = (384, 384)
    f2m = S.centred_affine(shape, shape, rotation_deg=15.0, scale=1.05, translation=(23.0, -19.0))
    pair = S.make_pair(shape, fixed_to_moving=f2m, moving_shape=shape, seed=2, cell_diameter=64.0)
    rng = np.random.default_rng(2)
    m = pair.masks
    spots = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 9.6)
    false = (spots > np.percentile(spots, 90)).astype(np.float32) * 0.4       # false positives of the network
    pred = cv2.GaussianBlur(0.12 * m["nucleus"] + 0.85 * m["heterochromatin"] + false, (0, 0), 3.0)
    textured = pair.lm["chromatin"] * (1 + 1.5 * rng.standard_normal(shape))
    best = coarse_hypotheses(correlation_input(pred), correlation_input(textured.astype(np.float32)),
                             SearchParams(hypotheses=4))[0]
    assert T.scale_of(best.matrix) == pytest.approx(1.05, abs=0.03) and T.tre(best.matrix, f2m, shape) < 8.0


def test_refinements_stay_inside_the_searched_scale_range():
    """The optimum lies below the searched range (scale 0.8 vs 0.88–1.2): the refinement stops at its edge
    instead of leaving it, and the coarse search's finer grid does not step outside it either (a calibrated
    s7 case went from a coarse 0.76 to 0.655, far outside 0.76–1.19)."""
    pair, pred, f2m = case(0.0, 0.8, SHAPE, seed=11, shift=(0.0, 0.0))
    fixed, moving = correlation_input(pred), correlation_input(pair.lm["chromatin"])
    start = f2m @ T.from_params(scale=1.12, center=T.center_of(SHAPE))
    free, _ = refine_pyramid(fixed, moving, start, [128])
    bounded, _ = refine_pyramid(fixed, moving, start, [128], scale_range=(0.88, 1.2))
    assert T.scale_of(free) == pytest.approx(0.8, abs=0.02)
    assert 0.88 - 1e-6 <= T.scale_of(bounded) < 0.9
    hyps = coarse_hypotheses(fixed, moving, SearchParams(scale_range=(0.88, 1.2), max_rotation=8.0))
    assert all(0.88 - 1e-6 <= T.scale_of(h.matrix) <= 1.2 + 1e-6 for h in hyps)   # the finer grid stays inside too
