"""3-D CLEM benchmark (issue 13): accuracy on phantoms, time for a 20×512×512 EM vs 20×256×256 LM pair,
and peak memory of the slab-wise warp onto a 500×1024×1024 EM grid.

* ``accuracy``: random phantoms (clem_bridge.volume.phantom) with rotation about z in ±30° (every other
  case mirrored, every fourth imaged from the other side: z reversed), tilts ±3°, shifts ±15 % of the LM
  field, scale ±5 % beyond the calibration, LM voxel
  anisotropy 1:4, 1:8 or 1:12 (z-step 5-15× the EM's); error = mean over an EM voxel grid, lateral in EM
  voxels, axial in LM slices (targets ≤ 1 and ≤ 0.5); ``--methods mine mi`` compares the classical option.
* ``timing``: one phantom pair of the target size registered with the default settings.
* ``warp``: ``warp_volume_tiled`` of a 40×512×512 uint16 LM onto a 500×1024×1024 grid into a memory-mapped
  .npy, run in a child process whose peak RSS is reported (target ≤ 4 GiB).

Wall and CPU seconds and the load average are recorded (the 2-core CI box is shared).

Results (benchmarks/results/bench_register3d-2core-cpu.json, 1 torch thread, load average 5-6 on 2 cores):
accuracy 8/8 within target for MINE (median 0.19 EM voxel lateral, 0.07 LM slice axial, 7.1 CPU s) and 8/8
for classical MI (0.18 / 0.06, 9.6 CPU s), 0 silent failures.  Case 7 (mirrored and z-reversed, 1:8,
scale 0.96) was missed by both (reported ``uncertain``) while the pre-alignment ranked (EM plane, LM slice)
pairs one at a time; up to 3 EM planes whole LM z-steps apart matched together (volume/stack_search.py)
find it (0.22 EM voxel / 0.06 slice).  The 1:4 cases (30 LM slices) take 7.9-11.1 CPU s with MINE (were
7.4-8.6 s).  20×512×512 vs 20×256×256: 13.3 s wall / 8.4 CPU s in this run, 8.0 s wall / 7.7 CPU s in a
run just before with the same code path (was 8.8 / 8.8 at load 3.5), of which the stack search 3.5-6.1 s
wall (was 4.8 s); error 0.12 EM voxel / 0.10 slice.
24 phantoms (``--cases 24 --methods mine``, bench_register3d-24cases-2core-cpu.json): 24/24 within target,
median 0.18 EM voxel / 0.06 slice, 6.6 CPU s; with one plane set (no quarter-step pair) 3 of the 1:12
pre-alignments (cases 11, 14, 17) had been wrong.
Before the coarse-to-fine slice search, the 32-wide MINE network and 150 iterations per level: 74 s wall /
29 CPU s under load 11 (search 51.6 s, MINE 15.7 s), accuracy as now.  Tiled warp onto 500×1024×1024:
peak RSS 3.0 GiB (about 1 GiB of it the output's memory-mapped pages).
Mitochondria-only LM channel (``--lm-channel 1``, bench_register3d-mito-channel-2core-cpu.json, before these
changes): 0/4, all reported ``uncertain``.

    python benchmarks/bench_register3d.py [--parts accuracy timing warp] [--cases 8] [--methods mine]
        [--lm-channel 0] [--threads 1] [--out benchmarks/results/bench_register3d-2core-cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clem_bridge.transforms3d import tre3d_components
from clem_bridge.volume.phantom import make_phantom3d
from clem_bridge.volume.register3d import register_volumes

ANISOTROPY = (4, 8, 12)


def _clock():
    return time.perf_counter(), time.process_time()


def accuracy(n: int, methods: list[str], channel: int = 0) -> list[dict]:
    rng = np.random.default_rng(13)
    rows = []
    for i in range(n):
        aniso = ANISOTROPY[i % len(ANISOTROPY)]
        lm_z = 0.2 * aniso
        em_z = lm_z / rng.uniform(5, 15)
        flipped = i % 4 == 3          # LM imaged from the other side: y and z reversed
        case = dict(rot_z_deg=float(rng.uniform(-30, 30)), mirror=bool(i % 2),
                    tilt_x_deg=float(rng.uniform(-3, 3)) + (180.0 if flipped else 0.0),
                    tilt_y_deg=float(rng.uniform(-3, 3)),
                    shift_frac=tuple(float(s) for s in rng.uniform(-0.15, 0.15, 3)),
                    scale=float(rng.uniform(0.95, 1.05)), seed=100 + i)
        depth = max(8, int(round(4.8 / em_z)))
        geo = dict(em_shape=(min(depth, 48), 96, 96), em_voxel=(0.1, 0.1, em_z),
                   lm_shape=(max(8, int(24 / lm_z)), 96, 96),
                   lm_voxel=(0.2, 0.2, lm_z), psf_sigma_um=(0.12, 0.12, 0.4 * lm_z))
        ph = make_phantom3d(**geo, **case)
        for method in methods:
            (w0, c0) = _clock()
            reg = register_volumes(ph.em, ph.lm[channel], em_voxel=ph.em_voxel, lm_voxel=ph.lm_voxel, method=method)
            w1, c1 = _clock()
            err = tre3d_components(reg.fixed_to_moving, ph.fixed_to_moving, ph.em.shape, fixed_voxel=ph.em_voxel,
                                   moving_voxel=ph.lm_voxel, step=8)
            ok = err["xy_fixed_voxels"] <= 1.0 and err["z_moving_slices"] <= 0.5
            row = {"case": i, "method": method, "lm_channel": channel, "anisotropy": f"1:{aniso}",
                   "z_step_over_em": round(lm_z / em_z, 2),
                   **{k: (list(v) if isinstance(v, tuple) else v) for k, v in case.items()},
                   "em_shape": list(ph.em.shape), "lm_shape": list(ph.lm[0].shape),
                   "error_xy_em_voxels": round(err["xy_fixed_voxels"], 3),
                   "error_z_lm_slices": round(err["z_moving_slices"], 3), "error_um": round(err["physical"], 4),
                   "within_target": ok, "status": reg.outcome, "silent_failure": (not ok) and reg.outcome == "ok",
                   "wall_s": round(w1 - w0, 2), "cpu_s": round(c1 - c0, 2),
                   "timings": {k: round(v, 2) for k, v in reg.timings.items()}, "warnings": reg.warnings}
            print(json.dumps({k: row[k] for k in ("case", "method", "anisotropy", "error_xy_em_voxels",
                                                  "error_z_lm_slices", "status", "wall_s", "cpu_s")}), flush=True)
            rows.append(row)
    return rows


def timing() -> dict:
    t = time.perf_counter()
    ph = make_phantom3d(em_shape=(20, 512, 512), em_voxel=(0.05, 0.05, 0.1), lm_shape=(20, 256, 256),
                        lm_voxel=(0.2, 0.2, 1.0), psf_sigma_um=(0.12, 0.12, 0.4), rot_z_deg=17.0, mirror=True,
                        tilt_x_deg=1.5, shift_frac=(0.08, -0.06, 0.05), scale=1.03, seed=7)
    made = time.perf_counter() - t
    w0, c0 = _clock()
    reg = register_volumes(ph.em, ph.lm[0], em_voxel=ph.em_voxel, lm_voxel=ph.lm_voxel)
    w1, c1 = _clock()
    err = tre3d_components(reg.fixed_to_moving, ph.fixed_to_moving, ph.em.shape, fixed_voxel=ph.em_voxel,
                           moving_voxel=ph.lm_voxel, step=16)
    out = {"em_shape": list(ph.em.shape), "lm_shape": list(ph.lm[0].shape), "phantom_s": round(made, 1),
           "wall_s": round(w1 - w0, 2), "cpu_s": round(c1 - c0, 2), "target_s": 60,
           "timings": {k: round(v, 2) for k, v in reg.timings.items()}, "status": reg.outcome,
           "error_xy_em_voxels": round(err["xy_fixed_voxels"], 3),
           "error_z_lm_slices": round(err["z_moving_slices"], 3),
           "iterations": reg.iterations}
    print(json.dumps(out), flush=True)
    return out


_WARP_CHILD = """
import json, resource, sys, time
import numpy as np
from scipy import ndimage
from clem_bridge.transforms3d import from_params3d, warp_volume_tiled
rng = np.random.default_rng(0)
lm = (ndimage.gaussian_filter(rng.random((40, 512, 512), dtype=np.float32), 2) * 60000).astype(np.uint16)
a = from_params3d(rot_z_deg=20, rot_x_deg=2, scale=(0.4, 0.4, 0.05), translation_xyz=(30, 20, 5))
t = time.perf_counter()
out = warp_volume_tiled(lm, a, (500, 1024, 1024), out=sys.argv[1], slab=16)
print(json.dumps({"wall_s": round(time.perf_counter() - t, 1), "out_dtype": str(out.dtype),
                  "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3)}))
"""


def warp() -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "warped.npy"
        res = subprocess.run([sys.executable, "-c", _WARP_CHILD, str(path)], capture_output=True, text=True,
                             check=True)
        out = json.loads(res.stdout.strip().splitlines()[-1])
        out.update(grid=[500, 1024, 1024], lm_shape=[40, 512, 512], output="uint16 .npy memory map",
                   output_gib=round(path.stat().st_size / 2 ** 30, 3), target_gib=4)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["accuracy", "timing", "warp"])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--methods", nargs="+", default=["mine"])
    ap.add_argument("--lm-channel", type=int, default=0,
                    help="phantom LM channel registered: 0 membranes+organelles (default), 1 mitochondria only")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "torch_threads": torch.get_num_threads(), "load_avg_start": os.getloadavg()}}
    if "accuracy" in args.parts:
        rows = accuracy(args.cases, args.methods, args.lm_channel)
        report["accuracy"] = rows
        report["accuracy_summary"] = {
            m: {"cases": sum(r["method"] == m for r in rows),
                "within_target": sum(r["within_target"] for r in rows if r["method"] == m),
                "silent_failures": sum(r["silent_failure"] for r in rows if r["method"] == m),
                "median_error_xy_em_voxels": float(np.median([r["error_xy_em_voxels"] for r in rows
                                                              if r["method"] == m])),
                "median_error_z_lm_slices": float(np.median([r["error_z_lm_slices"] for r in rows
                                                             if r["method"] == m])),
                "median_cpu_s": float(np.median([r["cpu_s"] for r in rows if r["method"] == m]))}
            for m in args.methods}
    if "timing" in args.parts:
        report["timing"] = timing()
    if "warp" in args.parts:
        report["warp"] = warp()
    report["machine"]["load_avg_end"] = os.getloadavg()
    report["machine"]["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(json.dumps({k: report[k] for k in report if k != "accuracy"}, indent=2))


if __name__ == "__main__":
    main()
