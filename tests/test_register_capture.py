"""MINE capture range: mirrored LM (det < 0), any rotation, LM/EM scale 0.5–2 without calibration (issue 14)."""
import numpy as np
import pytest

from clem_bridge import transforms as T
from clem_bridge.register import register_mine
from clem_bridge.register.search import candidate, global_search
from clem_bridge.synthetic import centred_affine, make_pair

SIZE = (256, 256)


def mirrored(fixed_to_moving, shape):
    """``fixed_to_moving`` of an LM seen from the other side: the EM mirrored about its vertical centre line first."""
    cx = (shape[1] - 1) / 2.0
    return fixed_to_moving @ np.array([[-1.0, 0, 2 * cx], [0, 1, 0], [0, 0, 1]])


def test_candidate_matrix_handedness():
    m = candidate((100, 120), (100, 120), 30.0, 1.5, True)
    assert np.linalg.det(m[:2, :2]) == pytest.approx(-2.25)
    assert np.allclose(T.apply_to_points(m, [[59.5, 49.5]]), [[59.5, 49.5]])   # centre → centre


@pytest.mark.parametrize("rotation", [0.0, -35.0, 100.0])
def test_mirrored_lm_is_recovered(rotation):
    truth = mirrored(centred_affine(SIZE, SIZE, rotation_deg=rotation, translation=(14, -9)), SIZE)
    pair = make_pair(SIZE, fixed_to_moving=truth, seed=6)
    reg = register_mine(pair.em, pair.lm["reflected"], seed=0, device="cpu")
    assert np.linalg.det(reg.fixed_to_moving[:2, :2]) < 0
    assert reg.metrics["search_mirrored"] == 1.0
    assert T.tre(reg.fixed_to_moving, truth, SIZE) < 0.5
    assert reg.outcome == "ok"


def test_unmirrored_lm_is_not_flipped():
    truth = centred_affine(SIZE, SIZE, rotation_deg=20, translation=(-10, 6))
    pair = make_pair(SIZE, fixed_to_moving=truth, seed=8)
    res = global_search(pair.em[::2, ::2], pair.lm["reflected"][::2, ::2])
    assert not res.mirrored and np.linalg.det(res.fixed_to_moving[:2, :2]) > 0


@pytest.mark.parametrize("rotation", [180.0, -120.0])
def test_any_rotation_is_recovered(rotation):
    truth = centred_affine(SIZE, SIZE, rotation_deg=rotation, translation=(0.15 * 256, -0.1 * 256))
    pair = make_pair(SIZE, fixed_to_moving=truth, seed=4)
    reg = register_mine(pair.em, pair.lm["reflected"], seed=0, device="cpu")
    assert T.tre(reg.fixed_to_moving, truth, SIZE) < 0.5
    assert reg.outcome == "ok"


@pytest.mark.parametrize("lm_pixel_ratio", [2.0, 0.5])
def test_uncalibrated_scale_half_and_double_is_recovered(lm_pixel_ratio):
    """LM pixels twice / half the EM pixel size (LM/EM scale 0.5 and 2), nothing calibrated."""
    size = (384, 384)      # the LM with 2x larger pixels is 192 px
    pair = make_pair(size, seed=3, lm_pixel_ratio=lm_pixel_ratio)
    reg = register_mine(pair.em, pair.lm["reflected"], seed=0, device="cpu")
    assert reg.metrics["search_scale"] == pytest.approx(1 / lm_pixel_ratio, rel=0.05)
    err = T.tre(reg.fixed_to_moving, pair.fixed_to_moving, size)
    assert err < 0.5, err    # LM pixels
    assert reg.outcome == "ok"


def test_init_may_be_mirrored():
    truth = mirrored(centred_affine(SIZE, SIZE, rotation_deg=5, translation=(4, -3)), SIZE)
    pair = make_pair(SIZE, fixed_to_moving=truth, seed=2)
    start = mirrored(centred_affine(SIZE, SIZE, rotation_deg=3, translation=(1, -1)), SIZE)
    reg = register_mine(pair.em, pair.lm["reflected"], init=start, device="cpu")
    assert T.tre(reg.fixed_to_moving, truth, SIZE) < 0.5 < T.tre(start, truth, SIZE)
