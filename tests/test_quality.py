"""Quality metrics on the overlap and preview images, computed for real on phantoms."""
import numpy as np
import pytest
from PIL import Image

from clem_bridge import transforms as T
from clem_bridge.quality import (histogram_mi, inner_box, ncc, overlap_metrics, overlay_rgb, save_mi_curve_png,
                                 save_overlay_png)
from clem_bridge.synthetic import make_pair


@pytest.fixture(scope="module")
def pair():
    return make_pair((256, 256), seed=5)


def test_ncc_and_mi_known_values():
    rng = np.random.default_rng(0)
    a = rng.random(200_000)
    assert ncc(a, a) == pytest.approx(1.0) and ncc(a, -3 * a + 1) == pytest.approx(-1.0)
    assert abs(ncc(a, rng.random(a.size))) < 0.01
    assert histogram_mi(a, a, bins=32) == pytest.approx(np.log(32), rel=0.01)     # uniform: MI = H = log(bins)
    assert histogram_mi(a, rng.random(a.size), bins=32) < 0.01
    assert histogram_mi(a, 1 - a, bins=32) == pytest.approx(np.log(32), rel=0.01)  # MI ignores inversion


def test_inner_box_lies_inside_a_rotated_overlap():
    shape = (300, 300)
    rot = T.from_params(rotation_deg=45, scale=0.7, center=T.center_of(shape))
    mask = T.valid_mask(rot, shape, shape)                 # a 45°-rotated square region
    rs, cs = inner_box(mask)
    assert mask[rs, cs].all()
    area = (rs.stop - rs.start) * (cs.stop - cs.start)
    assert area >= 0.4 * mask.sum()                        # inscribed axis-aligned square is 50 %
    assert inner_box(np.zeros((50, 50), bool)) is None


def test_metrics_rank_true_alignment_above_wrong(pair):
    good, valid = T.warp_channels([pair.lm["reflected"]], pair.fixed_to_moving, pair.em.shape)
    wrong = T.compose(pair.fixed_to_moving, T.from_params(translation=(9, 7)))
    bad, bvalid = T.warp_channels([pair.lm["reflected"]], wrong, pair.em.shape)
    mg = overlap_metrics(pair.em, good[0], valid)
    mb = overlap_metrics(pair.em, bad[0], bvalid)
    assert set(mg) == {"overlap", "ncc", "mi", "ms_ssim"}
    assert 0.8 < mg["overlap"] <= 1.0
    assert mg["mi"] > 1.5 * mb["mi"] and mg["mi"] > 0.1
    assert abs(mg["ncc"]) > abs(mb["ncc"])


def test_ms_ssim_same_modality(pair):
    em = pair.em
    full = np.ones(em.shape, bool)
    assert overlap_metrics(em, em, full)["ms_ssim"] == pytest.approx(1.0, abs=1e-4)     # 256 px: MS-SSIM
    assert overlap_metrics(em, 1 - em, full)["ms_ssim"] == pytest.approx(1.0, abs=1e-4)  # inverted contrast
    shifted = np.roll(em, 5, axis=1)
    assert overlap_metrics(em, shifted, full)["ms_ssim"] < 0.9
    small = em[:100, :100]                                                               # SSIM fallback
    assert overlap_metrics(small, small)["ms_ssim"] == pytest.approx(1.0, abs=1e-4)
    assert overlap_metrics(small, np.roll(small, 4, axis=0))["ms_ssim"] < 0.8


def test_tiny_overlap_gives_zeros_and_shape_mismatch_raises(pair):
    mask = np.zeros(pair.em.shape, bool)
    mask[:5, :5] = True
    m = overlap_metrics(pair.em, pair.em, mask)
    assert m["ncc"] == m["mi"] == m["ms_ssim"] == 0.0 and m["overlap"] == pytest.approx(25 / pair.em.size)
    with pytest.raises(ValueError, match="differ in shape"):
        overlap_metrics(pair.em, pair.em[:10])


def test_overlay_colours_and_pngs(tmp_path, pair):
    ch = np.zeros(pair.em.shape, np.float32)
    ch[100:140, 100:140] = 1.0
    rgb = overlay_rgb(pair.em, [ch], ["magenta"])
    assert rgb.shape == pair.em.shape + (3,) and rgb.dtype == np.uint8
    inside, outside = rgb[110:130, 110:130].astype(int), rgb[:50, :50].astype(int)
    assert (inside[..., 0] - inside[..., 1]).mean() > 100                  # magenta: red (and blue) >> green
    assert np.abs(outside[..., 0] - outside[..., 1]).max() <= 1           # grey elsewhere
    p = save_overlay_png(tmp_path / "o.png", pair.em, [ch, pair.masks["nucleus"]], max_side=128)
    back = np.asarray(Image.open(p))
    assert back.shape == (128, 128, 3)
    q = save_mi_curve_png(tmp_path / "mi.png", np.log(np.arange(1, 200)))
    r = save_mi_curve_png(tmp_path / "empty.png", [])
    for f in (q, r):
        im = Image.open(f)
        assert im.format == "PNG" and im.size[0] > 100
