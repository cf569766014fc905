"""Registration benchmark: MINE (``register_mine``) side by side with elastix and SimpleITK in one run.

Cases (1280×954 unless the shared data is missing):

* ``standard`` (15): real EM s6–s8 with a reflected-light-like LM proxy (blurred, contrast-inverted,
  noisy copy) under random affines: ±15°, ≤ 8 % shift, ±5 % scale, shear ≤ 0.02;
* ``wide`` (6): ±30°, ≤ 15 % shift;
* ``mirrored`` (4, LM seen from the other side: det < 0), ``rotated`` (90° + 25 % shift, 180°, −135°),
  ``scaled`` (LM/EM pixel scale 0.8, 1.25, 0.5, 2 without calibration);
* ``phantom``: synthetic pairs (clem_bridge.synthetic) mirrored, 180°, scale 0.5 and 2;
* ``random`` (not run by default; ``--random N --seed S``): held-out style cases, any rotation, half of
  them mirrored, scale 0.8–1.25, ≤ 15 % shift.

Each case runs every method back to back (interleaved, so machine load affects them alike); the
report has wall and CPU seconds, TRE (mean, LM px), success (TRE < 2 px), silent failures (status
"ok" but TRE > 2 px), per-group medians and per-case MINE/reference time ratios, and is saved as JSON.

    python benchmarks/bench_register.py [--groups standard wide ...] [--no-elastix] [--no-sitk]
        [--random N --seed S] [--threads 1] [--out benchmarks/results/bench_register-2core-cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from clem_bridge import transforms as T
from clem_bridge.register import register_mine
from clem_bridge.synthetic import centred_affine, make_pair

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepclem"
SUCCESS_PX = 2.0


def proxy_lm(em: np.ndarray, fixed_to_moving: np.ndarray, moving_shape, seed: int) -> np.ndarray:
    """Reflected-light-like LM of the EM scene: LM pixel p shows the EM at ``moving_to_fixed(p)``, blurred by
    2 LM px, contrast-inverted, grey outside the EM, with noise."""
    m2f = np.linalg.inv(fixed_to_moving)
    src = 1.0 - cv2.GaussianBlur(em, (0, 0), 2.0 * T.scale_of(m2f))
    lm = T.warp_image(src, m2f, moving_shape, fill=float(np.median(src)))
    return (lm + np.random.default_rng(seed).normal(0, 0.03, lm.shape)).astype(np.float32)


def _case(group, em_id, shape, rot=0.0, scale=1.0, shift=(0.0, 0.0), shear=0.0, mirrored=False, stretch=1.0):
    return dict(group=group, em=em_id, shape=shape, rotation_deg=round(float(rot), 2), scale=round(float(scale), 4),
                stretch=round(float(stretch), 4), shift=[round(float(s), 4) for s in shift],
                shear=round(float(shear), 4), mirrored=mirrored)


def build_cases(groups, n_random: int = 0, seed: int = 14) -> list[dict]:
    rng = np.random.default_rng(14)
    real = DATA.exists()
    ems = ["s6", "s7", "s8"] if real else ["phantom"]
    shape = (954, 1280)
    out = []
    for k in range(15):
        out.append(_case("standard", ems[k % len(ems)], shape, rng.uniform(-15, 15), rng.uniform(0.95, 1.05),
                         rng.uniform(-0.08, 0.08, 2), rng.uniform(-0.02, 0.02), stretch=rng.uniform(0.98, 1.02)))
    for k in range(6):
        out.append(_case("wide", ems[k % len(ems)], shape, rng.uniform(-30, 30), rng.uniform(0.95, 1.05),
                         rng.uniform(-0.15, 0.15, 2)))
    for k, rot in enumerate((0.0, 10.0, -25.0, 90.0)):
        out.append(_case("mirrored", ems[k % len(ems)], shape, rot, 1.0, (0.05, -0.04), mirrored=True))
    for k, (rot, shift) in enumerate(((90.0, (0.25, 0.0)), (180.0, (0.0, 0.05)), (-135.0, (-0.1, 0.1)))):
        out.append(_case("rotated", ems[k % len(ems)], shape, rot, 1.0, shift))
    for k, sc in enumerate((0.8, 1.25, 0.5, 2.0)):
        out.append(_case("scaled", ems[k % len(ems)], shape, 8.0, sc, (0.04, 0.03)))
    for k, (rot, sc, mir) in enumerate(((20.0, 1.0, True), (180.0, 1.0, False), (5.0, 0.5, False),
                                        (-5.0, 2.0, False))):
        out.append(_case("phantom", "phantom", shape, rot, sc, (0.05, -0.05), mirrored=mir))
    held = np.random.default_rng(seed)
    for k in range(n_random):
        out.append(_case("random", ems[k % len(ems)], shape, held.uniform(-180, 180),
                         np.exp(held.uniform(np.log(0.8), np.log(1.25))), held.uniform(-0.15, 0.15, 2),
                         held.uniform(-0.02, 0.02), mirrored=bool(held.random() < 0.5),
                         stretch=held.uniform(0.98, 1.02)))
    return [c for c in out if c["group"] in groups]


def make_images(case: dict, seed: int):
    h, w = case["shape"]
    sc = case["scale"]
    moving_shape = (int(round(h * sc)), int(round(w * sc)))
    truth = centred_affine((h, w), moving_shape, rotation_deg=case["rotation_deg"],
                           scale=(sc * case["stretch"], sc / case["stretch"]), shear=case["shear"],
                           translation=(case["shift"][0] * moving_shape[1], case["shift"][1] * moving_shape[0]))
    if case["mirrored"]:
        cx = (w - 1) / 2.0
        truth = truth @ np.array([[-1.0, 0, 2 * cx], [0, 1, 0], [0, 0, 1]])
    if case["em"] == "phantom":
        pair = make_pair((h, w), fixed_to_moving=truth, seed=seed, moving_shape=moving_shape)
        return pair.em, pair.lm["reflected"], truth
    em = cv2.imread(str(DATA / f"em_{case['em']}.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    em = em[:h, :w]
    return em, proxy_lm(em, truth, moving_shape, seed), truth


# --- reference methods -----------------------------------------------------------------

def _bin2(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _affine_from_center(a: np.ndarray, t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """x ↦ A(x − c) + t + c (ITK/elastix convention, spacing 1, origin 0) as a 3×3 pixel matrix."""
    out = np.eye(3)
    out[:2, :2] = a
    out[:2, 2] = t + c - a @ c
    return out


def elastix_affine(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """elastix (itk-elastix) affine, AdvancedMattesMutualInformation, 4 levels, on half-resolution images."""
    import itk
    f, m = _bin2(fixed), _bin2(moving)
    po = itk.ParameterObject.New()
    pm = po.GetDefaultParameterMap("affine", 4)
    pm["AutomaticTransformInitialization"] = ["true"]
    pm["WriteResultImage"] = ["false"]
    po.AddParameterMap(pm)
    _, tp = itk.elastix_registration_method(itk.GetImageFromArray(np.ascontiguousarray(f)),
                                            itk.GetImageFromArray(np.ascontiguousarray(m)),
                                            parameter_object=po, log_to_console=False)
    p = np.array([float(x) for x in tp.GetParameter(0, "TransformParameters")])
    c = np.array([float(x) for x in tp.GetParameter(0, "CenterOfRotationPoint")])
    return T.rescale(_affine_from_center(p[:4].reshape(2, 2), p[4:6], c), fixed.shape, f.shape, moving.shape,
                     m.shape)


def sitk_mattes(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """SimpleITK affine + Mattes MI, 3 levels, centred initialiser, on half-resolution images."""
    import SimpleITK as sitk
    fh, mh = _bin2(fixed), _bin2(moving)
    f = sitk.GetImageFromArray(fh.astype(np.float32))
    m = sitk.GetImageFromArray(mh.astype(np.float32))
    init = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(2),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(0.1, seed=1)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=300)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel([4, 2, 1])
    r.SetSmoothingSigmasPerLevel([2, 1, 0])
    r.SetInitialTransform(init, inPlace=False)
    tx = sitk.CompositeTransform(r.Execute(f, m)).GetNthTransform(0)
    tx = sitk.AffineTransform(tx) if tx.GetName() == "AffineTransform" else tx
    a = _affine_from_center(np.array(tx.GetMatrix()).reshape(2, 2), np.array(tx.GetTranslation()),
                            np.array(tx.GetCenter()))
    return T.rescale(a, fixed.shape, fh.shape, moving.shape, mh.shape)


def _timed(fn, truth, shape) -> dict:
    t, c = time.perf_counter(), time.process_time()
    try:
        res = fn()
    except RuntimeError as e:
        return {"error": str(e).splitlines()[0][:200], "ok": False}
    row = {"wall_s": round(time.perf_counter() - t, 3), "cpu_s": round(time.process_time() - c, 3)}
    reg = res if not isinstance(res, np.ndarray) else None
    mat = res if reg is None else reg.fixed_to_moving
    row["tre_px"] = round(T.tre(mat, truth, shape), 4)
    row["ok"] = row["tre_px"] < SUCCESS_PX
    if reg is not None:
        row.update(status=reg.outcome, iterations=reg.iterations, det_sign=int(np.sign(np.linalg.det(mat[:2, :2]))),
                   timings={k: round(v, 3) for k, v in reg.timings.items()},
                   silent_failure=reg.outcome == "ok" and not row["ok"])
    return row


def summarise(rows: list[dict], methods) -> dict:
    out = {}
    for g in sorted({r["case"]["group"] for r in rows}) + ["all"]:
        sel = [r for r in rows if g in ("all", r["case"]["group"])]
        out[g] = {}
        for m in methods:
            res = [r[m] for r in sel if m in r]
            done = [x for x in res if "wall_s" in x]
            out[g][m] = {"n": len(res), "success": sum(x["ok"] for x in res),
                         "median_tre_px": float(np.median([x["tre_px"] for x in done])) if done else None,
                         "median_wall_s": float(np.median([x["wall_s"] for x in done])) if done else None,
                         "median_cpu_s": float(np.median([x["cpu_s"] for x in done])) if done else None}
            if m == "mine":
                out[g][m]["silent_failures"] = sum(bool(x.get("silent_failure")) for x in res)
            elif m != "mine" and "mine" in methods:   # per-case time ratios, same load for both calls
                pairs = [(r["mine"], r[m]) for r in sel if "cpu_s" in r["mine"] and "cpu_s" in r.get(m, {})]
                for k in ("cpu_s", "wall_s"):
                    out[g][m][f"median_mine_over_this_{k}"] = (float(np.median([a[k] / b[k] for a, b in pairs]))
                                                               if pairs else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", nargs="+", default=["standard", "wide", "mirrored", "rotated", "scaled", "phantom"])
    ap.add_argument("--no-elastix", action="store_true")
    ap.add_argument("--no-sitk", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases of each group")
    ap.add_argument("--random", type=int, default=0, help="add N random held-out style cases (group 'random')")
    ap.add_argument("--seed", type=int, default=14, help="seed of the random cases")
    ap.add_argument("--out", type=Path, default=None, help="save the JSON report here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = {"mine": lambda f, m: register_mine(f, m, seed=0, device=args.device)}
    if not args.no_elastix:
        import itk  # noqa: F401  (slow first import kept out of the timings)
        methods["elastix"] = elastix_affine
    if not args.no_sitk:
        import SimpleITK  # noqa: F401
        methods["sitk"] = sitk_mattes
    warm = make_pair((128, 128), seed=0)
    for fn in methods.values():
        fn(warm.em, warm.lm["reflected"])
    groups = args.groups + (["random"] if args.random else [])
    cases = build_cases(groups, args.random, args.seed)
    if args.limit:
        cases = [c for g in groups for c in [c for c in cases if c["group"] == g][:args.limit]]
    rows = []
    load_start = os.getloadavg()
    for i, case in enumerate(cases):
        fixed, moving, truth = make_images(case, seed=i)
        row = {"case": case}
        for name, fn in methods.items():
            row[name] = _timed(lambda: fn(fixed, moving), truth, fixed.shape)
        rows.append(row)
        print(json.dumps({"case": f"{case['group']} {case['em']} rot {case['rotation_deg']} scale {case['scale']}"
                          f"{' mirrored' if case['mirrored'] else ''}",
                          **{m: {k: row[m].get(k) for k in ("cpu_s", "wall_s", "tre_px", "status")} for m in methods}}),
              flush=True)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__, "device": args.device, "real_em": DATA.exists(),
                          "load_average_1_5_15_min": {"start": load_start, "end": os.getloadavg()}},
              "summary": summarise(rows, methods), "cases": rows}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
