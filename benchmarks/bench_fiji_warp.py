"""Fiji-side warp speed: the Jython library and the Groovy helper (ImageJ 1 ``getInterpolatedValue`` per
pixel) vs ``transforms.warp_image`` (scipy) for one LM channel onto an EM canvas; prints JSON.

Each JVM run reports only the warp itself (JVM start-up and file opening excluded, best of
``--repeats``).  Needs java, ``/usr/share/java/{ij,jython,groovy-all}.jar``.  Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_fiji_warp.py [--sizes 512 2048] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
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
import clem_bridge_fiji as clem
from ij import IJ
em, lm = IJ.openImage(%(em)r), IJ.openImage(%(lm)r)
f2m = clem.read_transform(%(t)r)
best = 1e9
for _ in range(%(n)d):
    t0 = time.time(); clem.warp_image(lm, f2m, em); best = min(best, time.time() - t0)
print("SECONDS %%f" %% best)
"""

GROOVY = """
def Clem = new GroovyClassLoader(getClass().classLoader).parseClass(new File(%(lib)r, "ClemBridgeFiji.groovy"))
def em = ij.IJ.openImage(%(em)r), lm = ij.IJ.openImage(%(lm)r)
def f2m = Clem.readTransform(%(t)r, null, null)
double best = 1e9
%(n)d.times { long t0 = System.nanoTime(); Clem.warpImage(lm, f2m, em); best = Math.min(best, (System.nanoTime() - t0) / 1e9) }
println("SECONDS " + best)
"""


def jvm(kind: str, code: str, tmp: Path) -> float:
    if kind == "jython":
        cmd = ["java", "-Djava.awt.headless=true", "-cp", f"{JARS['jython']}:{JARS['ij']}", "org.python.util.jython",
               "-c", code]
    else:
        (tmp / "b.groovy").write_text(code)
        cmd = ["java", "-Djava.awt.headless=true", "-cp", f"{JARS['groovy']}:{JARS['ij']}", "groovy.ui.GroovyMain",
               str(tmp / "b.groovy")]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.split("SECONDS ")[1].split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rows = []
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
            rows.append({"em_size": n, "lm_size": n // 2, "python_scipy_s": round(best, 4),
                         "fiji_jython_s": round(jvm("jython", JYTHON % subs, tmp), 3),
                         "fiji_groovy_s": round(jvm("groovy", GROOVY % subs, tmp), 3)})
    print(json.dumps({"benchmark": "fiji_warp", "one_channel": rows}, indent=1))


if __name__ == "__main__":
    main()
