#@ File (label="EM image (fixed)", style="file", required=false) em_file
#@ String (label="...or open EM image (title)", value="") em_title
#@ File (label="LM image (moving, all channels)", style="file", required=false) lm_file
#@ String (label="...or open LM image (title)", value="") lm_title
#@ Integer (label="LM registration channel (reflected/bright, 0-based)", value=0) reg_channel
#@ String (label="LM channels to carry (0-based, comma-separated; empty = all)", value="") channels
#@ String (label="Server URL", value="http://127.0.0.1:8765") server_url
#@ String (label="Token (optional)", value="") token
#@ String (label="Preset", choices={"fast", "thesis"}, value="fast") preset
#@ Integer (label="Seed", value=0) seed
#@ File (label="Output folder", style="directory") out_dir
#@output ImagePlus warped
"""Register EM-LM (MINE): send EM + LM registration channel to a clem-bridge server, warp the LM
channels onto the EM canvas with ImageJ, show an EM/LM composite, save channels and transform files."""
import clem_bridge_fiji as clem

warped = None


def main():
    global warped
    em = clem.input_image(em_file, em_title, "EM image")
    lm = clem.input_image(lm_file, lm_title, "LM image")
    out = clem.output_dir(out_dir)
    server = clem.Server(server_url, token)
    server.get_json("/v1/health")
    f2m, warped, comp, record = clem.register_and_apply(server, em, lm, reg_channel, channels, out, preset, seed)
    clem.log("CLEM: registered %s to %s; fixed_to_moving = %s; files in %s"
             % (lm.getTitle(), em.getTitle(), f2m, out))
    if not clem.is_headless():
        comp.show()


clem.run_main(main)
