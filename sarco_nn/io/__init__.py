"""sarco's image input/output, one module per job (the layer every command reads images through).

- `paths`:   which file endings are images; names safe to print and to hand to SimpleITK.
- `headers`: the header facts SimpleITK hides (zero spacing, truncated voxels, NaN, NIfTI scaling,
             qform/sform disagreement), read from the bytes: the measured reasons are in its doc.
- `dicom`:   DICOM series assembly (pydicom headers, GDCM pixels) with its refusals.
- `files`:   `read_image` / `read_label_image`: one entry point for files, DICOM files and folders.
- `hu`:      refusal of values that cannot be CT in HU.
- `grid`:    axial checks, reorientation to LPS, the one image-mask grid check.
- `slices`:  L3 slice extraction and mapping a predicted mask back onto the user's grid.

Conventions: images are brought to `constants.CANONICAL_ORIENTATION` (LPS, identity direction), so
the axial slice `k` is `array[k]` and slice 0 is the most inferior one. An extracted L3 slice is a
3-D image with one slice whose slice-axis spacing is `constants.SLICE_AXIS_SPACING_MM` (nnU-Net then
plans a pure 2d configuration). Images are rebuilt from arrays, so no header field (patient name,
id, birth date...) travels with a returned image.
"""

from sarco_nn.io.dicom import GANTRY_TILT_TOLERANCE_DEG, PADDING_FILL_HU
from sarco_nn.io.files import read_image, read_label_image
from sarco_nn.io.headers import label_scaling_note
from sarco_nn.io.grid import (AXIAL_TOLERANCE_DEG, MIN_AXIAL_PIXELS, canonical_slice_index, check_same_grid,
                              require_axial, to_canonical)
from sarco_nn.io.hu import check_ct_intensities
from sarco_nn.io.paths import IMAGE_SUFFIXES, printable_path
from sarco_nn.io.slices import SliceSource, extract_axial_slice, load_axial_slice, mask_to_source_geometry

__all__ = [
    "AXIAL_TOLERANCE_DEG", "GANTRY_TILT_TOLERANCE_DEG", "IMAGE_SUFFIXES", "MIN_AXIAL_PIXELS", "PADDING_FILL_HU",
    "SliceSource", "canonical_slice_index", "check_ct_intensities", "check_same_grid", "extract_axial_slice",
    "label_scaling_note", "load_axial_slice", "mask_to_source_geometry", "printable_path", "read_image",
    "read_label_image", "require_axial", "to_canonical",
]
