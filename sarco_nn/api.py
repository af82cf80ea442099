"""sarco's public Python API: one typed function per verb, the same options as the `sarco` command.

A script runs the whole pipeline without the CLI (TotalSegmentator's `python_api` shape)::

    from sarco_nn import api

    api.convert("l3_drop", name="Freeman", workspace="ws")          # -> nnU-Net raw dataset
    api.plan(preset="cpu", workspace="ws")                           # fingerprint, plan, preprocess
    api.train(0, api.TrainOptions(trainer="smit", epochs=50), workspace="ws")
    result = api.predict("scans/", "results/", api.PredictOptions(clinical_csv="clinical.csv"), workspace="ws")
    report = api.evaluate("results/", reference="manual_masks/", clinical="clinical.csv")
    [m] = api.measure("l3_mask.nii.gz", image="l3_ct.nii.gz", sex="F", height_m=1.62)

Every function passes its options by keyword to the library function that does the work
(`dataset_conversion.convert`, `planning`, `training.run`, `inference`, `measure`,
`evaluation.evaluate`); errors are `sarco_nn.errors.SarcoError` with the file and the fix.
Heavy libraries (torch, nnU-Net) are imported only when a function that needs them runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sarco_nn.constants import MUSCLE_LABEL
from sarco_nn.errors import SarcoError
from sarco_nn.io_pipeline import DEFAULT_IO_WORKERS
from sarco_nn.thresholds import DEFAULT_THRESHOLD_SET
from sarco_nn.workspace import Workspace

__all__ = [
    "MuscleMeasurement", "PredictOptions", "PredictResult", "TrainOptions",
    "convert", "evaluate", "measure", "plan", "predict", "train",
]

PathLike = str | Path


def _ws(workspace: PathLike | Workspace | None) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


# ------------------------------------------------------------------------------------ convert
def convert(drop_dir: PathLike, *, name: str, dataset_id: int | None = None, overwrite: bool = False,
            workspace: PathLike | Workspace | None = None):
    """Turn a dropped folder into an nnU-Net raw dataset: one L3 slice per case, pseudonymised ids.

    Args:
        drop_dir: folder with ``images/`` and ``masks/`` (NIfTI/MHA/NRRD files or DICOM series
            folders, one mask per image, same case name) and optionally ``clinical.csv``.
        name: dataset name, letters/digits/``_``/``-`` (e.g. ``"Freeman"``).
        dataset_id: nnU-Net dataset id; None takes the next free id from 501.
        overwrite: replace an existing converted dataset with the same id and name.
        workspace: sarco workspace folder (None: ``$SARCO_HOME`` or ``./sarco_workspace``).

    Returns:
        `dataset_conversion.convert.ConversionResult` (dataset_dir, dataset_name, n_cases, notes).

    Example:
        >>> result = convert("l3_drop", name="Freeman", workspace="ws")  # doctest: +SKIP
        >>> result.dataset_name  # doctest: +SKIP
        'Dataset501_Freeman'
    """
    from dataset_conversion.convert import convert_dropin
    from sarco_nn.constants import FIRST_DATASET_ID

    ws = _ws(workspace).activate()
    chosen_id = dataset_id if dataset_id is not None else ws.next_dataset_id(FIRST_DATASET_ID)
    return convert_dropin(Path(drop_dir), ws.raw, name, chosen_id, overwrite=overwrite)


# --------------------------------------------------------------------------------------- plan
def plan(dataset: str | int | None = None, *, preset: str = "default", processes: int | None = None,
         workspace: PathLike | Workspace | None = None) -> dict[str, Any]:
    """Fingerprint, plan and preprocess one dataset with nnU-Net, then apply a plan preset.

    The preset bakes the CT window (-175..250 HU -> [0, 1]) into the plans, so every model trained
    on them normalises the same way.

    Args:
        dataset: dataset id or name; None: the only dataset in the workspace.
        preset: plan preset in ``plans/`` (``default``, ``cpu``, ``smoke``) or a JSON file path.
        processes: worker processes for fingerprinting/preprocessing (None: up to 4).
        workspace: sarco workspace folder (None: ``$SARCO_HOME`` or ``./sarco_workspace``).

    Returns:
        A summary dict: dataset, preset, plans, cases, median_inplane_spacing_mm,
        target_spacing_mm, patch_size (pixels), batch_size, network, normalization.

    Example:
        >>> plan(preset="cpu", workspace="ws")["patch_size"]  # doctest: +SKIP
        [256, 256]
    """
    from sarco_nn.planning import plan_dataset
    from sarco_nn.presets import load_preset

    load_preset(preset)  # refuse an unknown preset before touching the workspace
    return plan_dataset(_ws(workspace).activate(), dataset, preset, processes)


# -------------------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainOptions:
    """How to train one fold (the options of `sarco train`).

    Args:
        dataset: dataset id or name (None: the only one).
        trainer: ``smit`` (SMIT Swin encoder), ``nnunet`` (nnU-Net's U-Net), ``resenc`` (nnU-Net's
            residual-encoder U-Net) or an nnU-Net trainer class name.
        preset: which planned preset (None: the only one planned).
        epochs: override the preset's number of epochs.
        iterations: override the preset's iterations per epoch.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (`sarco_nn.devices`).
        continue_training: resume from the fold's last checkpoint.
        pretrained: SMIT encoder weights (``sarco pretrain`` output or an official SMIT checkpoint).
        validate: run nnU-Net's validation at the end (None: the preset decides).
    """

    dataset: str | int | None = None
    trainer: str = "smit"
    preset: str | None = None
    epochs: int | None = None
    iterations: int | None = None
    device: str = "auto"
    continue_training: bool = False
    pretrained: PathLike | None = None
    validate: bool | None = None


def train(fold: int | str = 0, options: TrainOptions = TrainOptions(), *,
          workspace: PathLike | Workspace | None = None) -> Path:
    """Train one nnU-Net fold with the SMIT trainer (or a baseline); resumable.

    Args:
        fold: 0-4, or ``"all"`` (every case, no validation).
        options: `TrainOptions` (trainer, preset, epochs, device, pretrained weights, ...).
        workspace: sarco workspace folder (None: ``$SARCO_HOME`` or ``./sarco_workspace``).

    Returns:
        The fold's output folder (checkpoint_final.pth, sarco_provenance.json, training log).

    Example:
        >>> train(0, TrainOptions(trainer="nnunet", epochs=5, device="cpu"), workspace="ws")  # doctest: +SKIP
        PosixPath('ws/nnUNet_results/Dataset501_Freeman/SarcoUNetTrainer__sarcoPlans_cpu__2d/fold_0')
    """
    from sarco_nn.training.run import train_fold

    return train_fold(_ws(workspace), str(fold), dataset=options.dataset, trainer=options.trainer,
                      preset=options.preset, epochs=options.epochs, iterations=options.iterations,
                      device=options.device, continue_training=options.continue_training,
                      pretrained=_path(options.pretrained), validate=options.validate)


# ------------------------------------------------------------------------------------ predict
@dataclass(frozen=True)
class PredictOptions:
    """How to segment and measure (the options of `sarco predict`).

    Args:
        dataset: dataset id or name whose model to use (None: the only one).
        trainer: which trained model (``smit``, ``nnunet``, ``resenc``; None: the only one).
        preset: which planned preset (None: the only one).
        clinical_csv: clinical.csv (case_id, sex, height_m, ...) for SMI (cm²/m²) and the flag.
        thresholds: threshold set for the sarcopenia flag: ``paper``, ``prado``, ``martin`` or a file.
        fast: skip test-time mirroring (about 4x faster in 2D, slightly less accurate).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        l3_slice: L3 slice of a volume, counted along the file's own slice axis (0-based).
        l3_csv: CSV ``case_id,l3_slice`` giving each volume's L3 slice.
        l3_from: vertebra label map (TotalSegmentator numbering, L3 = 29): a file or a folder.
        locator: L3 localizer for volumes: ``auto``, ``vertebrae``, ``model``, ``totalsegmentator``.
        l3_rule: L3 slice from vertebra labels: ``centroid`` or ``max-area``.
        slab: measure the mean of this many slices around the L3 level (1 = the slice itself).
        hu_gate: count only muscle pixels within the muscle HU gate (-29..150 HU).
        overwrite: allow an output folder holding another model's results.
        progress: print one line per case.
        l3_model_dir: trained L3 localizer folder (None: <workspace>/l3_localizer).
        part: predict only share ``part`` (0..parts-1) of the inputs (a SLURM array index); None: all.
        parts: number of shares the batch is split into (merge the parts with ``sarco predict-merge``).
        dicom_seg: also write a DICOM SEG per DICOM scan (the one output carrying patient identity).
        io_workers: threads reading the next scans and writing finished ones while the network runs
            (1: one scan at a time); the results do not depend on it.
    """

    dataset: str | int | None = None
    trainer: str | None = None
    preset: str | None = None
    clinical_csv: PathLike | None = None
    thresholds: str = DEFAULT_THRESHOLD_SET
    fast: bool = False
    device: str = "auto"
    l3_slice: int | None = None
    l3_csv: PathLike | None = None
    l3_from: PathLike | None = None
    locator: str = "auto"
    l3_rule: str = "centroid"
    slab: int = 1
    hu_gate: bool = False
    overwrite: bool = False
    progress: bool = True
    l3_model_dir: PathLike | None = None
    part: int | None = None
    parts: int | None = None
    dicom_seg: bool = False
    io_workers: int = DEFAULT_IO_WORKERS


@dataclass(frozen=True)
class PredictResult:
    """Where `predict` wrote its table, and how many cases failed (their reasons are in the table)."""

    results_csv: Path
    n_failed: int


def predict(inputs: PathLike, output: PathLike, options: PredictOptions = PredictOptions(), *,
            workspace: PathLike | Workspace | None = None) -> PredictResult:
    """Segment muscle with the fold ensemble; write masks, overlays and results.csv (SMA, SMI, HU, flag).

    Resumable: a second call with the same model and options skips finished cases.

    Args:
        inputs: a CT file (NIfTI/MHA/NRRD/DICOM), a DICOM series folder, or a folder of scans.
        output: output folder (``masks/``, ``overlays/``, ``results.csv``, ``errors.log``).
        options: `PredictOptions` (model choice, clinical data, L3 choice, device, ...).
        workspace: sarco workspace folder holding the trained model.

    Returns:
        `PredictResult` (results_csv, n_failed). results.csv has one row per scan with
        sma_cm2 (cm²), smi_cm2_m2 (cm²/m²), muscle_hu_mean (HU), sarcopenic, status and reasons.

    Example:
        >>> r = predict("scans/", "results/", PredictOptions(clinical_csv="clinical.csv"), workspace="ws")  # doctest: +SKIP
        >>> r.n_failed  # doctest: +SKIP
        0
    """
    from sarco_nn.inference import predict as run_predict

    o = options
    results, failed = run_predict(
        _ws(workspace), Path(inputs), Path(output), dataset=o.dataset, trainer=o.trainer, preset=o.preset,
        clinical_csv=_path(o.clinical_csv), thresholds=o.thresholds, fast=o.fast, device=o.device,
        l3_slice=o.l3_slice, hu_gate=o.hu_gate, overwrite=o.overwrite, progress=o.progress, l3_csv=_path(o.l3_csv),
        l3_from=_path(o.l3_from), locator=o.locator, l3_rule=o.l3_rule, slab=o.slab,
        l3_model_dir=_path(o.l3_model_dir), part=o.part, parts=o.parts, dicom_seg=o.dicom_seg,
        io_workers=o.io_workers)
    return PredictResult(Path(results), int(failed))


# ------------------------------------------------------------------------------------ measure
@dataclass(frozen=True)
class MuscleMeasurement:
    """One measured axial slice.

    Attributes:
        slice_index: slice along the mask's own slice axis as stored (0 for a 2-D mask).
        sma_cm2: skeletal muscle area, cm² (pixels x in-plane spacing; slice thickness never enters).
        smi_cm2_m2: skeletal muscle index SMA / height², cm²/m² (None without a height).
        muscle_hu_mean: mean CT value of the counted pixels, HU (None without the CT).
        hu_gate: the (low, high) HU gate applied, or None.
        sarcopenic: the flag under `threshold_set`; None when it may not be given (sex, height or
            BMI missing, or a reason that withholds it: an empty or implausible mask, not a CT).
        threshold_set: name of the threshold set used.
        threshold: the cut-off applied, in words (e.g. ``"SMA < 144 cm² (paper, M)"``).
        status: ``ok`` / ``review`` / ``failed`` (`sarco_nn.status`), as ``sarco measure`` reports it.
        reasons: ``(code, message)`` pairs behind a status other than ``ok``.
    """

    slice_index: int | None
    sma_cm2: float
    smi_cm2_m2: float | None
    muscle_hu_mean: float | None
    hu_gate: tuple[float, float] | None
    sarcopenic: bool | None
    threshold_set: str
    threshold: str
    status: str = "ok"
    reasons: tuple[tuple[str, str], ...] = ()


def measure(mask: PathLike, *, image: PathLike | None = None, slice_index: int | None = None,
            label: int = MUSCLE_LABEL, sex: str | None = None, height_m: float | None = None,
            weight_kg: float | None = None, hu_gate: bool = False,
            thresholds: str = DEFAULT_THRESHOLD_SET) -> list[MuscleMeasurement]:
    """SMA (cm²), SMI (cm²/m²), mean muscle HU and the sarcopenia flag from an existing mask.

    Args:
        mask: muscle mask file (NIfTI/MHA/NRRD): one 2-D slice or a 3-D volume, any orientation.
        image: the CT the mask was drawn on (same grid), for muscle HU and the HU gate.
        slice_index: 3-D mask: the slice to measure, along the image's own stored slice axis
            (ITK-SNAP/Slicer k). None: every slice holding `label`.
        label: label value of muscle in the mask.
        sex: ``"M"`` or ``"F"`` (any spelling `thresholds.normalise_sex` knows), for the flag.
        height_m: height in metres, for SMI.
        weight_kg: weight in kg (BMI, used by the ``martin`` set).
        hu_gate: count only pixels within the muscle HU gate -29..150 HU (needs `image`).
        thresholds: ``paper``, ``prado``, ``martin`` or a JSON/YAML threshold file.

    Returns:
        One `MuscleMeasurement` per measured slice, in slice order.

    Example:
        >>> [m] = measure("l3_mask.nii.gz", image="l3_ct.nii.gz", sex="F", height_m=1.62)  # doctest: +SKIP
        >>> round(m.sma_cm2, 1), m.sarcopenic  # doctest: +SKIP
        (98.3, True)
    """
    from sarco_nn.image_io import read_image, read_label_image
    from sarco_nn.mask_measurement import check_patient, ct_input_reasons, measure_objects
    from sarco_nn.thresholds import get_threshold_set

    ts = get_threshold_set(thresholds)
    sex_code = check_patient(sex, height_m, weight_kg, label)
    if hu_gate and image is None:
        raise SarcoError("the HU gate needs the CT", fix="pass it as image=CT.")
    ct = read_image(image) if image is not None else None
    objects = measure_objects(read_label_image(mask), ct, ts, sex_code, height_m, weight_kg, label=label,
                              slice_index=slice_index, hu_gate=hu_gate, mask_name=str(mask),
                              ct_name=None if image is None else str(image),
                              input_reasons=ct_input_reasons(ct, image))
    out = [MuscleMeasurement(
        slice_index=o["slice_index"], sma_cm2=float(o["sma_cm2"]), smi_cm2_m2=o["smi_cm2_m2"],
        muscle_hu_mean=o["muscle_hu_mean"], hu_gate=None if o["hu_gate"] is None else tuple(o["hu_gate"]),
        sarcopenic=o["sarcopenic"] if isinstance(o["sarcopenic"], bool) else None, threshold_set=o["threshold_set"],
        threshold=o["threshold"], status=o["status"], reasons=tuple((r["code"], r["message"]) for r in o["reasons"]))
        for o in objects]
    return out


# ----------------------------------------------------------------------------------- evaluate
def evaluate(predictions: PathLike | None = None, *, reference: PathLike | None = None,
             clinical: PathLike | None = None, output: PathLike | None = None,
             thresholds: str = DEFAULT_THRESHOLD_SET, images: PathLike | None = None,
             at_annotated: PathLike | None = None, crossval: bool = False, dataset: str | int | None = None,
             trainer: str | None = None, workspace: PathLike | Workspace | None = None) -> dict[str, Any]:
    """Compare predicted with reference masks: Dice/HD95, SMA agreement, sarcopenia accuracy.

    Writes cases.csv, summary.json, report.md and plots. Two kinds: a folder of predictions
    against reference masks, or (``crossval=True``) nnU-Net's cross-validation predictions per fold.

    Args:
        predictions: predicted masks (``<case>.nii.gz``) or a `predict` output folder; not with crossval.
        reference: reference (manual) masks with the same case names; not with crossval.
        clinical: clinical.csv (case_id, sex, height_m, ...) for SMI and flags.
        output: report folder (None: predictions/evaluation; crossval: <model>/sarco_evaluation).
        thresholds: ``paper``, ``prado``, ``martin`` or a JSON/YAML threshold file.
        images: CT images (``<case>.nii.gz`` or ``<case>_0000.nii.gz``) for muscle HU and overlays.
        at_annotated: volumes: predictions made at the annotated L3 slices.
        crossval: evaluate the cross-validation predictions of a trained model instead.
        dataset: crossval: dataset id or name (None: the only one).
        trainer: crossval: which trained model when several exist.
        workspace: crossval: sarco workspace folder.

    Returns:
        The summary dict (also summary.json): n_cases, dice_mean, sma_mae_cm2 (cm²),
        sma_bias_cm2, sma_icc, accuracy, sensitivity, specificity, folds, report_dir, ...

    Example:
        >>> evaluate("results/", reference="manual_masks/", clinical="clinical.csv")["dice_mean"]  # doctest: +SKIP
        0.93
    """
    from sarco_nn.evaluation.evaluate import evaluate_crossval, evaluate_folder

    if crossval:
        if predictions is not None or reference is not None:
            raise SarcoError("crossval finds predictions and references itself", fix="drop predictions and reference.")
        return evaluate_crossval(None if workspace is None else _ws(workspace), dataset, _path(output), thresholds,
                                 trainer=trainer)
    if predictions is None or reference is None:
        raise SarcoError("predictions and reference are both required", fix="or pass crossval=True.")
    out = Path(output) if output is not None else Path(predictions) / "evaluation"
    return evaluate_folder(Path(predictions), Path(reference), _path(clinical), out, thresholds,
                           images_dir=_path(images), annotated_dir=_path(at_annotated))
