#@ File (label="EM image (fixed)", style="file", required=false) em_file
#@ String (label="...or open EM image (title)", value="") em_title
#@ File (label="LM image (moving, all channels)", style="file", required=false) lm_file
#@ String (label="...or open LM image (title)", value="") lm_title
#@ Integer (label="LM registration channel (reflected/bright, 0-based)", value=0) reg_channel
#@ String (label="LM channels to carry (0-based, comma-separated; empty = all)", value="") channels
#@ String (label="Server URL", value="http://127.0.0.1:8765") server_url
#@ String (label="Token (optional)", value="", style="password", persist=false) token
#@ String (label="Preset", choices={"fast", "thesis"}, value="fast") preset
#@ Integer (label="Seed", value=0) seed
#@ File (label="Output folder", style="directory") out_dir
#@output ImagePlus warped
#@output String status
"""Register EM-LM (MINE): send EM + LM registration channel to a clem-bridge server, warp the LM
channels onto the EM canvas with ImageJ, show an EM/LM composite, save channels and transform files."""
import clem_bridge_fiji as clem

warped, status = clem.run_command("Register_EM-LM.py", lambda: clem.register(
    em_file, em_title, lm_file, lm_title, reg_channel, channels, server_url, token, preset, seed, out_dir),
    (None, "error"))
