"""Classification baseline: architectures, unfreezing, local weights, labels, training, compare."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from dataset_conversion.convert import convert_dropin
from dataset_conversion.phantom import generate_phantom_slice, write_dropin_dataset
from sarco_nn.classification.compare import compare
from sarco_nn.classification.data import case_folds, derive_labels, load_splits, prepare_slice, window
from sarco_nn.classification.metrics import auroc
from sarco_nn.classification.models import (ARCHITECTURES, INCEPTION_AUX_MIN_SIZE, arch_spec, build_model,
                                            load_weights, parameter_groups)
from sarco_nn.classification.predict import predict_scans
from sarco_nn.classification.train import (CHECKPOINT_BEST, VALIDATION_FILE, class_weights, load_checkpoint,
                                           train_fold, train_step, write_validation_predictions)
from sarco_nn.classification.unfreeze import apply_stage, build_schedule, set_train_mode
from sarco_nn.clinical import read_clinical_csv, write_clinical_csv
from sarco_nn.commands.classify_cmd import classify_app
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.evaluation.classification import wilson_ci
from sarco_nn.thresholds import get_threshold_set
from sarco_nn.workspace import Workspace

torch.set_num_threads(1)

#: Smallest inputs each network accepts: keeps the CPU steps fast.
SMALL = {"densenet121": 64, "resnet50": 64, "inception_v3": 75, "inception_resnet_v2": 75}
DATASET = "Dataset501_Demo"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """8 phantom cases (matrix 128) converted into an nnU-Net raw dataset; copied per test that edits it."""
    root = tmp_path_factory.mktemp("classify")
    write_dropin_dataset(root / "drop", 8, seed=0, matrix=128)
    convert_dropin(root / "drop", root / "ws" / "nnUNet_raw", "Demo", 501)
    return root


def fresh_workspace(demo, tmp_path) -> Workspace:
    shutil.copytree(demo / "ws" / "nnUNet_raw", tmp_path / "ws" / "nnUNet_raw")
    return Workspace(tmp_path / "ws")


def phantom_batch(size: int, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(3)
    slices = [generate_phantom_slice(rng, sex="M", matrix=96, sarcopenic=bool(i % 2)) for i in range(n)]
    x = np.stack([prepare_slice(s.ct_hu, s.spacing_mm, size) for s in slices])[:, None]
    return torch.from_numpy(x), torch.tensor([i % 2 for i in range(n)])


# ------------------------------------------------------------------------------ architectures


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_each_architecture_builds_and_takes_a_training_step(arch):
    torch.manual_seed(0)
    size = SMALL[arch]
    model = build_model(arch, size)
    groups = parameter_groups(model, arch)  # raises if a parameter sits in no group
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    assert all(groups.values()), "every block of the schedule owns parameters"
    stage = build_schedule(arch, "all", 1, 1e-3)[0]
    apply_stage(model, arch, stage)
    set_train_mode(model, arch, stage)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = phantom_batch(size)
    loss = train_step(model, x, y, optimizer, class_weights(torch.tensor([0, 0, 1])), torch.Generator().manual_seed(0))
    assert np.isfinite(loss)
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith(arch_spec(arch).head) for k in changed)
    assert any(not k.startswith(arch_spec(arch).head) for k in changed)
    model.eval()
    with torch.no_grad():
        assert model(x.expand(-1, 3, -1, -1)).shape == (2, 2)


def test_inception_v3_auxiliary_head_adds_to_the_loss_at_native_size():
    torch.manual_seed(0)
    model = build_model("inception_v3", INCEPTION_AUX_MIN_SIZE)
    assert model.AuxLogits is not None and build_model("inception_v3", 75).AuxLogits is None
    model.train()
    x, y = phantom_batch(INCEPTION_AUX_MIN_SIZE)
    out = model(x.expand(-1, 3, -1, -1))
    from sarco_nn.classification.train import compute_loss

    main_only = torch.nn.functional.cross_entropy(out.logits, y)
    assert compute_loss(out, y).item() > main_only.item()


def test_missing_timm_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(SarcoError, match="timm"):
        build_model("inception_resnet_v2", 75)
    with pytest.raises(SarcoError, match="too small"):
        build_model("inception_v3", 64)
    with pytest.raises(SarcoError, match="unknown architecture"):
        build_model("vgg16")


# ------------------------------------------------------------------------------ unfreezing


def test_incremental_unfreezing_changes_trainable_sets_stage_by_stage():
    torch.manual_seed(0)
    arch = "resnet50"
    model = build_model(arch, 64)
    groups = parameter_groups(model, arch)
    schedule = build_schedule(arch, "incremental", 2, 1e-3)
    assert [s.epochs for s in schedule] == [2] * 6
    assert all(a.lr > b.lr for a, b in zip(schedule, schedule[1:]))
    expected_order = ["head", "layer4", "layer3", "layer2", "layer1", "stem"]
    previous: set[str] = set()
    for stage, newest in zip(schedule, expected_order):
        apply_stage(model, arch, stage)
        trainable = {k for k, p in model.named_parameters() if p.requires_grad}
        assert trainable - previous == set(groups[newest])
        assert previous < trainable
        previous = trainable
    assert previous == {k for k, _ in model.named_parameters()}

    # in the head stage a real step moves only the head; frozen BatchNorm statistics stay put
    head = schedule[0]
    apply_stage(model, arch, head)
    set_train_mode(model, arch, head)
    assert not model.layer4[0].bn1.training and model.training
    state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    train_step(model, *phantom_batch(64), optimizer, augment_batch=False)
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, state[k])}
    assert moved == {"fc.weight", "fc.bias"}

    assert [s.trainable for s in build_schedule(arch, "head", 3, 1e-3)] == [("head",)]
    assert len(build_schedule(arch, "all", 3, 1e-3)[0].trainable) == 6
    with pytest.raises(SarcoError, match="unfreeze mode"):
        build_schedule(arch, "gradual", 1, 1e-3)


# ------------------------------------------------------------------------------ local weights


def test_local_torchvision_weights_load_with_a_full_match_report(tmp_path):
    from torchvision import models

    torch.manual_seed(1)
    source = models.resnet50(weights=None)  # the ImageNet layout: 1000-class head
    path = tmp_path / "resnet50_imagenet.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    model = build_model("resnet50", 64)
    report = load_weights(model, "resnet50", path)
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatched == []
    assert sorted(report.head_skipped) == ["fc.bias", "fc.weight"]
    assert report.fraction_matched == 1.0 and len(report.matched) == len(source.state_dict()) - 2
    assert torch.equal(model.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    assert "100.0 %" in report.summary_line()

    # RadImageNet-style release: the backbone saved as nn.Sequential(children[:-1]) behind `backbone.`
    dense = models.densenet121(weights=None)
    backbone = torch.nn.Sequential(*list(dense.children())[:-1])
    rad = tmp_path / "RadImageNet-DenseNet121.pt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}, rad)
    target = build_model("densenet121", 64)
    rad_report = load_weights(target, "densenet121", rad)
    assert rad_report.fraction_matched == 1.0 and not rad_report.unexpected and rad_report.renamed > 0
    assert torch.equal(target.features.denseblock2.denselayer3.conv1.weight,
                       dense.features.denseblock2.denselayer3.conv1.weight)

    with pytest.raises(InputError, match="backbone tensors match"):
        load_weights(build_model("resnet50", 64), "resnet50", rad)  # DenseNet weights for a ResNet
    with pytest.raises(InputError, match="not found"):
        load_weights(model, "resnet50", tmp_path / "absent.pt")


# ------------------------------------------------------------------------------ data


def test_labels_from_masks_match_thresholds(demo, tmp_path):
    raw = demo / "ws" / "nnUNet_raw" / DATASET
    clinical = read_clinical_csv(raw / "clinical.csv")
    with open(raw / "manifest.csv", newline="") as f:
        source = {row["pid"]: row["source_case_id"] for row in csv.DictReader(f)}
    with open(demo / "drop" / "truth.csv", newline="") as f:
        true_sma = {row["case_id"]: float(row["true_sma_cm2"]) for row in csv.DictReader(f)}
    for name in ("paper", "prado"):
        ts = get_threshold_set(name)
        labelled, excluded = derive_labels(raw, name)
        assert not excluded and len(labelled) == 8
        for case, item in labelled.items():
            r = clinical[case]
            sma = true_sma[source[case]]
            assert item.sma_cm2 == pytest.approx(sma, rel=1e-6)
            assert item.label == ts.is_sarcopenic(r.sex, sma, sma / r.height_m**2, r.bmi)
    paper = derive_labels(raw, "paper")[0]
    assert 0 < sum(c.label for c in paper.values()) < 8

    # an explicit sarcopenic column wins over the mask; a case without sex is left out with a reason
    ws = fresh_workspace(demo, tmp_path)
    raw2 = ws.raw / DATASET
    records = read_clinical_csv(raw2 / "clinical.csv")
    flipped = "Demo_0001"
    records[flipped] = replace(records[flipped], sarcopenic=not paper[flipped].label)
    records["Demo_0002"] = replace(records["Demo_0002"], sex=None)
    write_clinical_csv(raw2 / "clinical.csv", records.values())
    labelled, excluded = derive_labels(raw2, "paper")
    assert labelled[flipped].label is (not paper[flipped].label) and labelled[flipped].source == "clinical.csv"
    assert excluded == {"Demo_0002": "label undecidable: unknown sex"}


def test_prepare_slice_windows_and_keeps_physical_scale():
    def disc(spacing):
        n = 160
        yy, xx = np.mgrid[:n, :n]
        inside = ((yy - n / 2) * spacing[0]) ** 2 + ((xx - n / 2) * spacing[1]) ** 2 <= 100.0**2
        return np.where(inside, 40, -1000).astype(np.int16)

    areas = []
    for spacing in ((2.0, 2.0), (3.0, 3.0), (2.0, 3.0)):  # 320 / 480 mm fields, one with non-square pixels
        img = prepare_slice(disc(spacing), spacing, 100, fov_mm=500.0)
        assert img.shape == (100, 100) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
        inside = img > 0.25
        rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        assert abs(len(rows) - len(cols)) <= 1  # still round
        assert abs((rows[0] + rows[-1]) / 2 - 49.5) <= 1 and abs((cols[0] + cols[-1]) / 2 - 49.5) <= 1  # centred
        areas.append(inside.sum())
    expected = np.pi * (100 / 5.0) ** 2  # radius 100 mm at 5 mm per input pixel
    assert all(abs(a - expected) / expected < 0.08 for a in areas)
    assert window(np.array([-1000, -175, 37.5, 250, 3000])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_auroc_counts_ties_as_half():
    assert auroc([0.9, 0.8, 0.1, 0.8], [True, True, False, False]) == pytest.approx(0.875)
    assert np.isnan(auroc([0.1, 0.2], [True, True]))


# ------------------------------------------------------------------------------ train / predict


def test_train_resumes_after_interruption_then_predicts(demo, tmp_path):
    ws = fresh_workspace(demo, tmp_path)
    options = dict(arch="densenet121", unfreeze="incremental", epochs=1, device="cpu", input_size=64,
                   batch_size=4, progress=False, log=lambda _: None)

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fold(ws, 0, on_epoch_end=interrupt, **options)
    assert (ws.preprocessed / DATASET / "splits_final.json").exists()  # written like `sarco plan` does
    seen = []
    out = train_fold(ws, 0, on_epoch_end=lambda row: seen.append(row["epoch"]), **options)
    assert seen == [3, 4, 5, 6]  # resumed after the second of six one-epoch stages
    summary = json.loads((out / "summary.json").read_text())
    assert [r["epoch"] for r in summary["history"]] == [1, 2, 3, 4, 5, 6]
    assert [r["stage"] for r in summary["history"]][:2] == ["head", "head+denseblock4"]
    best = load_checkpoint(out / CHECKPOINT_BEST)
    assert best["val_loss"] == pytest.approx(min(r["val_loss"] for r in summary["history"]))
    splits = load_splits(ws, DATASET)
    with open(out / VALIDATION_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["case_id"] for r in rows) == sorted(splits[0]["val"])
    assert all(0.0 <= float(r["probability_sarcopenic"]) <= 1.0 for r in rows)

    mtime = (out / CHECKPOINT_BEST).stat().st_mtime_ns
    train_fold(ws, 0, **options)  # finished: nothing retrained
    assert (out / CHECKPOINT_BEST).stat().st_mtime_ns == mtime
    with pytest.raises(SarcoError, match="other settings"):
        train_fold(ws, 0, **{**options, "epochs": 2})

    scans = tmp_path / "scans"
    scans.mkdir()
    for case in ("case_000", "case_003"):
        shutil.copy(demo / "drop" / "images" / f"{case}.nii.gz", scans)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32)), str(scans / "bad.nii.gz"))
    air = sitk.GetImageFromArray((np.random.default_rng(0).normal(-1000, 10, (1, 64, 64))).astype(np.int16))
    sitk.WriteImage(air, str(scans / "air.nii.gz"))  # an all-air slice: never a probability (issue #14)
    path, failures = predict_scans(ws, scans, tmp_path / "pred", device="cpu", log=lambda _: None)
    with open(path, newline="") as f:
        predicted = {r["case_id"]: r for r in csv.DictReader(f)}
    assert failures == 2 and predicted["bad"]["status"] == "failed" and predicted["bad"]["reasons"]
    assert predicted["air"]["status"] == "failed" and "no_body" in predicted["air"]["reasons"]
    assert predicted["air"]["probability_sarcopenic"] == ""
    for case in ("case_000", "case_003"):
        p = float(predicted[case]["probability_sarcopenic"])
        assert predicted[case]["status"] == "ok" and 0 <= p <= 1 and predicted[case]["folds"] == "0"
        assert predicted[case]["sarcopenic"] == str(int(p >= 0.5))


# ------------------------------------------------------------------------------ compare


def fake_crossval(demo, tmp_path):
    """Classifier validation predictions and nnU-Net fold_k/validation masks on the dataset's splits."""
    ws = fresh_workspace(demo, tmp_path)
    raw = ws.raw / DATASET
    truth = {c: item.label for c, item in derive_labels(raw, "paper")[0].items()}
    fold_of = case_folds(load_splits(ws, DATASET))
    sarcopenic = sorted(c for c in truth if truth[c])
    healthy = sorted(c for c in truth if not truth[c])
    cls_missed, cls_false = sarcopenic[0], healthy[0]
    seg_missed, seg_absent = sarcopenic[1], healthy[1]
    model = ws.results / DATASET / "SarcoUNetTrainer__sarco_smoke__2d"
    for k in sorted(set(fold_of.values())):
        fold_path = ws.root / "sarco_classification" / DATASET / "resnet50" / f"fold_{k}"
        fold_path.mkdir(parents=True)
        (fold_path / CHECKPOINT_BEST).write_bytes(b"")
        (fold_path / "summary.json").write_text("{}")
        cases = [c for c in fold_of if fold_of[c] == k]
        write_validation_predictions(fold_path / VALIDATION_FILE, [
            {"case_id": c, "fold": k, "label": int(truth[c]), "label_source": "", "predicted_sarcopenic": "",
             "probability_sarcopenic": 0.2 if c == cls_missed else 0.7 if c == cls_false else
             (0.9 if truth[c] else 0.1)} for c in cases])
        (model / f"fold_{k}" / "validation").mkdir(parents=True)
        for c in cases:
            if c == seg_absent:
                continue
            mask = sitk.ReadImage(str(raw / "labelsTr" / f"{c}.nii.gz"))
            if c == seg_missed:  # every pixel muscle: SMA far above the cut-off
                full = sitk.GetImageFromArray(np.ones_like(sitk.GetArrayFromImage(mask)))
                full.CopyInformation(mask)
                mask = full
            sitk.WriteImage(mask, str(model / f"fold_{k}" / "validation" / f"{c}.nii.gz"))
    return ws, truth, fold_of, dict(cls_missed=cls_missed, cls_false=cls_false, seg_missed=seg_missed,
                                    seg_absent=seg_absent)


def test_compare_table_on_a_fake_crossval_layout(demo, tmp_path):
    ws, truth, fold_of, special = fake_crossval(demo, tmp_path)
    summary = compare(ws, log=lambda _: None)
    compared = [c for c in truth if c != special["seg_absent"]]
    assert summary["n_compared"] == len(compared) == 7
    assert summary["not_compared"] == {special["seg_absent"]: "no segmentation prediction"}
    assert summary["missed_sarcopenic"] == {"classifier": [special["cls_missed"]],
                                            "segmentation": [special["seg_missed"]]}
    pooled = {r["approach"]: r for r in summary["rows"] if r["fold"] == "pooled"}
    n_pos = sum(truth[c] for c in compared)
    n_neg = len(compared) - n_pos
    cls = pooled["classifier"]
    assert (cls["tp"], cls["fn"], cls["fp"], cls["tn"]) == (n_pos - 1, 1, 1, n_neg - 1)
    assert cls["sensitivity_ci"] == pytest.approx(list(wilson_ci(n_pos - 1, n_pos)))
    assert cls["balanced_accuracy"] == pytest.approx(((n_pos - 1) / n_pos + (n_neg - 1) / n_neg) / 2)
    scores = {c: 0.2 if c == special["cls_missed"] else 0.7 if c == special["cls_false"] else (0.9 if truth[c] else 0.1)
              for c in compared}
    assert cls["auroc"] == pytest.approx(auroc([scores[c] for c in compared], [truth[c] for c in compared]))
    seg = pooled["segmentation"]
    assert (seg["tp"], seg["fn"], seg["fp"], seg["tn"]) == (n_pos - 1, 1, 0, n_neg)
    per_fold = [r for r in summary["rows"] if r["fold"] != "pooled" and r["approach"] == "segmentation"]
    assert sum(r["n"] for r in per_fold) == 7 and len(per_fold) == len(set(fold_of.values()))

    out = ws.root / "sarco_classification" / DATASET / "resnet50" / "comparison"
    with open(out / "comparison.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 * (len(per_fold) + 1)
    assert float(table[-2]["sensitivity_ci_low"]) == pytest.approx(cls["sensitivity_ci"][0], rel=1e-5)
    report = (out / "comparison.md").read_text()
    assert special["cls_missed"] in report and special["seg_missed"] in report and "| pooled | classifier |" in report

    result = CliRunner().invoke(classify_app, ["compare", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert f"sarcopenic missed by classifier: {special['cls_missed']}" in result.output

    # a segmentation prediction found in another fold than splits_final.json says: refused
    case = special["cls_false"]
    wrong = (fold_of[case] + 1) % len(set(fold_of.values()))
    src = ws.results / DATASET / "SarcoUNetTrainer__sarco_smoke__2d" / f"fold_{fold_of[case]}" / "validation" / f"{case}.nii.gz"
    shutil.move(src, src.parents[2] / f"fold_{wrong}" / "validation" / src.name)
    with pytest.raises(SarcoError, match="different folds"):
        compare(ws, log=lambda _: None)


def test_5fold_expands_by_the_training_rule_and_a_bad_fold_trains_nothing(monkeypatch):
    """`sarco classify train 5fold` means folds 0-4 in turn by `training.run.expand_folds` (any case,
    as `sarco train` reads it), and a fold that does not exist is one line before any fold trains."""
    from sarco_nn import api
    from sarco_nn.training.run import expand_folds

    trained: list[str] = []
    monkeypatch.setattr(api, "classify_train", lambda fold, **kw: trained.append(fold) or f"fold_{fold}")
    result = CliRunner().invoke(classify_app, ["train", "5FOLD"])
    assert result.exit_code == 0, result.output
    assert trained == expand_folds("5fold") == ["0", "1", "2", "3", "4"]
    trained.clear()
    refused = CliRunner().invoke(classify_app, ["train", "7"])
    assert refused.exit_code != 0 and isinstance(refused.exception, SarcoError) and trained == []
