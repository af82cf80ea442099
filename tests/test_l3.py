"""Automatic L3 localization: vertebra-label rules on real CT, out-of-view answers, the learned localizer."""

from __future__ import annotations

import csv
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.phantom import VERTEBRA_LABELS as PHANTOM_VERTEBRAE
from dataset_conversion.phantom import to_sitk
from dataset_conversion.phantom_volume import generate_phantom_volume
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.image_io import load_axial_slice, read_image, to_canonical
from sarco_nn.l3.choose import (
    L3_RESULT_COLUMNS,
    choose_slice,
    l3_result_fields,
    load_l3_slice,
    read_l3_csv,
    slab_slice,
    vertebra_mask_for,
)
from sarco_nn.l3.locate import locate_l3
from sarco_nn.l3.localizer import CHECKPOINT_FILE, L3Localizer, projection_input
from sarco_nn.l3.result import L3Location, L3NotFound
from sarco_nn.l3.rules import L3_LABEL, VERTEBRA_LABELS, l3_index_from_labels, locate_from_vertebrae
from sarco_nn.l3.thumbnail import save_l3_thumbnail
from sarco_nn.l3.train_l3 import (
    TrainingLog,
    case_from_volume,
    cases_from_dropin,
    cases_from_manifest,
    cases_from_phantoms,
    evaluate_localizer,
    train_localizer,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TS = DATA / "totalsegmentator"
EXAMPLE_CT = TS / "example_ct.nii.gz"
EXAMPLE_VERT = TS / "example_ct_vertebrae_totalseg.nii.gz"
NECK_CT = DATA / "moose" / "CT_enhance_pet_1446_neck_slice.nii.gz"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent")


def _reference() -> dict:
    return json.loads((TS / "example_ct_L3_reference.json").read_text())["vertebrae_totalseg (spine_report reference)"]


def _z_flipped(image: sitk.Image) -> sitk.Image:
    """The same physical volume stored with slice 0 at the top (direction z = -1)."""
    array = sitk.GetArrayFromImage(image)[::-1]
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetSpacing(image.GetSpacing())
    top = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))
    out.SetOrigin(top)
    d = np.array(image.GetDirection()).reshape(3, 3)
    d[:, 2] *= -1
    out.SetDirection(tuple(d.ravel()))
    return out


# ----------------------------------------------------------------------------------- label ids


@needs_data
def test_label_ids_match_totalsegmentator_class_map_and_phantom():
    class_map = json.loads((TS / "class_map_total_and_tissue_types.json").read_text())["total"]
    for name, label in VERTEBRA_LABELS.items():
        assert class_map[str(label)] == f"vertebrae_{name}"
    assert L3_LABEL == 29
    assert all(VERTEBRA_LABELS[name] == label for name, label in PHANTOM_VERTEBRAE.items())


# ----------------------------------------------------------------------------------- rules on real CT


@needs_data
@pytest.mark.parametrize("rule,key", [("max-area", "L3_max_area_slice"), ("centroid", "L3_centroid_z")])
def test_example_ct_rules_match_reference(rule, key):
    ref = _reference()
    location = locate_l3(EXAMPLE_CT, vertebra_mask=EXAMPLE_VERT, rule=rule)
    assert location.method == "vertebrae" and location.rule == rule
    lo, hi = ref["L3_z_range"]
    assert lo <= location.slice_index <= hi
    assert abs(location.slice_index - ref[key]) <= 1
    # the reference file is RAS; canonical LPS shares the z axis here, so the index maps one to one
    ct = read_image(EXAMPLE_CT)
    world_z = ct.TransformIndexToPhysicalPoint((0, 0, location.slice_index))[2]
    assert location.z_mm == pytest.approx(world_z, abs=1e-3)
    if rule == "centroid":
        assert location.z_mm == pytest.approx(ref["L3_centroid_world_z_mm"], abs=3.0)


@needs_data
def test_rules_give_the_same_physical_level_for_a_z_flipped_volume():
    ct, vert = read_image(EXAMPLE_CT), sitk.ReadImage(str(EXAMPLE_VERT))
    for rule in ("centroid", "max-area"):
        plain = locate_from_vertebrae(vert, ct, rule)
        flipped = locate_from_vertebrae(_z_flipped(vert), _z_flipped(ct), rule)
        assert flipped.slice_index == plain.slice_index  # canonical index: 0 = most inferior, whatever the storage
        assert flipped.z_mm == pytest.approx(plain.z_mm, abs=1e-3)


@needs_data
def test_load_l3_slice_extracts_what_load_axial_slice_extracts(tmp_path):
    image, source, location = load_l3_slice(EXAMPLE_CT, vertebra_mask=EXAMPLE_VERT, rule="max-area")
    reference, ref_source = load_axial_slice(EXAMPLE_CT, location.slice_index)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))
    assert source.slice_index == ref_source.slice_index == 75 and source.z_mm == pytest.approx(ref_source.z_mm)
    assert source.stored_index == ref_source.stored_index == location.stored_index
    fields = l3_result_fields(location, slab=1, thumbnail="thumbnails/ct.png")
    assert fields["l3_method"] == "vertebrae" and fields["l3_rule"] == "max-area"
    assert set(fields) == set(L3_RESULT_COLUMNS)
    slab, _, _ = load_l3_slice(EXAMPLE_CT, vertebra_mask=EXAMPLE_VERT, rule="max-area", slab=3)
    canonical = to_canonical(read_image(EXAMPLE_CT))
    expected = sitk.GetArrayFromImage(canonical)[74:77].astype(np.float32).mean(axis=0)
    assert np.allclose(sitk.GetArrayFromImage(slab)[0], expected)
    assert slab.GetOrigin() == image.GetOrigin() and slab.GetSpacing() == image.GetSpacing()
    with pytest.raises(InputError):
        slab_slice(canonical, 1, 5)  # leaves the volume


@needs_data
def test_cut_or_missing_l3_is_not_in_view():
    labels = sitk.GetArrayFromImage(to_canonical(sitk.ReadImage(str(EXAMPLE_VERT))))
    with pytest.raises(L3NotFound, match="upper"):
        l3_index_from_labels(labels[:72], "centroid")  # scan ends inside L3
    with pytest.raises(L3NotFound, match="lower"):
        l3_index_from_labels(labels[70:], "max-area")
    with pytest.raises(L3NotFound, match="T12-L1"):
        l3_index_from_labels(np.where(np.isin(labels, [31, 32]), labels, 0)[85:], "centroid")


@needs_data
def test_neck_ct_is_not_in_view_with_a_vertebra_mask():
    neck = read_image(NECK_CT)
    labels = np.zeros(sitk.GetArrayViewFromImage(neck).shape, np.uint16)
    labels[5:15, 70:80, 75:85] = VERTEBRA_LABELS["C5"]
    labels[16:26, 70:80, 75:85] = VERTEBRA_LABELS["C4"]
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(neck)
    with pytest.raises(L3NotFound, match="C4-C5"):
        locate_l3(NECK_CT, vertebra_mask=mask)
    with pytest.raises(InputError, match="does not match"):  # a mask from another scan is refused
        locate_l3(NECK_CT, vertebra_mask=EXAMPLE_VERT)


def test_bad_rule_and_binary_mask_are_refused():
    labels = np.zeros((6, 4, 4), np.uint16)
    labels[2:4] = 1
    mask = sitk.GetImageFromArray(labels)
    with pytest.raises(InputError, match="binary mask"):
        locate_from_vertebrae(mask)
    with pytest.raises(InputError, match="unknown L3 rule"):
        l3_index_from_labels(labels, "middle")


# ----------------------------------------------------------------------------------- phantoms: rules


@pytest.fixture(scope="module")
def phantom_volume():
    return generate_phantom_volume(np.random.default_rng([7, 1]), matrix=96)


def test_phantom_rules_agree_with_the_generator_and_crops_are_not_in_view(phantom_volume):
    vol = phantom_volume
    l3 = np.flatnonzero((vol.vertebra_labels == L3_LABEL).any(axis=(1, 2)))
    # the generator's level is the body centre; the label also holds the caudally lagging posterior arch
    centroid = l3_index_from_labels(vol.vertebra_labels, "centroid")
    assert abs(centroid - vol.l3_slice_index) * vol.spacing_mm[0] <= 8.0
    assert l3[0] < l3_index_from_labels(vol.vertebra_labels, "max-area") < l3[-1]
    with pytest.raises(L3NotFound):  # chest-only: from above L3 upward
        l3_index_from_labels(vol.vertebra_labels[l3[-1] + 1:], "centroid")
    with pytest.raises(L3NotFound):  # pelvis-only
        l3_index_from_labels(vol.vertebra_labels[:l3[0]], "max-area")


# ----------------------------------------------------------------------------------- choosing the slice


def test_choose_slice_precedence_index_conventions_and_l3_csv(tmp_path, phantom_volume):
    vol = phantom_volume
    n = len(vol.ct_hu)
    image = _z_flipped(to_sitk(vol.ct_hu, vol.spacing_mm, True, -200.0))  # stored head first
    labels = _z_flipped(to_sitk(vol.vertebra_labels, vol.spacing_mm, True, -200.0))
    located = choose_slice("p", image, vertebra_mask=labels)
    assert located.method == "vertebrae" and abs(located.slice_index - vol.l3_slice_index) <= 1
    assert located.stored_index == n - 1 - located.slice_index
    assert located.z_mm == pytest.approx(-200.0 + located.slice_index * vol.spacing_mm[0])
    # user and CSV indices count along the file's own slice axis, as image_io.load_axial_slice reads --l3-slice
    assert choose_slice("p", image, l3_csv_row=5, vertebra_mask=labels) == L3Location(
        n - 1 - 5, pytest.approx(-200.0 + (n - 1 - 5) * vol.spacing_mm[0]), "csv", stored_index=5)
    assert choose_slice("p", image, l3_slice=3, l3_csv_row=5).method == "user"
    with pytest.raises(InputError, match="outside"):
        choose_slice("p", image, l3_slice=10_000)
    one = sitk.GetImageFromArray(vol.ct_hu[:1])
    assert choose_slice("p", one).method == "single-slice"

    good = tmp_path / "l3.csv"
    good.write_text("case_id,l3_slice\ncase_a,12\ncase_b, 40\n")
    assert read_l3_csv(good) == {"case_a": 12, "case_b": 40}
    for text, match in [("case,slice\na,1\n", "lack case_id"), ("case_id,l3_slice\na,x\n", "not an integer"),
                        ("case_id,slice_index\na,1\na,2\n", "twice"), ("case_id,l3_slice\na,-1\n", "negative")]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(InputError, match=match):
            read_l3_csv(bad)


def test_auto_without_any_locator_says_what_to_do(tmp_path, phantom_volume):
    vol = phantom_volume
    image = to_sitk(vol.ct_hu, vol.spacing_mm, False, 0.0)
    with pytest.raises(SarcoError, match="--l3-slice N or --l3-from") as info:
        locate_l3(image, model_dir=tmp_path / "none")
    assert not isinstance(info.value, L3NotFound)
    with pytest.raises(SarcoError, match="pip install TotalSegmentator"):
        locate_l3(image, method="totalsegmentator")
    with pytest.raises(SarcoError, match="train-l3"):
        locate_l3(image, method="model", model_dir=tmp_path / "none")


@needs_data
def test_totalsegmentator_backend_plumbing_with_a_stand_in(monkeypatch, tmp_path):
    """The package is never installed here; a stand-in module returns known labels in TotalSegmentator's
    own numbering (shifted, to prove ids are mapped by name), so the backend's glue is what is tested."""
    import nibabel as nib

    weights = tmp_path / "weights"
    (weights / "Dataset297_TotalSegmentator_total_3mm_1559subj").mkdir(parents=True)
    names = {str(100 + v): f"vertebrae_{k}" for k, v in VERTEBRA_LABELS.items()}
    calls = {}

    def fake_totalsegmentator(input, output=None, **kwargs):
        calls.update(kwargs, input=input)
        seg = nib.load(str(EXAMPLE_VERT))
        data = np.asarray(seg.dataobj).astype(np.int16)
        return nib.Nifti1Image(np.where(data > 0, data + 100, 0).astype(np.int16), seg.affine)

    modules = {"totalsegmentator": types.ModuleType("totalsegmentator"),
               "totalsegmentator.python_api": types.SimpleNamespace(totalsegmentator=fake_totalsegmentator),
               "totalsegmentator.config": types.SimpleNamespace(get_weights_dir=lambda: weights),
               "totalsegmentator.map_to_binary": types.SimpleNamespace(class_map={"total": names})}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    location = locate_l3(EXAMPLE_CT, method="totalsegmentator", rule="max-area")
    assert location.method == "totalsegmentator" and location.slice_index == 75
    assert calls["fast"] is True and calls["ml"] is True


# ----------------------------------------------------------------------------------- learned localizer


def _held_out_volumes():
    return [generate_phantom_volume(np.random.default_rng([99, i]), matrix=128) for i in range(4)]


@pytest.fixture(scope="module")
def trained():
    """~20 phantom volumes (128², CPU), a few seconds of training; 4 held-out volumes."""
    import torch

    torch.set_num_threads(1)
    train = cases_from_phantoms(18, seed=0, matrix=128)
    log = TrainingLog()
    start = time.monotonic()
    localizer = train_localizer(train, steps=400, seed=0, log=log)
    held = _held_out_volumes()
    print(f"\nL3 localizer: {len(train)} volumes, {log.steps} steps in {time.monotonic() - start:.1f} s, "
          f"loss {log.final_loss:.3f}")
    return localizer, held


def test_learned_localizer_on_held_out_phantoms(trained):
    localizer, held = trained
    cases = [case_from_volume(f"held_{i}", to_sitk(v.ct_hu, v.spacing_mm, False, 0.0), v.l3_slice_index)
             for i, v in enumerate(held)]
    report = evaluate_localizer(localizer, cases)
    summary = report.summary()
    print(f"held-out localization error: {summary}")
    # a few seconds of training: it may decline one hard case (an honest "not found"), never a wrong level
    assert summary["n_not_found"] <= 1
    assert summary["max_abs_error_slices"] <= 2
    for case, vol in zip(report.cases, held):
        if case.predicted_index is not None:
            assert case.error_mm == pytest.approx(case.error_slices * vol.spacing_mm[0])


def test_learned_localizer_out_of_view_answers_are_learned(trained):
    localizer, held = trained
    for vol in held:
        image = to_sitk(vol.ct_hu, vol.spacing_mm, False, 0.0)
        l3 = np.flatnonzero((vol.vertebra_labels == L3_LABEL).any(axis=(1, 2)))
        chest = sitk.GetImageFromArray(vol.ct_hu[l3[-1] + 1:])
        chest.SetSpacing(image.GetSpacing())
        pelvis = sitk.GetImageFromArray(vol.ct_hu[:l3[0]])
        pelvis.SetSpacing(image.GetSpacing())
        for crop in (chest, pelvis):
            with pytest.raises(L3NotFound):
                localizer.locate(crop)


@needs_data
def test_learned_localizer_says_neck_ct_has_no_l3(trained, tmp_path):
    localizer, _ = trained
    localizer.save(tmp_path / "model")
    prediction = localizer.predict(projection_input(to_canonical(read_image(NECK_CT))))
    print(f"neck CT: {prediction}")
    assert not prediction.found
    with pytest.raises(L3NotFound):
        locate_l3(NECK_CT, method="model", model_dir=tmp_path / "model")


def test_checkpoint_round_trip_and_locate_from_a_file(trained, tmp_path):
    import torch

    localizer, held = trained
    path = localizer.save(tmp_path / "model", {"note": "test"})
    torch.load(path, weights_only=True)  # plain tensors and values only
    assert not list((tmp_path / "model").glob(".*partial*"))
    vol = held[0]
    scan = tmp_path / "held.nii.gz"
    sitk.WriteImage(to_sitk(vol.ct_hu, vol.spacing_mm, True, -321.0), str(scan))  # stored RAS-like
    located = locate_l3(scan, method="auto", model_dir=tmp_path / "model")
    again = L3Localizer.load(tmp_path / "model").locate(to_canonical(read_image(scan)))
    assert (located.slice_index, located.z_mm) == (again.slice_index, again.z_mm) and located.method == "model"
    assert located.stored_index == located.slice_index  # stored with x/y flipped only: z order unchanged
    assert abs(located.slice_index - vol.l3_slice_index) <= 2
    assert located.z_mm == pytest.approx(-321.0 + located.slice_index * vol.spacing_mm[0])
    (tmp_path / "bad").mkdir()
    torch.save({"format": 1, "config": {}, "state_dict": {}, "code": object()}, tmp_path / "bad" / CHECKPOINT_FILE)
    with pytest.raises(SarcoError, match="cannot load"):
        L3Localizer.load(tmp_path / "bad")


# ----------------------------------------------------------------------------------- training data


@pytest.fixture(scope="module")
def dropin(tmp_path_factory):
    from dataset_conversion.phantom import write_dropin_dataset

    return write_dropin_dataset(tmp_path_factory.mktemp("l3drop") / "drop", n_cases=3, seed=5, matrix=64,
                                volumes=True)


def test_training_cases_from_dropin_and_manifest_use_the_annotated_slice(dropin, tmp_path):
    from dataset_conversion.convert import convert_dropin

    with open(dropin / "truth.csv", newline="") as handle:
        truth = {row["case_id"]: int(row["l3_slice_index"]) for row in csv.DictReader(handle)}
    cases, notes = cases_from_dropin(dropin)
    assert {c.name: c.l3_slice_index for c in cases} == truth and not notes  # case 1 is stored flipped
    result = convert_dropin(dropin, tmp_path / "raw", "L3", 601)
    from_manifest, _ = cases_from_manifest(result.dataset_dir, dropin)
    assert {c.name: c.l3_slice_index for c in from_manifest} == truth
    with pytest.raises(InputError, match="--drop-dir"):
        cases_from_manifest(result.dataset_dir, tmp_path)
    # the converter records where it converted from, so no --drop-dir is needed while that folder exists
    from_record, _ = cases_from_manifest(result.dataset_dir)
    assert {c.name: c.l3_slice_index for c in from_record} == truth
    info_path = result.dataset_dir / "dataset.json"
    info = json.loads(info_path.read_text())
    del info["sarco"]["source_dir"]
    info_path.write_text(json.dumps(info))
    with pytest.raises(InputError, match="needs the original drop-in folder"):
        cases_from_manifest(result.dataset_dir)


def test_cli_locate_and_train_l3(dropin, tmp_path):
    import typer
    from typer.testing import CliRunner

    from sarco_nn.commands.l3_cmd import locate, train_l3

    app = typer.Typer()
    app.command()(locate)
    app.command("train-l3")(train_l3)
    runner = CliRunner()
    model = tmp_path / "model"
    result = runner.invoke(app, ["train-l3", str(dropin), "--model-dir", str(model), "--steps", "3",
                                 "--validation", "0.34"])
    assert result.exit_code == 0, result.output
    assert "held-out (1 volumes)" in result.output and (model / CHECKPOINT_FILE).is_file()
    report = json.loads((model / "l3_localizer.json").read_text())
    assert report["training"]["cases"] == 2 and len(report["held_out_cases"]) == 1
    if DATA.is_dir():
        thumb = tmp_path / "thumb.png"
        result = runner.invoke(app, ["locate", str(EXAMPLE_CT), "--l3-from", str(EXAMPLE_VERT), "--rule", "max-area",
                                     "--json", "--thumbnail", str(thumb)])
        assert result.exit_code == 0, result.output
        answer = json.loads(result.output)
        assert answer["found"] and answer["slice_index"] == 75 and answer["method"] == "vertebrae"
        assert thumb.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        result = runner.invoke(app, ["locate", str(NECK_CT), "--locator", "model", "--model-dir", str(model),
                                     "--json"])
        assert result.exit_code == 1 and json.loads(result.output)["found"] is False


def test_thumbnail_is_written_atomically(tmp_path, phantom_volume):
    vol = phantom_volume
    image = to_sitk(vol.ct_hu, vol.spacing_mm, False, 10.0)
    location = L3Location(vol.l3_slice_index, 10.0 + vol.l3_slice_index * vol.spacing_mm[0], "vertebrae", "centroid")
    out = save_l3_thumbnail(image, location, tmp_path / "thumbs" / "case.png", title="case")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in (tmp_path / "thumbs").iterdir()] == ["case.png"]


def test_vertebra_mask_for_a_batch(tmp_path):
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "case_a.nii.gz").write_bytes(b"x")
    (tmp_path / "masks" / "case_b").mkdir()
    (tmp_path / "one.nii.gz").write_bytes(b"x")
    assert vertebra_mask_for(None, "case_a") is None
    assert vertebra_mask_for(tmp_path / "one.nii.gz", "anything") == tmp_path / "one.nii.gz"
    assert vertebra_mask_for(tmp_path / "masks", "case_a") == tmp_path / "masks" / "case_a.nii.gz"
    assert vertebra_mask_for(tmp_path / "masks", "case_b") == tmp_path / "masks" / "case_b"
    with pytest.raises(InputError, match="no vertebra mask for case 'case_c'"):
        vertebra_mask_for(tmp_path / "masks", "case_c")


@pytest.mark.parametrize("call", ["locate", "train"])
def test_a_bad_level_is_one_line_before_any_file_is_read_or_folder_made(tmp_path, call):
    """`--level L9` (or a typo) names the levels that exist, before the volume is read, torch loads,
    or a localizer_<LEVEL> / thumbnail folder is made (the localizer's message would suggest
    `sarco train-l3 --level L9`, which cannot work)."""
    from sarco_nn import api

    ws, thumbs = tmp_path / "ws", tmp_path / "thumbs"
    with pytest.raises(SarcoError) as caught:
        if call == "locate":
            api.locate_l3(tmp_path / "absent.nii.gz", level="L9", thumbnail=thumbs / "x.png", workspace=ws)
        else:
            api.train_l3(phantoms=2, steps=1, level="l9", workspace=ws)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "'L9'" in message.upper() and "T12, L1, L2, L3, L4, L5" in message, message
    assert not ws.exists() and not thumbs.exists() and not (tmp_path / "absent.nii.gz").exists()


def test_the_localizer_centres_its_projections_above_its_own_body_bound_not_body_hu():
    """constants.LOCALIZER_BODY_HU (-300), not BODY_HU (-500): a -400 HU sheet beside the body (a blanket,
    partial-volume skin) does not move the canvas the trained localizers learnt; centred with BODY_HU the
    spine's column moves by four 8-mm columns (32 -> 28)."""
    from sarco_nn.constants import BODY_HU, LOCALIZER_BODY_HU
    from sarco_nn.l3.localizer import MIP_WIDTH

    assert BODY_HU < -400.0 < LOCALIZER_BODY_HU
    hu = np.full((40, 64, 128), -1000.0, np.float32)  # (z, y, x), 2-mm voxels
    hu[:, 16:48, 40:89] = -100.0  # the body: fat, centred on x = 64
    hu[:, 28:36, 62:67] = 700.0  # the spine
    hu[:, 16:48, 89:128] = -400.0  # the sheet
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((2.0, 2.0, 2.0))
    coronal = projection_input(image).array[1]
    spine_column = int(np.argmax(coronal.mean(axis=0)))
    assert abs(spine_column - MIP_WIDTH // 2) <= 1
