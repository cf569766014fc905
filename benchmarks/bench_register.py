"""Registration benchmark: prints JSON (wall time, TRE) for the fast MINE engine, the thesis preset's
seconds per iteration, and SimpleITK Mattes MI on the same phantom cases.

    python benchmarks/bench_register.py [--sizes 512 1024] [--thesis-iterations 20] [--no-sitk]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace

import numpy as np
import torch

from clem_bridge import transforms as T
from clem_bridge.register import MineParams, register_mine
from clem_bridge.synthetic import centred_affine, make_pair

CASES = [dict(rotation_deg=25, translation=(0.12, -0.10)), dict(rotation_deg=-30, scale=1.08, translation=(-0.15, 0.05)),
         dict(rotation_deg=8, scale=0.92, shear=0.04, translation=(0.05, 0.15))]


def sitk_mattes(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """SimpleITK affine + Mattes MI (multi-resolution, centred initialiser); pixel spacing 1, origin 0,
    so its fixed→moving physical map is our ``fixed_to_moving`` pixel matrix."""
    import SimpleITK as sitk
    f = sitk.GetImageFromArray(fixed.astype(np.float32))
    m = sitk.GetImageFromArray(moving.astype(np.float32))
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
    a = np.array(tx.GetMatrix()).reshape(2, 2)
    c = np.array(tx.GetCenter())
    t = np.array(tx.GetTranslation())
    out = np.eye(3)
    out[:2, :2] = a
    out[:2, 2] = t + c - a @ c
    return out


def run_case(size: int, case: dict, with_sitk: bool) -> dict:
    shape = (size, size)
    kw = dict(case, translation=(case["translation"][0] * size, case["translation"][1] * size))
    truth = centred_affine(shape, shape, **kw)
    pair = make_pair(shape, fixed_to_moving=truth, seed=11)
    t = time.perf_counter()
    reg = register_mine(pair.em, pair.lm["reflected"], seed=0)
    out = {"size": size, "case": case, "mine_fast": {"wall_s": round(time.perf_counter() - t, 2),
                                                     "tre_px": round(T.tre(reg.fixed_to_moving, truth, shape), 3),
                                                     "iterations": reg.iterations,
                                                     "s_per_iteration": round(reg.timings["optimise_s"] / reg.iterations, 4)}}
    if with_sitk:
        t = time.perf_counter()
        try:
            a = sitk_mattes(pair.em, pair.lm["reflected"])
            out["sitk_mattes"] = {"wall_s": round(time.perf_counter() - t, 2),
                                  "tre_px": round(T.tre(a, truth, shape), 3)}
        except RuntimeError as e:
            out["sitk_mattes"] = {"error": str(e).splitlines()[0]}
    return out


def thesis_seconds_per_iteration(size: int, iterations: int) -> dict:
    shape = (size, size)
    pair = make_pair(shape, fixed_to_moving=centred_affine(shape, shape, rotation_deg=5), seed=11)
    p = replace(MineParams.preset("thesis"), max_iterations=iterations)
    reg = register_mine(pair.em, pair.lm["reflected"], params=p)
    spi = reg.timings["optimise_s"] / reg.iterations
    return {"size": size, "iterations_timed": iterations, "s_per_iteration": round(spi, 4),
            "projected_87000_iterations_h": round(spi * 87_000 / 3600, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--thesis-iterations", type=int, default=20)
    ap.add_argument("--no-sitk", action="store_true")
    args = ap.parse_args()
    try:
        import SimpleITK  # noqa: F401
        with_sitk = not args.no_sitk
    except ImportError:
        with_sitk = False
    register_mine(*(lambda p: (p.em, p.lm["reflected"]))(make_pair((128, 128), seed=0)))  # warm-up (imports)
    results = [run_case(s, c, with_sitk) for s in args.sizes for c in CASES]
    summary = {}
    for s in args.sizes:
        rows = [r["mine_fast"] for r in results if r["size"] == s]
        summary[str(s)] = {"median_wall_s": float(np.median([r["wall_s"] for r in rows])),
                           "max_tre_px": max(r["tre_px"] for r in rows),
                           "median_s_per_iteration": float(np.median([r["s_per_iteration"] for r in rows]))}
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "cases": results, "fast_summary": summary,
              "thesis_preset": thesis_seconds_per_iteration(max(args.sizes), args.thesis_iterations)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
