"""Per-label loss weights (preset `training.label_loss_weights`): weights 1 are nnU-Net's loss exactly, a muscle
weight of 2 pulls harder on the muscle channel (deep supervision included), bad names/weights are refused;
`label_loss_weight_terms` "dice" weights the soft Dice only and leaves nnU-Net's CE as it is."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss
from torch.nn import functional as F

from sarco_nn.constants import TISSUE_LABELS
from sarco_nn.errors import SarcoError
from sarco_nn.presets import LOSS_WEIGHT_TERMS, load_preset
from sarco_nn.training.loss_weights import ClassWeightedSoftDice, class_weights, weight_labels
from sarco_nn.training.trainers import SarcoSMITTrainer, SarcoUNetTrainer

LABELS = {"background": 0, **TISSUE_LABELS}  # a four-tissue dataset.json (convert --keep-tissues)


def _trainer(cls, settings: dict, deep_supervision: bool, batch_dice: bool = True):
    """A trainer with just what nnU-Net's _build_loss reads (no plans, no data, no network)."""
    trainer = object.__new__(cls)
    trainer.settings = settings
    trainer.device = torch.device("cpu")
    trainer.is_ddp = False
    trainer.enable_deep_supervision = deep_supervision
    trainer.dataset_json = {"labels": LABELS}
    trainer.label_manager = SimpleNamespace(has_regions=False, ignore_label=None)
    trainer.configuration_manager = SimpleNamespace(batch_dice=batch_dice,
                                                    pool_op_kernel_sizes=[[1, 1], [2, 2], [2, 2], [2, 2]])
    trainer.plans_manager = SimpleNamespace(plans={"sarco": {"preset": {"name": "cpu"}}})
    return trainer


def _batch(deep_supervision: bool, seed: int = 0):
    """Random logits (2, 5, 16, 16) and labels 0..4, as lists over the scales with deep supervision."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(16, 16), (8, 8), (4, 4)][:3 if deep_supervision else 1]
    logits = [torch.randn(2, len(LABELS), *s, generator=g).requires_grad_() for s in shapes]
    targets = [torch.randint(0, len(LABELS), (2, 1, *s), generator=g).float() for s in shapes]
    return (logits, targets) if deep_supervision else (logits[0], targets[0])


@pytest.mark.parametrize("deep_supervision", [False, True])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_weights_of_one_give_nnunets_loss_exactly(deep_supervision, batch_dice):
    theirs = _trainer(SarcoUNetTrainer, {}, deep_supervision, batch_dice)._build_loss()
    ours = _trainer(SarcoUNetTrainer, {"label_loss_weights": {"muscle": 1, "sat": 1.0}}, deep_supervision,
                    batch_dice)._build_loss()
    inner = ours.loss if deep_supervision else ours
    assert isinstance(inner.dc, ClassWeightedSoftDice)  # the weighted path runs, not a shortcut
    assert type(theirs.loss if deep_supervision else theirs).__name__ == "DC_and_CE_loss"
    for seed in range(3):
        x, y = _batch(deep_supervision, seed)
        expected, got = theirs(x, y), ours(x, y)
        assert torch.equal(got, expected), (got.item(), expected.item())  # bit for bit: the same per-class sums


def test_no_weights_keep_nnunets_loss_object():
    loss = _trainer(SarcoUNetTrainer, {"label_loss_weights": None}, True)._build_loss()
    assert isinstance(loss, DeepSupervisionWrapper) and isinstance(loss.loss.dc, MemoryEfficientSoftDiceLoss)
    assert loss.loss.ce.weight is None


@pytest.mark.parametrize(("cls", "deep_supervision"), [(SarcoSMITTrainer, False), (SarcoUNetTrainer, True)])
def test_muscle_weight_two_pulls_harder_on_the_muscle_channel(cls, deep_supervision):
    muscle = TISSUE_LABELS["muscle"]

    def grads(settings: dict) -> torch.Tensor:
        x, y = _batch(deep_supervision, seed=5)
        _trainer(cls, settings, deep_supervision)._build_loss()(x, y).backward()
        return (x[0] if deep_supervision else x).grad

    plain, weighted = grads({}), grads({"label_loss_weights": {"muscle": 2}})
    assert weighted[:, muscle].abs().sum() > 1.2 * plain[:, muscle].abs().sum()
    # the other tissues' share shrinks (weighted means: muscle's share grows at their expense)
    assert weighted[:, TISSUE_LABELS["sat"]].abs().sum() < plain[:, TISSUE_LABELS["sat"]].abs().sum()


def test_weighted_dice_is_the_weighted_mean_of_nnunets_per_class_dice():
    x, y = _batch(False, seed=2)
    plain = MemoryEfficientSoftDiceLoss(apply_nonlin=lambda t: torch.softmax(t, 1), batch_dice=True, do_bg=False,
                                        smooth=1e-5, ddp=False)
    per_class = []
    for c in range(1, len(LABELS)):  # each class alone: nnU-Net's Dice of a one-class problem
        probs = torch.softmax(x, 1)[:, c:c + 1]
        onehot = (y == c).float()
        per_class.append(-MemoryEfficientSoftDiceLoss(batch_dice=True, do_bg=True, smooth=1e-5, ddp=False)(probs, onehot))
    weights = [2.0, 1.0, 0.5, 1.0]
    expected = -sum(w * d for w, d in zip(weights, per_class)) / sum(weights)
    assert torch.allclose(ClassWeightedSoftDice(plain, weights)(x, y), expected, atol=1e-6)
    assert not torch.allclose(ClassWeightedSoftDice(plain, weights)(x, y), plain(x, y), atol=1e-4)


def test_ce_class_weights_follow_the_label_values():
    assert class_weights({"muscle": 2}, LABELS, "preset 'cpu'") == [1.0, 2.0, 1.0, 1.0, 1.0]
    assert class_weights({"sat": 3, "vat": 0.5}, LABELS, "x") == [1.0, 1.0, 1.0, 0.5, 3.0]
    loss = _trainer(SarcoUNetTrainer, {"label_loss_weights": {"vat": 3}}, False)._build_loss()
    assert isinstance(loss, DC_and_CE_loss) and loss.ce.weight.tolist() == [1.0, 1.0, 1.0, 3.0, 1.0]
    assert loss.dc.weights.tolist() == [1.0, 1.0, 3.0, 1.0]  # Dice sees the foreground channels only


@pytest.mark.parametrize(("weights", "match"), [({"muscel": 2}, "muscel"), ({"imat": 2}, "imat"),
                                                ({"muscle": 0}, "positive"), ({"muscle": True}, "positive")])
def test_trainer_refuses_unknown_labels_and_bad_weights_in_one_line(weights, match):
    trainer = _trainer(SarcoUNetTrainer, {"label_loss_weights": weights}, False)
    trainer.dataset_json = {"labels": {"background": 0, "muscle": 1}}  # a muscle-only dataset: no imat channel
    with pytest.raises(SarcoError, match=match) as info:
        trainer._build_loss()
    assert "\n" not in str(info.value) and "preset 'cpu'" in str(info.value) and "Fix:" in str(info.value)


@pytest.mark.parametrize(("value", "ok"), [(None, True), ({"muscle": 2}, True), ({"muscle": 1.5, "sat": 1}, True),
                                           ({"muscel": 2}, False), ({"muscle": 0}, False), ({"muscle": -1}, False),
                                           ({"muscle": "2"}, False), ({}, False), ([2], False)])
def test_preset_field_is_validated_at_plan_time(tmp_path, value, ok):
    preset = load_preset("cpu")
    preset["training"]["label_loss_weights"] = value
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(preset))
    if ok:
        assert load_preset(path)["training"]["label_loss_weights"] == value
    else:
        with pytest.raises(SarcoError, match="label_loss_weights") as info:
            load_preset(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# ---- label_loss_weight_terms: which loss terms the weights go into -------------------------------------------
def _weighted_soft_dice(x: torch.Tensor, y: torch.Tensor, weights: list[float], batch_dice: bool) -> torch.Tensor:
    """The weighted soft-Dice loss written out from its definition (no nnU-Net code): per foreground class
    (2 |P∩Y| + 1e-5) / (|P| + |Y| + 1e-5) over batch and pixels (batch Dice) or per case then averaged."""
    probs = torch.softmax(x, 1)[:, 1:]
    onehot = torch.cat([(y == c).float() for c in range(1, x.shape[1])], 1)
    axes = (0, 2, 3) if batch_dice else (2, 3)
    dice = (2 * (probs * onehot).sum(axes) + 1e-5) / (probs.sum(axes) + onehot.sum(axes) + 1e-5)
    dice = dice if batch_dice else dice.mean(0)
    w = torch.tensor(weights)
    return -(dice * w).sum() / w.sum()


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("terms", [None, "dice+ce", "dice"])
def test_weight_terms_choose_weighted_ce_or_nnunets_ce(terms, batch_dice):
    settings = {"label_loss_weights": {"muscle": 2, "sat": 0.5}}
    if terms is not None:
        settings["label_loss_weight_terms"] = terms
    loss = _trainer(SarcoUNetTrainer, settings, False, batch_dice)._build_loss()
    nnunet = _trainer(SarcoUNetTrainer, {}, False, batch_dice)._build_loss()
    weights = [1.0, 2.0, 1.0, 1.0, 0.5]  # background, muscle, imat, vat, sat
    x, y = _batch(False, seed=7)
    dice = _weighted_soft_dice(x, y, weights[1:], batch_dice)
    if terms == "dice":  # CE: nnU-Net's own object, unweighted, bit for bit nnU-Net's value
        assert type(loss.ce) is RobustCrossEntropyLoss and loss.ce.weight is None
        assert loss.ce.ignore_index == nnunet.ce.ignore_index
        assert torch.equal(loss.ce(x, y), nnunet.ce(x, y))
        ce = F.cross_entropy(x, y[:, 0].long())
    else:  # default and "dice+ce": today's behaviour, CE class weights too
        assert loss.ce.weight.tolist() == weights
        ce = F.cross_entropy(x, y[:, 0].long(), weight=torch.tensor(weights))
        assert not torch.allclose(ce, F.cross_entropy(x, y[:, 0].long()), atol=1e-4)  # the weights matter here
    assert isinstance(loss.dc, ClassWeightedSoftDice)
    assert torch.allclose(loss.ce(x, y), ce, atol=1e-6)
    assert torch.allclose(loss.dc(x, y), dice, atol=1e-6)
    assert not torch.allclose(loss.dc(x, y), nnunet.dc(x, y), atol=1e-4)  # the Dice is weighted in every case
    assert torch.allclose(loss(x, y), ce + dice, atol=1e-6)


def test_dice_terms_reach_every_deep_supervision_scale():
    loss = _trainer(SarcoUNetTrainer, {"label_loss_weights": {"muscle": 2}, "label_loss_weight_terms": "dice"},
                    True)._build_loss()
    nnunet = _trainer(SarcoUNetTrainer, {}, True)._build_loss()
    assert isinstance(loss.loss.dc, ClassWeightedSoftDice) and loss.loss.ce.weight is None
    x, y = _batch(True, seed=3)
    expected = sum(w * (F.cross_entropy(xi, yi[:, 0].long()) + _weighted_soft_dice(xi, yi, [2.0, 1, 1, 1], True))
                   for w, xi, yi in zip(nnunet.weight_factors, x, y) if w)
    assert torch.allclose(loss(x, y), expected, atol=1e-6)


@pytest.mark.parametrize(("settings", "match"), [
    ({"label_loss_weights": {"muscle": 2}, "label_loss_weight_terms": "ce"}, '"dice\\+ce" or "dice"'),
    ({"label_loss_weights": {"muscle": 2}, "label_loss_weight_terms": "Dice"}, "must be"),
    ({"label_loss_weight_terms": "dice"}, "needs training.label_loss_weights"),
    ({"label_loss_weights": None, "label_loss_weight_terms": "dice+ce"}, "needs training.label_loss_weights")])
def test_trainer_refuses_bad_weight_terms_in_one_line(settings, match):
    """The trainer reads the plans, which a script may edit after `sarco plan`: it checks the field too."""
    with pytest.raises(SarcoError, match=match) as info:
        _trainer(SarcoUNetTrainer, settings, False)._build_loss()
    assert "\n" not in str(info.value) and "preset 'cpu'" in str(info.value) and "Fix:" in str(info.value)


def test_weight_labels_refuses_unknown_terms():
    loss = _trainer(SarcoUNetTrainer, {}, False)._build_loss()
    with pytest.raises(ValueError, match="ce only"):
        weight_labels(loss, [1.0] * 5, torch.device("cpu"), terms="ce only")
    assert LOSS_WEIGHT_TERMS[0] == "dice+ce"  # the default is today's behaviour (both terms)


@pytest.mark.parametrize(("weights", "terms", "ok"), [
    ({"muscle": 2}, "dice", True), ({"muscle": 2}, "dice+ce", True), ({"muscle": 2}, None, True), (None, None, True),
    ({"muscle": 2}, "ce", False), ({"muscle": 2}, "ce+dice", False), ({"muscle": 2}, ["dice"], False),
    ({"muscle": 2}, "", False), (None, "dice", False), (None, "dice+ce", False)])
def test_weight_terms_are_validated_at_plan_time(tmp_path, weights, terms, ok):
    preset = load_preset("cpu")
    preset["training"]["label_loss_weights"] = weights
    preset["training"]["label_loss_weight_terms"] = terms
    path = tmp_path / "terms.json"
    path.write_text(json.dumps(preset))
    if ok:
        assert load_preset(path)["training"]["label_loss_weight_terms"] == terms
    else:
        with pytest.raises(SarcoError, match="label_loss_weight_terms") as info:
            load_preset(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
