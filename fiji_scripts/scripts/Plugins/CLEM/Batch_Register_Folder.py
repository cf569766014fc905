#@ File (label="Folder with EM and LM images", style="directory") in_dir
#@ String (label="EM file pattern (* = pair name)", value="*_em.tif") em_pattern
#@ String (label="LM file pattern (* = pair name)", value="*_lm.tif") lm_pattern
#@ Integer (label="LM registration channel (0-based)", value=0) reg_channel
#@ String (label="LM channels to carry (0-based, comma-separated; empty = all)", value="") channels
#@ Boolean (label="Register the first pair only and reuse its transform", value=false) reuse
#@ String (label="Server URL", value="http://127.0.0.1:8765") server_url
#@ String (label="Token (optional)", value="", style="password", persist=false) token
#@ String (label="Preset", choices={"fast", "thesis"}, value="fast") preset
#@ File (label="Output folder", style="directory") out_dir
#@output String summary
#@output String status
"""Batch register a folder: EM/LM pairs matched by file name; one output folder per pair and summary.csv
(pair, status, metrics, warnings). With 'reuse', the first pair is registered and its transform applied to the rest."""
import clem_bridge_fiji as clem

summary, status = clem.run_command("Batch_Register_Folder.py", lambda: clem.batch(
    in_dir, em_pattern, lm_pattern, reg_channel, channels, reuse, server_url, token, preset, out_dir),
    (None, "error"))
