#@ File (label="EM image (fixed; its multi-point selection)", style="file", required=false) em_file
#@ String (label="...or open EM image (title)", value="") em_title
#@ File (label="LM image (moving; the same points, same order)", style="file", required=false) lm_file
#@ String (label="...or open LM image (title)", value="") lm_title
#@ String (label="Model", choices={"affine", "similarity", "rigid"}, value="affine") model
#@ String (label="LM channels to carry (0-based, comma-separated; empty = all)", value="") channels
#@ String (label="Server URL", value="http://127.0.0.1:8765") server_url
#@ String (label="Token (optional)", value="", style="password", persist=false) token
#@ File (label="Output folder", style="directory") out_dir
#@output ImagePlus warped
#@output String status
"""Register Landmarks: the points of the EM's and the LM's multi-point selections (Multi-point tool; the same
features clicked in the same order) are fitted on the server with an error report; the LM channels are warped
onto the EM with ImageJ and saved with the transform files."""
import clem_bridge_fiji as clem

warped, status = clem.run_command("Register_Landmarks.py", lambda: clem.landmarks(
    em_file, em_title, lm_file, lm_title, model, channels, server_url, token, out_dir), (None, "error"))
