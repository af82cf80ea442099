"""sarco's public Python API: one typed function per verb, the same options as the `sarco` command.

A script runs the whole pipeline without the CLI (TotalSegmentator's `python_api` shape)::

    from sarco_nn import api

    api.convert("l3_drop", name="Freeman", workspace="ws")          # -> nnU-Net raw dataset
    api.plan(preset="cpu", workspace="ws")                           # fingerprint, plan, preprocess
    api.train(0, api.TrainOptions(trainer="smit", epochs=50), workspace="ws")
    result = api.predict("scans/", "results/", api.PredictOptions(clinical_csv="clinical.csv"), workspace="ws")
    report = api.evaluate("results/", reference="manual_masks/", clinical="clinical.csv")
    [m] = api.measure("l3_mask.nii.gz", image="l3_ct.nii.gz", sex="F", height_m=1.62)

Every `sarco` command is a thin wrapper over one function here (`sarco X` → `api.X`, hyphens
as underscores; `sarco classify train` → `api.classify_train`): the command parses its options,
calls the function and prints. Each function passes its options by keyword to the library
function that does the work (`dataset_conversion`, `planning`, `training.run`, `inference`,
`mask_measurement`, `evaluation`, `l3`, `classification`, `pretraining`, `models.pretrained`);
errors are `sarco_nn.errors.SarcoError` with the file and the fix. Heavy libraries (torch,
nnU-Net) are imported only when a function that needs them runs.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sarco_nn.batch_merge import MergeResult
from sarco_nn.constants import DEFAULT_LEVEL, MUSCLE_LABEL
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.l3.result import L3Location, L3NotFound
from sarco_nn.predict_options import PathLike, PredictOptions
from sarco_nn.thresholds import DEFAULT_MYOSTEATOSIS_SET, DEFAULT_THRESHOLD_SET
from sarco_nn.workspace import Workspace

__all__ = [
    "ClassifierPredictions", "L3Location", "L3NotFound", "L3Training", "MergeResult", "MuscleMeasurement",
    "PredictOptions", "PredictResult", "TrainOptions", "WeightsCheck",
    "check_weights", "classify_compare", "evaluation_tissue_line", "classify_predict", "classify_train", "convert", "demo_data", "evaluate",
    "locate_l3", "measure", "phantom_family", "plan", "postprocess", "predict", "predict_merge", "pretrain", "train",
    "train_l3",
]

if TYPE_CHECKING:  # return types only: importing them here would import torch/nnU-Net with the api
    from dataset_conversion.convert import ConversionResult
    from sarco_nn.pretraining.trainer import PretrainResult


def _ws(workspace: PathLike | Workspace | None) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def _is_bool(value: Any) -> bool:
    kind = type(value)
    return isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"))  # numpy's too


#: What an argument kind accepts (None is accepted where the argument is optional), and how it is named.
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "number": (lambda v: isinstance(v, numbers.Real) and not _is_bool(v), "a number"),
    "whole": (lambda v: isinstance(v, numbers.Integral) and not _is_bool(v), "a whole number"),
    "flag": (_is_bool, "True or False"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "path": (lambda v: isinstance(v, (str, os.PathLike)), "a file path (str or pathlib.Path)"),
    "levels": (lambda v: isinstance(v, str) or (isinstance(v, Sequence) and all(isinstance(x, str) for x in v)),
               'a level name or a list of them (e.g. "L3" or ["L1", "L3"])'),
    "folds": (lambda v: not isinstance(v, str) and isinstance(v, Sequence)
              and all(isinstance(x, (str, numbers.Integral)) and not _is_bool(x) for x in v),
              'a list of fold names (e.g. ["0", "1"] or [0, 1])'),
}


def _require(kind: str, optional: bool = False, **arguments: Any) -> None:
    """Refuse an argument of the wrong type in one line, before any file is read: a script's height_m="1.7" or
    slice_index=0.7 gave a TypeError deep in the library, label=1.5 was measured as label 1, hu_gate="no" as True."""
    accepts, what = _KINDS[kind]
    for name, value in arguments.items():
        if (value is None and optional) or accepts(value):
            continue
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise SarcoError(f"{name}={shown} is {type(value).__name__}, not {what}",
                         fix=f"pass {name} as {what}{' or None' if optional else ''}.")


# ------------------------------------------------------------------------------------ convert
def convert(drop_dir: PathLike, *, name: str, dataset_id: int | None = None, overwrite: bool = False,
            keep_tissues: bool = False, workspace: PathLike | Workspace | None = None) -> ConversionResult:
    """Turn a dropped folder into an nnU-Net raw dataset: one L3 slice per case, pseudonymised ids.

    Args:
        drop_dir: folder with ``images/`` and ``masks/`` (NIfTI/MHA/NRRD files or DICOM series
            folders, one mask per image, same case name) and optionally ``clinical.csv``.
        name: dataset name, letters/digits/``_``/``-`` (e.g. ``"Freeman"``).
        dataset_id: nnU-Net dataset id, 1..999; None takes the next free id from 501 (with ``overwrite``, the
            id of the dataset of that name). A name already used by another dataset is refused.
        overwrite: replace an existing converted dataset with the same id and name.
        keep_tissues: keep IMAT/VAT/SAT as labels.json names them (muscle 1, imat 2, vat 3, sat 4).
        workspace: sarco workspace folder (None: ``$SARCO_HOME`` or ``./sarco_workspace``).

    Returns:
        `dataset_conversion.convert.ConversionResult` (dataset_dir, dataset_name, n_cases, notes, warnings).

    Example:
        >>> result = convert("l3_drop", name="Freeman", workspace="ws")  # doctest: +SKIP
        >>> result.dataset_name  # doctest: +SKIP
        'Dataset501_Freeman'
    """
    _require("path", drop_dir=drop_dir)
    _require("text", name=name)
    _require("whole", optional=True, dataset_id=dataset_id)
    _require("flag", overwrite=overwrite, keep_tissues=keep_tissues)
    from dataset_conversion.convert import convert_dropin
    from sarco_nn.constants import FIRST_DATASET_ID

    ws = _ws(workspace).activate()
    chosen_id = dataset_id if dataset_id is not None else ws.id_for_conversion(name, FIRST_DATASET_ID, overwrite)
    replaced = overwrite and (ws.raw / f"Dataset{int(chosen_id):03d}_{name}").is_dir()
    result = convert_dropin(Path(drop_dir), ws.raw, name, chosen_id, overwrite=overwrite, keep_tissues=keep_tissues)
    note = ws.forget_preprocessed(result.dataset_name) if replaced else None
    return result if note is None else replace(result, notes=[*result.notes, note])


# --------------------------------------------------------------------------------------- plan
def plan(dataset: str | int | None = None, *, preset: str = "default", processes: int | None = None,
         workspace: PathLike | Workspace | None = None) -> list[dict[str, Any]]:
    """Fingerprint, plan and preprocess with nnU-Net, then apply a plan preset.

    The preset bakes the CT window (-175..250 HU -> [0, 1]) into the plans, so every model trained
    on them normalises the same way.

    Args:
        dataset: dataset id or name (planned again if it already is); None: every dataset of the
            workspace not yet planned with `preset`.
        preset: plan preset in ``plans/`` (``default``, ``cpu``, ``smoke``) or a JSON file path.
        processes: worker processes for fingerprinting/preprocessing (None: up to 4).
        workspace: sarco workspace folder (None: ``$SARCO_HOME`` or ``./sarco_workspace``).

    Returns:
        One summary dict per dataset planned (empty when every dataset already was): dataset,
        preset, plans, cases, median_inplane_spacing_mm, target_spacing_mm, patch_size (pixels),
        batch_size, network, normalization.

    Example:
        >>> [summary] = plan(preset="cpu", workspace="ws")  # doctest: +SKIP
        >>> summary["patch_size"]  # doctest: +SKIP
        [256, 256]
    """
    _require("path", preset=preset)  # a preset name or a JSON file
    _require("whole", optional=True, processes=processes)
    from sarco_nn.planning import plan_dataset
    from sarco_nn.presets import load_preset, plans_identifier

    preset_name = load_preset(preset)["name"]  # refuse an unknown preset before touching the workspace
    ws = _ws(workspace)
    if dataset is not None or not ws.datasets():
        ws.dataset_name(dataset)  # no dataset (or an unknown one): say so before creating any folder
    ws = ws.activate()
    if dataset is None:
        identifier = plans_identifier(preset_name)
        names = [n for n in ws.datasets().values() if not (ws.preprocessed / n / f"{identifier}.json").exists()]
    else:
        names = [ws.dataset_name(dataset)]
    return [plan_dataset(ws, name, preset, processes) for name in names]


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
        num_gpus: train on this many CUDA GPUs (nnU-Net's DDP, one process per GPU).
        val_best: validate with checkpoint_best instead of checkpoint_final (nnU-Net's ``--val_best``).
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
    num_gpus: int = 1
    val_best: bool = False

    def __post_init__(self) -> None:
        """A script's epochs="5" or validate="no" is one line here, not a TypeError inside nnU-Net."""
        _require("whole", optional=True, epochs=self.epochs, iterations=self.iterations)
        _require("whole", num_gpus=self.num_gpus)
        _require("text", trainer=self.trainer, device=self.device)
        _require("text", optional=True, preset=self.preset)
        _require("flag", continue_training=self.continue_training, val_best=self.val_best)
        _require("flag", optional=True, validate=self.validate)
        _require("path", optional=True, pretrained=self.pretrained)


def train(fold: int | str = 0, options: TrainOptions = TrainOptions(), *,
          workspace: PathLike | Workspace | None = None) -> Path:
    """Train one nnU-Net fold with the SMIT trainer (or a baseline); resumable.

    Args:
        fold: 0-4, or ``"all"`` (every case, no validation). Five-fold cross-validation is one
            call per fold 0..4 (what ``sarco train 5fold`` does; `training.run.expand_folds`).
        options: `TrainOptions` (trainer, preset, epochs, device, pretrained weights, ...).
        workspace: sarco workspace folder (None: ``$SARCO_HOME`` or ``./sarco_workspace``).

    Returns:
        The fold's output folder (checkpoint_final.pth, sarco_provenance.json, training log).

    Example:
        >>> train(0, TrainOptions(trainer="nnunet", epochs=5, device="cpu"), workspace="ws")  # doctest: +SKIP
        PosixPath('ws/nnUNet_results/Dataset501_Freeman/SarcoUNetTrainer__sarcoPlans_cpu__2d/fold_0')
    """
    from sarco_nn.training.run import train_fold

    if str(fold).strip().lower() == "5fold":
        raise SarcoError("api.train trains one fold", fix="call it once per fold 0..4 (training.run.expand_folds).")
    return train_fold(_ws(workspace), str(fold), dataset=options.dataset, trainer=options.trainer,
                      preset=options.preset, epochs=options.epochs, iterations=options.iterations,
                      device=options.device, continue_training=options.continue_training,
                      pretrained=_path(options.pretrained), validate=options.validate, num_gpus=options.num_gpus,
                      val_best=options.val_best)


# -------------------------------------------------------------------------------- postprocess
def postprocess(*, dataset: str | int | None = None, trainer: str | None = None, preset: str | None = None,
                workspace: PathLike | Workspace | None = None) -> dict[str, Any]:
    """Let nnU-Net decide the postprocessing on a model's cross-validation predictions (after all folds).

    Args:
        dataset: dataset id or name (None: the only one).
        trainer: which trained model (``smit``, ``nnunet``, ``resenc`` or a class name; None: the only one).
        preset: which planned preset (None: the only one).
        workspace: sarco workspace folder (None: ``$SARCO_HOME`` or ``./sarco_workspace``).

    Returns:
        nnU-Net's decision: postprocessing_fns, and the cross-validation Dice before
        (``input_folder``) and after (``postprocessed``) under ``foreground_mean``.

    Example:
        >>> postprocess(trainer="smit", workspace="ws")["postprocessing_fns"]  # doctest: +SKIP
        []
    """
    from sarco_nn.model_store import find_model
    from sarco_nn.postprocessing import determine_postprocessing

    ws = _ws(workspace)
    return determine_postprocessing(ws, find_model(ws, dataset, trainer, preset))


# ------------------------------------------------------------------------------------ predict
# `PredictOptions` is the library's own (`sarco_nn.predict_options`): one field list for every layer.
@dataclass(frozen=True)
class PredictResult:
    """Where `predict` wrote its table, and how many cases failed.

    Attributes:
        results_csv: results.csv (one row per scan of the output folder, earlier runs included).
        n_failed: failed cases (their reasons are in the table's ``reasons`` column).
        errors: the ``reasons`` of the failed rows that belong to this call's inputs, in table order.
    """

    results_csv: Path
    n_failed: int
    errors: tuple[str, ...] = ()


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

    _require("path", inputs=inputs, output=output)
    if Path(output).exists() and not Path(output).is_dir():  # before any model is loaded
        raise InputError("the output is a file, not a folder", output,
                         "give -o a new or empty folder (predict writes masks/, overlays/ and results.csv into it)")
    results, failed = run_predict(_ws(workspace), Path(inputs), Path(output), options)
    return PredictResult(Path(results), int(failed), _failed_reasons(Path(results), Path(inputs)) if failed else ())


def _failed_reasons(results_csv: Path, inputs: Path) -> tuple[str, ...]:
    """The reasons of the failed rows of these inputs (an output folder may hold earlier runs' rows)."""
    import csv

    from sarco_nn.inference import discover_scans, input_keys

    seen = input_keys(discover_scans(inputs))
    with open(results_csv, newline="", encoding="utf-8") as handle:
        return tuple(row["reasons"] for row in csv.DictReader(handle)
                     if row["status"] == "failed" and row["input"] in seen)


def predict_merge(parts: Sequence[PathLike], *, output: PathLike, allow_incomplete: bool = False) -> MergeResult:
    """Merge the results.csv of the parts of one batch (``predict`` with ``part``/``parts``) into one.

    The masks stay in the part folders; the merged table points at them, and review.html covers
    the whole batch. Each part's run file records its inputs: a part that has not finished every
    one (killed, or still running) makes the batch incomplete, refused naming the part and its
    missing cases.

    Args:
        parts: the output folders of every part of the batch.
        output: folder for the merged results.csv and review.html (not a part folder).
        allow_incomplete: merge an incomplete batch anyway; each missing scan gets a ``failed`` row
            (reason ``not_predicted``) and `MergeResult.missing` names them.

    Returns:
        `MergeResult` (results_csv, n_rows, n_parts, missing, warnings).

    Example:
        >>> predict_merge(["out/part0", "out/part1"], output="out/all").n_rows  # doctest: +SKIP
        120
    """
    from sarco_nn.inference import merge_predictions

    if isinstance(parts, (str, os.PathLike)):  # a str is a Sequence: "out/p0" was merged as the parts "o", "u", ...
        raise SarcoError(f"parts={str(parts)!r} is one path, not a list of part folders",
                         fix="pass a list of the parts' -o folders, e.g. parts=['out/part0', 'out/part1'].")
    _require("path", output=output)
    _require("flag", allow_incomplete=allow_incomplete)
    for part in parts:
        _require("path", part=part)
    return merge_predictions([Path(p) for p in parts], Path(output), allow_incomplete=allow_incomplete)


# ------------------------------------------------------------------------------------ measure
@dataclass(frozen=True)
class MuscleMeasurement:
    """One measured axial slice.

    Attributes:
        slice_index: slice along the mask's own slice axis as stored (0 for a 2-D mask); None for a
            level the vertebra labels cannot place (status ``failed``, e.g. ``l3_not_in_view``).
        sma_cm2: skeletal muscle area, cm² (pixels x in-plane spacing; slice thickness never enters);
            None on a ``failed`` level.
        smi_cm2_m2: skeletal muscle index SMA / height², cm²/m² (None without a height).
        muscle_hu_mean: mean CT value of the counted pixels, HU (None without the CT).
        hu_gate: the (low, high) HU gate applied, or None.
        sarcopenic: the flag under `threshold_set`; None when it may not be given (sex, height or
            BMI missing, or a reason that withholds it: an empty or implausible mask, not a CT).
        threshold_set: name of the threshold set used.
        threshold: the cut-off applied, in words (e.g. ``"SMA < 144 cm² (paper, M)"``).
        status: ``ok`` / ``review`` / ``failed`` (`sarco_nn.status`), as ``sarco measure`` reports it.
        reasons: ``(code, message)`` pairs behind a status other than ``ok``.
        level: vertebral level of the slice (``T12`` ... ``L5``): as given, or each of several
            levels found from `vertebrae`.
        level_source: how the slice is known to be that level: ``declared`` (the caller's
            `level` for the given slice) or ``vertebrae (centroid)`` (found from vertebra labels).
        mask_slices: axial slices in the mask (1 for a 2-D mask or a one-slice volume).
        ct_warnings: the CT's own reasons (``code: message``, also in `reasons`), which
            ``sarco measure`` prints as warnings.
        record: every value of this slice as ``sarco measure --json`` prints it: the above plus
            n_pixels and, with body composition, IMAT/VAT/SAT areas (cm²), HU mean/SD, indices
            (cm²/m²) and the myosteatosis flag.
    """

    slice_index: int | None
    sma_cm2: float | None
    smi_cm2_m2: float | None
    muscle_hu_mean: float | None
    hu_gate: tuple[float, float] | None
    sarcopenic: bool | None
    threshold_set: str
    threshold: str
    status: str = "ok"
    reasons: tuple[tuple[str, str], ...] = ()
    level: str = DEFAULT_LEVEL
    level_source: str = "declared"
    mask_slices: int = 1
    ct_warnings: tuple[str, ...] = ()
    record: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def measure(mask: PathLike, *, image: PathLike | None = None, slice_index: int | None = None,
            label: int | None = None, sex: str | None = None, height_m: float | None = None,
            weight_kg: float | None = None, hu_gate: bool = False, thresholds: str = DEFAULT_THRESHOLD_SET,
            tissues: bool = False, labels_file: PathLike | None = None, level: str | Sequence[str] = DEFAULT_LEVEL,
            vertebrae: PathLike | None = None, hu_convention: str | None = None,
            myosteatosis: str = DEFAULT_MYOSTEATOSIS_SET, cli_names: bool = False) -> list[MuscleMeasurement]:
    """SMA (cm²), SMI (cm²/m²), mean muscle HU and the sarcopenia flag from an existing mask.

    Optionally the body composition too (muscle, IMAT, VAT, SAT; indices; myosteatosis).

    Args:
        mask: muscle mask file (NIfTI/MHA/NRRD): one 2-D slice or a 3-D volume, any orientation.
        image: the CT the mask was drawn on (same grid), for muscle HU and the HU gate.
        slice_index: 3-D mask: the slice to measure, along the image's own stored slice axis
            (ITK-SNAP/Slicer k). None: every slice holding `label`.
        label: label value of muscle in the mask (None: the labels.json in use names it, else 1;
            a value contradicting that labels.json is refused).
        sex: ``"M"`` or ``"F"`` (any spelling `thresholds.normalise_sex` knows), for the flag.
        height_m: height in metres, for SMI.
        weight_kg: weight in kg (BMI, used by the ``martin`` set).
        hu_gate: count only pixels within the muscle HU gate -29..150 HU (needs `image`).
        thresholds: ``paper``, ``prado``, ``martin`` or a JSON/YAML threshold file.
        tissues: also measure the body composition (in `MuscleMeasurement.record`). Without it,
            a mask holding muscle plus another tissue value is measured as one anyway.
        labels_file: labels.json naming the tissue values (default: a labels.json beside the mask,
            else muscle 1, imat 2, vat 3, sat 4); implies `tissues`.
        level: vertebral level of the slice (``T12`` ... ``L5``), or several levels (with
            `vertebrae`): one measurement per (slice, level). Flags only where the threshold set
            was published for that level (every built-in set: L3); elsewhere areas only, and
            `MuscleMeasurement.threshold` says why.
        vertebrae: vertebra label map on the mask's grid (TotalSegmentator numbering) or
            TotalSegmentator's output folder (``vertebrae_L1.nii.gz``, ...): each level's slice by
            the centroid rule of `l3.rules`. Needed for several levels; not with `slice_index`.
        hu_convention: tissue HU rule: ``label`` (every labelled pixel) or ``alberta`` (muscle
            -29..150, adipose -190..-30 HU; gates the SMA too). None: alberta with `hu_gate`, else label.
        myosteatosis: myosteatosis set (muscle HU cut-offs): ``martin_myosteatosis`` or a file.
        cli_names: name options in error messages as ``sarco measure`` flags (``--height``) rather
            than as these arguments; the command line sets it.

    Returns:
        One `MuscleMeasurement` per measured slice, in slice order; with several levels, per
        (slice, level) in the order the levels were given. A level the vertebra labels cannot place
        (cut by the scan edge, absent) is a ``failed`` one (no numbers, its reason and fix) while the
        others are measured; when no level can be placed, the first one's error is raised.

    Example:
        >>> [m] = measure("l3_mask.nii.gz", image="l3_ct.nii.gz", sex="F", height_m=1.62)  # doctest: +SKIP
        >>> round(m.sma_cm2, 1), m.sarcopenic  # doctest: +SKIP
        (98.3, True)
        >>> [l1, l3] = measure("mask_3d.nii.gz", level=["L1", "L3"], vertebrae="vertebrae.nii.gz")  # doctest: +SKIP
        >>> l1.sarcopenic, l1.level_source  # doctest: +SKIP
        (None, 'vertebrae (centroid)')
    """
    from sarco_nn.mask_measurement import measure_mask

    _require("path", mask=mask)
    _require("path", optional=True, image=image, labels_file=labels_file, vertebrae=vertebrae)
    _require("whole", optional=True, slice_index=slice_index, label=label)
    _require("number", optional=True, height_m=height_m, weight_kg=weight_kg)
    _require("text", optional=True, sex=sex, hu_convention=hu_convention)
    _require("path", thresholds=thresholds, myosteatosis=myosteatosis)  # a set name or a file
    _require("flag", hu_gate=hu_gate, tissues=tissues, cli_names=cli_names)
    _require("levels", level=level)
    report = measure_mask(mask, image=image, slice_index=slice_index, label=label, sex=sex, height_m=height_m,
                          weight_kg=weight_kg, hu_gate=hu_gate, thresholds=thresholds, tissues=tissues,
                          labels_file=labels_file, level=level, vertebrae=vertebrae, hu_convention=hu_convention,
                          myosteatosis=myosteatosis, cli=cli_names)
    warnings = tuple(str(r) for r in report.input_reasons)
    return [MuscleMeasurement(
        slice_index=o["slice_index"], sma_cm2=None if o["sma_cm2"] is None else float(o["sma_cm2"]), smi_cm2_m2=o["smi_cm2_m2"],
        muscle_hu_mean=o["muscle_hu_mean"], hu_gate=None if o["hu_gate"] is None else tuple(o["hu_gate"]),
        sarcopenic=o["sarcopenic"] if isinstance(o["sarcopenic"], bool) else None, threshold_set=o["threshold_set"],
        threshold=o["threshold"], status=o["status"], reasons=tuple((r["code"], r["message"]) for r in o["reasons"]),
        level=o["level"], level_source=o["level_source"], mask_slices=report.n_mask_slices, ct_warnings=warnings,
        record=o)
        for o in report.objects]


# ----------------------------------------------------------------------------------- evaluate
def evaluation_tissue_line(summary: Mapping[str, Any]) -> str | None:
    """The one console line of an `evaluate` summary's tissues beyond muscle (None for muscle only):
    Dice, area bias (cm²) and HU bias per tissue.

    Args:
        summary: the summary `evaluate` returns (its ``tissues`` entry is read).

    Returns:
        The line, or None when only muscle was evaluated.

    Example:
        >>> evaluation_tissue_line({"tissues": {}}) is None
        True
    """
    from sarco_nn.evaluation.tissues import console_line

    return console_line(summary.get("tissues"))


def evaluate(predictions: PathLike | None = None, *, reference: PathLike | None = None,
             clinical: PathLike | None = None, output: PathLike | None = None,
             thresholds: str = DEFAULT_THRESHOLD_SET, images: PathLike | None = None,
             at_annotated: PathLike | None = None, crossval: bool = False, dataset: str | int | None = None,
             trainer: str | None = None, label: int | None = None,
             workspace: PathLike | Workspace | None = None, cli_names: bool = False) -> dict[str, Any]:
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
        trainer: crossval: which trained model when several exist (smit/nnunet/resenc, a trainer
            class name or a whole model folder name, matched exactly).
        label: muscle value in the reference masks (None: the drop's labels.json beside them, else 1);
            predictions are read with sarco's own label 1.
        workspace: crossval: sarco workspace folder.
        cli_names: name options in error messages as ``sarco evaluate`` flags (``--reference``);
            the command line sets it.

    Returns:
        The summary dict (also summary.json): n_cases, dice_mean, sma_mae_cm2 (cm²),
        sma_bias_cm2, sma_icc, accuracy, sensitivity, specificity, folds, report_dir, ...

    Example:
        >>> evaluate("results/", reference="manual_masks/", clinical="clinical.csv")["dice_mean"]  # doctest: +SKIP
        0.93
    """
    from sarco_nn.evaluation.evaluate import evaluate_crossval, evaluate_folder

    _require("path", optional=True, predictions=predictions, reference=reference, clinical=clinical, output=output,
             images=images, at_annotated=at_annotated)
    _require("path", thresholds=thresholds)
    _require("whole", optional=True, label=label)
    _require("flag", crossval=crossval, cli_names=cli_names)
    if crossval:
        if predictions is not None or reference is not None:
            raise SarcoError(f"{'--' if cli_names else ''}crossval finds predictions and references itself",
                             fix="drop PRED_DIR and --reference." if cli_names else "drop predictions and reference.")
        return evaluate_crossval(None if workspace is None else _ws(workspace), dataset, _path(output), thresholds,
                                 trainer=trainer, label=label)
    if predictions is None or reference is None:
        if cli_names:
            raise SarcoError("PRED_DIR and --reference are required", fix="or use --crossval.")
        raise SarcoError("predictions and reference are both required", fix="or pass crossval=True.")
    out = Path(output) if output is not None else Path(predictions) / "evaluation"
    return evaluate_folder(Path(predictions), Path(reference), _path(clinical), out, thresholds,
                           images_dir=_path(images), annotated_dir=_path(at_annotated), label=label)


# ---------------------------------------------------------------------------------- demo data
def demo_data(out_dir: PathLike, *, cases: int = 40, seed: int = 0, matrix: int = 512, volumes: bool = False,
              case_prefix: str = "case", family: str = "A") -> Path:
    """Write synthetic L3 phantoms in the drop-in layout, with their exact areas (truth.csv).

    Masks hold muscle 1, IMAT 2, VAT 3, SAT 4 (declared in labels.json); clinical.csv gives sex,
    height and weight. Never writes into an existing non-empty folder.

    Args:
        out_dir: new folder for images/, masks/, labels.json, clinical.csv, truth.csv.
        cases: number of phantom cases.
        seed: random seed (different seeds give disjoint cohorts).
        matrix: image matrix edge, pixels.
        volumes: whole T12-S1 volumes with the mask on the L3 slice (and vertebrae/) instead of slices.
        case_prefix: prefix of the case ids.
        family: ``A`` (the demo's training site), ``A-wide`` (A domain-randomised: arms, kernels,
            noise, contrast, wide air, truncation) or ``B`` (an independently designed external site).

    Returns:
        The folder written.

    Example:
        >>> demo_data("demo/drop", cases=4, matrix=128)  # doctest: +SKIP
        PosixPath('demo/drop')
    """
    _require("path", out_dir=out_dir)
    _require("whole", cases=cases, seed=seed, matrix=matrix)
    _require("flag", volumes=volumes)
    _require("text", case_prefix=case_prefix, family=family)
    from dataset_conversion.phantom import write_dropin_dataset

    return write_dropin_dataset(Path(out_dir), n_cases=cases, seed=seed, matrix=matrix, volumes=volumes,
                                case_prefix=case_prefix, family=family)


def phantom_family(family: str) -> str:
    """The canonical name of a phantom family, so messages and folders spell it one way.

    Args:
        family: a family name in any case: ``A``, ``A-wide`` or ``B``.

    Returns:
        The canonical spelling ("a-wide" -> "A-wide"); SarcoError for an unknown family.

    Example:
        >>> phantom_family("b")
        'B'
    """
    from dataset_conversion.phantoms.writer import check_family

    return check_family(family)


# ------------------------------------------------------------------------------ check weights
@dataclass(frozen=True)
class WeightsCheck:
    """Would a weights file load into the SMIT encoder `train` builds? (`check_weights`)

    Attributes:
        source: the file checked.
        loadable: True when ``train(..., TrainOptions(pretrained=source))`` would load it.
        checked_against: which network it was matched against, in words (None: file unreadable).
        error: why it would not load (None when it would).
        report: `models.pretrained.LoadReport` (matched/missing/unexpected tensors); None when the
            file could not be read at all.
    """

    source: Path
    loadable: bool
    checked_against: str | None
    error: str | None
    report: Any = None

    def to_json(self) -> dict[str, Any]:
        """The object ``sarco check-weights --json`` prints."""
        if self.report is None:
            return {"source": str(self.source), "loadable": False, "error": self.error}
        return {**self.report.to_json(), "checked_against": self.checked_against, "loadable": self.loadable,
                "error": self.error}


def _check_tissues(tissues: int, preset: PathLike | None, name: Callable[[str], str]) -> None:
    """One rule for a tissue count beside a preset (check-weights, pretrain): at least 1, and more than 1 only
    with a preset, since the network of a several-tissue model is its preset's `multi_tissue_network` (without
    one, the count was silently ignored)."""
    if tissues < 1:
        raise SarcoError(f"{name('tissues')} must be at least 1, got {tissues}",
                         fix="pass 1 (muscle only) or 4 (muscle, IMAT, VAT, SAT).")
    if tissues > 1 and preset is None:
        raise SarcoError(f"{name('tissues')} {tissues} needs {name('preset')}: the network of a several-tissue model "
                         "is its preset's multi_tissue_network",
                         fix=f"add {name('preset')} P (the preset you train with).")


def check_weights(file: PathLike, *, dims: int = 2, min_fraction: float = 0.9, preset: str | None = None,
                  tissues: int = 1, cli_names: bool = False) -> WeightsCheck:
    """Match a weights file against the SMIT encoder ``train --pretrained`` would build, before a long run.

    The network is the one the trainer builds: ``preset``'s SMIT config when given, else the
    config stored in a sarco encoder file, else Trans-Small.

    Args:
        file: pretrained SMIT weights: official .pt, nnU-Net checkpoint or a sarco encoder.pt.
        dims: network to check against: 2 (L3 slices) or 3 (volumes).
        min_fraction: fraction of the encoder's tensors (0..1) that must match.
        preset: check against the SMIT network this plan preset trains.
        tissues: with `preset`, the number of tissues the model segments: the planner gives a dataset of several
            its preset's `multi_tissue_network` (`presets.preset_for_dataset`), so 4 checks against that network.
        cli_names: name options in error messages as ``sarco check-weights`` flags (``--dims``).

    Returns:
        `WeightsCheck` (loadable, error, the load report). An unreadable file is a
        ``loadable=False`` result, not an exception; a wrong ``dims``, ``min_fraction`` (outside 0..1) or
        ``tissues`` raises SarcoError.

    Example:
        >>> check_weights("pre2d/encoder.pt", dims=2).loadable  # doctest: +SKIP
        True
    """
    def name(option: str) -> str:
        return f"--{option.replace('_', '-')}" if cli_names else option

    if dims not in (2, 3):
        raise SarcoError(f"{name('dims')} must be 2 or 3, got {dims}")
    _require("number", min_fraction=min_fraction)
    _require("whole", tissues=tissues)
    if not 0.0 <= min_fraction <= 1.0:  # NaN too: every comparison with it is False, so NaN passed every file
        raise SarcoError(f"{name('min_fraction')} must be a fraction from 0 to 1, got {min_fraction}",
                         fix=f"pass e.g. {name('min_fraction')} 0.9 (90 % of the encoder's tensors must match).")
    _check_tissues(tissues, preset, name)
    from sarco_nn.models.pretrained import check_report, inspect_pretrained_encoder

    path = Path(file)
    try:
        encoder, against = _target_encoder(path, dims, preset, tissues)
        report, _ = inspect_pretrained_encoder(encoder, path)
    except SarcoError as exc:
        return WeightsCheck(path, False, None, str(exc))
    try:
        check_report(report, min_fraction)
    except SarcoError as exc:
        return WeightsCheck(path, False, against, str(exc), report)
    return WeightsCheck(path, True, against, None, report)


def _target_encoder(file: Path, dims: int, preset: str | None, tissues: int = 1):
    """The encoder `train --pretrained` loads into, built from the same config source.

    The trainer's network is `build_smit_for_plans(..., config=smit_network_config(preset))` and its
    encoder is `SMITEncoder(1, dims, that config)`; so is this one, for the named preset (as the planner
    applies it to a dataset of `tissues` foreground labels: `presets.preset_for_dataset`). With no
    preset, the file's own stored config (a `sarco pretrain` encoder) is what its preset trains.
    """
    from sarco_nn.models.pretrained import config_from_checkpoint
    from sarco_nn.models.smit import TRANS_SMALL, SMITEncoder

    if preset is not None:
        from sarco_nn.presets import load_preset, preset_for_dataset, smit_network_config

        config = smit_network_config(preset_for_dataset(load_preset(preset), tissues))
        against = f"the SMIT network of preset {preset!r}" + (f" for {tissues} tissues" if tissues > 1 else "")
    else:
        stored = config_from_checkpoint(file)
        config, against = (stored, "the network stored in the file") if stored else (TRANS_SMALL, "Trans-Small")
    return SMITEncoder(in_channels=1, spatial_dims=dims, config=config), against


# ----------------------------------------------------------------------------------- pretrain
def pretrain(unlabeled_dir: PathLike, *, output: PathLike = "sarco_pretrain", preset: str | None = None,
             tissues: int = 1, settings: Mapping[str, Any] | None = None, device: str = "auto", resume: bool = False,
             workers: int | None = None, progress: bool = True,
             echo: Callable[[str], None] | None = None) -> PretrainResult:
    """Self-supervised SMIT pretraining on unlabeled CT; writes encoder.pt for ``train(pretrained=...)``.

    Every default is the official SMIT value (`pretraining.config.PretrainConfig`), except those the
    preset's `pretraining` section sets (the recipe measured to work at that preset's scale); the
    keys of `settings` win over both.

    Args:
        unlabeled_dir: folder of unlabeled CTs (NIfTI/MHA/NRRD files, DICOM series folders).
        output: checkpoint folder (encoder.pt, card.json, loss_curve.png, checkpoint.pt).
        preset: pretrain the SMIT encoder this plan preset fine-tunes (None: Trans-Small).
        tissues: with `preset`, the number of tissues the model will segment: the planner gives a dataset of
            several its preset's `multi_tissue_network` (`presets.preset_for_dataset`), and so does this.
        settings: `PretrainConfig` fields to change, e.g. ``{"dims": 2, "crop_size": 256,
            "spacing_mm": 1.5, "epochs": 100}`` (crop edge in voxels, spacing in mm).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        resume: continue the run in `output` exactly where it stopped, with its own settings (a
            `settings["epochs"]` still changes its length; other keys that differ are ignored, and said so).
        workers: data-loading workers (None: 0 on CPU, up to 8 on CUDA).
        progress: show a progress bar with the loss terms.
        echo: where status lines go (None: nowhere).

    Returns:
        `pretraining.trainer.PretrainResult` (encoder, card, steps_done, epochs_done, stopped_early, ...).

    Example:
        >>> pretrain("ct_archive", output="pre2d", settings={"dims": 2, "crop_size": 256}).encoder  # doctest: +SKIP
        PosixPath('pre2d/encoder.pt')
    """
    _require("path", unlabeled_dir=unlabeled_dir, output=output)
    _require("path", optional=True, preset=preset)
    _require("text", device=device)
    _require("flag", resume=resume, progress=progress)
    _require("whole", optional=True, workers=workers)
    _require("whole", tissues=tissues)
    _check_tissues(tissues, preset, lambda option: option)
    if settings is not None and not isinstance(settings, Mapping):
        raise SarcoError(f"settings is {type(settings).__name__}, not a mapping of PretrainConfig fields",
                         fix='pass settings as a dict, e.g. {"dims": 2, "crop_size": 256}, or None.')
    from sarco_nn.presets import load_preset, preset_for_dataset, pretraining_defaults, training_settings
    from sarco_nn.pretraining.config import PretrainConfig
    from sarco_nn.pretraining.trainer import run_pretraining

    chosen = dict(settings or {})
    if preset is not None:
        if "encoder" in chosen:
            raise SarcoError("preset and settings['encoder'] both name the encoder", fix="give one of them.")
        loaded = preset_for_dataset(load_preset(preset), tissues)
        chosen = {**pretraining_defaults(loaded), **chosen,
                  "encoder": training_settings(loaded, "smit").get("network")}
    try:
        cfg = PretrainConfig(**chosen)
    except (TypeError, ValueError) as exc:
        raise SarcoError(str(exc), fix="correct the option (see sarco pretrain --help).") from None
    # resume: what the run keeps of these is `pretraining.config.resumed_config`'s to decide, from what was typed
    return run_pretraining(Path(unlabeled_dir), Path(output), cfg, device=device, resume=resume, workers=workers,
                           progress=progress, echo=echo, requested=dict(settings or {}))


# ---------------------------------------------------------------------------------------- L3
def locate_l3(volume: PathLike, *, l3_from: PathLike | None = None, rule: str = "centroid", locator: str = "auto",
              model_dir: PathLike | None = None, thumbnail: PathLike | None = None, level: str = DEFAULT_LEVEL,
              workspace: PathLike | Workspace | None = None) -> L3Location:
    """Find the L3 slice (or another vertebra's, with `level`) of a CT volume and its z position (mm).

    Args:
        volume: CT volume: NIfTI/MHA/NRRD file or DICOM series folder, any orientation.
        l3_from: vertebra label map on the CT's grid (TotalSegmentator numbering, L3 = 29) or
            TotalSegmentator's output folder.
        rule: L3 slice from vertebra labels: ``centroid`` or ``max-area``.
        locator: ``auto``, ``vertebrae``, ``model`` or ``totalsegmentator``.
        model_dir: trained localizer (None: <workspace>/l3_localizer; for another level
            <workspace>/localizer_<LEVEL>).
        thumbnail: also write a sagittal PNG marking the level here.
        level: vertebra to find (any case, e.g. ``"l1"``). Not L3: only a localizer trained for it
            (``train_l3(level=...)``) answers, so `locator` must be ``auto`` or ``model``.
        workspace: sarco workspace folder (for the default localizer).

    Returns:
        `l3.result.L3Location`: slice_index (0 = most inferior slice), stored_index (the file's own
        order), z_mm, method, rule, confidence. Raises `L3NotFound` (a SarcoError) when L3 is not in
        view; for another level its subclass `l3.result.LevelNotFound`.

    Example:
        >>> locate_l3("ct.nii.gz", l3_from="vertebrae.nii.gz").slice_index  # doctest: +SKIP
        41
    """
    from sarco_nn.body_composition import check_level

    _require("path", volume=volume)
    _require("path", optional=True, l3_from=l3_from, model_dir=model_dir, thumbnail=thumbnail)
    _require("text", rule=rule, locator=locator, level=level)
    level = check_level(level)  # a bad level is one line before any file is read or folder made
    from sarco_nn.l3.locate import locate_l3 as run_locate
    from sarco_nn.l3.locate import read_volume
    from sarco_nn.l3.localizer import default_model_dir

    chosen_dir = Path(model_dir) if model_dir is not None else default_model_dir(_ws(workspace).root, level)
    location = run_locate(Path(volume), method=locator, vertebra_mask=_path(l3_from), rule=rule, model_dir=chosen_dir,
                          level=level)
    if thumbnail is not None:
        from sarco_nn.l3.thumbnail import save_l3_thumbnail

        save_l3_thumbnail(read_volume(Path(volume))[1], location, Path(thumbnail), title=Path(volume).name)
    return location


@dataclass(frozen=True)
class L3Training:
    """What `train_l3` wrote: the localizer checkpoint and its training/held-out report."""

    checkpoint: Path
    report: dict[str, Any]


def train_l3(source: PathLike | None = None, *, drop_dir: PathLike | None = None, phantoms: int = 0,
             model_dir: PathLike | None = None, steps: int = 1500, max_minutes: float | None = None,
             validation: float = 0.2, seed: int = 0, level: str = DEFAULT_LEVEL,
             workspace: PathLike | Workspace | None = None) -> L3Training:
    """Train the L3 localizer (a CNN on bone-window projections) on CPU; report its held-out error.

    With another `level` the same network learns that vertebra instead (nothing in it is specific
    to L3, only the annotation is); the checkpoint records the level, so the L3 path refuses it.

    Args:
        source: drop-in folder of whole volumes (mask on the L3 slice, or on `level`'s), or a
            converted dataset folder with manifest.csv (then `drop_dir`). None: phantoms only.
        drop_dir: original drop folder of a converted dataset.
        phantoms: add this many phantom volumes (T12-S1) to the training set.
        model_dir: output folder (None: <workspace>/l3_localizer; for another level
            <workspace>/localizer_<LEVEL>).
        steps: training steps (batches of 8 random crops).
        max_minutes: stop early after this many minutes.
        validation: share of volumes (0..1) held out for the error report.
        seed: random seed.
        level: vertebra to localize, ``T12`` ... ``L5`` (any case); phantoms give it from their
            vertebra labels.
        workspace: sarco workspace folder (for the default output folder).

    Returns:
        `L3Training`: checkpoint, and report with ``level``, ``training`` (cases, steps, seconds),
        ``held_out`` (n_cases, mean_abs_error_mm, mean_abs_error_slices, max_abs_error_mm,
        n_not_found) and ``notes``.

    Example:
        >>> train_l3("l3_drop", validation=0.2).report["held_out"]["mean_abs_error_mm"]  # doctest: +SKIP
        4.1
    """
    from sarco_nn.body_composition import check_level

    _require("path", optional=True, source=source, drop_dir=drop_dir, model_dir=model_dir)
    _require("whole", phantoms=phantoms, steps=steps, seed=seed)
    _require("number", validation=validation)
    _require("number", optional=True, max_minutes=max_minutes)
    _require("text", level=level)
    level = check_level(level)  # before torch loads or a localizer_<LEVEL> folder is named
    _check_l3_training(steps, max_minutes, phantoms, validation)
    if source is None and phantoms < 1:
        raise SarcoError("nothing to train on", fix="give a drop-in folder of volumes, or --phantoms N")
    import torch

    from sarco_nn.l3.localizer import default_model_dir
    from sarco_nn.l3.train_l3 import train_from_sources

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    out = Path(model_dir) if model_dir is not None else default_model_dir(_ws(workspace).root, level)
    path, report = train_from_sources(out, _path(source), _path(drop_dir), phantoms, validation, steps,
                                      None if max_minutes is None else 60.0 * max_minutes, seed, level=level)
    return L3Training(Path(path), report)


def _check_l3_training(steps: int, max_minutes: float | None, phantoms: int, validation: float) -> None:
    """Refuse train-l3 settings that train nothing (or never stop) before any volume is read: --steps 0 saved an
    untrained localizer as trained, --phantoms -2 beside a drop added none silently, --max-minutes NaN never stopped."""
    if steps < 1:
        raise SarcoError(f"steps={steps}: training needs at least 1 step", fix="pass --steps N (default 1500).")
    if max_minutes is not None and not (0.0 < max_minutes < float("inf")):  # NaN fails this too
        raise SarcoError(f"max_minutes={max_minutes} is no time limit: give a positive number of minutes",
                         fix="pass --max-minutes M with M > 0, or leave it out (stop after --steps).")
    if phantoms < 0:
        raise SarcoError(f"phantoms={phantoms} is no number of volumes", fix="pass --phantoms N with N >= 0.")
    if not 0.0 <= validation < 1.0:  # NaN too
        raise SarcoError(f"validation={validation} must be a share from 0 to below 1 of the volumes held out",
                         fix="pass e.g. --validation 0.2 (0: hold none out).")


# ----------------------------------------------------------------------------------- classify
def classify_train(fold: int | str = 0, *, arch: str = "densenet121", weights: PathLike | None = None,
                   unfreeze: str | None = None, epochs: int | None = None, batch_size: int = 16, lr: float = 1e-3,
                   input_size: int | None = None, patience: int = 8, balance: str = "weights",
                   thresholds: str = DEFAULT_THRESHOLD_SET, restart: bool = False, device: str = "auto",
                   dataset: str | int | None = None, workspace: PathLike | Workspace | None = None,
                   log: Callable[[str], None] = print) -> Path:
    """Train (or resume) one fold of the image-level sarcopenia classifier on the dataset's L3 slices.

    Args:
        fold: fold 0-4 of splits_final.json or ``"all"`` (every case); five folds are five calls.
        arch: ``densenet121``, ``resnet50``, ``inception_v3`` or ``inception_resnet_v2`` (needs timm).
        weights: local state dict (RadImageNet or ImageNet); None: random initialisation.
        unfreeze: ``incremental`` (default with weights), ``all`` (default without) or ``head``.
        epochs: epochs per stage (incremental) or in total (all/head); None: the defaults.
        batch_size: slices per batch.
        lr: learning rate of the first stage (later stages: halved each).
        input_size: input edge in pixels (None: 224, inception 299).
        patience: epochs without a better validation loss before a stage stops.
        balance: ``weights`` (class-weighted loss) or ``sampler`` (balanced batches).
        thresholds: threshold set deriving the labels from the masks: paper, prado, martin or a file.
        restart: discard this fold's earlier run instead of resuming it.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dataset: dataset id or name (None: the only one).
        workspace: sarco workspace folder.
        log: where progress lines go.

    Returns:
        The fold's output folder.

    Example:
        >>> classify_train(0, arch="densenet121", weights="RadImageNet-DenseNet121.pt")  # doctest: +SKIP
        PosixPath('sarco_workspace/sarco_classification/Dataset501_Freeman/densenet121/fold_0')
    """
    _require("text", arch=arch, balance=balance, device=device)
    _require("text", optional=True, unfreeze=unfreeze)
    _require("path", optional=True, weights=weights)
    _require("path", thresholds=thresholds)  # a set name or a file
    _require("whole", optional=True, epochs=epochs, input_size=input_size)
    _require("whole", batch_size=batch_size, patience=patience)
    _require("number", lr=lr)
    _require("flag", restart=restart)
    from sarco_nn.classification.train import train_fold

    return train_fold(_ws(workspace), str(fold), dataset, arch, _path(weights), unfreeze, epochs, device,
                      batch_size=batch_size, lr=lr, input_size=input_size, patience=patience, balance=balance,
                      thresholds=thresholds, restart=restart, log=log)


@dataclass(frozen=True)
class ClassifierPredictions:
    """Where `classify_predict` wrote predictions.csv, and how many scans failed (status/reason columns)."""

    predictions_csv: Path
    n_failed: int


def classify_predict(inputs: PathLike, output: PathLike, *, arch: str | None = None,
                     folds: Sequence[str] | None = None, l3_slice: int | None = None, device: str = "auto",
                     dataset: str | int | None = None, workspace: PathLike | Workspace | None = None,
                     log: Callable[[str], None] = print) -> ClassifierPredictions:
    """Probability that each scan is sarcopenic: the mean of the fold classifiers.

    Args:
        inputs: a CT file, a DICOM series folder, or a folder of scans.
        output: output folder (predictions.csv).
        arch: which trained architecture (None: the only one).
        folds: which folds' classifiers (None: every cross-validation fold).
        l3_slice: axial slice index to use in a volume.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dataset: dataset id or name (None: the only one).
        workspace: sarco workspace folder.
        log: where progress lines go.

    Returns:
        `ClassifierPredictions` (predictions_csv, n_failed).

    Example:
        >>> classify_predict("scans/", "classified/").n_failed  # doctest: +SKIP
        0
    """
    _require("path", inputs=inputs, output=output)
    _require("text", optional=True, arch=arch)
    _require("whole", optional=True, l3_slice=l3_slice)
    _require("text", device=device)
    _require("folds", optional=True, folds=folds)
    from sarco_nn.classification.predict import predict_scans

    path, failures = predict_scans(_ws(workspace), Path(inputs), Path(output), dataset, arch,
                                   None if folds is None else [str(f) for f in folds], device, l3_slice, log=log)
    return ClassifierPredictions(Path(path), int(failures))


def classify_compare(*, arch: str | None = None, trainer: str | None = None, output: PathLike | None = None,
                     thresholds: str = DEFAULT_THRESHOLD_SET, dataset: str | int | None = None,
                     workspace: PathLike | Workspace | None = None,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Classifier vs the segmentation-derived flag on the same folds (Wilson CIs, AUROC, missed patients).

    Args:
        arch: which trained classifier architecture (None: the only one).
        trainer: segmentation model folder (or part of its name) when several exist.
        output: report folder (None: sarco_classification/<Dataset>/<arch>/comparison).
        thresholds: threshold set deriving the labels: paper, prado, martin or a file.
        dataset: dataset id or name (None: the only one).
        workspace: sarco workspace folder.
        log: where progress lines go.

    Returns:
        The summary: ``rows`` (per fold and pooled: approach, n, accuracy, sensitivity,
        specificity, balanced_accuracy, AUROC) and ``missed_sarcopenic`` (case ids per approach).

    Example:
        >>> classify_compare(arch="densenet121")["missed_sarcopenic"]  # doctest: +SKIP
        {'classifier': ['case_007'], 'segmentation': []}
    """
    from sarco_nn.classification.compare import compare

    return compare(_ws(workspace), dataset, arch, trainer, thresholds, _path(output), log=log)
