"""DeepCLEM correlation benchmark: leave-one-out models on the DeepCLEM pairs s6–s8, plus DeepCLEM's example.

For each pair i the fold model trained on the other pairs (``--loo-models DIR/fold<i>``, trained with
``train_loo`` settings when missing; ``--shipped`` uses the shipped model instead, which saw every pair)
predicts chromatin from EM i.  The measured chromatin is resampled under known similarities (rotation
±15°, shift ≤ 8 % of the field, scale ±5 %; the first four at the corners of that range) and registered
back twice: uncalibrated (free scale) and calibrated (EM in nm, chromatin in µm, their ratio = the true
scale; units are converted).  Reported per case and in the summary:

* ``tre_px`` — mean error over the EM grid against the manual registration composed with the perturbation;
* ``status`` and warnings; a *silent failure* is status ``ok`` with ``tre_px`` > 8; a *collapse* is a
  fitted scale more than 10 % off the truth;
* ``free_vs_calibrated_scale`` — the free fit's scale over the true (calibrated) scale, minus 1;
* the manual registration's own check (``reference`` per pair): the optimum of the network-free heterochromatin
  criterion (:func:`refine_nuclei`: EM vs measured chromatin inside the nuclei) started from the manual
  registration, as shift at the field centre, scale and rotation, and its ``tre_px`` from it, and the
  manual registration's own expected error (``manual_expected_error``: its nuclei aligned one by one).  The manual
  registration was made by eye in Inkscape (DeepCLEM paper), so no method that follows the EM evidence can be
  closer to it than that; per case ``tre_vs_em_optimum_px`` (result vs that optimum under the same
  perturbation; free scale for the free fit, the calibrated scale for the calibrated one) and
  ``free_vs_em_optimum_scale`` say how well the result reproduces the EM evidence;
* ``expected_error_px`` — the result's own error estimate (:mod:`clem_bridge.insilico.uncertainty`), and in the
  summary how often the measured errors lie within it (once and twice);
* ``miscalibrated`` per pair: the unperturbed pair with pixel sizes 3 % / 2 % / 4 % off the truth (a user's wrong
  calibration, inside the snap range): error, status, expected error; silent failures counted in the summary;
* ``mirrored`` per pair: the chromatin image mirrored (uncalibrated): error, status, whether a mirror was found;
* seconds per case (registration only) and the prediction time per pair.

The example (``example/EM.png`` against ``example/Chromatin.png``, blue channel, uncalibrated, shipped
model: the example is not one of its training pairs) reports its status and how far the three EM nuclei
(centres marked by eye on ``EM.png``) land from the centroids of the stained nuclei of ``Chromatin.png``.
Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_correlate.py [--data DIR] [--loo-models DIR | --shipped] [--cases 4]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from clem_bridge import transforms as T
from clem_bridge.insilico import DEFAULT_MODEL
from clem_bridge.insilico.correlate import register_chromatin
from clem_bridge.insilico.nuclei import refine_nuclei
from clem_bridge.insilico.predict import load_model, predict_chromatin
from clem_bridge.insilico.train import TrainConfig, find_pairs, leave_one_out, pearson
from clem_bridge.insilico.uncertainty import expected_error, local_shifts
from clem_bridge.io import read_channel
from clem_bridge.schema import PixelSize
from clem_bridge.synthetic import centred_affine

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepclem"
# leave-one-out folds trained like the shipped model (TrainConfig's recipe: about 4.5 min a fold on one core)
LOO_CONFIG = TrainConfig()
# DeepCLEM example: EM nucleus centres (x, y) marked by eye; left, centre, right
EXAMPLE_NUCLEI_EM = [(178.0, 312.0), (520.0, 390.0), (872.0, 202.0)]
SILENT_PX = 8.0
MISCALIBRATION = (0.97, 1.02, 1.04)   # pixel sizes' ratio / true scale: a user's wrong calibration


def perturbations(n: int, shape, seed: int = 0) -> list[np.ndarray]:
    """``n`` known ``fixed_to_moving`` similarities; the first four sit at the corners of the range."""
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


def describe(m: np.ndarray, shape) -> dict:
    """A ``fixed_to_moving`` near the identity: shift of the field centre (px), scale − 1 and rotation (degrees)."""
    c = np.array(T.center_of(shape), float)
    d = T.apply_to_points(m, c[None])[0] - c
    return {"shift_centre_px": [round(float(v), 2) for v in d], "scale_m1": round(T.scale_of(m) - 1, 5),
            "rotation_deg": round(float(np.degrees(np.arctan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1]))), 3)}


def reference_check(em, chrom) -> tuple[dict, dict]:
    """Optima of the heterochromatin criterion from the manual registration (identity), free and fixed scale,
    and the manual registration's own expected error (its nuclei aligned one by one)."""
    opt = {label: refine_nuclei(em, chrom, np.eye(3), fix_scale=fix)[0]
           for label, fix in (("free", False), ("calibrated", True))}
    own = expected_error(local_shifts(em, chrom, np.eye(3)), em.shape) or {}
    return opt, {**{label: {**describe(m, em.shape), "tre_px": round(T.tre(m, np.eye(3), em.shape), 3)}
                    for label, m in opt.items()},
                 "manual_expected_error": {k: round(v, 2) for k, v in own.items()}}


def miscalibrated(em, chrom, pred) -> list[dict]:
    """The unperturbed pair with pixel sizes that say the scale is ``MISCALIBRATION`` off (inside the snap
    range, so the scale is set from them): the error (vs the manual registration), status and expected error."""
    rows = []
    for wrong in MISCALIBRATION:
        reg = register_chromatin(pred, chrom, em=em, fixed_pixel_size=PixelSize(x=10.0, y=10.0, unit="nm"),
                                 moving_pixel_size=PixelSize(x=0.01 / wrong, y=0.01 / wrong, unit="um"))
        rows.append({"calibrated_scale": wrong, "tre_px": round(T.tre(reg.fixed_to_moving, np.eye(3), em.shape), 2),
                     "status": reg.outcome, "warnings": reg.warnings,
                     "expected_error_px": round(reg.metrics.get("expected_error_px", float("nan")), 2),
                     "local_scale_change": round(reg.metrics.get("local_scale_change", float("nan")), 4)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def mirrored(em, chrom, pred) -> dict:
    """The pair with the chromatin image mirrored (the LM seen from the other side), uncalibrated: the error
    against the manual registration composed with the mirror, status and whether a mirror was found."""
    flip = np.array([[-1.0, 0.0, chrom.shape[1] - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    t0 = time.perf_counter()
    reg = register_chromatin(pred, np.ascontiguousarray(chrom[:, ::-1]), em=em)
    row = {"tre_px": round(T.tre(reg.fixed_to_moving, flip, em.shape), 2), "status": reg.outcome,
           "warnings": reg.warnings, "mirrored": bool(reg.metrics["mirrored"]),
           "seconds": round(time.perf_counter() - t0, 2)}
    print(json.dumps(row), flush=True)
    return row


def pair_cases(i: int, em, chrom, model, n_cases: int) -> tuple[dict, list[dict]]:
    t0 = time.perf_counter()
    pred = predict_chromatin(em, model, device="cpu")
    predict_seconds = time.perf_counter() - t0
    opt, ref = reference_check(em, chrom)
    info = {"pair": i, "predict_seconds": round(predict_seconds, 2),
            "pearson_r": round(pearson(pred, chrom), 3), "reference": ref,
            "miscalibrated": miscalibrated(em, chrom, pred), "mirrored": mirrored(em, chrom, pred)}
    rows = []
    for k, truth in enumerate(perturbations(n_cases, em.shape, seed=i)):
        moving = T.warp_image(chrom, np.linalg.inv(truth), chrom.shape)
        scale = T.scale_of(truth)
        row = {"pair": i, "case": k, "true_scale": round(scale, 4)}
        lm_um = PixelSize(x=0.01 / scale, y=0.01 / scale, unit="um")
        calibrated = dict(fixed_pixel_size=PixelSize(x=10.0, y=10.0, unit="nm"), moving_pixel_size=lm_um)
        for label, sizes in (("free", {}), ("calibrated", calibrated)):
            t0 = time.perf_counter()
            reg = register_chromatin(pred, moving, em=em, **sizes)
            row[label] = {"tre_px": round(T.tre(reg.fixed_to_moving, truth, em.shape), 3),
                          "tre_vs_em_optimum_px": round(T.tre(reg.fixed_to_moving, truth @ opt[label], em.shape), 3),
                          "residual": describe(np.linalg.inv(truth) @ reg.fixed_to_moving, em.shape),
                          "scale_error": round(T.scale_of(reg.fixed_to_moving) / scale - 1, 5),
                          "status": reg.outcome, "warnings": reg.warnings,
                          "score": round(reg.metrics["score"], 3), "margin": round(reg.metrics["margin"], 3),
                          "expected_error_px": (round(reg.metrics["expected_error_px"], 2)
                                                if "expected_error_px" in reg.metrics else None),
                          "seconds": round(time.perf_counter() - t0, 2)}
        free, cal = row["free"]["scale_error"], row["calibrated"]["scale_error"]
        row["free_vs_calibrated_scale"] = round((1 + free) / (1 + cal) - 1, 5)
        row["free_vs_em_optimum_scale"] = round((1 + free) / T.scale_of(opt["free"]) - 1, 5)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return info, rows


def stained_centroids(chrom: np.ndarray) -> np.ndarray:
    """(x, y) centres of the stained nuclei: Otsu foreground of the σ=4 px blurred chromatin, grouped by a
    61 px dilation, centroid of each group's convex hull (groups ≥ 5000 px)."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label
    from skimage.morphology import convex_hull_image
    b = cv2.GaussianBlur(chrom.astype(np.float32), (0, 0), 4.0)
    fg = b > threshold_otsu(b)
    groups = label(cv2.dilate(fg.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (61, 61))) > 0)
    hulls = [convex_hull_image(fg & (groups == k)) for k in range(1, groups.max() + 1)]
    return np.array([[np.nonzero(h)[1].mean(), np.nonzero(h)[0].mean()] for h in hulls if h.sum() >= 5000])


def example_case(folder: Path) -> dict:
    from clem_bridge.insilico.correlate import correlate
    em = read_channel(folder / "EM.png")[0].astype(np.float32)
    chrom = read_channel(folder / "Chromatin.png", channel=2)[0].astype(np.float32)
    t0 = time.perf_counter()
    reg, _ = correlate(em, chrom, model=DEFAULT_MODEL, device="cpu")
    seconds = time.perf_counter() - t0
    centroids = stained_centroids(chrom)
    mapped = T.apply_to_points(reg.fixed_to_moving, np.array(EXAMPLE_NUCLEI_EM))
    dist = [float(np.min(np.linalg.norm(centroids - p, axis=1))) for p in mapped]
    return {"status": reg.outcome, "warnings": reg.warnings,
            "fixed_to_moving": np.round(reg.fixed_to_moving, 5).tolist(),
            "fitted_scale": round(reg.metrics["fitted_scale"], 4), "margin": round(reg.metrics["margin"], 3),
            "expected_error_px": round(reg.metrics["expected_error_px"], 2) if "expected_error_px" in reg.metrics else None,
            "nuclei_to_stained_centroid_px": [round(d, 1) for d in dist], "seconds_incl_prediction": round(seconds, 2)}


def summary(rows: list[dict]) -> dict:
    out = {}
    for label in ("free", "calibrated"):
        t = np.array([r[label]["tre_px"] for r in rows])
        se = np.array([r[label]["scale_error"] for r in rows])
        st = [r[label]["status"] for r in rows]
        out[label] = {"cases": len(rows), "median_tre_px": round(float(np.median(t)), 3),
                      "max_tre_px": round(float(t.max()), 3), "within_3px": int((t < 3).sum()),
                      "within_8px": int((t < SILENT_PX).sum()),
                      "collapses": int((np.abs(se) > 0.1).sum()),
                      "silent_failures": int(sum(s == "ok" and e > SILENT_PX for s, e in zip(st, t))),
                      "status_counts": {s: st.count(s) for s in ("ok", "uncertain", "failed")},
                      "median_scale_error": round(float(np.median(se)), 5),
                      "median_tre_vs_em_optimum_px": round(float(np.median([r[label]["tre_vs_em_optimum_px"]
                                                                            for r in rows])), 3),
                      "mean_seconds_per_case": round(float(np.mean([r[label]["seconds"] for r in rows])), 2)}
        ee = [(r[label]["expected_error_px"], r[label]["tre_px"], r[label]["tre_vs_em_optimum_px"]) for r in rows
              if r[label]["expected_error_px"] is not None]
        if ee:
            e, vs_manual, vs_opt = np.array(ee).T
            out[label]["expected_error"] = {
                "estimated": len(ee), "median_px": round(float(np.median(e)), 2), "max_px": round(float(e.max()), 2),
                "tre_within_expected": int((vs_manual <= e).sum()), "tre_within_2x_expected": int((vs_manual <= 2 * e).sum()),
                "tre_vs_em_optimum_within_expected": int((vs_opt <= e).sum())}
    fv = np.array([r["free_vs_calibrated_scale"] for r in rows])
    out["free_vs_calibrated_scale"] = {"median": round(float(np.median(fv)), 5), "mean": round(float(fv.mean()), 5),
                                       "max_abs": round(float(np.abs(fv).max()), 5)}
    fe = np.array([r["free_vs_em_optimum_scale"] for r in rows])
    out["free_vs_em_optimum_scale"] = {"median": round(float(np.median(fe)), 5),
                                       "max_abs": round(float(np.abs(fe).max()), 5)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--loo-models", type=Path, default=Path("/tmp/clem_bridge_loo_models"),
                    help="fold<i> model folders; trained with LOO_CONFIG when missing")
    ap.add_argument("--shipped", action="store_true", help="use the shipped model (trained on every pair)")
    ap.add_argument("--cases", type=int, default=4, help="perturbations per pair")
    ap.add_argument("--pairs", default="", help="comma-separated pair indices (default all)")
    ap.add_argument("--no-example", action="store_true")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(json.dumps({"skipped": f"DeepCLEM data not found at {args.data}"}))
        return
    files = find_pairs(args.data)
    pairs = [(read_channel(e)[0].astype(np.float32), read_channel(c)[0].astype(np.float32)) for e, c in files]
    if not args.shipped and not all((args.loo_models / f"fold{i}" / "weights.pt").is_file() for i in range(len(pairs))):
        leave_one_out(pairs, LOO_CONFIG, save_dir=args.loo_models)
    picked = [int(i) for i in args.pairs.split(",") if i] or list(range(len(pairs)))
    models = ("shipped " + DEFAULT_MODEL if args.shipped else
              f"leave-one-out models in {args.loo_models} (training settings per pair under per_pair/model)")
    result = {"machine": "CPU", "load_average_start": [round(v, 2) for v in os.getloadavg()], "models": models,
              "pairs": [files[i][0].name for i in picked], "cases_per_pair": args.cases, "per_pair": [], "cases": []}
    for i in picked:
        em, chrom = pairs[i]
        model = load_model(DEFAULT_MODEL if args.shipped else args.loo_models / f"fold{i}", device="cpu")
        info, rows = pair_cases(i, em, chrom, model, args.cases)
        info["model"] = {"path": str(model.path), **{k: model.card["training"][k] for k in
                                                     ("steps_per_epoch", "max_epochs", "patience")}}
        result["per_pair"].append(info)
        result["cases"] += rows
    result["summary"] = summary(result["cases"])
    mis = [r for p in result["per_pair"] for r in p["miscalibrated"]]
    result["summary"]["miscalibrated"] = {
        "cases": len(mis), "over_8px": sum(r["tre_px"] > SILENT_PX for r in mis),
        "silent_failures": sum(r["status"] == "ok" and r["tre_px"] > SILENT_PX for r in mis),
        "status_counts": {s: sum(r["status"] == s for r in mis) for s in ("ok", "uncertain", "failed")}}
    mir = [p["mirrored"] for p in result["per_pair"]]
    result["summary"]["mirrored"] = {
        "cases": len(mir), "found": sum(r["mirrored"] and r["tre_px"] <= SILENT_PX for r in mir),
        "max_tre_px": max(r["tre_px"] for r in mir),
        "silent_failures": sum(r["status"] == "ok" and r["tre_px"] > SILENT_PX for r in mir)}
    mean_pred = float(np.mean([p["predict_seconds"] for p in result["per_pair"]]))
    result["summary"]["seconds_per_pair_incl_prediction"] = round(
        mean_pred + result["summary"]["free"]["mean_seconds_per_case"], 2)
    if not args.no_example and (args.data / "example" / "EM.png").is_file():
        result["example"] = example_case(args.data / "example")
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
