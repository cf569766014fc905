#@ File (label="EM image (fixed)", style="file") em_file
#@ File (label="Measured chromatin (LM, e.g. Hoechst)", style="file") chromatin_file
#@ Integer (label="Chromatin channel in that file (0-based)", value=0) chromatin_channel
#@ File (label="LM channels of interest (same grid as the chromatin; empty = the chromatin file)", style="file", required=false) lm_file
#@ String (label="Channels to carry (0-based, comma-separated; empty = all)", value="") channels
#@ String (label="Chromatin model on the server", value="chromatin-v2") model
#@ String (label="Server URL", value="http://127.0.0.1:8765") server_url
#@ String (label="Token (optional)", value="") token
#@ File (label="Output folder", style="directory") out_dir
#@output ImagePlus warped
"""DeepCLEM: the server predicts chromatin from the EM and correlates it with the measured chromatin;
the LM channels are then warped onto the EM with ImageJ and saved with the transform files."""
import clem_bridge_fiji as clem

warped = None


def main():
    global warped
    em = clem.open_image(em_file, "EM image")
    chromatin = clem.open_image(chromatin_file, "chromatin image")
    has_lm = lm_file is not None and str(lm_file).strip() not in ("", ".")
    lm = clem.open_image(lm_file, "LM image") if has_lm else chromatin
    out = clem.output_dir(out_dir)
    server = clem.Server(server_url, token)
    server.get_json("/v1/health")
    files = [("em", "em.tif", clem.tiff_bytes(em)),
             ("chromatin", "chromatin.tif", clem.tiff_bytes(clem.select_channels(chromatin, [chromatin_channel])))]
    try:
        record, _ = clem.submit_and_wait(server, "/v1/correlate", files,
                                         {"model": model, "chromatin_channel": 0, "channels": [0]}, "DeepCLEM")
    except clem.ClemError as e:
        if "HTTP 404" in str(e):
            raise clem.ClemError("the CLEM server at %s lacks the DeepCLEM chromatin model (it has no "
                                 "POST /v1/correlate); update the server or use Register EM-LM" % server.url)
        if "HTTP 422" in str(e) and "model" in str(e):
            raise clem.ClemError("the CLEM server at %s lacks the DeepCLEM chromatin model '%s' (%s)"
                                 % (server.url, model, str(e).split(": ", 1)[-1]))
        raise
    f2m = clem.check_matrix(record["fixed_to_moving"], "the server's fixed_to_moving")
    f2m, warped, comp, _ = clem.register_and_apply(server, em, lm, 0, channels, out, f2m=f2m, record=record)
    clem.log("DeepCLEM: correlated %s to %s; files in %s" % (chromatin.getTitle(), em.getTitle(), out))
    if not clem.is_headless():
        comp.show()


clem.run_main(main)
