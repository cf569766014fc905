"""TRE map and HSI fusion pictures of a fiducial registration."""
import numpy as np
from PIL import Image

from clem_bridge.fiducials import register_fiducials, tre_grid
from clem_bridge.fiducials.render import fusion_rgb, save_fusion_png, save_tre_map_png
from clem_bridge.fiducials.simulate import make_bead_phantom
from clem_bridge.transforms import warp_image


def test_tre_map_and_fusion(tmp_path):
    ph = make_bead_phantom(2, em_shape=(512, 512), lm_shape=(120, 160), n_beads=(10, 14))
    reg = register_fiducials(ph.em, ph.lm, em_pixel_size=10.0, lm_pixel_size=65.0)
    grid = tre_grid(reg.error_budget, ph.em.shape, n=16)
    assert grid.shape == (16, 16) and np.all(grid > 0)
    # the prediction grows away from the beads' centroid (extrapolation)
    beads = np.array([p["fixed_px"] for p in reg.error_budget["pairs"]])
    assert grid.min() < reg.error_budget["sigma_alignment_nm"] < grid.max()
    png = save_tre_map_png(tmp_path / "tre_map.png", grid, ph.em.shape, em=ph.em, beads=beads)
    assert Image.open(png).size[0] > 100

    lm_on_em = warp_image(ph.lm.astype(np.float32), reg.fixed_to_moving, ph.em.shape)
    rgb = fusion_rgb(ph.em, lm_on_em, hue=0.0)
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    # a bead is dark in the EM and bright in the LM: red hue there (R > G), grey on LM background
    x, y = np.round(beads[0]).astype(int)
    r, g, b = rgb[y - 12, x].astype(int)          # just outside the dark disc, inside the LM spot
    assert r > g + 30 and g == b
    background = lm_on_em <= np.median(lm_on_em)        # LM background: no colour, EM grey levels
    assert np.array_equal(rgb[background][:, 0], rgb[background][:, 1])
    out = save_fusion_png(tmp_path / "fusion.png", ph.em, lm_on_em)
    assert np.array_equal(np.asarray(Image.open(out)), rgb)
