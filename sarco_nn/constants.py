"""Facts that must be defined exactly once in the whole toolkit.

Everything else imports from here: the CT window used for normalisation, the muscle HU gate,
the label names and the geometry conventions of converted L3 slices.
"""

from __future__ import annotations

#: CT window (HU) clipped and scaled to [0, 1] before the network, as in the reference study.
CT_WINDOW_HU: tuple[float, float] = (-175.0, 250.0)

#: Skeletal-muscle attenuation gate (Mitsiopoulos 1998); applied to SMA only when asked for.
MUSCLE_HU_GATE: tuple[float, float] = (-29.0, 150.0)

#: Adipose-tissue attenuation gate (Mitsiopoulos 1998 / Alberta protocol) for IMAT, VAT and SAT.
ADIPOSE_HU_GATE: tuple[float, float] = (-190.0, -30.0)

#: Tissue HU conventions a body-composition measurement can be made under (both bounds inclusive).
#: "label": every labelled pixel counts (what `sarco measure`/`predict` do for SMA without --hu-gate);
#: "alberta": muscle pixels count only within MUSCLE_HU_GATE, adipose pixels (IMAT, VAT, SAT) only
#: within ADIPOSE_HU_GATE (Mitsiopoulos et al. 1998, J Appl Physiol 85:115; the Alberta protocol).
HU_CONVENTIONS: dict[str, dict[str, tuple[float, float] | None]] = {
    "label": {"muscle": None, "adipose": None},
    "alberta": {"muscle": MUSCLE_HU_GATE, "adipose": ADIPOSE_HU_GATE},
}
DEFAULT_HU_CONVENTION: str = "label"

ADIPOSE_TISSUES: tuple[str, ...] = ("imat", "vat", "sat")

#: Vertebral levels a body-composition measurement may be taken at (TotalSegmentator naming).
LEVELS: tuple[str, ...] = ("T12", "L1", "L2", "L3", "L4", "L5")
DEFAULT_LEVEL: str = "L3"

#: `sarco predict` counts tissue only inside the trunk, the largest body region of the slice
#: (`sarco_nn.trunk`; `--keep-outside-trunk` turns it off): arms in the field of view are not SMA.
#: Measured (README "External validity"): site-B SMA error 20.5 % -> 14.4 % over 3 seeds, family A
#: unchanged, 100 % of the real CT's reference tissue kept.
DEFAULT_TRUNK_ONLY: bool = True

#: Derived IMAT (muscle-only mask + CT): adipose-HU pixels inside the muscle envelope, where the
#: envelope is the muscle mask with its holes filled — only holes up to this area (cm²), so the
#: abdominal cavity enclosed by a closed muscle ring (visceral fat) is never counted as IMAT.
#: sarco's convention, not a published value.
DERIVED_IMAT_MAX_HOLE_CM2: float = 10.0

#: nnU-Net label map written into every dataset.json. Muscle is always label 1.
LABELS: dict[str, int] = {"background": 0, "muscle": 1}
MUSCLE_LABEL: int = LABELS["muscle"]

#: Body-composition tissues and their values in a multi-tissue mask (phantoms, labels.json):
#: skeletal muscle, inter/intramuscular fat inside the muscle fascia, visceral and subcutaneous fat.
#: Muscle keeps label 1, so a muscle-only reader of such a mask sees the same muscle. Phantoms and
#: conversion with tissues kept write these values, plus a labels.json naming them.
TISSUE_LABELS: dict[str, int] = {"muscle": MUSCLE_LABEL, "imat": 2, "vat": 3, "sat": 4}

#: Channel name of the single CT input; "CT" makes nnU-Net choose CTNormalization.
CHANNEL_NAMES: dict[str, str] = {"0": "CT"}

#: File ending of every image nnU-Net reads or writes for sarco.
FILE_ENDING: str = ".nii.gz"

#: File endings of single-file images SimpleITK reads for us (besides DICOM). Checked longest first
#: (".nii.gz" before ".nii"); ".mhd"/".nhdr" are headers whose pixels sit in a companion file.
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")

#: File endings of single DICOM files (a DICOM series is usually a folder of such files).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")

#: Every file ending a scan given on the command line may have.
SCAN_SUFFIXES: tuple[str, ...] = IMAGE_SUFFIXES + DICOM_SUFFIXES

#: Spacing (mm) written on the slice axis of a single extracted L3 slice. Only the in-plane
#: spacing is physical; this placeholder is larger than any in-plane spacing so that nnU-Net
#: plans a pure `2d` configuration (nnU-Net's planner puts the largest-spacing axis first; a
#: smaller slice spacing would transpose the axes into a broken `2d` plan plus a `3d_fullres` one).
SLICE_AXIS_SPACING_MM: float = 10.0

#: Orientation every image is brought to before slicing (SimpleITK/DICOM convention: axes
#: increase towards patient Left, Posterior, Superior). Axial slices are then array[z].
CANONICAL_ORIENTATION: str = "LPS"

#: Plausible body-CT intensity range; outside it an image is probably not CT in HU.
CT_PLAUSIBLE_RANGE_HU: tuple[float, float] = (-1100.0, 4000.0)

#: Above this a voxel is body (skin, fat, muscle, bone), below it air or lung (one bound for every
#: "where is the body" question: the CT checks and the reader's HU refusal, the trunk rule, the QC outline).
BODY_HU: float = -500.0

#: The one exception to BODY_HU: the L3 localizer centres its sagittal and coronal maximum-intensity
#: projections on the columns above this (`l3.localizer.projection_input`). On a MIP a ray through the body
#: always reaches fat or denser tissue, so this does not decide what is body but where the canvas is centred,
#: and the trained localizers learnt inputs centred this way: at BODY_HU the canvas moves by one 8-mm column
#: on 5 of 24 phantom volumes (seeds 0-11, 96² and 128²; none on the TotalSegmentator example CT), a shift
#: a checkpoint was not trained for (tests/test_l3.py pins the centring). Change it only
#: with retrained localizers.
LOCALIZER_BODY_HU: float = -300.0

#: First dataset id sarco uses when it creates nnU-Net datasets.
FIRST_DATASET_ID: int = 501
