#@ File (label="EM image (fixed)", style="file") em_file
#@ File (label="Measured chromatin (LM, e.g. Hoechst)", style="file") chromatin_file
#@ Integer (label="Chromatin channel (0-based; -1 = blue of an RGB image, else the only channel)", value=-1) chromatin_channel
#@ File (label="LM channels of interest (same grid as the chromatin; empty = the chromatin file)", style="file", required=false) lm_file
#@ String (label="Channels to carry (0-based, comma-separated; empty = all)", value="") channels
#@ String (label="Chromatin model on the server", value="chromatin-v2") model
#@ String (label="Server URL", value="http://127.0.0.1:8765") server_url
#@ String (label="Token (optional)", value="", style="password", persist=false) token
#@ File (label="Output folder", style="directory") out_dir
#@output ImagePlus warped
#@output String status
"""DeepCLEM: the server predicts chromatin from the EM and correlates it with the measured chromatin;
the LM channels are then warped onto the EM with ImageJ and saved with the transform files."""
import clem_bridge_fiji as clem

warped, status = clem.run_command("DeepCLEM_Correlate.py", lambda: clem.correlate(
    em_file, chromatin_file, chromatin_channel, lm_file, channels, model, server_url, token, out_dir),
    (None, "error"))
