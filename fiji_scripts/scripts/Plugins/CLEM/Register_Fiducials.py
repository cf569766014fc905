#@ File (label="EM image (fixed, with beads)", style="file", required=false) em_file
#@ String (label="...or open EM image (title)", value="") em_title
#@ File (label="LM image (moving, fluorescent beads)", style="file", required=false) lm_file
#@ String (label="...or open LM image (title)", value="") lm_title
#@ Integer (label="LM bead channel (0-based)", value=0) lm_channel
#@ Double (label="Bead diameter (nm)", value=200) bead_nm
#@ String (label="Model", choices={"auto", "rigid", "similarity", "affine"}, value="auto") model
#@ String (label="EM bead polarity", choices={"auto", "dark", "bright"}, value="auto") polarity
#@ String (label="Sub-pixel localisation", choices={"quadratic", "gaussian"}, value="quadratic") localisation
#@ String (label="Server URL", value="http://127.0.0.1:8765") server_url
#@ String (label="Token (optional)", value="", style="password", persist=false) token
#@ File (label="Output folder", style="directory") out_dir
#@output ImagePlus warped
#@output String status
"""Register Fiducials: the server finds the beads in both images (pixel sizes from the ImageJ calibration),
matches them (any rotation, mirror), fits the transform and its error budget; the warped LM, the HSI fusion
and the TRE map are opened, every file of the job (transform.json, bead_landmarks.csv for BigWarp, ...) saved."""
import clem_bridge_fiji as clem

warped, status = clem.run_command("Register_Fiducials.py", lambda: clem.fiducials(
    em_file, em_title, lm_file, lm_title, lm_channel, bead_nm, model, polarity, localisation, server_url, token,
    out_dir), (None, "error"))
