"""The coordinate convention checked against torch grid_sample, OpenCV resize/warpAffine and scipy."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clem_bridge import transforms as T


def _smooth(shape, seed=0):
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.02, 0.06, 3)
    return (np.sin(a * x + 0.3) * np.cos(b * y) + 0.5 * np.sin(c * (x + y)) + 0.01 * x).astype(np.float32)


F2M = T.from_params(rotation_deg=17, scale=(1.1, 0.93), shear=0.05, translation=(4.5, -3.25), center=(40, 30))


def test_normalized_theta_matches_grid_sample():
    moving = np.random.default_rng(0).random((70, 90)).astype(np.float32)   # any image: both are bilinear
    fixed_shape = (64, 80)
    theta = T.to_normalized(F2M, fixed_shape, moving.shape)
    grid = F.affine_grid(torch.tensor(theta[:2], dtype=torch.float64)[None], (1, 1) + fixed_shape,
                         align_corners=True)
    ref = F.grid_sample(torch.from_numpy(moving).double()[None, None], grid, mode="bilinear",
                        padding_mode="zeros", align_corners=True)[0, 0].numpy()
    ours = T.warp_image(moving.astype(np.float64), F2M, fixed_shape)
    inside = T.valid_mask(F2M, fixed_shape, moving.shape)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(ours[inside], ref[inside], atol=1e-9)
    np.testing.assert_allclose(T.from_normalized(theta[:2], fixed_shape, moving.shape), F2M, atol=1e-12)
    # pixel corners of the grid: fixed pixel (0, 0) -> normalised (-1, -1); (w-1, h-1) -> (1, 1)
    n = T.pixel_to_normalized((64, 80))
    np.testing.assert_allclose(T.apply_to_points(n, [[0, 0], [79, 63]]), [[-1, -1], [1, 1]])


@pytest.mark.parametrize("src,dst,interp", [((60, 90), (30, 45), cv2.INTER_AREA), ((64, 96), (16, 24), cv2.INTER_AREA),
                                            ((40, 60), (100, 150), cv2.INTER_LINEAR),
                                            ((50, 70), (35, 49), cv2.INTER_LINEAR)])
def test_resize_matrix_matches_cv2_resize(src, dst, interp):
    h, w = src
    ramp_x = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    ramp_y = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    rx = cv2.resize(ramp_x, dst[::-1], interpolation=interp)
    ry = cv2.resize(ramp_y, dst[::-1], interpolation=interp)
    m = T.resize_matrix(src, dst)
    yy, xx = np.mgrid[0:dst[0], 0:dst[1]]
    pts = T.apply_to_points(m, np.stack([xx.ravel(), yy.ravel()], 1))
    ex, ey = pts[:, 0].reshape(dst), pts[:, 1].reshape(dst)
    core = (slice(2, -2), slice(2, -2))                     # cv2 clamps at the border when upsampling
    np.testing.assert_allclose(rx[core], ex[core], atol=1e-3)
    np.testing.assert_allclose(ry[core], ey[core], atol=1e-3)


def test_rescale_from_binned_working_resolution():
    fixed_full, moving_full = (128, 160), (96, 112)
    fixed_work, moving_work = (32, 40), (24, 28)            # binned by 4
    work = (np.linalg.inv(T.resize_matrix(moving_full, moving_work)) @ F2M
            @ T.resize_matrix(fixed_full, fixed_work))
    np.testing.assert_allclose(T.rescale(work, fixed_full, fixed_work, moving_full, moving_work), F2M, atol=1e-12)
    # behaviour: warping binned images with the working matrix == binning the full-resolution warp
    moving = _smooth(moving_full, 1)
    full = T.warp_image(moving, F2M, fixed_full)
    binned_then = T.warp_image(cv2.resize(moving, moving_work[::-1], interpolation=cv2.INTER_AREA), work, fixed_work)
    then_binned = cv2.resize(full, fixed_work[::-1], interpolation=cv2.INTER_AREA)
    valid = T.valid_mask(work, fixed_work, moving_work)
    valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert valid.sum() > 200
    assert np.abs(binned_then - then_binned)[valid].mean() < 0.03


def test_compose_invert_apply_to_points():
    a = F2M
    b = T.from_params(rotation_deg=-8, translation=(10, 2))
    pts = np.random.default_rng(2).uniform(-50, 200, (20, 2))
    np.testing.assert_allclose(T.apply_to_points(T.compose(a, b), pts),
                               T.apply_to_points(a, T.apply_to_points(b, pts)), atol=1e-9)
    np.testing.assert_allclose(T.compose(a, T.invert(a)), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(T.apply_to_points(T.invert(a), T.apply_to_points(a, pts)), pts, atol=1e-9)
    manual = np.array([[a[0, 0] * x + a[0, 1] * y + a[0, 2], a[1, 0] * x + a[1, 1] * y + a[1, 2]] for x, y in pts])
    np.testing.assert_allclose(T.apply_to_points(a, pts), manual)
    np.testing.assert_allclose(T.as_matrix(a[:2].tolist()), a)


def test_scale_of_is_the_isotropic_scale():
    assert T.scale_of(T.from_params(rotation_deg=20, scale=1.3, translation=(5, -2), center=(10, 20))) \
        == pytest.approx(1.3)
    assert T.scale_of(T.from_params(scale=(2.0, 0.5))) == pytest.approx(1.0)


def test_from_params_rotates_about_center():
    c = (63.5, 47.5)
    r = T.from_params(rotation_deg=30, center=c)
    np.testing.assert_allclose(T.apply_to_points(r, [c]), [c], atol=1e-12)
    p = T.apply_to_points(r, [[c[0] + 10, c[1]]])[0]
    np.testing.assert_allclose(p, [c[0] + 10 * np.cos(np.pi / 6), c[1] + 10 * np.sin(np.pi / 6)], atol=1e-12)
    np.testing.assert_allclose(T.center_of((96, 128)), c)


def test_warp_image_matches_cv2_warp_affine():
    moving = _smooth((90, 110), 3)
    out_shape = (80, 100)
    ref = cv2.warpAffine(moving, F2M[:2], out_shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ours = T.warp_image(moving, F2M, out_shape)
    inside = T.valid_mask(F2M, out_shape, moving.shape)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours[inside], ref[inside], atol=2e-3)   # cv2 uses 5-bit fixed-point weights
    # the fill value is used where the mapped point is more than a pixel outside the moving image
    filled = T.warp_image(moving, F2M, out_shape, fill=7.0)
    grown = T.compose(T.from_params(translation=(1, 1)), F2M)
    far = ~T.valid_mask(grown, out_shape, (moving.shape[0] + 2, moving.shape[1] + 2))
    assert far.sum() > 100
    np.testing.assert_array_equal(filled[far], 7.0)


def test_warp_orders_offsets_and_integer_dtypes():
    moving = (np.random.default_rng(4).random((40, 50)) * 1000).astype(np.uint16)
    shift = T.from_params(translation=(3, 2))             # fixed (x, y) -> moving (x + 3, y + 2)
    out = T.warp_image(moving, shift, (30, 40), order="nearest")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, moving[2:32, 3:43])
    smooth = _smooth((60, 60), 5).astype(np.float64)
    sub = T.from_params(translation=(0.5, 0.25))
    yy, xx = np.mgrid[0:50, 0:50]
    exact = _smooth_at(xx + 0.5, yy + 0.25, 5)
    cubic = T.warp_image(smooth, sub, (50, 50), order="bicubic")
    linear = T.warp_image(smooth, sub, (50, 50))
    core = (slice(6, -6), slice(6, -6))                    # away from the spline's boundary handling
    assert np.abs(cubic - exact)[core].max() < 0.2 * np.abs(linear - exact)[core].max()
    full = T.warp_image(smooth, F2M, (50, 50))
    block = T.warp_image(smooth, F2M, (20, 15), offset=(10, 30))
    np.testing.assert_allclose(block, full[10:30, 30:45], atol=1e-12)
    np.testing.assert_array_equal(T.valid_mask(F2M, (20, 15), smooth.shape, offset=(10, 30)),
                                  T.valid_mask(F2M, (50, 50), smooth.shape)[10:30, 30:45])
    with pytest.raises(ValueError, match="interpolation"):
        T.warp_image(smooth, F2M, (5, 5), order="lanczos")


def _smooth_at(x, y, seed):
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.02, 0.06, 3)
    return np.sin(a * x + 0.3) * np.cos(b * y) + 0.5 * np.sin(c * (x + y)) + 0.01 * x


def test_valid_mask_matches_mapped_coordinates():
    fixed_shape, moving_shape = (50, 60), (40, 45)
    mask = T.valid_mask(F2M, fixed_shape, moving_shape)
    yy, xx = np.mgrid[0:50, 0:60]
    p = T.apply_to_points(F2M, np.stack([xx.ravel(), yy.ravel()], 1))
    expect = ((p[:, 0] >= 0) & (p[:, 0] <= 44) & (p[:, 1] >= 0) & (p[:, 1] <= 39)).reshape(fixed_shape)
    np.testing.assert_array_equal(mask, expect)
    assert 0.2 < mask.mean() < 0.95


def test_warp_channels_and_tre():
    chans = [_smooth((40, 40), s) for s in range(3)]
    warped, valid = T.warp_channels(chans, F2M, (30, 35))
    assert len(warped) == 3 and all(w.shape == (30, 35) for w in warped) and valid.shape == (30, 35)
    np.testing.assert_allclose(warped[1], T.warp_image(chans[1], F2M, (30, 35)))
    with pytest.raises(ValueError, match="differ in size"):
        T.warp_channels([chans[0], chans[1][:20]], F2M, (30, 35))
    assert T.tre(T.compose(T.from_params(translation=(3, 4)), F2M), F2M, (64, 64)) == pytest.approx(5.0)


@pytest.mark.parametrize("bad,msg", [(np.eye(2), "3x3"), ([[1, 0, 0], [0, 1, 0], [0, 1, 1]], "last row"),
                                     (np.zeros((3, 3)) + np.diag([0, 0, 1]), "singular"),
                                     ([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]], "finite")])
def test_as_matrix_rejects_bad_matrices(bad, msg):
    with pytest.raises(ValueError, match=msg):
        T.as_matrix(bad)
