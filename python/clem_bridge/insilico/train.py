"""Train the chromatin U-Net on registered EM/chromatin pairs and write a model folder with its card."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch
import yaml

from ..device import select_device
from ..errors import InputError
from ..transforms import area_resize
from .normalize import normalize_chromatin, normalize_em
from .predict import CARD, WEIGHTS, ChromatinModel, predict_chromatin, predict_tiles
from .unet import UNet


@dataclass
class TrainConfig:
    """Network size, working binning and optimisation settings (all written to the model card)."""
    base: int = 16
    depth: int = 3
    bin: int = 4
    patch: int = 96
    batch: int = 8
    lr: float = 1e-3
    steps_per_epoch: int = 80
    max_epochs: int = 10
    patience: int = 3
    val_fraction: float = 0.2
    foreground_fraction: float = 0.5
    seed: int = 0
    em_normalisation: str = "clahe"           # or "equalize_hist" (see normalize.normalize_em)
    lr_schedule: str = "cosine"               # cosine: lr decays to 5 % at the last step; or "constant"
    pearson_weight: float = 0.5               # loss = MSE + pearson_weight * (1 - Pearson r per patch)
    keep: str = "last"                        # weights kept: "last" epoch, or "best" (lowest validation
                                              # MSE, early stopping after ``patience`` epochs without one)


@dataclass
class TrainResult:
    model: ChromatinModel
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def _bin(img: np.ndarray, b: int) -> np.ndarray:
    if b == 1:
        return img.astype(np.float32)
    h, w = img.shape
    return area_resize(img.astype(np.float32), (max(1, round(h / b)), max(1, round(w / b))))[0]


def prepare_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]], b: int,
                  em_method: str = "equalize_hist") -> list[tuple[np.ndarray, np.ndarray]]:
    """Check sizes, bin and normalise each (EM, chromatin) pair → (input, target) float32 arrays."""
    out = []
    for i, (em, ch) in enumerate(pairs):
        if em.ndim != 2 or em.shape != ch.shape:
            raise InputError(f"training pair {i}: EM {em.shape} and chromatin {ch.shape} must be 2-D and equal in size")
        out.append((normalize_em(_bin(em, b), em_method), normalize_chromatin(_bin(ch, b))))
    return out


def _split(pairs, val_fraction: float):
    """Bottom ``val_fraction`` of the rows of each pair is validation, the rest training."""
    train, val = [], []
    for x, y in pairs:
        cut = int(round(x.shape[0] * (1 - val_fraction)))
        train.append((x[:cut], y[:cut]))
        if x.shape[0] - cut >= 16:
            val.append((x[cut:], y[cut:]))
    return train, val


def _sample(rng: np.random.Generator, pairs, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """A batch of augmented patches: flips, 90° rotations, scale 0.9–1.1, EM contrast/offset ±10 %."""
    xs, ys = [], []
    for _ in range(cfg.batch):
        x, y = pairs[rng.integers(len(pairs))]
        s = float(np.exp(rng.uniform(np.log(0.9), np.log(1.1))))
        n = min(int(round(cfg.patch * s)), *x.shape)
        if rng.random() < cfg.foreground_fraction and (y > 0.5).any():
            rr, cc = np.nonzero(y > 0.5)
            k = rng.integers(len(rr))
            r0 = int(np.clip(rr[k] - n // 2, 0, x.shape[0] - n))
            c0 = int(np.clip(cc[k] - n // 2, 0, x.shape[1] - n))
        else:
            r0, c0 = rng.integers(x.shape[0] - n + 1), rng.integers(x.shape[1] - n + 1)
        px, py = x[r0:r0 + n, c0:c0 + n], y[r0:r0 + n, c0:c0 + n]
        if n != cfg.patch:
            px = cv2.resize(px, (cfg.patch, cfg.patch), interpolation=cv2.INTER_LINEAR)
            py = cv2.resize(py, (cfg.patch, cfg.patch), interpolation=cv2.INTER_LINEAR)
        k = int(rng.integers(4))
        px, py = np.rot90(px, k), np.rot90(py, k)
        if rng.random() < 0.5:
            px, py = px[:, ::-1], py[:, ::-1]
        px = px * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
        xs.append(px)
        ys.append(py)
    return (np.ascontiguousarray(np.stack(xs)[:, None], np.float32),
            np.ascontiguousarray(np.stack(ys)[:, None], np.float32))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation coefficient of two equally shaped arrays."""
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


def _loss(pred: torch.Tensor, y: torch.Tensor, pearson_weight: float) -> tuple[torch.Tensor, float]:
    """(MSE + ``pearson_weight`` × (1 − Pearson r per patch, 0 for a flat target, averaged), the MSE alone)."""
    mse = torch.nn.functional.mse_loss(pred, y)
    pc, yc = pred - pred.mean((2, 3), keepdim=True), y - y.mean((2, 3), keepdim=True)
    r = (pc * yc).sum((2, 3)) / torch.sqrt((pc ** 2).sum((2, 3)) * (yc ** 2).sum((2, 3)) + 1e-8)
    return mse + pearson_weight * (1 - r.mean()), mse.item()


def _validate(net: UNet, val) -> tuple[float, float]:
    net.eval()
    preds = [predict_tiles(net, x) for x, _ in val]
    net.train()
    mse = float(np.mean([np.mean((p - y) ** 2) for p, (_, y) in zip(preds, val)]))
    r = pearson(np.concatenate([p.ravel() for p in preds]), np.concatenate([y.ravel() for _, y in val]))
    return mse, r


def train_model(pairs: Sequence[tuple[np.ndarray, np.ndarray]], cfg: TrainConfig = TrainConfig(), *,
                device="cpu", log: Optional[Callable[[str], None]] = None) -> TrainResult:
    """Train a U-Net on registered (EM, chromatin) pairs; keeps the last weights (``cfg.keep="last"``) or the
    lowest validation MSE's with early stopping (``"best"``)."""
    t0 = time.perf_counter()
    if not pairs:
        raise InputError("no training pairs were given")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    data = prepare_pairs(pairs, cfg.bin, cfg.em_normalisation)
    if min(min(x.shape) for x, _ in data) < cfg.patch:
        raise InputError(f"training images are smaller than a {cfg.patch}px patch after {cfg.bin}x binning")
    train, val = _split(data, cfg.val_fraction)
    val = val or train
    dev = select_device(str(device))
    net = UNet(cfg.base, cfg.depth).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    total = cfg.max_epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 if cfg.lr_schedule == "constant" else
                                              0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(k, total) / total)))
    best, best_state, best_epoch, history = np.inf, None, 0, []
    for epoch in range(1, cfg.max_epochs + 1):
        losses = []
        for _ in range(cfg.steps_per_epoch):
            x, y = _sample(rng, train, cfg)
            loss, mse = _loss(net(torch.from_numpy(x).to(dev)), torch.from_numpy(y).to(dev), cfg.pearson_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(mse)
        mse, r = _validate(net, val)
        history.append({"epoch": epoch, "train_mse": float(np.mean(losses)), "val_mse": mse, "val_pearson_r": r})
        if log:
            log(f"epoch {epoch}: train mse {np.mean(losses):.4f}  val mse {mse:.4f}  val r {r:.3f}")
        if mse < best or cfg.keep == "last":
            best, best_epoch = min(mse, best), epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            break
    net.load_state_dict(best_state)
    card = {"architecture": {"type": "unet-2d", "base": cfg.base, "depth": cfg.depth, "bin": cfg.bin,
                             "output": "plain (no residual)", "parameters": sum(p.numel() for p in net.parameters())},
            "training": asdict(cfg)}
    return TrainResult(ChromatinModel(net.eval(), card), history, best_epoch, time.perf_counter() - t0)


def leave_one_out(pairs, cfg: TrainConfig, *, save_dir=None, device="cpu", log=None) -> list[float]:
    """Pearson r of each pair's prediction by a model trained on the others (full resolution, EM grid).

    With ``save_dir`` the fold models are kept as ``save_dir/fold<i>`` (for benchmarks).
    """
    rs = []
    for i in range(len(pairs)):
        res = train_model([p for j, p in enumerate(pairs) if j != i], cfg, device=device, log=log)
        if save_dir is not None:
            save_model(res.model, Path(save_dir) / f"fold{i}", {"held_out_pair": i})
        em, ch = pairs[i]
        rs.append(pearson(predict_chromatin(em, res.model, device=device), ch))
        if log:
            log(f"leave-one-out fold {i}: pearson r {rs[-1]:.3f}")
    return rs


def save_model(model: ChromatinModel, out_dir, card_extra: dict) -> Path:
    """Write ``weights.pt`` + ``model.yaml`` (the card merges ``card_extra``) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.net.state_dict().items()}, out / WEIGHTS)
    card = {**model.card, **card_extra}
    (out / CARD).write_text(yaml.safe_dump(card, sort_keys=False))
    model.card, model.path = card, out
    return out


def find_pairs(data_dir) -> list[tuple[Path, Path]]:
    """``em_<id>.*`` / ``chromatin_<id>.*`` file pairs in ``data_dir`` (sorted by id)."""
    d = Path(data_dir)
    if not d.is_dir():
        raise InputError(f"training data folder not found: {d}")
    chrom = {p.name[len("chromatin_"):].rsplit(".", 1)[0]: p for p in d.glob("chromatin_*.*")}
    pairs = [(p, chrom[k]) for p in sorted(d.glob("em_*.*"))
             if (k := p.name[len("em_"):].rsplit(".", 1)[0]) in chrom]
    if not pairs:
        raise InputError(f"no em_<id>.* / chromatin_<id>.* image pairs found in {d}")
    return pairs


def train_from_dir(data_dir, out_dir, cfg: TrainConfig = TrainConfig(), *, loo: bool = True,
                   loo_dir=None, device="cpu", card_extra: Optional[dict] = None, log=None) -> ChromatinModel:
    """Read the pairs in ``data_dir``, optionally report leave-one-out Pearson r, train on all, save with a card."""
    from ..io import check_image, read_image, select_channel
    from .correlate import chromatin_channel

    files = find_pairs(data_dir)
    pairs, sizes = [], set()
    for em_p, ch_p in files:
        em_img, ch_img = read_image(em_p), read_image(ch_p)
        ci = chromatin_channel(ch_img.data.shape[0], ch_img.rgb, None, ch_p.name)
        pairs.append((check_image(select_channel(em_img), em_p.name).astype(np.float32),
                      check_image(ch_img.data[ci], ch_p.name).astype(np.float32)))
        sizes.add(None if em_img.pixel_size is None else em_img.pixel_size.model_dump_json())
    loo_r = leave_one_out(pairs, cfg, save_dir=loo_dir, device=device, log=log) if loo and len(pairs) > 1 else []
    res = train_model(pairs, cfg, device=device, log=log)
    best = res.history[res.best_epoch - 1]
    card = {
        "normalisation": {"em_method": cfg.em_normalisation,
                          "em": (f"skimage.exposure.{'equalize_hist' if cfg.em_normalisation == 'equalize_hist' else 'equalize_adapthist (CLAHE, 64 px tiles)'}"
                                 f", then percentiles 1/99.8 -> 0/1 (after {cfg.bin}x area binning)"),
                          "target": "chromatin percentiles 1/99.8 -> 0/1"},
        "expected_em_pixel_size": ("that of the training EMs (uncalibrated files); the network itself "
                                   f"sees the EM binned {cfg.bin}x" if sizes == {None} else sorted(s for s in sizes if s)),
        "data": {"folder": Path(data_dir).name, "pairs": [[e.name, c.name] for e, c in files]},
        "validation": {"split": f"bottom {cfg.val_fraction:.0%} of rows of each pair",
                       "best_epoch": res.best_epoch, "val_mse": best["val_mse"],
                       "val_pearson_r": best["val_pearson_r"]},
        "leave_one_out_pearson_r": [round(r, 4) for r in loo_r],
        "leave_one_out_mean_pearson_r": round(float(np.mean(loo_r)), 4) if loo_r else None,
        "training_seconds": round(res.seconds, 1),
        "history": res.history,
        **(card_extra or {}),
    }
    save_model(res.model, out_dir, card)
    return res.model
