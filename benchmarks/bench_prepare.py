"""Pre-processing benchmark; prints JSON.

``psr``: synthetic phantoms (EM 768x1024, LM twice the EM field of view, 3° rotation, offset) at
true pixel-size ratios 2–10: PSR error (%), crop error (mean TRE over the EM grid, LM pixels) and
time, for the default matcher (normalised correlation coefficient on intensities, both contrast
polarities) against the alternatives (normalised cross-correlation, gradient magnitudes, ranking by
peak value), with a metadata PSR 5 % off and without metadata.

``large``: a synthetic 12,000² EM (8-bit) + 2,048² two-channel LM (16-bit) at PSR 8.05 written to
calibrated TIFFs, then in a fresh process: read, PSR/field of view, MINE registration at the working
size, composed matrix, strip-wise warp of both LM channels at full EM resolution into a TIFF.  Reports
wall time, peak RSS of that process and TRE against the truth; then the same through
``workflows.register.register_files(prepare=True)`` (what ``clem-bridge register --prepare`` runs).  Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_prepare.py [--psr] [--large] [--ratios 2,3,5,8.05,10]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from clem_bridge import transforms as T
from clem_bridge.preprocess import estimate_psr
from clem_bridge.synthetic import centred_affine, make_pair

VARIANTS = {
    "ccoeff_normed (default)": {},
    "ccorr_normed": {"method": "ccorr_normed"},
    "edges (gradient magnitude)": {"edges": True},
    "rank by peak value": {"rank": "score"},
}


def psr_cases(ratios, seed: int = 1):
    em_shape = (768, 1024)
    for r in ratios:
        lm_shape = (int(math.ceil(2 * em_shape[0] / r)) + 8, int(math.ceil(2 * em_shape[1] / r)))
        f2m = centred_affine(em_shape, lm_shape, rotation_deg=3.0, scale=1 / r,
                             translation=(0.13 * lm_shape[1], -0.11 * lm_shape[0]))
        yield r, f2m, make_pair(em_shape, f2m, seed=seed, moving_shape=lm_shape, lm_pixel_ratio=r)


def bench_psr(ratios) -> list[dict]:
    rows = []
    for r, f2m, pair in psr_cases(ratios):
        for name, kw in VARIANTS.items():
            for hint_name, hint in (("metadata +5%", r * 1.05), ("no metadata", None)):
                if hint is None and name != "ccoeff_normed (default)" and name != "edges (gradient magnitude)":
                    continue
                t0 = time.perf_counter()
                est = estimate_psr(pair.em, pair.lm["reflected"], psr_hint=hint, **kw)
                dt = time.perf_counter() - t0
                rows.append({"true_psr": r, "variant": name, "start": hint_name, "psr": round(est.psr, 4),
                             "psr_error_pct": round(100 * (est.psr / r - 1), 3),
                             "crop_tre_lm_px": round(T.tre(est.fixed_to_moving, f2m, pair.em.shape), 3),
                             "rotation_deg": round(est.rotation_deg, 2), "seconds": round(dt, 2)})
                print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


# --- 12k² EM + 2k² LM end to end ------------------------------------------------------------

LARGE = {"em": 12000, "lm": 2048, "psr": 8.05, "scene_bin": 4}


def make_large(d: Path) -> Path:
    """Write the large pair; the scene is rendered at 1/4 of the EM resolution and upsampled."""
    from clem_bridge.io import write_tiff
    from clem_bridge.schema import PixelSize

    b, n, m, r = LARGE["scene_bin"], LARGE["em"], LARGE["lm"], LARGE["psr"]
    small = (n // b, n // b)
    f2m_small = centred_affine(small, (m, m), rotation_deg=2.5, scale=(1.02 * b / r, 0.99 * b / r), shear=0.01,
                               translation=(83.0, -61.0))
    pair = make_pair(small, f2m_small, seed=3, moving_shape=(m, m), lm_pixel_ratio=r / b, cell_diameter=120.0)
    em = cv2.resize(pair.em, (n, n), interpolation=cv2.INTER_CUBIC)
    em = np.clip(em + np.random.default_rng(0).normal(0, 0.03, em.shape).astype(np.float32), 0, 1)
    truth = f2m_small @ T.resize_matrix(small, (n, n))
    write_tiff(d / "em.tif", np.round(em * 255).astype(np.uint8), PixelSize(x=0.01, y=0.01, unit="um"))
    del em
    lm = np.stack([np.round(pair.lm[k] * 65535).astype(np.uint16) for k in ("reflected", "fluorescence")])
    write_tiff(d / "lm.tif", lm, PixelSize(x=0.01 * r * 1.04, y=0.01 * r * 1.04, unit="um"))  # metadata 4 % off
    (d / "truth.json").write_text(json.dumps({"fixed_to_moving": truth.tolist()}))
    return d


RUN_LARGE = r"""
import json, sys, time, resource
from pathlib import Path
import numpy as np
t0 = time.perf_counter()
from clem_bridge.io import read_image
from clem_bridge.preprocess import prepare_pair, final_fixed_to_moving, grey_fill
from clem_bridge.register import register_mine
from clem_bridge.tiled import warp_to_tiff
from clem_bridge import transforms as T
d = Path(sys.argv[1]); work = int(sys.argv[2])
em_img, lm_img = read_image(d / "em.tif"), read_image(d / "lm.tif")
em, lm = em_img.data[0], list(lm_img.data)
t1 = time.perf_counter()
prep = prepare_pair(em, [lm[0]], em_pixel_size=em_img.pixel_size, lm_pixel_size=lm_img.pixel_size, work_size=work)
t2 = time.perf_counter()
reg = register_mine(prep.em, prep.channels[0], preset="fast", seed=0, device="cpu", init=np.eye(3))
t3 = time.perf_counter()
final = final_fixed_to_moving(prep, reg.fixed_to_moving)
warp_to_tiff(d / "lm_warped.tif", lm, final, em.shape, pixel_size=em_img.pixel_size, fill=[grey_fill(c) for c in lm])
t4 = time.perf_counter()
truth = json.loads((d / "truth.json").read_text())["fixed_to_moving"]
print(json.dumps({"wall_s": round(t4 - t0, 1), "read_s": round(t1 - t0, 1), "prepare_s": round(t2 - t1, 1),
                  "register_s": round(t3 - t2, 1), "warp_write_s": round(t4 - t3, 1),
                  "psr": round(prep.estimate.psr, 4), "work_shape": list(prep.em.shape),
                  "tre_prepare_only_lm_px": round(T.tre(final_fixed_to_moving(prep, np.eye(3)), truth, em.shape, step=64), 3),
                  "tre_final_lm_px": round(T.tre(final, truth, em.shape, step=64), 3),
                  "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))
"""


RUN_PIPELINE = r"""
import json, sys, time, resource
from pathlib import Path
t0 = time.perf_counter()
from clem_bridge.workflows.register import register_files
from clem_bridge import transforms as T
d = Path(sys.argv[1])
reg = register_files(d / "em.tif", d / "lm.tif", d / "out", prepare=True, device="cpu")
truth = json.loads((d / "truth.json").read_text())["fixed_to_moving"]
print(json.dumps({"wall_s": round(time.perf_counter() - t0, 1), "tre_final_lm_px": round(T.tre(
    reg.fixed_to_moving, truth, reg.fixed_shape, step=64), 3),
    "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    "outputs": sorted(p.name for p in (d / "out").iterdir())}))
"""


def _run(script: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_large(work: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="clem_large_") as tmp:
        t0 = time.perf_counter()      # generated in a child too: the measured processes start small
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"from bench_prepare import make_large; from pathlib import Path; make_large(Path({tmp!r}))"],
                       check=True)
        gen = time.perf_counter() - t0
        res = _run(RUN_LARGE, tmp, work)
        res["pipeline_register_files_prepare"] = _run(RUN_PIPELINE, tmp)   # what `register --prepare` runs
        res.update({"em_shape": [LARGE["em"]] * 2, "lm_shape": [2, LARGE["lm"], LARGE["lm"]], "true_psr": LARGE["psr"],
                    "metadata_psr": round(LARGE["psr"] * 1.04, 4), "work_size": work,
                    "data_generation_s": round(gen, 1), "target": "<= 180 s, <= 6 GiB"})
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--psr", action="store_true", help="PSR accuracy/time section")
    ap.add_argument("--large", action="store_true", help="12k² EM + 2k² LM end-to-end section")
    ap.add_argument("--ratios", default="2,3,5,8.05,10")
    ap.add_argument("--work-size", type=int, default=1024)
    a = ap.parse_args()
    both = not (a.psr or a.large)
    out = {"machine": f"{platform.platform()}, {os.cpu_count()} CPU cores"}
    if a.psr or both:
        out["psr"] = bench_psr([float(v) for v in a.ratios.split(",")])
    if a.large or both:
        out["large"] = bench_large(a.work_size)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
