"""In-silico chromatin labelling (DeepCLEM): predict a chromatin stain from EM, then correlate it with the measured one.

* :mod:`.unet` — the small CARE-like 2-D U-Net.
* :mod:`.normalize` — EM histogram equalisation (global, DeepCLEM) or CLAHE (local, the shipped model), then percentiles.
* :mod:`.train` — patch training with augmentation, validation split, early stopping; model folders with a card.
* :mod:`.predict` — model lookup/loading and tiled inference on any image size.
* :mod:`.score` — the overlap-aware NCC every correlation stage is judged by.
* :mod:`.search` — global rotation/scale/translation search returning several distinct hypotheses.
* :mod:`.refine` — similarity / affine ECC / multi-size refinement, never worse than the start.
* :mod:`.nuclei` — heterochromatin refinement on the EM, the EM contrast check, stained-nucleus count.
* :mod:`.correlate` — ``register_chromatin`` (hypotheses → choice → calibration → nuclei → status) and
  ``correlate`` (prediction + registration).
"""

DEFAULT_MODEL = "chromatin-v2"   # folder under models/
