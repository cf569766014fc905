#@ File (label="Folder with EM and LM images", style="directory") in_dir
#@ String (label="EM file pattern (* = pair name)", value="*_em.tif") em_pattern
#@ String (label="LM file pattern (* = pair name)", value="*_lm.tif") lm_pattern
#@ Integer (label="LM registration channel (0-based)", value=0) reg_channel
#@ String (label="LM channels to carry (0-based, comma-separated; empty = all)", value="") channels
#@ Boolean (label="Register the first pair only and reuse its transform", value=false) reuse
#@ String (label="Server URL", value="http://127.0.0.1:8765") server_url
#@ String (label="Token (optional)", value="") token
#@ String (label="Preset", choices={"fast", "thesis"}, value="fast") preset
#@ File (label="Output folder", style="directory") out_dir
#@output String summary
"""Batch register a folder: EM/LM pairs matched by file name; one output folder per pair and summary.csv
(pair, status, metrics). With 'reuse', the first pair is registered and its transform applied to the rest."""
import clem_bridge_fiji as clem
from java.io import File

COLUMNS = ["pair", "status", "source", "em_file", "lm_file", "mi", "ncc", "overlap", "ms_ssim", "error"]
summary = None


def main():
    global summary
    out = clem.output_dir(out_dir)
    pairs = clem.match_pairs(in_dir, em_pattern, lm_pattern)
    server = clem.Server(server_url, token)
    server.get_json("/v1/health")
    rows, f2m = [], None
    for i, name in enumerate(sorted(pairs)):
        em_path, lm_path = pairs[name]
        row = {"pair": name, "em_file": em_path, "lm_file": lm_path}
        clem.log("CLEM batch: pair %d/%d %s" % (i + 1, len(pairs), name))
        try:
            em, lm = clem.open_image(em_path, "EM image"), clem.open_image(lm_path, "LM image")
            pair_dir = clem.output_dir(File(out, name).getPath())
            given = f2m if reuse else None
            m, _, _, record = clem.register_and_apply(server, em, lm, reg_channel, channels, pair_dir, preset,
                                                      f2m=given, label="CLEM %s" % name)
            row.update(status="ok", source="reused" if given else "registered")
            row.update((k, (record or {}).get("metrics", {}).get(k)) for k in ("mi", "ncc", "overlap", "ms_ssim"))
            f2m = f2m or m
        except clem.ClemError as e:
            if "cannot reach" in str(e) or "rejected the token" in str(e):
                raise
            row.update(status="failed", error=str(e))
        rows.append(row)
    path = File(out, "summary.csv").getPath()
    clem.write_summary_csv(path, rows, COLUMNS)
    failed = [r["pair"] for r in rows if r["status"] != "ok"]
    summary = path
    clem.log("CLEM batch: %d pairs, %d failed; summary in %s" % (len(rows), len(failed), path))
    if failed:
        raise clem.ClemError("%d of %d pairs failed (%s); see %s" % (len(failed), len(rows), ", ".join(failed), path))


clem.run_main(main)
