"""Fiji-side warp speed: the Jython library and the Groovy helper (both through the compiled kernel
``ClemWarp.groovy``) vs ``transforms.warp_image`` (scipy) for one LM channel onto an EM canvas; prints JSON
and, with ``--save``, writes it (with ``--before FILE``: the numbers of an older run kept next to it).

Each JVM run reports only the warp itself (JVM start-up and file opening excluded): the first call
(compiling ClemWarp, JIT warm-up) and the best of ``--repeats`` after it.  The machine's load average is
saved with the numbers.  Needs java, ``/usr/share/java/{ij,jython,groovy-all}.jar``.  Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_fiji_warp.py [--sizes 512 2048] [--repeats 3] \
        [--save benchmarks/results/bench_fiji_warp-2core-cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from clem_bridge import io, transforms
from clem_bridge.fiji import JARS
from clem_bridge.fiji_install import scripts_dir
from clem_bridge.result import Registration

JYTHON = """
import sys, time
sys.path.insert(0, %(lib)r)
import clem_bridge_transforms as clem
from ij import IJ
em, lm = IJ.openImage(%(em)r), IJ.openImage(%(lm)r)
f2m = clem.read_transform(%(t)r)
t0 = time.time(); clem.warp_image(lm, f2m, em); first = time.time() - t0
best = 1e9
for _ in range(%(n)d):
    t0 = time.time(); clem.warp_image(lm, f2m, em); best = min(best, time.time() - t0)
print("FIRST %%f SECONDS %%f" %% (first, best))
"""

GROOVY = """
def loader = new GroovyClassLoader(getClass().classLoader)
loader.addClasspath(%(lib)r)
def Clem = loader.loadClass("ClemBridgeFiji")
def em = ij.IJ.openImage(%(em)r), lm = ij.IJ.openImage(%(lm)r)
def f2m = Clem.readTransform(%(t)r, null, null)
long t1 = System.nanoTime(); Clem.warpImage(lm, f2m, em); double first = (System.nanoTime() - t1) / 1e9
double best = 1e9
%(n)d.times { long t0 = System.nanoTime(); Clem.warpImage(lm, f2m, em); best = Math.min(best, (System.nanoTime() - t0) / 1e9) }
println("FIRST " + first + " SECONDS " + best)
"""


def jvm(kind: str, code: str, tmp: Path) -> tuple[float, float]:
    """(first call, best of the repeats) in seconds."""
    classpath = f"{JARS['jython']}:{JARS['groovy']}:{JARS['ij']}"
    if kind == "jython":
        cmd = ["java", "-Djava.awt.headless=true", "-cp", classpath, "org.python.util.jython", "-c", code]
    else:
        (tmp / "b.groovy").write_text(code)
        cmd = ["java", "-Djava.awt.headless=true", "-cp", classpath, "groovy.ui.GroovyMain", str(tmp / "b.groovy")]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.split("FIRST ")[1].split()[0]), float(out.split("SECONDS ")[1].split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--save", type=Path, help="write the JSON here")
    ap.add_argument("--before", type=Path, help="JSON of an earlier run to keep in the saved file as 'before'")
    args = ap.parse_args()
    rows, load = [], [round(os.getloadavg()[0], 1)]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n in args.sizes:
            rng = np.random.default_rng(0)
            lm = (rng.random((n // 2, n // 2)) * 4000).astype(np.uint16)
            f2m = transforms.from_params(rotation_deg=12, scale=0.45, translation=(5, -3),
                                         center=transforms.center_of((n // 2, n // 2)))
            io.write_tiff(tmp / "em.tif", np.zeros((n, n), np.uint8))
            io.write_tiff(tmp / "lm.tif", lm)
            Registration(fixed_to_moving=f2m, fixed_shape=(n, n), moving_shape=lm.shape, method="bench").save_json(
                tmp / "t.json")
            subs = {"lib": str(scripts_dir() / "jars" / "Lib"), "em": str(tmp / "em.tif"), "lm": str(tmp / "lm.tif"),
                    "t": str(tmp / "t.json"), "n": args.repeats}
            best = 1e9
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                transforms.warp_image(lm, f2m, (n, n))
                best = min(best, time.perf_counter() - t0)
            row = {"em_size": n, "lm_size": n // 2, "python_scipy_s": round(best, 4)}
            for kind, code in (("jython", JYTHON), ("groovy", GROOVY)):
                first, warm = jvm(kind, code % subs, tmp)
                row.update({f"fiji_{kind}_s": round(warm, 3), f"fiji_{kind}_first_call_s": round(first, 3)})
            rows.append(row)
    result = {"benchmark": "fiji_warp", "command": "OMP_NUM_THREADS=1 python benchmarks/bench_fiji_warp.py "
              f"--sizes {' '.join(map(str, args.sizes))} --repeats {args.repeats}",
              "load_average_1min_start_end": load + [round(os.getloadavg()[0], 1)], "one_channel": rows}
    if args.before:
        result["before"] = json.loads(args.before.read_text())
    text = json.dumps(result, indent=1)
    print(text)
    if args.save:
        args.save.write_text(text + "\n")


if __name__ == "__main__":
    main()
