"""Batch throughput on Dask: the same phantom pairs (EM 384² by default, fast preset, CPU) with 1 and with 2 local
workers (processes, one thread each), in alternating rounds (1, 2, 1, 2, ...: slow drifts of a shared
machine's load hit both), then a rerun of a finished batch (resume: every pair skipped).

Each run is a fresh Python process (as each ``clem-bridge batch`` command is: nothing imported, no worker or
forkserver left from an earlier run) that times ``run_batch``; the process's own wall time (interpreter start,
imports, exit) is reported beside it. Reports wall time per run (cluster start-up and shut-down included),
pairs/hour, the speed-up of 2 workers over 1 (median wall times), the fixed cost of a run (``first_pair_done_s``:
from the start of ``run_batch`` to the first computed pair's record, of which ``first_pair_wall_s`` is that pair's
own time; ``after_last_pair_s``: from the last record to the return, i.e. cluster shut-down and the report),
the resume time as a fraction of the first run, the sum of the pairs' own times, the load average before and
after each run (the machine may be shared: the load says how much of it a run had), and a control without
Dask: one registration in 1 process vs in 2 processes at once, i.e. the most that 2 workers can gain on this
machine at that moment.
Usage::

    python benchmarks/bench_batch.py [--pairs 8] [--size 384] [--rounds 3] [--out FILE]

Results go to ``benchmarks/results/bench_batch-2core-cpu.json`` for 384² pairs, ``...-cpu-<SIZE>px.json`` for
other sizes (``--size 1024``: microscope-sized pairs, where the fixed cost weighs less).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clem_bridge.synthetic import make_pair, save_pair

DEFAULT_SIZE = 384
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

_RUN = """
import json, sys, time
from clem_bridge.workflows.batch import read_manifest, run_batch
manifest, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
marks = []
t0 = time.perf_counter()
records = run_batch(read_manifest(manifest, {"device": "cpu"}), out, workers=workers, progress=False,
                    on_done=lambda r: marks.append((time.perf_counter() - t0, r["resumed"], r["wall_s"])))
print(json.dumps({"wall_s": time.perf_counter() - t0, "marks": marks, "records": records}))
"""


def timed_run(manifest: Path, out: Path, workers: int) -> dict:
    """One batch in a fresh process; its times and the pairs' statuses."""
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUN, str(manifest), str(out), str(workers)], capture_output=True,
                          text=True, env=ENV, check=True)
    process_wall = time.perf_counter() - t0
    got = json.loads(proc.stdout.splitlines()[-1])
    wall, records = got["wall_s"], got["records"]
    done = [(t, pair_wall) for t, resumed, pair_wall in got["marks"] if not resumed]   # in arrival order
    return {"workers": workers, "wall_s": round(wall, 3), "process_wall_s": round(process_wall, 3),
            "pairs": len(records), "statuses": sorted({r["status"] for r in records}),
            "resumed": sum(bool(r["resumed"]) for r in records),
            "sum_pair_wall_s": round(sum(r["wall_s"] for r in records if not r["resumed"]), 2),
            "first_pair_done_s": round(done[0][0], 3) if done else None,
            "first_pair_wall_s": round(done[0][1], 3) if done else None,
            "after_last_pair_s": round(wall - done[-1][0], 3) if done else None,
            "pairs_per_hour": round(len(records) * 3600 / max(wall, 1e-3), 1),
            "loadavg_1min_before": round(load0[0], 2), "loadavg_1min_after": round(os.getloadavg()[0], 2)}


_CONTROL = """
import sys, time, cv2, torch
torch.set_num_threads(1); cv2.setNumThreads(1)
from clem_bridge.register import register_mine
from clem_bridge.synthetic import make_pair
p = make_pair((SIZE, SIZE), seed=1)
register_mine(p.em, p.lm["reflected"], seed=0)
t = time.perf_counter()
for s in range(3):
    register_mine(p.em, p.lm["reflected"], seed=s)
print((time.perf_counter() - t) / 3)
"""


def control(size: int) -> dict:
    """The machine's own parallel capacity, without Dask: 3 registrations of one pair in 1 process, then in
    2 processes at once; speed-up = 2 x (time in 1 process) / (mean time in 2 processes)."""
    code = _CONTROL.replace("SIZE", str(size))

    def run(n: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
                 for _ in range(n)]
        return [float(p.communicate()[0].split()[-1]) for p in procs]

    solo, pair = run(1)[0], run(2)
    return {"s_per_registration_1_process": round(solo, 3),
            "s_per_registration_2_processes": [round(x, 3) for x in pair],
            "speedup_2_processes_vs_1": round(2 * solo / statistics.mean(pair), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    suffix = "" if args.size == DEFAULT_SIZE else f"-{args.size}px"
    args.out = args.out or Path(__file__).parent / "results" / f"bench_batch-2core-cpu{suffix}.json"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rows = ["em,lm,name"]
        for i in range(args.pairs):
            em, lm = save_pair(make_pair((args.size, args.size), seed=i), d, prefix=f"p{i}")
            rows.append(f"{em.name},{lm.name},pair{i}")
        manifest = d / "pairs.csv"
        manifest.write_text("\n".join(rows) + "\n")
        runs = {1: [], 2: []}
        for r in range(args.rounds):
            for workers in (1, 2):
                runs[workers].append(timed_run(manifest, d / f"w{workers}-{r}", workers))
        resume = timed_run(manifest, d / "w2-0", 2)
    ctrl = control(args.size)
    def median(key: str) -> dict:
        return {f"{w}_worker{'s' * (w > 1)}": round(statistics.median(x[key] for x in runs[w]), 3) for w in runs}

    med, med_proc = median("wall_s"), median("process_wall_s")
    loads = [x[k] for w in runs for x in runs[w] for k in ("loadavg_1min_before", "loadavg_1min_after")]
    result = {
        "benchmark": "bench_batch",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": f"python benchmarks/bench_batch.py --pairs {args.pairs} --size {args.size} --rounds {args.rounds}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "setup": f"{args.pairs} phantom pairs, EM {args.size}x{args.size}, register, fast preset, device cpu; "
                 "LocalCluster processes, 1 thread each (OMP_NUM_THREADS=1), forked from a preloaded forkserver; "
                 "each run in a fresh process",
        "runs": {"1_worker": runs[1], "2_workers": runs[2], "resume_2_workers": resume},
        "median_wall_s": med,
        "speedup_2_vs_1": round(med["1_worker"] / med["2_workers"], 2),
        "median_process_wall_s": med_proc,
        "speedup_2_vs_1_process_wall": round(med_proc["1_worker"] / med_proc["2_workers"], 2),
        "median_fixed_cost_s": {"first_pair_done": median("first_pair_done_s"),
                                "first_pair_own_wall": median("first_pair_wall_s"),
                                "after_last_pair": median("after_last_pair_s")},
        "loadavg_1min_range": [min(loads), max(loads)],
        "resume_fraction_of_first_run": round(resume["wall_s"] / runs[2][0]["wall_s"], 4),
        "control_without_dask": ctrl,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
