"""In-silico chromatin labelling (DeepCLEM): predict a chromatin stain from EM, then correlate it with the measured one.

* :mod:`.unet` — the small CARE-like 2-D U-Net.
* :mod:`.normalize` — EM histogram equalisation (global, DeepCLEM) or CLAHE (local, the shipped model), then percentiles.
* :mod:`.train` — patch training with augmentation, validation split, early stopping; model folders with a card.
* :mod:`.predict` — model lookup/loading and tiled inference on any image size.
* :mod:`.correlate` — coarse rotation/scale/translation search + ECC affine refinement, and the full workflow.
"""

DEFAULT_MODEL = "chromatin-v2"   # folder under models/
