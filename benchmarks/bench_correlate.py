"""DeepCLEM correlation benchmark on the shared DeepCLEM pairs (leave-one-out); prints JSON.

For each pair i the fold model trained on the other two pairs predicts chromatin from EM i (Pearson r
vs the measured chromatin).  The measured chromatin is then resampled under known affines (rotation
±15°, shift ≤ 8 % of the field, scale ±5 %) and registered back by

* ``deepclem``        — prediction → measured chromatin, global search + similarity refinement, then the
  heterochromatin refinement on the EM itself (the default);
* ``deepclem_prediction_only`` — the same without the heterochromatin refinement;
* ``deepclem_affine`` — prediction-based similarity, then affine ECC refinement;
* ``deepclem_mine``   — the same global search, MINE refinement (the lead's engine) instead;
* ``mine_direct``   — MINE on EM vs measured chromatin (no prediction);
* ``sitk_mattes``   — SimpleITK affine, Mattes MI, EM vs measured chromatin, 3-level pyramid.

TRE is the mean error (pixels) over the EM grid against the known affine composed with the pairs' given
(manual) registration; success = TRE < 3 px.  The manual registration was made by eye in Inkscape, so two
further references are reported: ``consistency`` — TRE against each method's own solution on the unperturbed
pair composed with the perturbation (precision of the search, independent of any reference), and
``vs_heterochromatin_optimum`` — TRE against the similarity that best aligns the Hoechst signal with the
electron-dense heterochromatin inside the nuclei (the manual criterion, optimised from the manual
registration at full resolution; ``reference_offsets_px`` gives its distance from the manual one).  That
criterion is also ``deepclem``'s last stage, so for ``deepclem`` it is not an independent check.  Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_correlate.py [--data DIR] [--loo-models DIR] [--cases 8] [--crops]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from clem_bridge import transforms as T
from clem_bridge.insilico.correlate import SearchParams, coarse_search, refine_nuclei, register_chromatin
from clem_bridge.insilico.normalize import normalize_chromatin
from clem_bridge.insilico.predict import load_model, predict_chromatin
from clem_bridge.insilico.train import TrainConfig, find_pairs, leave_one_out, pearson
from clem_bridge.schema import PixelSize
from clem_bridge.synthetic import centred_affine

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepclem"


def perturbations(n: int, shape, seed: int = 0) -> list[np.ndarray]:
    """``n`` known ``fixed_to_moving`` affines; the first four sit at the corners of the range."""
    rng = np.random.default_rng(seed)
    h, w = shape
    out = []
    for k in range(n):
        if k < 4:
            sgn = [(1, 1), (-1, -1), (1, -1), (-1, 1)][k]
            rot, sc, tx, ty = 15 * sgn[0], 1 + 0.05 * sgn[1], 0.08 * w * sgn[1], 0.08 * h * sgn[0]
        else:
            rot, sc = rng.uniform(-15, 15), rng.uniform(0.95, 1.05)
            tx, ty = rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.08, 0.08) * h
        out.append(centred_affine(shape, shape, rotation_deg=rot, scale=sc, translation=(tx, ty)))
    return out


def sitk_mattes(em: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """SimpleITK affine registration (Mattes MI, centred geometry init, 3 levels) → fixed_to_moving."""
    import SimpleITK as sitk
    f = sitk.GetImageFromArray(em.astype(np.float32))
    m = sitk.GetImageFromArray(moving.astype(np.float32))
    tx = sitk.AffineTransform(sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(2),
                                                                sitk.CenteredTransformInitializerFilter.GEOMETRY))
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(50)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(0.1, seed=0)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 300)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel([4, 2, 1])
    r.SetSmoothingSigmasPerLevel([2, 1, 0])
    r.SetInitialTransform(tx, inPlace=True)
    r.Execute(f, m)
    a = np.array(tx.GetMatrix()).reshape(2, 2)
    c, t = np.array(tx.GetCenter()), np.array(tx.GetTranslation())
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = a, t + c - a @ c    # spacing 1, origin 0: physical point = pixel index
    return out


def _run(method: str, em, pred, moving) -> np.ndarray:
    from clem_bridge.register import register_mine
    if method == "deepclem":
        return register_chromatin(pred, moving, em=em).fixed_to_moving
    if method == "deepclem_prediction_only":
        return register_chromatin(pred, moving).fixed_to_moving
    if method == "deepclem_affine":
        return register_chromatin(pred, moving, params=SearchParams(model="affine")).fixed_to_moving
    if method == "deepclem_mine":
        init, _ = coarse_search(normalize_chromatin(pred), normalize_chromatin(moving), SearchParams())
        return register_mine(pred, moving, init=init, device="cpu").fixed_to_moving
    if method == "mine_direct":
        return register_mine(em, moving, device="cpu").fixed_to_moving
    return sitk_mattes(em, moving)


# (y0, x0, h, w) EM crops vs the full chromatin image, as in DeepCLEM's ~1000×530 EM vs 1280×1024 LM example
EM_CROPS = [(100, 100, 530, 1000), (300, 200, 530, 1000), (400, 280, 530, 1000), (50, 600, 600, 600)]


def crop_cases(em, chrom, model) -> list[dict]:
    """DeepCLEM on EM crops (own prediction) against the full measured chromatin; truth = the crop offset.

    Each crop runs uncalibrated (scale searched) and calibrated (equal pixel sizes on both images, as when
    both files carry their calibration: the scale is snapped to their ratio when the fit is within 6 %).
    """
    out = []
    size = PixelSize(x=0.01, y=0.01)
    for y0, x0, h, w in EM_CROPS:
        crop = em[y0:y0 + h, x0:x0 + w]
        if crop.shape != (h, w):
            continue
        truth = T.from_params(translation=(x0, y0))
        pred = predict_chromatin(crop, model, device="cpu")
        for calibrated in (False, True):
            t0 = time.perf_counter()
            reg = register_chromatin(pred, chrom, em=crop, **(dict(fixed_pixel_size=size, moving_pixel_size=size)
                                                               if calibrated else {}))
            out.append({"crop": [y0, x0, h, w], "calibrated": calibrated,
                        "tre_px": round(T.tre(reg.fixed_to_moving, truth, crop.shape), 3),
                        "seconds": round(time.perf_counter() - t0, 2), "warnings": reg.warnings})
    return out


def crop_summary(rows: list[dict]) -> dict:
    """Per calibration: cases, within 3 / 8 px, median TRE, and silent failures (TRE > 8 px, no warning)."""
    out = {}
    for calibrated in (False, True):
        sel = [r for r in rows if r["calibrated"] == calibrated]
        t = np.array([r["tre_px"] for r in sel])
        out["calibrated" if calibrated else "uncalibrated"] = {
            "cases": len(sel), "within_3px": int((t < 3).sum()), "within_8px": int((t < 8).sum()),
            "median_tre_px": float(np.median(t)), "warned": sum(bool(r["warnings"]) for r in sel),
            "silent_failures_over_8px": sum(r["tre_px"] > 8 and not r["warnings"] for r in sel)}
    return out


def _summary(tres, times) -> dict:
    tres = np.asarray(tres)
    return {"success_rate": float(np.mean(tres < 3.0)), "median_tre_px": float(np.median(tres)),
            "mean_seconds_per_case": float(np.mean(times)), "tre_px": [round(float(t), 3) for t in tres]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--loo-models", type=Path, default=Path("/tmp/clem_bridge_loo_models"),
                    help="fold<i> model folders; trained (with the default TrainConfig) when missing")
    ap.add_argument("--cases", type=int, default=5, help="perturbations per pair")
    ap.add_argument("--methods",
                    default="deepclem,deepclem_prediction_only,deepclem_affine,deepclem_mine,mine_direct,sitk_mattes")
    ap.add_argument("--crops", action="store_true", help="also correlate EM crops against the full chromatin")
    ap.add_argument("--mine-cases", type=int, default=2,
                    help="run the (slow) MINE methods on only the first N perturbations per pair")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"DeepCLEM data not found at {args.data}"}))
        return
    from clem_bridge.io import read_channel

    files = find_pairs(args.data)
    pairs = [(read_channel(e)[0].astype(np.float32), read_channel(c)[0].astype(np.float32)) for e, c in files]
    if not all((args.loo_models / f"fold{i}" / "weights.pt").is_file() for i in range(len(pairs))):
        leave_one_out(pairs, TrainConfig(), save_dir=args.loo_models)
    methods = [m for m in args.methods.split(",") if m]
    tres = {m: [] for m in methods}
    times = {m: [] for m in methods}
    consistency = {m: [] for m in methods}
    vs_optimum = {m: [] for m in methods}
    result = {"machine": "CPU", "pairs": [e.name for e, _ in files], "cases_per_pair": args.cases,
              "mine_cases_per_pair": min(args.mine_cases, args.cases),
              "pearson_r": [], "predict_seconds": [], "reference_offsets_px": []}
    for i, (em, chrom) in enumerate(pairs):
        optimum, _, _ = refine_nuclei(em, normalize_chromatin(chrom), np.eye(3), size=max(em.shape))
        result["reference_offsets_px"].append(T.tre(optimum, np.eye(3), em.shape))
        model = load_model(args.loo_models / f"fold{i}", device="cpu")
        t0 = time.perf_counter()
        pred = predict_chromatin(em, model, device="cpu")
        result["predict_seconds"].append(time.perf_counter() - t0)
        result["pearson_r"].append(pearson(pred, chrom))
        if args.crops:
            for row in crop_cases(em, chrom, model):
                result.setdefault("em_crops", []).append({"pair": i, **row})
                print(json.dumps(result["em_crops"][-1]), flush=True)
        own = {}   # each method's solution on the unperturbed pair (case -1)
        for k, truth in [(-1, np.eye(3))] + list(enumerate(perturbations(args.cases, em.shape, seed=i))):
            moving = chrom if k < 0 else T.warp_image(chrom, np.linalg.inv(truth), chrom.shape)
            for m in methods:
                if "mine" in m and k >= args.mine_cases:
                    continue
                t0 = time.perf_counter()
                est = _run(m, em, pred, moving)
                if k < 0:
                    own[m] = est
                    continue
                times[m].append(time.perf_counter() - t0)
                tres[m].append(T.tre(est, truth, em.shape))
                consistency[m].append(T.tre(est, truth @ own[m], em.shape))
                vs_optimum[m].append(T.tre(est, truth @ optimum, em.shape))
                print(json.dumps({"pair": i, "case": k, "method": m, "tre_px": round(tres[m][-1], 3),
                                  "consistency_tre_px": round(consistency[m][-1], 3),
                                  "vs_optimum_tre_px": round(vs_optimum[m][-1], 3),
                                  "seconds": round(times[m][-1], 2)}), flush=True)
    result["mean_pearson_r"] = float(np.mean(result["pearson_r"]))
    if args.crops:
        result["em_crops_summary"] = crop_summary(result["em_crops"])
    result["methods"] = {m: {**_summary(tres[m], times[m]),
                             "consistency": _summary(consistency[m], times[m]),
                             "vs_heterochromatin_optimum": _summary(vs_optimum[m], times[m])} for m in methods}
    d = result["methods"].get("deepclem")
    if d:
        d["seconds_per_pair_incl_prediction"] = float(np.mean(result["predict_seconds"]) + d["mean_seconds_per_case"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
