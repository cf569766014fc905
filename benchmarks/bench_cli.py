"""Command line end to end: ``clem-bridge register em.tif lm.tif --out DIR`` on 1280×954 pairs, as a user runs it.

Each run is a fresh process (interpreter start, imports, registration, warp and every output file). Next to it
the same loop times a bare ``python -c "import torch"`` (the floor any MINE command pays) so that the machine's
state at the time is on record. Pairs are the ``standard`` cases of ``bench_register`` (real EM s6–s8 with a
reflected-light LM proxy, or phantoms without the shared data), written as uint16/float32 TIFFs.

    python benchmarks/bench_cli.py [--cases 3] [--repeats 2] [--out benchmarks/results/bench_cli-2core-cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_register import build_cases, make_images  # noqa: E402

from clem_bridge import transforms as T  # noqa: E402

TARGET_S = 4.0


def _timed(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - t0, rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/bench_cli-2core-cpu.json")
    args = ap.parse_args()
    exe = shutil.which("clem-bridge")
    cli = [exe] if exe else [sys.executable, "-m", "clem_bridge"]
    work = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    rows = []
    try:
        for k, case in enumerate(build_cases(["standard"])[:args.cases]):
            em, lm, truth = make_images(case, seed=k)
            tifffile.imwrite(work / "em.tif", (np.clip(em, 0, 1) * 65535).astype(np.uint16))
            tifffile.imwrite(work / "lm.tif", lm.astype(np.float32))
            for r in range(args.repeats):
                torch_s, _ = _timed([sys.executable, "-c", "import torch"])
                out = work / f"out{k}_{r}"
                wall, rc = _timed(cli + ["register", str(work / "em.tif"), str(work / "lm.tif"), "--out", str(out)])
                rec = json.loads((out / "transform.json").read_text()) if rc == 0 else {}
                err = (float(T.tre(np.array(rec["fixed_to_moving"]), truth, em.shape))
                       if rec else None)
                rows.append(dict(case=case, repeat=r, exit_code=rc, wall_s=round(wall, 3),
                                 import_torch_s=round(torch_s, 3), status=rec.get("status"),
                                 error_px=None if err is None else round(err, 3), timings=rec.get("timings"),
                                 load_avg=os.getloadavg()[0]))
                print(f"case {k} run {r}: {wall:.2f} s (import torch alone {torch_s:.2f} s), "
                      f"rc {rc}, {rec.get('status')}, {err if err is None else round(err, 3)} px")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    walls = [r["wall_s"] for r in rows]
    summary = dict(runs=len(rows), median_wall_s=float(np.median(walls)), max_wall_s=max(walls),
                   within_target=sum(w <= TARGET_S for w in walls), target_s=TARGET_S,
                   median_import_torch_s=float(np.median([r["import_torch_s"] for r in rows])),
                   median_pipeline_s=float(np.median([r["timings"]["pipeline_total_s"] for r in rows if r["timings"]])),
                   failed_runs=sum(r["exit_code"] != 0 for r in rows))
    print(json.dumps(summary, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                                                          python=platform.python_version()),
                                              command=" ".join(sys.argv), summary=summary, runs=rows), indent=1))


if __name__ == "__main__":
    main()
