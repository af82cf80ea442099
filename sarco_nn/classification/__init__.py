"""Classification baseline: sarcopenic / not straight from the L3 slice (the reference study's CNNs).

Kept apart from the segmentation pipeline on purpose: it reads the same converted nnU-Net raw
dataset and the same `splits_final.json`, so `sarco classify compare` can put both approaches
side by side on identical cases. Modules import torch lazily; importing this package is cheap.
"""
