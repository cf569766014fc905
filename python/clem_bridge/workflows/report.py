"""A batch's ``summary.csv`` (one row per pair) and ``report.html`` (a static page that opens from disk:
one table row per pair with its overlay thumbnail, status colour, metrics and links to its files)."""
from __future__ import annotations

import csv
import html
import os
import tempfile
from io import StringIO
from pathlib import Path
from urllib.parse import quote

from .outputs import OME_ZARR, OVERLAY_PNG, TRANSFORM_JSON, WARPED_TIFF

_FIRST = ("name", "status", "method", "resumed", "wall_s", "error", "warnings", "em", "lm", "folder", "worker",
          "run_id")
_SHOWN_METRICS = ("ncc", "mi", "overlap", "ms_ssim", "expected_error_px")
_COLOURS = {"ok": "#d8f0d8", "uncertain": "#fff0c0", "failed": "#f8c8c8", "error": "#e0c0e0"}


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_summary(path, records: list[dict]) -> Path:
    """``summary.csv``: the record fields, then one ``metric_<name>`` and ``time_<name>`` column per value seen."""
    metrics = sorted({k for r in records for k in r.get("metrics", {})})
    timings = sorted({k for r in records for k in r.get("timings", {})})
    fields = [*_FIRST, *(f"metric_{k}" for k in metrics), *(f"time_{k}" for k in timings)]
    rows = []
    for r in records:
        row = {k: r.get(k, "") for k in _FIRST}
        row["warnings"] = " | ".join(r.get("warnings", []))
        row["wall_s"] = f"{r.get('wall_s', 0.0):.2f}"
        row.update({f"metric_{k}": v for k, v in r.get("metrics", {}).items()})
        row.update({f"time_{k}": f"{v:.3f}" for k, v in r.get("timings", {}).items()})
        rows.append(row)
    p = Path(path)
    buf = StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(p, buf.getvalue())
    return p


def _link(folder: str, name: str, label: str) -> str:
    return f'<a href="{quote(folder)}/{quote(name)}">{html.escape(label)}</a>'


def _row(r: dict) -> str:
    e = html.escape
    folder = r.get("folder") or ""
    files = set(r.get("files", []))
    thumb = ""
    if folder and OVERLAY_PNG in files:
        src = f"{quote(folder)}/{OVERLAY_PNG}"
        thumb = (f'<a href="{src}"><img class="thumb" src="{src}" alt="overlay of {e(r["name"])}" '
                 f'onerror="this.replaceWith(\'overlay missing\')"></a>')
    links = " ".join(_link(folder, f, f) for f in (TRANSFORM_JSON, WARPED_TIFF, OME_ZARR) if f in files)
    if folder:
        links += f' <a href="{quote(folder)}/">folder</a>'
    m = r.get("metrics", {})
    metrics = "<br>".join(f"{k} {m[k]:.3f}" for k in _SHOWN_METRICS if k in m)
    notes = "<br>".join(e(w) for w in r.get("warnings", []))
    if r.get("error"):
        notes = f'<span class="error">{e(r["error"])}</span>' + (f"<br>{notes}" if notes else "")
    resumed = " (earlier run)" if r.get("resumed") else ""
    return (f'<tr class="{e(r.get("status", ""))}"><td>{thumb}</td><td>{e(r["name"])}</td>'
            f'<td class="status">{e(r.get("status", ""))}{resumed}</td><td>{e(r.get("method", ""))}</td>'
            f'<td>{metrics}</td><td>{r.get("wall_s", 0.0):.1f} s</td><td>{notes}</td><td>{links}</td></tr>')


def write_report(path, records: list[dict]) -> Path:
    """``report.html`` beside the pair folders (links are relative, so the folder can be moved or shared)."""
    counts = {}
    for r in records:
        counts[r.get("status", "")] = counts.get(r.get("status", ""), 0) + 1
    colours = "".join(f"tr.{k} td.status {{background:{c}}}\n" for k, c in _COLOURS.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>clem-bridge batch report</title>
<style>
body {{font-family: sans-serif; margin: 1.5em}} table {{border-collapse: collapse}}
td, th {{border: 1px solid #bbb; padding: 4px 8px; vertical-align: top; text-align: left}}
img.thumb {{width: 160px; height: auto; display: block}} .error {{color: #900}}
{colours}</style></head><body>
<h1>clem-bridge batch: {len(records)} pair(s)</h1>
<p>{html.escape(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))} &middot;
<a href="summary.csv">summary.csv</a></p>
<table><thead><tr><th>overlay</th><th>pair</th><th>status</th><th>method</th><th>metrics</th><th>time</th>
<th>warnings / error</th><th>files</th></tr></thead><tbody>
{chr(10).join(_row(r) for r in records)}
</tbody></table>
<script>window.addEventListener("load", () => {{   /* how many thumbnails the browser shows (for checks) */
  document.body.dataset.thumbnailsShown = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
}});</script>
</body></html>
"""
    p = Path(path)
    _atomic_write(p, page)
    return p
