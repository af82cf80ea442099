"""sarco_nn: skeletal muscle area at L3 on CT, built on nnU-Net v2 with a SMIT (Swin) trainer."""

__version__ = "0.1.0"
