"""Chromatin-to-chromatin correlation: global search + ECC recovers known affines (TRE in moving pixels)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from clem_bridge import synthetic as S
from clem_bridge import transforms as T
from clem_bridge.errors import Cancelled, InputError
from clem_bridge.insilico.correlate import SearchParams, chromatin_channel, ncc, register_chromatin
from clem_bridge.io import read_image

SHAPE = (256, 256)


def case(rotation, scale, moving_shape, seed, shift=(9.0, -6.0), lm_pixel_ratio=1.0):
    f2m = S.centred_affine(SHAPE, moving_shape, rotation_deg=rotation, scale=scale, translation=shift)
    pair = S.make_pair(SHAPE, fixed_to_moving=f2m, moving_shape=moving_shape, seed=seed,
                       lm_pixel_ratio=lm_pixel_ratio)
    m = pair.masks   # the ideal prediction: the phantom's chromatin on the EM grid
    pred = cv2.GaussianBlur(0.04 + 0.12 * m["nucleus"] + 0.85 * m["heterochromatin"], (0, 0), 1.5)
    return pair, pred, f2m


@pytest.mark.parametrize("rotation,scale,moving_shape", [
    (28.0, 1.0, (256, 256)),
    (-30.0, 0.8, (230, 300)),      # smaller, wider LM canvas
    (12.0, 1.25, (352, 330)),      # larger LM canvas
    (-8.0, (1.06, 0.95), (256, 256)),   # anisotropic scale: model="affine" (ECC)
    (20.0, 0.9, (480, 440)),       # LM field of view ~3x the EM's (DeepCLEM's example situation)
])
def test_recovers_known_affine(rotation, scale, moving_shape):
    pair, pred, f2m = case(rotation, scale, moving_shape, seed=11)
    model = "similarity" if np.isscalar(scale) else "affine"
    reg = register_chromatin(pred, pair.lm["chromatin"], params=SearchParams(model=model))
    err = T.tre(reg.fixed_to_moving, f2m, SHAPE)
    assert err < 1.5, f"TRE {err:.2f} px, metrics {reg.metrics}"
    assert reg.metrics["ncc"] > 0.8
    assert reg.fixed_shape == SHAPE and reg.moving_shape == tuple(moving_shape)


def test_pixel_sizes_set_the_scale_prior():
    """LM pixels twice the EM pixels: the scale (0.5) lies outside a unit-centred ±25 % search but is found."""
    pair, pred, f2m = case(-15.0, 0.5, (160, 150), seed=12, shift=(3.0, 2.0), lm_pixel_ratio=2.0)
    reg = register_chromatin(pred, pair.lm["chromatin"], fixed_pixel_size=pair.fixed_pixel_size,
                             moving_pixel_size=pair.moving_pixel_size)
    assert reg.params["scale_prior"] == pytest.approx(0.5)
    assert T.tre(reg.fixed_to_moving, f2m, SHAPE) < 1.5


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
