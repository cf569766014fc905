"""Chromatin U-Net: normalisation, tiled inference, training on phantoms, model files, shipped model, CLI."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clem_bridge import synthetic as S
from clem_bridge import transforms as T
from clem_bridge.cli import app
from clem_bridge.errors import Cancelled, InputError
from clem_bridge.insilico.normalize import normalize_em
from clem_bridge.intensity import percentile_normalise
from clem_bridge.insilico import DEFAULT_MODEL
from clem_bridge.insilico.predict import load_model, models_root, predict_chromatin, predict_tiles
from clem_bridge.insilico.train import TrainConfig, pearson, save_model, train_model
from clem_bridge.insilico.unet import UNet
from clem_bridge.io import read_image, write_tiff
from clem_bridge.result import load_transform_json

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepclem"
SHIPPED = models_root() / DEFAULT_MODEL


def phantom_chromatin(pair: S.SyntheticPair) -> np.ndarray:
    """The chromatin stain of a phantom on its EM grid (nuclei + heterochromatin, LM-like blur)."""
    m = pair.masks
    return cv2.GaussianBlur(0.04 + 0.12 * m["nucleus"] + 0.85 * m["heterochromatin"], (0, 0), 1.5)


def train_tiny(folder: Path):
    """A tiny U-Net trained in seconds on two phantoms, saved as the model folder ``folder``."""
    torch.set_num_threads(1)
    pairs = [S.make_pair((256, 256), seed=s) for s in (1, 2)]
    cfg = TrainConfig(base=8, depth=2, bin=1, patch=64, batch=8, steps_per_epoch=20, max_epochs=5, patience=3)
    res = train_model([(p.em, phantom_chromatin(p)) for p in pairs], cfg)
    return res, save_model(res.model, folder, {"note": "test"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("models") / "tiny")


def test_normalisation_ranges():
    rng = np.random.default_rng(0)
    em = rng.normal(100, 20, (64, 80)).astype(np.float32)
    x = normalize_em(em)
    assert x.dtype == np.float32 and x.shape == em.shape
    assert -0.05 < np.percentile(x, 1) < 0.05 and 0.95 < np.percentile(x, 99.8) < 1.05
    assert np.all(np.isfinite(percentile_normalise(np.full((8, 8), 3.0), clip=False)))


def test_tiles_any_size_progress_and_cancel():
    torch.manual_seed(0)
    net = UNet(base=4, depth=2).eval()
    x = np.random.default_rng(1).random((37, 201), dtype=np.float32)
    reports = []
    y = predict_tiles(net, x, tile=64, overlap=16, batch=2, progress=reports.append)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    assert reports[-1].fraction == 1.0 and reports[-1].iteration == reports[-1].total > 1
    # tiles blend seamlessly: far from tile borders the tiled result equals one pass over the image
    x2 = np.random.default_rng(2).random((64, 192), dtype=np.float32)
    with torch.no_grad():
        whole = net(torch.from_numpy(x2)[None, None])[0, 0].numpy()
    tiled = predict_tiles(net, x2, tile=64, overlap=32)
    assert np.allclose(tiled[20:44, 20:172], whole[20:44, 20:172], atol=0.05 * np.abs(whole).max())
    with pytest.raises(Cancelled):
        predict_tiles(net, x, tile=64, cancelled=lambda: True)


def test_tiny_model_learns_phantom_chromatin(tiny):
    res, folder = tiny
    test = S.make_pair((256, 256), seed=3)
    pred = predict_chromatin(test.em, res.model, device="cpu")
    assert pred.shape == test.em.shape
    r = pearson(pred, phantom_chromatin(test))
    assert r > 0.4, f"held-out phantom Pearson r {r:.3f}"
    assert res.history and 1 <= res.best_epoch <= len(res.history)


def test_model_folder_round_trip(tiny, monkeypatch):
    res, folder = tiny
    em = S.make_pair((96, 96), seed=4).em
    direct = predict_chromatin(em, res.model, device="cpu")
    assert np.allclose(predict_chromatin(em, str(folder), device="cpu"), direct, atol=1e-5)
    monkeypatch.setenv("CLEM_BRIDGE_MODELS", str(folder.parent))
    assert load_model("tiny").card["note"] == "test"
    with pytest.raises(InputError, match="not found"):
        load_model("no-such-model")
    broken = folder.parent / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "model.yaml").write_text((folder / "model.yaml").read_text())
    (broken / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="could not be loaded"):
        load_model(broken)


@pytest.mark.parametrize("bad", [np.full((64, 64), 7.0), np.zeros((4, 64)), np.zeros((2, 32, 32)),
                                 np.where(np.eye(64) > 0, np.nan, 1.0)])
def test_bad_em_is_an_input_error(tiny, bad):
    with pytest.raises(InputError):
        predict_chromatin(bad, tiny[0].model, device="cpu")


def test_shipped_model_predicts_sample_crop():
    model = load_model(DEFAULT_MODEL, device="cpu")
    card = model.card
    assert card["data_licence"] == "MIT" and len(card["leave_one_out_pearson_r"]) == 3
    assert (SHIPPED / "weights.pt").stat().st_size < 5_000_000
    em = np.asarray(Image.open(SHIPPED / "sample_em.png"))
    pred = predict_chromatin(em, model, device="cpu")
    assert pred.shape == em.shape and np.all(np.isfinite(pred))
    # sane range: background ≈ 0, nothing exploding, not constant (crops predict weakly: see the card's notes)
    assert abs(float(np.median(pred))) < 0.1 and -0.5 < pred.min() and pred.max() < 2.0 and pred.std() > 0.005


@pytest.mark.skipif(not SHARED.is_dir(), reason="DeepCLEM data (../shared/data/deepclem) not available")
def test_shipped_model_on_full_training_field():
    """On a whole training field (not held out: a sanity check; held-out numbers are in the card)."""
    em = read_image(SHARED / "em_s6.png").data[0]
    chrom = read_image(SHARED / "chromatin_s6.png").data[0]
    pred = predict_chromatin(em, DEFAULT_MODEL, device="cpu")
    assert pearson(pred, chrom) > 0.4
    assert -0.5 < np.percentile(pred, 1) < 0.2 and 0.2 < np.percentile(pred, 99.9) < 3.0


@pytest.mark.skipif(not SHARED.is_dir(), reason="DeepCLEM data (../shared/data/deepclem) not available")
def test_calibrated_em_crop_against_the_full_chromatin_field():
    """DeepCLEM's situation: a 1000×530 EM crop vs the whole chromatin field, both calibrated (shipped model;
    s7 was in its training set, so a sanity check: held-out crop numbers are in bench_correlate)."""
    from clem_bridge.insilico.correlate import correlate
    from clem_bridge.schema import PixelSize
    em = read_image(SHARED / "em_s7.png").data[0].astype(np.float32)
    chrom = read_image(SHARED / "chromatin_s7.png").data[0].astype(np.float32)
    y0, x0 = 300, 200
    crop = em[y0:y0 + 530, x0:x0 + 1000]
    size = PixelSize(x=0.01, y=0.01)
    reg, _ = correlate(crop, chrom, em_pixel_size=size, chromatin_pixel_size=size, device="cpu")
    assert reg.params["scale_fixed"] and not reg.warnings
    assert T.tre(reg.fixed_to_moving, T.from_params(translation=(x0, y0)), crop.shape) < 4.0


def test_cli_predict_and_correlate(tiny, tmp_path):
    """End to end on files: tiny model, phantom EM and a 3-channel LM under a known affine."""
    _, folder = tiny
    f2m = S.centred_affine((256, 256), (288, 272), rotation_deg=-12, scale=1.1, translation=(6, -4))
    pair = S.make_pair((256, 256), fixed_to_moving=f2m, moving_shape=(288, 272), seed=5)
    write_tiff(tmp_path / "em.tif", pair.em, pair.fixed_pixel_size)
    lm = np.stack([pair.lm["fluorescence"], pair.lm["reflected"], pair.lm["chromatin"]])
    write_tiff(tmp_path / "lm.tif", lm.astype(np.float32), pair.moving_pixel_size)
    runner = CliRunner()
    r = runner.invoke(app, ["predict-chromatin", str(tmp_path / "em.tif"), "--model", str(folder),
                            "--out", str(tmp_path / "pred.tif"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    img = read_image(tmp_path / "pred.tif")
    assert img.shape == (256, 256) and img.pixel_size.x == pytest.approx(pair.fixed_pixel_size.x)

    out = tmp_path / "out"
    r = runner.invoke(app, ["correlate", str(tmp_path / "em.tif"), str(tmp_path / "lm.tif"), "--out", str(out),
                            "--chromatin-channel", "2", "--channels", "0,2", "--model", str(folder),
                            "--max-rotation", "45", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    reg = load_transform_json(out / "transform.json")
    err = T.tre(reg.fixed_to_moving, f2m, (256, 256))
    assert err < 1.5, f"TRE {err:.2f} px"
    assert reg.metrics["ncc"] > 0.3
    # the phantom's files say equal pixel sizes, the true scale is 1.1: the fit is kept, the user warned
    assert not reg.params["scale_fixed"] and any("calibration" in w for w in reg.warnings)
    assert "calibration may be wrong" in r.output
    warped = read_image(out / "lm_warped.tif")
    assert warped.data.shape == (2, 256, 256)
    expected, valid = T.warp_channels([pair.lm["fluorescence"]], f2m, (256, 256))
    assert np.corrcoef(warped.data[0][valid], expected[0][valid])[0, 1] > 0.95
    assert (out / "overlay.png").is_file() and (out / "predicted_chromatin.tif").is_file()
    assert reg.metrics["nuclei_applied"] == 1.0     # the heterochromatin stage ran on the EM
    assert reg.metrics["expected_error_px"] < 2.0   # and says how sure it is, on the command line too
    assert f"expected error {reg.metrics['expected_error_px']:.1f} EM px" in r.output

    r = runner.invoke(app, ["correlate", str(tmp_path / "em.tif"), str(tmp_path / "lm.tif"), "--out", str(out),
                            "--chromatin-channel", "2", "--model", str(folder), "--max-rotation", "45",
                            "--no-nuclei-refinement", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "nuclei_applied" not in load_transform_json(out / "transform.json").metrics

    r = runner.invoke(app, ["correlate", str(tmp_path / "em.tif"), str(tmp_path / "lm.tif"), "--out", str(out),
                            "--model", str(folder)])
    assert r.exit_code == 2 and "chromatin channel" in r.output and "Traceback" not in r.output


def test_cli_failed_correlation_exits_3_and_writes_its_files(tiny, tmp_path):
    """A chromatin image with one stained speck: ``correlate`` writes its files, says ``failed``, exits with 3."""
    _, folder = tiny
    pair = S.make_pair((256, 256), seed=5)
    yy, xx = np.mgrid[0:256, 0:256]
    speck = np.exp(-((xx - 60) ** 2 + (yy - 70) ** 2) / (2 * 6.0 ** 2))
    speck += 0.01 * np.random.default_rng(0).standard_normal((256, 256))
    write_tiff(tmp_path / "em.tif", pair.em)
    write_tiff(tmp_path / "lm.tif", speck.astype(np.float32))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["correlate", str(tmp_path / "em.tif"), str(tmp_path / "lm.tif"), "--out", str(out),
                                 "--model", str(folder), "--max-rotation", "20", "--device", "cpu"])
    assert r.exit_code == 3, r.output
    assert "status: failed" in r.output and "Traceback" not in r.output
    reg = load_transform_json(out / "transform.json")
    assert reg.outcome == "failed" and reg.warnings
    for name in ("lm_warped.tif", "overlay.png", "predicted_chromatin.tif"):
        assert (out / name).is_file()


def stained_nucleus_centres(chromatin: np.ndarray) -> np.ndarray:
    """(x, y) centres of the stained nuclei: Otsu foreground of the σ=4 px blurred chromatin, grouped by a
    61 px dilation, centroid of each group's convex hull (groups ≥ 5000 px)."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label
    from skimage.morphology import convex_hull_image
    b = cv2.GaussianBlur(chromatin.astype(np.float32), (0, 0), 4.0)
    fg = b > threshold_otsu(b)
    groups = label(cv2.dilate(fg.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (61, 61))) > 0)
    hulls = [convex_hull_image(fg & (groups == k)) for k in range(1, groups.max() + 1)]
    return np.array([[np.nonzero(h)[1].mean(), np.nonzero(h)[0].mean()] for h in hulls if h.sum() >= 5000])


@pytest.mark.skipif(not (SHARED / "example").is_dir(), reason="DeepCLEM example not available")
def test_deepclem_example_lands_on_its_nuclei(tmp_path):
    """DeepCLEM's own example (shipped model; not one of its training pairs): the three EM nuclei (centres
    marked by eye) land within 30 px of stained nuclei, the channel of interest goes along."""
    from clem_bridge.workflows.correlate import correlate_files
    ex = SHARED / "example"
    reg = correlate_files(ex / "EM.png", ex / "Chromatin.png", tmp_path, device="cpu",
                          extra_channel_paths=[ex / "Channel_of_interest.png"])
    assert reg.outcome != "failed", reg.warnings
    stained = stained_nucleus_centres(read_image(ex / "Chromatin.png").data[2])
    mapped = T.apply_to_points(reg.fixed_to_moving, np.array([(178.0, 312.0), (520.0, 390.0), (872.0, 202.0)]))
    dist = [np.min(np.hypot(*(stained - p).T)) for p in mapped]
    assert max(dist) < 30, dist
    assert reg.metrics["expected_error_px"] < 5.0 and reg.metrics["local_nuclei"] >= 8, reg.metrics
    warped = read_image(tmp_path / "lm_warped.tif").data
    coi = read_image(ex / "Channel_of_interest.png").data
    assert warped.shape[0] == 3 + coi.shape[0]
    expected, valid = T.warp_channels([coi[1].astype(np.float32)], reg.fixed_to_moving, warped.shape[1:])
    assert np.allclose(warped[4][valid], expected[0][valid], atol=1)


def test_cli_train_chromatin_writes_model_and_card(tmp_path):
    data = tmp_path / "data"
    for k, seed in (("a", 1), ("b", 2)):
        p = S.make_pair((96, 96), seed=seed)
        write_tiff(data / f"em_{k}.tif", p.em)
        write_tiff(data / f"chromatin_{k}.tif", phantom_chromatin(p).astype(np.float32))
    out = tmp_path / "models" / "mini"
    r = CliRunner().invoke(app, ["train-chromatin", "--data", str(data), "--out", str(out), "--epochs", "2",
                                 "--steps", "2", "--patch", "32", "--bin", "1", "--licence", "CC0"])
    assert r.exit_code == 0, r.output
    card = load_model(out).card
    assert card["data_licence"] == "CC0" and card["command"].startswith("clem-bridge train-chromatin")
    assert len(card["leave_one_out_pearson_r"]) == 2 and card["architecture"]["bin"] == 1
    assert card["data"]["pairs"] == [["em_a.tif", "chromatin_a.tif"], ["em_b.tif", "chromatin_b.tif"]]
    r = CliRunner().invoke(app, ["train-chromatin", "--data", str(tmp_path / "nowhere"), "--out", str(out)])
    assert r.exit_code == 2 and r.output.strip().startswith("error:") and "Traceback" not in r.output


def test_cli_train_defaults_are_the_training_recipe():
    """A plain ``train-chromatin`` trains with TrainConfig's recipe (the one the shipped model was made with)."""
    import typer.main
    cmd = typer.main.get_command(app).commands["train-chromatin"]
    given = {p.name: p.default for p in cmd.params}
    cfg = TrainConfig()
    assert (given["patch"], given["epochs"], given["steps"], given["bin_"], given["em_normalisation"]) == \
        (cfg.patch, cfg.max_epochs, cfg.steps_per_epoch, cfg.bin, cfg.em_normalisation)
    card = load_model(DEFAULT_MODEL, device="cpu").card["training"]
    assert {k: card[k] for k in ("bin", "max_epochs", "steps_per_epoch", "lr_schedule", "pearson_weight", "keep")} == \
        {"bin": cfg.bin, "max_epochs": cfg.max_epochs, "steps_per_epoch": cfg.steps_per_epoch,
         "lr_schedule": cfg.lr_schedule, "pearson_weight": cfg.pearson_weight, "keep": cfg.keep}


def test_clahe_normalises_a_crop_like_the_full_field():
    """Half the field is empty bright resin: global equalisation of the full image then maps the cells
    differently from a crop of the cells alone; CLAHE (local, the shipped model's) barely changes."""
    em = S.make_pair((512, 512), seed=2).em.copy()
    em[:, 300:] = 0.95 + 0.02 * np.random.default_rng(0).standard_normal((512, 212))
    diffs = {}
    for method in ("clahe", "equalize_hist"):
        full = normalize_em(em, method)[164:292, 64:192]
        alone = normalize_em(em[100:356, 0:256], method)[64:-64, 64:-64]
        diffs[method] = float(np.mean(np.abs(full - alone)))
    assert diffs["clahe"] < 0.06 < 0.15 < diffs["equalize_hist"], diffs
    with pytest.raises(ValueError, match="normalisation"):
        normalize_em(em, "zscore")


def test_shipped_model_card_names_its_normalisation():
    assert load_model(DEFAULT_MODEL, device="cpu").em_normalisation == "clahe"
