"""The one image reader of sarco (compatibility surface): the work lives in the `sarco_nn.io` package.

`dataset_conversion`, `sarco predict`, `measure`, `evaluate`, the L3 code and the classifier all read
through these names, so a case that converts for training reads exactly the same way at prediction
time. See `sarco_nn.io` for which module does which job.
"""

from sarco_nn.io import (AXIAL_TOLERANCE_DEG, GANTRY_TILT_TOLERANCE_DEG, IMAGE_SUFFIXES, MIN_AXIAL_PIXELS,
                         PADDING_FILL_HU, SliceSource, canonical_slice_index, check_ct_intensities, check_same_grid,
                         extract_axial_slice, label_scaling_note, load_axial_slice, mask_to_source_geometry,
                         printable_path, read_image, read_label_image, require_axial, to_canonical)

__all__ = [
    "AXIAL_TOLERANCE_DEG", "GANTRY_TILT_TOLERANCE_DEG", "IMAGE_SUFFIXES", "MIN_AXIAL_PIXELS", "PADDING_FILL_HU",
    "SliceSource", "canonical_slice_index", "check_ct_intensities", "check_same_grid", "extract_axial_slice",
    "label_scaling_note", "load_axial_slice", "mask_to_source_geometry", "printable_path", "read_image",
    "read_label_image", "require_axial", "to_canonical",
]
