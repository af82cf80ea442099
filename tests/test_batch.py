"""Batch bookkeeping of `sarco predict` without a model: journal, identity, parts, merging, output
location, discovery of every entry, and the one-line answers to files a user or a spreadsheet broke."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from dicom_factory import write_series
from helpers import make_image, phantom_array, write
from sarco_nn.batch import (FINGERPRINT_COLUMN, JOURNAL_FILE, RESULTS_FILE, Journal, check_output_location,
                            MISSING, file_identity, fingerprint_changes, fold_journal, part_of,
                            read_results, row_fingerprint, settings_digest)
from sarco_nn.batch_merge import merge_parts
from sarco_nn.errors import InputError, SarcoError
from sarco_nn.inference import (KEY_COLUMN, PATH_COLUMNS, RESULT_COLUMNS, RUN_FILE, _check_output_folder,
                                _output_stem, _plain_text, discover_scans)
from sarco_nn.l3.choose import read_l3_csv


def test_journal_ignores_a_torn_last_line_and_repairs_it_before_appending(tmp_path):
    journal = Journal(tmp_path / JOURNAL_FILE)
    journal.append("/a", {"case_id": "a", "status": "ok"})
    journal.append("/b", {"case_id": "b", "status": "failed"})
    with open(journal.path, "ab") as handle:
        handle.write(b'{"key": "/c", "row": {"case_id": "c", "sta')  # SIGKILL mid-write
    assert set(Journal(journal.path).entries()) == {"/a", "/b"}
    again = Journal(journal.path)
    again.append("/d", {"case_id": "d", "status": "ok"})
    assert set(again.entries()) == {"/a", "/b", "/d"}


def test_fold_keeps_earlier_rows_and_is_idempotent(tmp_path):
    Journal(tmp_path / JOURNAL_FILE).append("/x/a", {"case_id": "a", "input": "/x/a", "status": "ok"})
    fold_journal(tmp_path, RESULT_COLUMNS, KEY_COLUMN)
    Journal(tmp_path / JOURNAL_FILE).append("/y/a", {"case_id": "a", "input": "/y/a", "status": "review"})
    rows = fold_journal(tmp_path, RESULT_COLUMNS, KEY_COLUMN)
    assert set(rows) == {"/x/a", "/y/a"} and not (tmp_path / JOURNAL_FILE).exists()
    assert fold_journal(tmp_path, RESULT_COLUMNS, KEY_COLUMN) == rows


def test_results_resaved_by_a_spreadsheet_are_read_or_refused_in_one_line(tmp_path):
    path = tmp_path / RESULTS_FILE
    path.write_bytes("\ufeffcase_id;status;input\na;ok;/x/a\n".encode("utf-8"))
    assert read_results(path, "input")["/x/a"]["status"] == "ok"
    path.write_bytes("case_id;status;input\nM\xfcller;ok;/x/a\n".encode("latin-1"))
    with pytest.raises(SarcoError, match=r"results\.csv.*not UTF-8.*Fix:"):
        read_results(path, "input")
    path.write_text("something else\n1,2\n", encoding="utf-8")
    with pytest.raises(SarcoError, match=r"no 'input' column"):
        read_results(path, "input")


def test_stamp_identity_follows_content_and_time_without_reading_a_whole_series(tmp_path):
    a = write(make_image(phantom_array(nz=1)[0]), tmp_path / "a.nii.gz")
    first = file_identity(a, by="stamp")
    assert file_identity(a, by="stamp") == first
    os.utime(a, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert file_identity(a, by="stamp") != first
    series = write_series(tmp_path / "s", phantom_array(nz=3, ny=32, nx=32))
    stamp = file_identity(series, by="stamp")
    (series / "IM0002").unlink()
    assert file_identity(series, by="stamp") != stamp
    assert file_identity(tmp_path / "missing", by="stamp") == MISSING


def test_one_file_identity_two_explicit_rules_in_the_strings_earlier_runs_wrote(tmp_path):
    """batch.py had two near-twin functions (fingerprint, file_identity); now one, whose rule the
    caller names. The strings are unchanged, so results.csv of an earlier sarco still resumes."""
    import hashlib

    scan = tmp_path / "scan.nii"
    data = os.urandom(200_000)
    scan.write_bytes(data)
    os.utime(scan, ns=(10**18, 10**18))
    head = hashlib.sha256(data[:65536]).hexdigest()[:16]
    assert file_identity(scan, by="stamp") == f"200000:{10**18}:{head}"  # size, mtime, first 64 KiB
    assert file_identity(scan, by="content") == f"200000:{hashlib.sha256(data).hexdigest()[:16]}"
    touched = file_identity(scan, by="content")
    os.utime(scan, ns=(1, 1))  # a copy to another node: same bytes, other mtime
    assert file_identity(scan, by="content") == touched and file_identity(scan, by="stamp") != f"200000:{10**18}:{head}"
    assert file_identity(None, by="content") == "" and file_identity(tmp_path / "absent", by="content") == MISSING
    with pytest.raises(TypeError):
        file_identity(scan)  # no default rule: each caller says which question it asks
    with pytest.raises(ValueError, match="stamp"):
        file_identity(scan, by="mtime")


def test_parts_are_a_stable_partition_independent_of_order():
    names = [f"case_{k:03d}.nii.gz" for k in range(200)]
    shares = [part_of(n, 4) for n in names]
    assert [part_of(n, 4) for n in reversed(names)] == shares[::-1]
    assert set(shares) == {0, 1, 2, 3} and min(shares.count(p) for p in range(4)) > 25
    assert all(part_of(n, 1) == 0 for n in names)


def test_output_folder_may_not_lie_inside_inputs_or_the_workspace(tmp_path):
    scans, ws = tmp_path / "scans", tmp_path / "ws"
    (ws / "nnUNet_raw").mkdir(parents=True)
    scans.mkdir()
    with pytest.raises(SarcoError, match="inside the input folder"):
        check_output_location(scans / "results", inputs=[scans])
    with pytest.raises(SarcoError, match="inside the input folder"):
        check_output_location(scans, inputs=[scans])
    with pytest.raises(SarcoError, match="nnUNet_raw"):
        check_output_location(ws / "nnUNet_raw" / "pred", workspace_root=ws)
    (tmp_path / "ref").mkdir()
    with pytest.raises(SarcoError, match="reference folder"):
        check_output_location(tmp_path / "ref" / "r", references=[tmp_path / "ref"])
    check_output_location(tmp_path / "pred", inputs=[scans], workspace_root=ws)


def test_every_entry_of_a_batch_folder_becomes_a_scan(tmp_path):
    batch = tmp_path / "batch"
    hu = phantom_array(nz=1, ny=48, nx=56)[0]
    write(make_image(hu, spacing=(0.8, 0.8)), batch / "good.nii.gz")
    write(make_image(hu, spacing=(0.8, 0.8)), batch / "_0000.nii.gz")
    write(make_image(hu[None], spacing=(0.8, 0.8, 1.0)), batch / "meta.mhd")  # + meta.raw companion
    os.symlink(batch / "gone.nii.gz", batch / "dangling.nii.gz")
    os.symlink(batch / "loop.nii.gz", batch / "loop.nii.gz")
    (batch / "analyze.hdr").write_bytes(b"\0" * 348)
    (batch / "analyze.img").write_bytes(b"\0" * 16)
    (batch / "notes.txt").write_text("hello")
    one = write_series(tmp_path / "tmp", hu[None].astype(np.int16))
    (one / "IM0000").rename(batch / "IM0000")
    scans = {s.case_id: s for s in discover_scans(batch)}
    assert set(scans) == {"good", "_0000.nii.gz", "meta", "dangling", "loop", "analyze", "notes.txt", "IM0000"}
    problems = {k: (str(s.error) if s.error else "") for k, s in scans.items()}
    assert problems["good"] == problems["meta"] == problems["IM0000"] == ""
    assert "broken symbolic link" in problems["dangling"] and "loop" in problems["loop"]
    assert ".hdr/.img" in problems["analyze"] and "empty case id" in problems["_0000.nii.gz"]
    assert "unknown file type" in problems["notes.txt"]
    assert all("Fix:" in p for p in problems.values() if p)


def test_output_names_stay_short_and_unique():
    long_id = "p" * 240
    stem = _output_stem(long_id, "/a/" + long_id, {})
    assert len((".%s.partial12345678.nii.gz" % stem).encode()) < 255
    assert _output_stem("patient", "/b/patient", {"patient": "/a/patient"}) != "patient"
    assert _output_stem("patient", "/a/patient", {"patient": "/a/patient"}) == "patient"
    assert _plain_text("a$b$c") == r"a\$b\$c"


def test_a_dollar_title_renders(tmp_path):
    from sarco_nn.overlay import save_overlay

    hu = phantom_array(nz=1)[0]
    save_overlay(hu, (hu > 20).astype(np.uint8), (0.8, 0.7), tmp_path / "o.png", title=_plain_text("x$\\frac{$y"))
    assert (tmp_path / "o.png").stat().st_size > 0


def test_truncated_run_file_is_one_line_naming_it(tmp_path):
    (tmp_path / RUN_FILE).write_text('{"model": "/ws/x", "fo')
    with pytest.raises(SarcoError, match=r"sarco_predict\.json.*damaged or truncated.*Fix:"):
        _check_output_folder(tmp_path, {"model": "/ws/x"}, overwrite=False)


@pytest.mark.parametrize("data, problem", [
    (b"case_id,l3_slice\nA,12,3\n", r"line 2 has 3 cells"),
    ("case_id,l3_slice\nM\xfcller,12\n".encode("latin-1"), r"not UTF-8"),
])
def test_l3_csv_problems_are_one_line(tmp_path, data, problem):
    path = tmp_path / "l3.csv"
    path.write_bytes(data)
    with pytest.raises(InputError, match=problem):
        read_l3_csv(path)


def _fake_part(folder: Path, part: int, parts: int, cases: list[str], signature_extra: dict | None = None) -> None:
    folder.mkdir(parents=True)
    (folder / RUN_FILE).write_text(json.dumps({"model": "/m", "part": part, "parts": parts, **(signature_extra or {})}))
    journal = Journal(folder / JOURNAL_FILE)  # as a part killed before its final fold leaves it
    for case in cases:
        journal.append(f"/in/{case}", {"case_id": case, "input": f"/in/{case}", "status": "ok",
                                        "mask": f"masks/{case}.nii.gz"})


def test_merge_joins_every_part_and_refuses_an_incomplete_or_mixed_set(tmp_path):
    _fake_part(tmp_path / "p0", 0, 2, ["a", "b"])
    _fake_part(tmp_path / "p1", 1, 2, ["c"])
    merged = merge_parts([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE,
                         PATH_COLUMNS)
    rows = read_results(merged.results_csv, KEY_COLUMN)
    assert merged.n_rows == 3 and set(rows) == {"/in/a", "/in/b", "/in/c"}
    assert (tmp_path / "all" / rows["/in/c"]["mask"]).resolve() == (tmp_path / "p1" / "masks" / "c.nii.gz").resolve()
    with pytest.raises(SarcoError, match=r"part\(s\) \[1\] of 2 missing"):
        merge_parts([tmp_path / "p0"], tmp_path / "x", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE, PATH_COLUMNS)
    _fake_part(tmp_path / "q1", 1, 2, ["c"], {"model": "/other"})
    with pytest.raises(SarcoError, match="different models"):
        merge_parts([tmp_path / "p0", tmp_path / "q1"], tmp_path / "y", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE,
                    PATH_COLUMNS)


def test_merge_rewrites_the_dicom_seg_path_like_the_mask_path(tmp_path):
    """A part's DICOM SEG stays in its folder, like its mask: the merged table must point there,
    not at <merged>/dicom_seg/..., where no file is."""
    for part, case in ((0, "a"), (1, "c")):
        folder = tmp_path / f"p{part}"
        folder.mkdir()
        (folder / RUN_FILE).write_text(json.dumps({"model": "/m", "part": part, "parts": 2}))
        Journal(folder / JOURNAL_FILE).append(f"/in/{case}", {
            "case_id": case, "input": f"/in/{case}", "status": "ok", "mask": f"masks/{case}.nii.gz",
            "dicom_seg": f"dicom_seg/{case}.dcm"})
    merged = merge_parts([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE,
                         PATH_COLUMNS)
    rows = read_results(merged.results_csv, KEY_COLUMN)
    assert (tmp_path / "all" / rows["/in/c"]["dicom_seg"]).resolve() == (tmp_path / "p1" / "dicom_seg" / "c.dcm").resolve()


def test_a_slice_whose_spacing_would_give_an_absurd_network_grid_fails_before_the_network():
    """9 mm "pixels" on a 512² slice would be a 4608² grid at a 1 mm model: minutes of network time
    for a number that cannot be right (found by a hostile-user run). A genuine 0.5 mm slice passes."""
    from types import SimpleNamespace

    from sarco_nn.inference import MAX_NETWORK_EDGE_PX, Scan, _huge_network_grid
    from sarco_nn.status import Status

    predictor = SimpleNamespace(configuration_manager=SimpleNamespace(spacing=[1.0, 1.0]))
    scan = Scan("p", Path("p.nii.gz"))
    assert _huge_network_grid((512, 512), (0.5, 0.5), predictor, scan) is None
    assert _huge_network_grid((512, 512), (0.98, 0.98), predictor, scan) is None
    reason = _huge_network_grid((512, 512), (9.0, 9.0), predictor, scan)
    assert reason is not None and reason.status is Status.FAILED and reason.code == "implausible_spacing"
    assert "4608" in reason.message and MAX_NETWORK_EDGE_PX < 4608


def test_file_identity_follows_content_not_time_or_place(tmp_path):
    """A model retrained in place has other content (other identity); a copy to another node (other
    mtime) has the same. Large files: size + first and last 64 KiB (a zip checkpoint's directory)."""
    big = tmp_path / "checkpoint.pth"
    data = bytearray(os.urandom(3 << 20))
    big.write_bytes(bytes(data))
    first = file_identity(big, by="content")
    os.utime(big, ns=(1, 1))
    copy = tmp_path / "copy.pth"
    copy.write_bytes(bytes(data))
    assert file_identity(big, by="content") == file_identity(copy, by="content") == first
    data[-10] ^= 0xFF  # the tail (a zip's central directory with every record's CRC)
    big.write_bytes(bytes(data))
    assert file_identity(big, by="content") != first
    small = tmp_path / "clinical.csv"
    small.write_text("case_id,sex,height_m\na,F,1.60\n")
    before = file_identity(small, by="content")
    small.write_text("case_id,sex,height_m\na,F,1.70\n")
    assert file_identity(small, by="content") != before and file_identity(tmp_path / "absent", by="content") == MISSING


def test_row_fingerprint_names_what_changed():
    inputs = {"clinical": {"sex": "F", "height_m": 1.6}, "l3_csv_row": None, "l3_locator": ""}
    settings = settings_digest({"model": "/m", "thresholds": "paper"})
    assert settings == settings_digest({"thresholds": "paper", "model": "/m"})  # order does not matter
    row = row_fingerprint(settings, inputs)
    assert fingerprint_changes(row, row, inputs) == []
    taller = row_fingerprint(settings, {**inputs, "clinical": {"sex": "F", "height_m": 1.7}})
    assert fingerprint_changes(row, taller, inputs) == ["clinical"]
    other = row_fingerprint(settings_digest({"model": "/m", "thresholds": "prado"}), inputs)
    assert fingerprint_changes(row, other, inputs) == ["settings"]
    assert fingerprint_changes("", row, inputs) == ["unrecorded"]


def test_run_file_change_is_refused_naming_the_changed_setting(tmp_path):
    from sarco_nn.predict_settings import FINGERPRINT_VERSION

    signature = {"fingerprint_version": FINGERPRINT_VERSION, "model": "m", "model_files": {"fold_0": "1:ab"},
                 "thresholds": "paper"}
    (tmp_path / RUN_FILE).write_text(json.dumps(signature))
    assert _check_output_folder(tmp_path, dict(signature), overwrite=False) is False  # an identical rerun
    retrained = {**signature, "model_files": {"fold_0": "2:cd"}}
    with pytest.raises(SarcoError, match=r"changed: model_files.*--overwrite"):
        _check_output_folder(tmp_path, retrained, overwrite=False)
    assert _check_output_folder(tmp_path, retrained, overwrite=True) is True
    (tmp_path / RUN_FILE).write_text(json.dumps({"model": "/ws/m", "thresholds": "paper"}))  # an older sarco's
    with pytest.raises(SarcoError, match=r"earlier sarco version"):
        _check_output_folder(tmp_path, signature, overwrite=False)



def _part_with_one_row(tmp_path, part: int, run_file: dict, digest_of: dict) -> None:
    """Part `part` of a batch without a model: its run file and one journal row computed under `digest_of`."""
    folder = tmp_path / f"p{part}"
    folder.mkdir()
    (folder / RUN_FILE).write_text(json.dumps(run_file))
    Journal(folder / JOURNAL_FILE).append(f"/in/{part}", {
        "case_id": str(part), "input": f"/in/{part}", "status": "ok", "mask": f"masks/{part}.nii.gz",
        FINGERPRINT_COLUMN: f"{settings_digest(digest_of)}.00000000"})


def test_merge_refuses_a_part_holding_rows_of_other_settings(tmp_path):
    """A part folder re-run with --overwrite under other settings keeps the earlier rows of inputs it did
    not see again: merging them as this batch's results would mix two settings in one table."""
    for part in (0, 1):
        _part_with_one_row(tmp_path, part, {"model": "/m", "part": part, "parts": 2}, {"model": "/m"})
    merged = merge_parts([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE,
                         PATH_COLUMNS)
    assert merged.n_rows == 2
    Journal(tmp_path / "p1" / JOURNAL_FILE).append("/in/old", {
        "case_id": "old", "input": "/in/old", "status": "ok", "mask": "masks/old.nii.gz",
        FINGERPRINT_COLUMN: f"{settings_digest({'model': '/earlier'})}.00000000"})
    with pytest.raises(SarcoError, match=r"1 row\(s\) of this part were computed with other settings"):
        merge_parts([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE,
                    PATH_COLUMNS)


def test_the_test_signal_hook_is_inert_unless_set_and_refuses_a_malformed_value(monkeypatch):
    from sarco_nn.inference import TEST_SIGNAL_ENV, _test_signal_hook

    monkeypatch.delenv(TEST_SIGNAL_ENV, raising=False)
    assert _test_signal_hook() is None
    monkeypatch.setenv(TEST_SIGNAL_ENV, "INT:2")
    hook = _test_signal_hook()
    hook(1)  # not yet
    with pytest.raises(KeyboardInterrupt):
        hook(2)
    monkeypatch.setenv(TEST_SIGNAL_ENV, "TERM:x")
    with pytest.raises(SarcoError, match="test-only"):
        _test_signal_hook()


def test_a_row_moves_with_its_input_only_when_path_relative_to_the_folder_and_fingerprint_agree():
    from sarco_nn.batch import rekey_moved_rows

    rows = {"/mnt/a/scans/x.nii.gz": {"input": "/mnt/a/scans/x.nii.gz", "input_fingerprint": "fx", "sma_cm2": "1"},
            "/mnt/a/scans/sub/y.nii.gz": {"input": "/mnt/a/scans/sub/y.nii.gz", "input_fingerprint": "fy"},
            "/mnt/a/scans/z.nii.gz": {"input": "/mnt/a/scans/z.nii.gz", "input_fingerprint": "fz"},
            "/elsewhere/x.nii.gz": {"input": "/elsewhere/x.nii.gz", "input_fingerprint": "fx"}}
    current = {"/node7/scans/x.nii.gz": ("x.nii.gz", "fx"), "/node7/scans/sub/y.nii.gz": ("sub/y.nii.gz", "fy"),
               "/node7/scans/z.nii.gz": ("z.nii.gz", "other scan, same name")}
    assert rekey_moved_rows(rows, current, "/mnt/a/scans", KEY_COLUMN) == 2
    assert rows["/node7/scans/x.nii.gz"] == {"input": "/node7/scans/x.nii.gz", "input_fingerprint": "fx", "sma_cm2": "1"}
    assert "/node7/scans/sub/y.nii.gz" in rows and "/mnt/a/scans/x.nii.gz" not in rows
    assert "/mnt/a/scans/z.nii.gz" in rows and "/node7/scans/z.nii.gz" not in rows  # another scan: its own row
    assert "/elsewhere/x.nii.gz" in rows  # not under the recorded folder
    assert rekey_moved_rows(rows, current, None, KEY_COLUMN) == 0  # a run file of an earlier sarco: as before


def test_a_row_whose_input_is_still_at_its_recorded_path_stays_that_inputs_row(tmp_path):
    from sarco_nn.batch import rekey_moved_rows

    original = write(make_image(phantom_array(nz=1, ny=16, nx=16)[0]), tmp_path / "monday" / "x.nii.gz")
    key = str(original)
    rows = {key: {"input": key, "input_fingerprint": "fx"}}
    copy = {str(tmp_path / "tuesday" / "x.nii.gz"): ("x.nii.gz", "fx")}  # cp -p: same bytes, same mtime
    assert rekey_moved_rows(rows, copy, str(tmp_path / "monday"), KEY_COLUMN) == 0 and set(rows) == {key}


def _fake_model_predict(monkeypatch, tmp_path: Path, stop_after: int | None = None, workspace: str = "ws") -> list[str]:
    """`inference.predict` with the model, the reader and the network faked (no nnU-Net, no torch):
    every case is `ok` with a mask file on disk. Returns the list the faked network appends the
    relative path of each case it measures to; it raises KeyboardInterrupt at call `stop_after + 1`.
    The model's files (plans, dataset.json, one checkpoint) are written under tmp_path/`workspace`
    unless there already."""
    from types import SimpleNamespace

    import sarco_nn.inference as inference
    from sarco_nn.model_store import TrainedModel

    model_dir = tmp_path / workspace / "nnUNet_results" / "Dataset501_T" / "T__P__2d"
    if not model_dir.exists():
        (model_dir / "fold_all").mkdir(parents=True)
        (model_dir / "plans.json").write_text("{}")
        (model_dir / "dataset.json").write_text('{"labels": {"background": 0, "muscle": 1}}')
        (model_dir / "fold_all" / "checkpoint_final.pth").write_bytes(b"weights-1")
    monkeypatch.setattr("sarco_nn.model_store.find_model", lambda *a, **k: TrainedModel(model_dir, ["all"]))
    monkeypatch.setattr("sarco_nn.postprocessing.ensure_postprocessing", lambda *a, **k: None)
    monkeypatch.setattr("sarco_nn.devices.resolve_device", lambda *a, **k: SimpleNamespace(type="cpu"))
    monkeypatch.setattr("sarco_nn.model_store.inference_settings",
                        lambda *a, **k: SimpleNamespace(as_dict=lambda: {}, label=lambda: "fake"))
    monkeypatch.setattr("sarco_nn.model_store.build_predictor", lambda *a, **k: SimpleNamespace(use_mirroring=False))
    monkeypatch.setattr(inference, "_prepare_case", lambda scan, ctx: inference._CaseInput(reasons=[]))
    monkeypatch.setattr(inference, "_write_review_outputs", lambda *a, **k: None)
    measured: list[str] = []

    def network(scan, stem, case, verdict, predictor, pp, out_dir, *rest):
        if stop_after is not None and len(measured) == stop_after:
            raise KeyboardInterrupt
        measured.append(scan.relative)
        mask = Path("masks") / f"{stem}.nii.gz"
        return {"sma_cm2": "150.00", "mask": str(mask)}, lambda: (out_dir / "masks").mkdir(exist_ok=True) or (
            out_dir / mask).write_bytes(b"mask")

    monkeypatch.setattr(inference, "_segment_and_measure", network)
    return measured


def test_a_part_resumed_where_its_inputs_are_mounted_at_another_path_keeps_its_rows(tmp_path, monkeypatch):
    # before: rows were keyed by the absolute path only, so the resumed part measured every case
    # again and its results.csv held both sets (HOSTILE_FINDINGS #67)
    import csv

    import sarco_nn.inference as inference
    from sarco_nn.errors import Interrupted
    from sarco_nn.workspace import Workspace

    names = [f"scan_{i:02d}.nii.gz" for i in range(8)]
    for name in names:
        write(make_image(phantom_array(nz=1, ny=16, nx=16)[0]), tmp_path / "mnt_a" / "scans" / name)
    mine = sorted(n for n in names if part_of(n, 2) == 0)
    assert len(mine) >= 3
    out, ws = tmp_path / "p0", Workspace(tmp_path / "ws")
    first = _fake_model_predict(monkeypatch, tmp_path, stop_after=2)
    with pytest.raises(Interrupted):  # killed after 2 of its cases
        inference.predict(ws, tmp_path / "mnt_a" / "scans", out, device="cpu", progress=False, part=0, parts=2,
                          io_workers=1)
    assert first == mine[:2]
    os.rename(tmp_path / "mnt_a", tmp_path / "mnt_b")  # the same files, another mount path (mtimes kept)
    resumed = _fake_model_predict(monkeypatch, tmp_path)
    inference.predict(ws, tmp_path / "mnt_b" / "scans", out, device="cpu", progress=False, part=0, parts=2,
                      io_workers=1)
    assert resumed == mine[2:]  # only the cases the killed run had not finished
    with open(out / RESULTS_FILE, newline="", encoding="utf-8") as handle:
        inputs = sorted(row["input"] for row in csv.DictReader(handle))
    assert inputs == [os.path.abspath(tmp_path / "mnt_b" / "scans" / n) for n in mine]  # once each, the new path
    # the other part, run on the new mount, merges with it into one complete batch
    _fake_model_predict(monkeypatch, tmp_path)
    inference.predict(ws, tmp_path / "mnt_b" / "scans", tmp_path / "p1", device="cpu", progress=False, part=1,
                      parts=2, io_workers=1)
    merged = merge_parts([out, tmp_path / "p1"], tmp_path / "all", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE, PATH_COLUMNS)
    assert merged.n_rows == len(names) and merged.n_missing == 0


def test_a_resume_killed_while_it_re_keys_moved_rows_still_keeps_them_next_time(tmp_path, monkeypatch):
    # before: the run file (which records the -i folder) was rewritten with the new mount path before
    # the moved rows were re-keyed and written, so a resume killed in between (a large journal to fold,
    # a full disk) left rows under the old path and a run file naming the new one: the next resume
    # measured every case again and results.csv held both sets (HOSTILE_FINDINGS #69)
    import csv

    import sarco_nn.inference as inference
    from sarco_nn.errors import Interrupted
    from sarco_nn.workspace import Workspace

    names = [f"scan_{i:02d}.nii.gz" for i in range(4)]
    for name in names:
        write(make_image(phantom_array(nz=1, ny=16, nx=16)[0]), tmp_path / "mnt_a" / "scans" / name)
    out, ws = tmp_path / "out", Workspace(tmp_path / "ws")
    _fake_model_predict(monkeypatch, tmp_path, stop_after=2)
    with pytest.raises(Interrupted):
        inference.predict(ws, tmp_path / "mnt_a" / "scans", out, device="cpu", progress=False, io_workers=1)
    os.rename(tmp_path / "mnt_a", tmp_path / "mnt_b")
    _fake_model_predict(monkeypatch, tmp_path)

    def killed(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(inference, "write_rows", killed)  # the re-keyed rows never reach results.csv
    with pytest.raises(SarcoError, match="cannot write to the output folder"):
        inference.predict(ws, tmp_path / "mnt_b" / "scans", out, device="cpu", progress=False, io_workers=1)
    monkeypatch.undo()
    resumed = _fake_model_predict(monkeypatch, tmp_path)
    inference.predict(ws, tmp_path / "mnt_b" / "scans", out, device="cpu", progress=False, io_workers=1)
    assert resumed == names[2:]  # the two rows the first run finished are kept
    with open(out / RESULTS_FILE, newline="", encoding="utf-8") as handle:
        inputs = sorted(row["input"] for row in csv.DictReader(handle))
    assert inputs == [os.path.abspath(tmp_path / "mnt_b" / "scans" / n) for n in names]


def test_a_part_resumed_where_the_workspace_is_mounted_at_another_path_keeps_its_rows(tmp_path, monkeypatch):
    # before: the run settings held the model folder's absolute path, so the resumed part was refused
    # as "other settings (changed: model)" and merge refused the two parts as different models,
    # although the model files (by content) were the same (HOSTILE_FINDINGS #76)
    import shutil

    import sarco_nn.inference as inference
    from sarco_nn.errors import Interrupted
    from sarco_nn.workspace import Workspace

    names = [f"scan_{i:02d}.nii.gz" for i in range(8)]
    for name in names:
        write(make_image(phantom_array(nz=1, ny=16, nx=16)[0]), tmp_path / "scans" / name)
    mine = sorted(n for n in names if part_of(n, 2) == 0)
    out = tmp_path / "p0"
    _fake_model_predict(monkeypatch, tmp_path, stop_after=2, workspace="ws_a")
    with pytest.raises(Interrupted):  # killed after 2 of its cases on a node mounting the workspace at ws_a
        inference.predict(Workspace(tmp_path / "ws_a"), tmp_path / "scans", out, device="cpu", progress=False,
                          part=0, parts=2, io_workers=1)
    shutil.copytree(tmp_path / "ws_a", tmp_path / "ws_b")  # another node: same bytes, new path and mtimes
    resumed = _fake_model_predict(monkeypatch, tmp_path, workspace="ws_b")
    inference.predict(Workspace(tmp_path / "ws_b"), tmp_path / "scans", out, device="cpu", progress=False,
                      part=0, parts=2, io_workers=1)
    assert resumed == mine[2:]  # only the cases the killed run had not finished
    run = json.loads((out / RUN_FILE).read_text())
    assert run["model_folder"] == str(tmp_path / "ws_b" / "nnUNet_results" / "Dataset501_T" / "T__P__2d")
    assert run["model"] == "T__P__2d"  # recorded for people; the settings name the model, not its mount
    # the other part on the first node: one batch with it
    _fake_model_predict(monkeypatch, tmp_path, workspace="ws_a")
    inference.predict(Workspace(tmp_path / "ws_a"), tmp_path / "scans", tmp_path / "p1", device="cpu",
                      progress=False, part=1, parts=2, io_workers=1)
    merged = merge_parts([out, tmp_path / "p1"], tmp_path / "all", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE, PATH_COLUMNS)
    assert merged.n_rows == len(names) and merged.n_missing == 0
    # a model whose checkpoint content changed (retrained in place) is still other settings
    (tmp_path / "ws_b" / "nnUNet_results" / "Dataset501_T" / "T__P__2d" / "fold_all" /
     "checkpoint_final.pth").write_bytes(b"weights-2")
    _fake_model_predict(monkeypatch, tmp_path, workspace="ws_b")
    with pytest.raises(SarcoError, match=r"changed: model_files"):
        inference.predict(Workspace(tmp_path / "ws_b"), tmp_path / "scans", out, device="cpu", progress=False,
                          part=0, parts=2, io_workers=1)


def _as_version(out: Path, version: int) -> str:
    """Rewrite a predict folder as a sarco of fingerprint version `version` (1 or 2) wrote it, and return
    the digest its rows then carried. Version 2: --l3-csv, --l3-from and a --thresholds file were their
    paths in the settings (null when not given), no "setting_paths" record. Version 1, moreover: "model"
    was the model's absolute folder, no "model_folder" record."""
    from sarco_nn.batch import MODEL_RECORD, PATHS_RECORD, fold_journal, run_settings_in, write_rows

    run = json.loads((out / RUN_FILE).read_text())
    paths = run.get(PATHS_RECORD, {})
    settings = {**run_settings_in(run), "fingerprint_version": 2, "l3_csv": paths.get("l3_csv"),
                "l3_from": paths.get("l3_from"), "thresholds": paths.get("thresholds", run["thresholds"])}
    records = {MODEL_RECORD: run[MODEL_RECORD]}
    if version == 1:
        settings.update(fingerprint_version=1, model=run[MODEL_RECORD])
        records = {}
    old = settings_digest({k: v for k, v in settings.items() if k not in ("part", "parts")})
    (out / RUN_FILE).write_text(json.dumps({**settings, **records, "inputs": run["inputs"]}, indent=2))
    rows = fold_journal(out, RESULT_COLUMNS, KEY_COLUMN)
    for row in rows.values():
        row[FINGERPRINT_COLUMN] = old + "." + row[FINGERPRINT_COLUMN].partition(".")[2]
    write_rows(out, RESULT_COLUMNS, KEY_COLUMN, rows)
    return old


def test_a_folder_of_the_earlier_fingerprint_version_resumes_without_measuring_its_rows_again(tmp_path, monkeypatch):
    """Version 1 differs from 2 only in the form of "model" (an absolute path then): such a folder is
    neither refused ("written by an earlier sarco version") nor measured again; its rows get this
    version's digest once, so the next resume (and merge) finds them too. Its model retrained is
    still refused."""
    import sarco_nn.inference as inference
    from sarco_nn.errors import Interrupted
    from sarco_nn.workspace import Workspace

    names = [f"scan_{i:02d}.nii.gz" for i in range(4)]
    for name in names:
        write(make_image(phantom_array(nz=1, ny=16, nx=16)[0]), tmp_path / "scans" / name)
    out, ws = tmp_path / "out", Workspace(tmp_path / "ws")
    _fake_model_predict(monkeypatch, tmp_path, stop_after=2)
    with pytest.raises(Interrupted):
        inference.predict(ws, tmp_path / "scans", out, device="cpu", progress=False, io_workers=1)
    old = _as_version(out, 1)
    resumed = _fake_model_predict(monkeypatch, tmp_path)
    inference.predict(ws, tmp_path / "scans", out, device="cpu", progress=False, io_workers=1)
    assert resumed == names[2:]
    run = json.loads((out / RUN_FILE).read_text())
    assert run["fingerprint_version"] == 3 and run["model"] == "T__P__2d" and run["model_folder"].endswith("T__P__2d")
    stamps = {r[FINGERPRINT_COLUMN].split(".")[0] for r in read_results(out / RESULTS_FILE, KEY_COLUMN).values()}
    assert len(stamps) == 1 and old not in stamps  # one digest, this version's
    again = _fake_model_predict(monkeypatch, tmp_path)
    inference.predict(ws, tmp_path / "scans", out, device="cpu", progress=False, io_workers=1)
    assert again == []
    _as_version(out, 1)
    (tmp_path / "ws" / "nnUNet_results" / "Dataset501_T" / "T__P__2d" / "fold_all" /
     "checkpoint_final.pth").write_bytes(b"weights-2")
    _fake_model_predict(monkeypatch, tmp_path)
    with pytest.raises(SarcoError, match=r"changed: model_files; /.*T__P__2d"):
        inference.predict(ws, tmp_path / "scans", out, device="cpu", progress=False, io_workers=1)


def _scans_and_setting_files(tmp_path: Path, n: int, mount: str) -> list[str]:
    """`n` scans under tmp_path/scans, and an --l3-csv (a row per case) and a --thresholds file under
    tmp_path/`mount`, as a batch reading its tables from a mounted share. Returns the scan names."""
    names = [f"scan_{i:02d}.nii.gz" for i in range(n)]
    for name in names:
        write(make_image(phantom_array(nz=1, ny=16, nx=16)[0]), tmp_path / "scans" / name)
    (tmp_path / mount).mkdir()
    (tmp_path / mount / "l3.csv").write_text("case_id,l3_slice\n" + "".join(f"scan_{i:02d},0\n" for i in range(n)))
    (tmp_path / mount / "site.json").write_text(json.dumps({"name": "site", "metric": "smi", "male": 50.0,
                                                             "female": 39.0}))
    return names


def _predict_with_files_at(tmp_path: Path, mount: str, out: Path, **changes) -> None:
    import sarco_nn.inference as inference
    from sarco_nn.workspace import Workspace

    options = dict(l3_csv=tmp_path / mount / "l3.csv", thresholds=str(tmp_path / mount / "site.json"))
    inference.predict(Workspace(tmp_path / "ws"), tmp_path / "scans", out, device="cpu", progress=False,
                      io_workers=1, **{**options, **changes})


def test_a_batch_resumed_with_its_l3_csv_and_threshold_file_at_another_path_measures_nothing_again(
        tmp_path, monkeypatch, capsys):
    # before: the run settings held the absolute paths of --l3-csv and a --thresholds file, so the same
    # batch resumed where its tables are mounted elsewhere (or copied next to the new mount) was refused
    # as "other settings (changed: l3_csv, thresholds)", although their contents were the same (#16)
    import shutil

    from sarco_nn.errors import Interrupted

    names = _scans_and_setting_files(tmp_path, 4, "mnt_a")
    out = tmp_path / "out"
    _fake_model_predict(monkeypatch, tmp_path, stop_after=2)
    with pytest.raises(Interrupted):
        _predict_with_files_at(tmp_path, "mnt_a", out)
    os.rename(tmp_path / "mnt_a", tmp_path / "mnt_b")  # the share mounted at another path
    resumed = _fake_model_predict(monkeypatch, tmp_path)
    _predict_with_files_at(tmp_path, "mnt_b", out)
    assert resumed == names[2:]  # only the cases the killed run had not finished
    run = json.loads((out / RUN_FILE).read_text())
    assert (run["l3_csv"], run["l3_from"], run["thresholds"]) == (True, False, "site.json")
    assert run["setting_paths"] == {"l3_csv": str(tmp_path / "mnt_b" / "l3.csv"),
                                    "thresholds": str(tmp_path / "mnt_b" / "site.json")}  # recorded, not compared
    shutil.copytree(tmp_path / "mnt_b", tmp_path / "copy")  # the tables copied next to another mount
    again = _fake_model_predict(monkeypatch, tmp_path)
    _predict_with_files_at(tmp_path, "copy", out)
    assert again == []
    # changed contents still count: an edited L3 row measures that case again, with a note
    (tmp_path / "copy" / "l3.csv").write_text("case_id,l3_slice\n" + "".join(
        f"scan_{i:02d},{5 if i == 1 else 0}\n" for i in range(4)))
    capsys.readouterr()
    edited = _fake_model_predict(monkeypatch, tmp_path)
    _predict_with_files_at(tmp_path, "copy", out)
    assert edited == ["scan_01.nii.gz"] and "--l3-csv row changed (1)" in capsys.readouterr().err
    # a threshold file of other contents, another file name, or no --l3-csv is other settings, naming the
    # setting and the file the earlier run read it from
    earlier = tmp_path / "copy" / "site.json"
    (tmp_path / "copy" / "renamed.json").write_text(earlier.read_text())
    earlier.write_text(json.dumps({"name": "site", "metric": "smi", "male": 52.0, "female": 39.0}))
    _fake_model_predict(monkeypatch, tmp_path)
    with pytest.raises(SarcoError, match=rf"changed: threshold_definition; /.*T__P__2d, thresholds was {earlier}"):
        _predict_with_files_at(tmp_path, "copy", out)
    with pytest.raises(SarcoError, match=rf"changed: thresholds; /.*T__P__2d, thresholds was {earlier}"):
        _predict_with_files_at(tmp_path, "copy", out, thresholds=str(tmp_path / "copy" / "renamed.json"))
    with pytest.raises(SarcoError, match=rf"changed: l3_csv, threshold_definition; .*, l3_csv was "
                                         rf"{tmp_path / 'copy' / 'l3.csv'}, thresholds was {earlier}"):
        _predict_with_files_at(tmp_path, "copy", out, l3_csv=None)


@pytest.mark.parametrize("version", [1, 2])
def test_a_folder_of_an_earlier_version_that_named_its_files_by_path_resumes_at_another_mount(
        tmp_path, monkeypatch, version):
    """A half-finished batch of version 2 (--l3-csv and the threshold file by their paths) or 1 (the
    model too) resumes where its files are mounted elsewhere: translated exactly, neither refused nor
    measured again, its rows re-stamped once; other threshold contents are still refused."""
    from sarco_nn.errors import Interrupted

    names = _scans_and_setting_files(tmp_path, 4, "mnt_a")
    out = tmp_path / "out"
    _fake_model_predict(monkeypatch, tmp_path, stop_after=2)
    with pytest.raises(Interrupted):
        _predict_with_files_at(tmp_path, "mnt_a", out)
    old = _as_version(out, version)
    written = json.loads((out / RUN_FILE).read_text())
    assert written["l3_csv"] == str(tmp_path / "mnt_a" / "l3.csv") and "setting_paths" not in written
    os.rename(tmp_path / "mnt_a", tmp_path / "mnt_b")
    resumed = _fake_model_predict(monkeypatch, tmp_path)
    _predict_with_files_at(tmp_path, "mnt_b", out)
    assert resumed == names[2:]
    run = json.loads((out / RUN_FILE).read_text())
    assert run["fingerprint_version"] == 3 and run["l3_csv"] is True and run["thresholds"] == "site.json"
    stamps = {r[FINGERPRINT_COLUMN].split(".")[0] for r in read_results(out / RESULTS_FILE, KEY_COLUMN).values()}
    assert len(stamps) == 1 and old not in stamps  # one digest, this version's
    again = _fake_model_predict(monkeypatch, tmp_path)
    _predict_with_files_at(tmp_path, "mnt_b", out)
    assert again == []
    _as_version(out, version)
    (tmp_path / "mnt_b" / "site.json").write_text(json.dumps({"name": "site", "metric": "smi", "male": 52.0,
                                                               "female": 39.0}))
    _fake_model_predict(monkeypatch, tmp_path)
    with pytest.raises(SarcoError, match=r"changed: threshold_definition; .*thresholds was /.*mnt_b/site\.json"):
        _predict_with_files_at(tmp_path, "mnt_b", out)


def test_merge_joins_a_part_of_the_earlier_fingerprint_version_with_one_of_this(tmp_path):
    """A batch whose parts straddle a sarco upgrade (and two mount paths) is one batch when only the
    form of "model" differs; another checkpoint is still another model."""
    files = {"fold_0": "9:abc"}
    v1 = {"fingerprint_version": 1, "model": "/mnt/a/ws/nnUNet_results/D/T__P__2d", "model_files": files}
    v3 = {"fingerprint_version": 3, "model": "T__P__2d", "model_files": files}
    for part, settings, record in ((0, v1, {}), (1, v3, {"model_folder": "/mnt/b/ws/nnUNet_results/D/T__P__2d"})):
        _part_with_one_row(tmp_path, part, {**settings, **record, "part": part, "parts": 2}, settings)
    merged = merge_parts([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE,
                         PATH_COLUMNS)
    assert merged.n_rows == 2
    # a resume of part 0 killed after it re-stamped its rows, before it rewrote its run file
    Journal(tmp_path / "p0" / JOURNAL_FILE).append("/in/0", {
        "case_id": "0", "input": "/in/0", "status": "ok", "mask": "masks/0.nii.gz",
        FINGERPRINT_COLUMN: f"{settings_digest(v3)}.00000000"})
    merged = merge_parts([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all1", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE,
                         PATH_COLUMNS)
    assert merged.n_rows == 2
    (tmp_path / "p1" / RUN_FILE).write_text(json.dumps({**v3, "model_files": {"fold_0": "9:def"}, "part": 1,
                                                        "parts": 2}))
    with pytest.raises(SarcoError, match=r"different models.*model_files"):
        merge_parts([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all2", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE,
                    PATH_COLUMNS)


def test_merge_joins_parts_of_three_versions_whose_files_were_mounted_at_three_paths(tmp_path):
    """Parts by sarco versions 1, 2 and this one, each reading --l3-csv and the threshold file at its own
    mount, are one batch: only the form of "model", "l3_csv" and "thresholds" differs. A part given
    another threshold file name is another batch, named."""
    common = {"model_files": {"fold_0": "9:abc"}, "threshold_definition": "ThresholdSet(name='site')", "l3_from": None}
    v1 = {**common, "fingerprint_version": 1, "model": "/mnt/a/ws/nnUNet_results/D/T__P__2d",
          "l3_csv": "/mnt/a/l3.csv", "thresholds": "/mnt/a/site.json"}
    v2 = {**common, "fingerprint_version": 2, "model": "T__P__2d", "l3_csv": "/mnt/b/l3.csv",
          "thresholds": "/mnt/b/site.json"}
    v3 = {**common, "fingerprint_version": 3, "model": "T__P__2d", "l3_csv": True, "l3_from": False,
          "thresholds": "site.json"}
    record = {"model_folder": "/mnt/c/ws/nnUNet_results/D/T__P__2d",
              "setting_paths": {"l3_csv": "/mnt/c/l3.csv", "thresholds": "/mnt/c/site.json"}}
    for part, settings, extra in ((0, v1, {}), (1, v2, {"model_folder": "/mnt/b/ws"}), (2, v3, record)):
        _part_with_one_row(tmp_path, part, {**settings, **extra, "part": part, "parts": 3}, settings)
    folders = [tmp_path / f"p{part}" for part in range(3)]
    merged = merge_parts(folders, tmp_path / "all", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE, PATH_COLUMNS)
    assert merged.n_rows == 3
    (tmp_path / "p2" / RUN_FILE).write_text(json.dumps({**v3, **record, "thresholds": "other.json", "part": 2,
                                                        "parts": 3}))
    with pytest.raises(SarcoError, match=r"different models or settings \(part 2 differs from part 0 in: thresholds\)"):
        merge_parts(folders, tmp_path / "all2", RESULT_COLUMNS, KEY_COLUMN, RUN_FILE, PATH_COLUMNS)


@pytest.mark.parametrize("share, words", [({"part": 0}, "--part 0 given alone: a share of the batch needs both"),
                                          ({"parts": 3}, "--parts 3 given alone"),
                                          ({"part": 3, "parts": 2}, "--part 3 --parts 2 is not a share of the batch"),
                                          ({"part": 0, "parts": 0}, "--part 0 --parts 0 is not a share")])
def test_a_part_without_its_parts_names_what_is_missing(tmp_path, share, words):
    """HOSTILE_FINDINGS #85: `--part 0` alone said `--part 0 --parts None is not a share of the batch`."""
    import re

    import sarco_nn.inference as inference

    with pytest.raises(SarcoError, match=re.escape(words)) as info:
        inference.predict(tmp_path / "ws", tmp_path / "scans", tmp_path / "out", device="cpu", progress=False, **share)
    assert "None" not in str(info.value)
