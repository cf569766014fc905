"""Image I/O (:mod:`.images`: TIFF, PNG, JPEG readers, calibrated TIFF writer; :mod:`.formats`: MRC, DM3/4,
CZI, LIF, ND2, OME-Zarr readers and the OME-Zarr writer) and a registration's
inputs as the workflows read them (:mod:`.inputs`); length units (:mod:`.units`) and the channels-first layout
every reader returns (:mod:`.layout`)."""
from .images import MAX_PIXELS, ImageData, check_image, read_channel, read_image, select_channel, write_tiff
from .formats import write_ome_zarr
from .units import convert_length, normalize_unit
from .inputs import as_stack, load_lm_channels, output_dir, pick_channels, read_checked, read_em, stack_dtype

__all__ = ["MAX_PIXELS", "ImageData", "as_stack", "check_image", "convert_length", "load_lm_channels",
           "normalize_unit", "output_dir", "pick_channels", "read_channel", "read_checked", "read_em",
           "read_image", "select_channel", "stack_dtype", "write_ome_zarr", "write_tiff"]
