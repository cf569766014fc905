"""Synthetic CLEM phantoms: determinism, shapes, and that the truth affine really links EM and LM."""
import cv2
import numpy as np
import pytest

from clem_bridge import transforms as T
from clem_bridge.synthetic import LM_CHANNELS, make_pair, random_affine


def _ncc(a, b, mask):
    a, b = a[mask] - a[mask].mean(), b[mask] - b[mask].mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_deterministic_and_seed_dependent():
    a, b = make_pair((128, 128), seed=3), make_pair((128, 128), seed=3)
    c = make_pair((128, 128), seed=4)
    assert np.array_equal(a.em, b.em)
    for k in LM_CHANNELS:
        assert np.array_equal(a.lm[k], b.lm[k])
    assert not np.array_equal(a.em, c.em)


def test_shapes_ranges_and_pixel_sizes():
    p = make_pair((160, 200), lm_pixel_ratio=4)
    assert p.em.shape == (160, 200) and p.em.dtype == np.float32
    assert set(p.lm) == set(LM_CHANNELS)
    for img in p.lm.values():
        assert img.shape == (40, 50) and img.dtype == np.float32
        assert img.min() >= 0 and img.max() <= 1 and img.std() > 0.05
    assert 0 <= p.em.min() and p.em.max() <= 1 and p.em.std() > 0.05
    assert p.moving_pixel_size.x == pytest.approx(4 * p.fixed_pixel_size.x)
    # the default affine scales by 1/ratio (within the small anisotropy it adds)
    assert np.sqrt(abs(np.linalg.det(p.fixed_to_moving[:2, :2]))) == pytest.approx(0.25, rel=0.05)


@pytest.mark.parametrize("channel,mask", [("chromatin", "heterochromatin"), ("fluorescence", "mitochondria")])
def test_truth_affine_maps_em_structures_onto_lm(channel, mask):
    rng = np.random.default_rng(1)
    f2m = random_affine(rng, (256, 256), max_rotation_deg=30, max_shift_frac=0.1)
    p = make_pair((256, 256), fixed_to_moving=f2m, seed=2)
    ref = cv2.GaussianBlur(p.masks[mask], (0, 0), 2.0)        # same-scene reference on the EM grid
    back, valid = T.warp_channels([p.lm[channel]], p.fixed_to_moving, p.em.shape)
    good = _ncc(back[0], ref, valid)
    wrong = T.compose(p.fixed_to_moving, T.from_params(rotation_deg=5, translation=(12, -10),
                                                        center=T.center_of(p.em.shape)))
    bad_img, bad_valid = T.warp_channels([p.lm[channel]], wrong, p.em.shape)
    bad = _ncc(bad_img[0], ref, bad_valid & valid)
    assert good > 0.75, good
    assert bad < 0.35, bad


def test_lm_field_larger_than_em_has_content_everywhere():
    # LM sees 2x the EM field: content must exist outside the EM footprint too
    p = make_pair((128, 128), fixed_to_moving=np.diag([0.5, 0.5, 1.0]) @ np.eye(3) + [[0, 0, 32], [0, 0, 32], [0, 0, 0]],
                  moving_shape=(128, 128))
    refl = p.lm["reflected"]
    for border in (refl[:24], refl[-24:], refl[:, :24], refl[:, -24:]):
        assert border.std() > 0.05


def test_random_affine_is_centred_and_bounded():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = random_affine(rng, (100, 200), max_rotation_deg=30, max_shift_frac=0.15, scale_range=(0.9, 1.1),
                          max_shear=0.05)
        c = T.apply_to_points(a, [T.center_of((100, 200))])[0]
        assert abs(c[0] - 99.5) <= 0.15 * 200 + 1e-9 and abs(c[1] - 49.5) <= 0.15 * 100 + 1e-9
        assert 0.8 < abs(np.linalg.det(a[:2, :2])) < 1.25


def test_coarse_lm_pixels_follow_the_scaled_affine():
    """With lm_pixel_ratio=4 the LM is 4x coarser and the truth affine still links the two views."""
    p = make_pair((256, 256), lm_pixel_ratio=4, seed=3)
    assert p.lm["chromatin"].shape == (64, 64)
    ref = cv2.GaussianBlur(p.masks["heterochromatin"], (0, 0), 8.0)
    back, valid = T.warp_channels([p.lm["chromatin"]], p.fixed_to_moving, p.em.shape)
    wrong = T.compose(T.from_params(translation=(3, -3)), p.fixed_to_moving)     # 3 LM px = 12 EM px
    bad, bvalid = T.warp_channels([p.lm["chromatin"]], wrong, p.em.shape)
    good = _ncc(back[0], ref, valid)
    assert good > 0.9 and good - _ncc(bad[0], ref, bvalid & valid) > 0.2
