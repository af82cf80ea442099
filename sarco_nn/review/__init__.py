"""Clinical review at scale: which cases a person should check first, and outputs for PACS.

- :mod:`sarco_nn.review.qc`: per-case ``qc_score`` (higher = more suspicious) and its reasons,
  from fold disagreement, probability entropy and physiological plausibility.
- :mod:`sarco_nn.review.fold_ensemble`: nnU-Net's fold ensemble, but keeping each fold's output.
- :mod:`sarco_nn.review.gallery`: ``review.html``, a static page over ``results.csv``.
- :mod:`sarco_nn.review.dicom_seg`: opt-in DICOM Segmentation objects (carry patient identity).

Submodules are imported on use: nothing heavy (torch, highdicom) loads just to read a name.
"""
