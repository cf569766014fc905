"""Fiducial beads and landmarks: localisation, matching, fit, error budget and bad input (issue 12)."""
import numpy as np
import pytest

from clem_bridge.errors import InputError
from clem_bridge.fiducials import fit_landmarks, predicted_tre, register_fiducials, total_sigma
from clem_bridge.fiducials.detect import detect_em_discs, detect_lm_spots
from clem_bridge.fiducials.localise import localise_gaussian, localise_quadratic
from clem_bridge.fiducials.match import match_points
from clem_bridge.fiducials.simulate import _add_ellipsoid, make_bead_phantom
from clem_bridge.result import Registration
from clem_bridge.transforms import apply_to_points, from_params, tre

SMALL = dict(em_shape=(512, 512), lm_shape=(120, 160), n_beads=(10, 14))


def small_phantom(seed, **kw):
    return make_bead_phantom(seed, **{**SMALL, **kw})


def rms_error_nm(reg: Registration, ph) -> float:
    """True RMS error (nm, LM frame) of the registration over the EM field."""
    ys, xs = np.mgrid[0:ph.em.shape[0]:16, 0:ph.em.shape[1]:16]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    d = apply_to_points(reg.fixed_to_moving, pts) - apply_to_points(ph.fixed_to_moving, pts)
    return float(np.sqrt(np.mean(np.sum(d * d, 1)))) * ph.lm_pixel_nm


@pytest.mark.parametrize("loc", [localise_quadratic, localise_gaussian])
def test_localisation_unbiased_on_noise_free_spots(loc):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    for _ in range(12):
        c, s = rng.uniform(24, 40, 2), rng.uniform(1.2, 3.0)
        img = 1000 * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * s * s)) + 100
        kw = {"width": s} if loc is localise_gaussian else {}
        res = loc(img, [np.round(c)], half=int(np.ceil(1.5 * s)), **kw)
        assert res.ok[0]
        assert np.all(np.abs(res.xy[0] - c) < 0.05)
        assert res.width[0] == pytest.approx(s, rel=0.05)


def test_em_disc_found_and_localised_without_bias():
    rng = np.random.default_rng(1)
    for polarity in ("dark", "bright"):
        thick, c = np.zeros((96, 96)), rng.uniform(40, 56, 2)
        _add_ellipsoid(thick, c, 10, 10, 0)
        img = 200 * np.exp(-0.06 * thick)
        img = img if polarity == "dark" else 255 - img
        cand = detect_em_discs(img.astype(np.uint8 if polarity == "dark" else np.uint16), radius_px=10)
        assert cand.polarity == polarity and len(cand.xy) == 1
        res = localise_quadratic(cand.signal, cand.xy, half=10)
        assert np.all(np.abs(res.xy[0] - c) < 0.05)


def test_detection_rejects_wrong_sizes_and_finds_the_beads():
    ph = small_phantom(3)
    em = detect_em_discs(ph.em, radius_px=10)
    assert em.polarity == "dark"
    d = np.linalg.norm(em.xy[:, None] - ph.em_beads[None], axis=2).min(1)
    assert np.sum(d < 3) == len(ph.em_beads)        # every bead, plus only the 3 bead-like debris
    assert len(em.xy) == len(ph.em_beads) + 3
    lm = detect_lm_spots(ph.lm, sigma_px=2.7)
    dl = np.linalg.norm(lm.xy[:, None] - ph.lm_beads[None], axis=2).min(1)
    assert np.sum(dl < 2) >= len(ph.lm_beads) - 1 and np.all(dl < 2)


def _point_sets(rng, n=14, rotation=180.0, mirror=False, outliers=0.3):
    """``n`` common points (nm, 20 nm noise) plus 30 % unmatched points mixed into each set (≥ 600 nm from
    the others): EM debris and bleached beads in one, LM-only beads in the other."""
    fixed = rng.uniform(0, 8000, (n, 2))
    m2f = from_params(rotation_deg=rotation, scale=1.02, translation=(500, -300)) @ np.diag(
        [1, -1 if mirror else 1, 1])
    moving = apply_to_points(np.linalg.inv(m2f), fixed) + rng.normal(0, 20, (n, 2))
    k = int(round(outliers * n / (1 - outliers)))
    extras = []
    while len(extras) < 2 * k:
        p = rng.uniform(0, 8000, 2)
        if np.min(np.linalg.norm(np.vstack([fixed, *extras]) - p, axis=1)) > 600:
            extras.append(p)
    extra_m = apply_to_points(np.linalg.inv(m2f), np.array(extras[k:]))
    return np.vstack([fixed, extras[:k]]), np.vstack([moving, extra_m]), {(i, i) for i in range(n)}


@pytest.mark.parametrize("rotation,mirror", [(180.0, False), (180.0, True), (-97.0, True), (33.0, False)])
def test_matching_with_outliers_any_rotation_and_mirror(rotation, mirror):
    rng = np.random.default_rng(abs(int(rotation)) + 7 * mirror)
    f, m, truth = _point_sets(rng, rotation=rotation, mirror=mirror)
    pf, pm = rng.permutation(len(f)), rng.permutation(len(m))
    res = match_points(f[pf], m[pm], radius=300, scale=1.0)
    got = {(int(pf[i]), int(pm[j])) for i, j in res.pairs}
    assert got == truth
    assert res.mirrored == mirror


def test_matching_without_scale_prior():
    rng = np.random.default_rng(5)
    f, m, truth = _point_sets(rng, rotation=120, mirror=True)
    res = match_points(f, m * 3.0, radius=300, scale=None)
    assert {(int(i), int(j)) for i, j in res.pairs} == truth


@pytest.mark.parametrize("seed,polarity,em_dtype", [(1, "dark", np.uint8), (2, "bright", np.uint16),
                                                    (4, "dark", np.uint16)])
def test_register_fiducials_recovers_the_transform(seed, polarity, em_dtype):
    ph = small_phantom(seed, polarity=polarity, em_dtype=em_dtype)
    reg = register_fiducials(ph.em, ph.lm, em_pixel_size=10.0, lm_pixel_size=65.0)
    assert reg.method == "fiducials" and reg.outcome == "ok", reg.warnings
    assert reg.params["polarity"] == polarity and reg.params["mirrored"] == ph.mirror
    assert tre(reg.fixed_to_moving, ph.fixed_to_moving, ph.em.shape, step=16) < 0.5
    b = reg.error_budget
    assert b["n_matched"] >= 6 and len(b["pairs"]) == b["n_matched"]
    assert b["sigma_total_nm"] == pytest.approx(total_sigma(b["sigma_em_nm"], b["sigma_lm_nm"],
                                                            b["sigma_alignment_nm"]), abs=0.01)
    for key in ("fre_nm", "tre_loo_nm", "sigma_alignment_nm"):
        assert 0 < b[key] < 100
    # the stored fit predicts the TRE anywhere; the transform JSON round-trips it
    assert predicted_tre(b, [[0, 0], [255, 255]]).shape == (2,)
    back = Registration.from_record(reg.to_record())
    assert back.error_budget["sigma_total_nm"] == b["sigma_total_nm"] and back.outcome == "ok"


def test_rigid_affine_and_gaussian_options():
    ph = small_phantom(6, mirror=True)
    for kw in ({"model": "rigid"}, {"model": "affine"}, {"localisation": "gaussian"}):
        reg = register_fiducials(ph.em, ph.lm, em_pixel_size=10.0, lm_pixel_size=65.0, **kw)
        assert tre(reg.fixed_to_moving, ph.fixed_to_moving, ph.em.shape, step=16) < 0.5, kw


def test_predicted_alignment_error_is_calibrated():
    """Predicted σ_alignment vs the true RMS error over several random cases: within a factor of 2."""
    pred, meas = [], []
    for seed in range(10, 18):
        ph = small_phantom(seed)
        reg = register_fiducials(ph.em, ph.lm, em_pixel_size=10.0, lm_pixel_size=65.0)
        pred.append(reg.error_budget["sigma_alignment_nm"])
        meas.append(rms_error_nm(reg, ph))
    ratio = np.sqrt(np.mean(np.square(pred)) / np.mean(np.square(meas)))
    assert 0.5 < ratio < 2.0, (pred, meas)


def test_budget_reproduces_the_seed_arithmetic():
    assert total_sigma(31, 42, 85) == pytest.approx(99.75, abs=0.01)
    assert round(total_sigma(31, 42, 85), -1) == 100
    assert total_sigma(3, None, 4) == 5


def test_fit_landmarks_with_error_report():
    rng = np.random.default_rng(2)
    f2m = from_params(rotation_deg=140, scale=0.16, shear=0.05, translation=(20, 10), center=(256, 256)) @ np.diag(
        [1, -1, 1])
    em = rng.uniform(0, 511, (10, 2))
    lm = apply_to_points(f2m, em) + rng.normal(0, 0.1, (10, 2))
    reg = fit_landmarks(em, lm, fixed_pixel_size=10.0, moving_pixel_size=65.0, fixed_shape=(512, 512),
                        moving_shape=(120, 160))
    assert reg.method == "landmarks" and reg.params["mirrored"] and reg.outcome == "ok", reg.warnings
    assert tre(reg.fixed_to_moving, f2m, (512, 512), step=16) < 0.1
    b = reg.error_budget
    assert b["n_matched"] == 10 and b["sigma_em_nm"] is None
    assert b["fre_nm"] == pytest.approx(0.1 * 65 * np.sqrt(2) / 0.16 * 0.16 * np.sqrt(1 - 6 / 20), rel=0.5)
    assert b["tre_loo_nm"] > b["fre_nm"]


@pytest.mark.parametrize("case,match", [
    ("blank", "no beads found in the EM"),
    ("two_lm", "only 2 bead"),
    ("collinear", "one line"),
    ("half_calibrated", "mismatched calibration"),
    ("wrong_calibration", "mismatched calibration"),
])
def test_bad_input_names_the_cause(case, match):
    rng = np.random.default_rng(0)
    ph = small_phantom(1)
    em, lm, em_px, lm_px = ph.em, ph.lm, 10.0, 65.0
    if case == "blank":
        em = rng.normal(100, 5, (256, 256))
    elif case == "two_lm":
        lm = make_bead_phantom(1, **{**SMALL, "n_beads": 2, "n_bleached": 0, "n_lm_only": 0}).lm
    elif case == "collinear":
        line = np.stack([np.linspace(40, 470, 6), np.linspace(60, 400, 6)], 1)
        ph = small_phantom(1, bead_positions=line, n_bleached=0, n_lm_only=0, n_debris=0)
        em, lm = ph.em, ph.lm
    elif case == "half_calibrated":
        lm_px = None
    else:
        lm_px = 65.0 * 1.35
    with pytest.raises(InputError, match=match):
        register_fiducials(em, lm, em_pixel_size=em_px, lm_pixel_size=lm_px)


def test_landmark_bad_input():
    with pytest.raises(InputError, match="at least 3"):
        fit_landmarks([[0, 0], [1, 1]], [[0, 0], [1, 1]])
    with pytest.raises(InputError, match="one line"):
        fit_landmarks([[0, 0], [1, 1], [2, 2], [3, 3]], [[0, 0], [1, 2], [2, 4], [3, 6]])
    with pytest.raises(InputError, match="pairs"):
        fit_landmarks([[0, 0], [1, 1], [2, 0]], [[0, 0], [1, 1]])


def test_validate_measures_a_registration_at_the_beads():
    from clem_bridge.fiducials.validate import validate_transform

    ph = small_phantom(8)
    beads = register_fiducials(ph.em, ph.lm, em_pixel_size=10.0, lm_pixel_size=65.0)
    good = validate_transform(ph.fixed_to_moving, beads)
    assert good["unit"] == "nm" and good["n_beads"] == beads.error_budget["n_matched"]
    assert good["field_rms"] < 3 * good["field_uncertainty"] + 5
    assert good["bead_rms"] < 3 * good["bead_localisation"]
    off = ph.fixed_to_moving @ from_params(translation=(10, 0))           # 10 EM px = 100 nm off
    bad = validate_transform(off, beads)
    assert bad["field_rms"] == pytest.approx(100, abs=15) and bad["bead_rms"] == pytest.approx(100, abs=25)


def test_uncalibrated_images_give_an_affine_and_a_budget_in_pixels():
    ph = small_phantom(2)
    reg = register_fiducials(ph.em, ph.lm, em_pixel_size=None, lm_pixel_size=None, bead_px=20, lm_spot_px=2.7)
    assert reg.params["model"] == "affine" and reg.outcome == "ok"
    assert tre(reg.fixed_to_moving, ph.fixed_to_moving, ph.em.shape, step=16) < 0.5
    b = reg.error_budget
    assert b["unit"] == "px" and "sigma_total_px" in b and "sigma_total_nm" not in b
    with pytest.raises(InputError, match="bead_px"):
        register_fiducials(ph.em, ph.lm, em_pixel_size=None, lm_pixel_size=None)


def test_lm_spot_size_adapts_to_a_sharper_psf():
    ph = small_phantom(0, psf_sigma_nm=80.0)                     # spots σ 1.4 px, predicted 2.7 px
    true_sigma = np.sqrt(80.0 ** 2 + 100.0 ** 2 / 5) / 65.0
    c = detect_lm_spots(ph.lm, sigma_px=2.7)
    assert c.sigma_px == pytest.approx(true_sigma, rel=0.15)
    d = np.linalg.norm(c.xy[:, None] - ph.lm_beads[None], axis=2).min(1)
    assert np.all(d < 2) and len(c.xy) >= len(ph.lm_beads) - 1
