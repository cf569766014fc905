"""File names every workflow writes into its output folder (the CLI contract)."""
TRANSFORM_JSON = "transform.json"
WARPED_TIFF = "lm_warped.tif"
OVERLAY_PNG = "overlay.png"
MI_CURVE_PNG = "mi_curve.png"
PREDICTED_TIFF = "predicted_chromatin.tif"
PREPARED_TIFF = "lm_prepared.tif"
PREPARE_JSON = "prepare.json"
OME_ZARR = "lm_warped.ome.zarr"      # batch --format ome-zarr
