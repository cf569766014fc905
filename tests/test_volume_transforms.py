"""The 3-D convention (transforms3d) against scipy.ndimage.affine_transform and torch grid_sample."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from clem_bridge import transforms as t2
from clem_bridge import transforms3d as t3


def _volume(shape=(9, 20, 24), seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 1.5).astype(np.float32)


A = t3.from_params3d(rot_z_deg=17, rot_x_deg=4, rot_y_deg=-3, scale=(1.1, 0.95, 0.6),
                     translation_xyz=(1.5, -2.0, 0.7), center=(11.5, 9.5, 4.0))


def test_voxel_centres_and_axes():
    vol = np.zeros((5, 6, 7), np.float32)
    vol[3, 2, 4] = 1.0                                   # z=3, y=2, x=4
    # a pure translation of (+1, +2, +3) voxels: out(x, y, z) = vol(x+1, y+2, z+3)
    out = t3.warp_volume(vol, t3.translation((1, 2, 3)), vol.shape, order="nearest")
    assert out[0, 0, 3] == 1.0 and out.sum() == 1.0
    assert np.allclose(t3.center_of3d((5, 6, 7)), (3.0, 2.5, 2.0))


def test_rotation_about_z_matches_2d_convention():
    m3 = t3.from_params3d(rot_z_deg=30, center=(5, 6, 0), translation_xyz=(2, 1, 0))
    m2 = t2.from_params(rotation_deg=30, center=(5, 6), translation=(2, 1))
    assert np.allclose(m3[np.ix_([0, 1, 3], [0, 1, 3])], m2)
    assert np.allclose(m3[2], [0, 0, 1, 0])
    assert np.linalg.det(t3.from_params3d(mirror=True)) < 0


def test_warp_equals_scipy_affine_transform():
    vol = _volume()
    out = t3.warp_volume(vol, A, (8, 18, 22), order="linear")
    # the same map written directly in scipy's (z, y, x) index order
    rev = np.eye(4)[[2, 1, 0, 3]]
    b = rev @ A @ rev
    ref = ndimage.affine_transform(vol, b[:3, :3], offset=b[:3, 3], output_shape=(8, 18, 22), order=1)
    assert np.allclose(out, ref, atol=1e-5)
    # and pointwise: out[k, r, c] = vol interpolated at A·(c, r, k)
    c, r, k = 10, 7, 3
    x, y, z = t3.apply_to_points3d(A, [[c, r, k]])[0]
    assert out[k, r, c] == pytest.approx(ndimage.map_coordinates(vol, [[z], [y], [x]], order=1)[0], abs=1e-5)


def test_grid_sample_round_trip():
    vol = _volume()
    fixed_shape = (8, 18, 22)
    theta = t3.to_normalized3d(A, fixed_shape, vol.shape)
    assert np.allclose(t3.from_normalized3d(theta, fixed_shape, vol.shape), A)
    grid = F.affine_grid(torch.from_numpy(theta[:3])[None].float(), [1, 1, *fixed_shape], align_corners=True)
    gs = F.grid_sample(torch.from_numpy(vol)[None, None], grid, align_corners=True)[0, 0].numpy()
    ref = t3.warp_volume(vol, A, fixed_shape)
    inside = t3.valid_mask3d(A, fixed_shape, vol.shape)
    assert inside.mean() > 0.3
    assert np.allclose(gs[inside], ref[inside], atol=1e-4)
    assert np.allclose(t3.warp_volume(vol, A, fixed_shape, backend="torch")[inside], ref[inside], atol=1e-4)
    # align_corners=False maps the outer voxel faces to ±1
    n = t3.voxel_to_normalized((4, 5, 6), align_corners=False)
    assert np.allclose(t3.apply_to_points3d(n, [[-0.5, -0.5, -0.5], [5.5, 4.5, 3.5]]), [[-1, -1, -1], [1, 1, 1]])


def test_physical_round_trip_and_resize():
    fv, mv = (0.05, 0.05, 0.1), (0.2, 0.2, 0.8)
    phys = t3.physical_matrix(A, fv, mv)
    assert np.allclose(t3.from_physical(phys, fv, mv), A)
    p = np.array([[3.0, 4.0, 5.0]])
    assert np.allclose(t3.apply_to_points3d(phys, p * fv), t3.apply_to_points3d(A, p) * mv)
    # binning by 2 in x/y and 3 in z: voxel 0 of the binned volume is centred at (0.5, 0.5, 1)
    r = t3.resize_matrix3d((9, 20, 24), (3, 10, 12))
    assert np.allclose(t3.apply_to_points3d(r, [[0, 0, 0]]), [[0.5, 0.5, 1.0]])


def test_tiled_warp_matches_whole_and_memmap(tmp_path):
    vol = (_volume((12, 40, 44)) * 1000).astype(np.uint16)
    shape = (11, 38, 40)
    whole = t3.warp_volume(vol, A, shape)
    tiled = t3.warp_volume_tiled(vol, A, shape, slab=3)
    assert tiled.dtype == np.uint16 and np.array_equal(tiled, whole)
    mm = t3.warp_volume_tiled(vol, A, shape, out=tmp_path / "warped.npy", slab=4, dtype=np.float32)
    assert np.allclose(np.load(tmp_path / "warped.npy"), t3.warp_volume(vol.astype(np.float32), A, shape),
                       atol=1e-3)
    assert isinstance(mm, np.memmap)


def test_tre3d_components():
    shift = t3.translation((0.5, 0.0, 0.25))          # moving voxels
    e = t3.tre3d_components(shift @ A, A, (8, 16, 16), fixed_voxel=(0.05, 0.05, 0.1), moving_voxel=(0.2, 0.2, 0.8))
    assert e["xy_fixed_voxels"] == pytest.approx(0.5 * 0.2 / 0.05)
    assert e["z_moving_slices"] == pytest.approx(0.25)
    assert t3.tre3d(shift @ A, A, (8, 16, 16)) == pytest.approx(np.hypot(0.5, 0.25))


def test_bad_matrices():
    with pytest.raises(ValueError):
        t3.as_matrix4(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        t3.as_matrix4(np.eye(3))
    assert t3.as_matrix4(np.eye(4)[:3]).shape == (4, 4)
