"""One run per output folder (`sarco_nn.run_lock`): a second predict into a busy -o is refused in one
line naming the holder; a killed run's lock is taken over on its host, never another host's; the
lock goes however the run ends; merge names a part whose lock is live as still running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import sarco_inprocess
from sarco_nn.batch import RESULTS_FILE
from sarco_nn.errors import Interrupted, SarcoError
from sarco_nn.run_lock import LOCK_FILE, live_holder, output_lock, read_holder
from test_hostile_s7_batch import _merge, _nifti_scans, _part

ROOT = Path(__file__).resolve().parents[1]


def _write_lock(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = {"pid": 1, "host": socket.gethostname(), "started": "2026-12-01 23:00:00 UTC", "command": "sarco predict",
            "token": "t", **fields}
    (folder / LOCK_FILE).write_text(json.dumps(lock))
    return folder / LOCK_FILE


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_run_into_a_locked_folder_is_refused_in_one_line_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    with output_lock(out) as lock:
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname() and held["started"].endswith("UTC")
        with pytest.raises(SarcoError) as refused:
            with output_lock(out, "sarco predict-merge"):
                pytest.fail("a second holder entered")
        line = str(refused.value)
        assert "\n" not in line and line.startswith(f"{out}: output folder is in use by `sarco predict` pid "
                                                    f"{os.getpid()} on host {socket.gethostname()}, started ")
        assert f"wait for it to finish, or if no sarco run is alive, delete the lock file {lock}" in line
        assert json.loads(lock.read_text()) == held  # the refused run left the holder's lock alone
    assert not lock.exists() and not out.exists()  # released; the folder it created was left empty, so removed


@pytest.mark.parametrize("stop", [RuntimeError("boom"), KeyboardInterrupt(), Interrupted("interrupted", "out", "rerun")])
def test_the_lock_is_released_on_error_and_on_ctrl_c(tmp_path, stop):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("case_id\n")
    with pytest.raises(type(stop)):
        with output_lock(out):
            assert (out / LOCK_FILE).exists()
            raise stop
    assert not (out / LOCK_FILE).exists() and (out / "results.csv").exists()  # a folder with results stays
    with output_lock(out):  # and the next run takes it at once
        pass


def test_a_stale_lock_of_a_dead_pid_on_this_host_is_taken_over_with_a_one_line_note(tmp_path, capsys):
    out = tmp_path / "out"
    pid = _dead_pid()
    _write_lock(out, pid=pid)
    assert read_holder(out).pid == pid and live_holder(out) is None
    with output_lock(out) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err.strip()
    assert err == (f"note: {out}: took over the lock of `sarco predict` pid {pid} on host {socket.gethostname()}, "
                   "started 2026-12-01 23:00:00 UTC (that process is no longer running)")


def test_a_lock_of_this_pid_not_held_by_this_process_is_stale(tmp_path):
    """A container restarted after SIGKILL often gets the dead run's pid again."""
    out = tmp_path / "out"
    _write_lock(out, pid=os.getpid(), token="of-the-killed-run")
    assert live_holder(out) is None
    with output_lock(out):
        assert live_holder(out) is not None  # now held by this process


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    out = tmp_path / "out"
    lock = _write_lock(out, pid=_dead_pid(), host="node-elsewhere")  # dead here says nothing about there
    assert live_holder(out) is not None
    with pytest.raises(SarcoError, match=r"in use by `sarco predict` pid \d+ on host node-elsewhere, started .*; a lock "
                                         r"from another host is never taken over automatically") as refused:
        with output_lock(out):
            pass
    assert f"delete the lock file {lock}" in str(refused.value) and lock.exists()


def test_an_empty_or_damaged_lock_is_refused_never_guessed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for text in ("", "{not json", json.dumps({"pid": "x"})):
        (out / LOCK_FILE).write_text(text)
        with pytest.raises(SarcoError, match="lock file is empty or damaged.*delete the lock file"):
            with output_lock(out):
                pass


def test_a_lock_another_run_took_meanwhile_is_not_removed_on_release(tmp_path):
    out = tmp_path / "out"
    with output_lock(out) as lock:
        lock.unlink()  # a user deleted it by hand and another run took the folder
        _write_lock(out, pid=os.getppid(), token="other")
    assert read_holder(out).token == "other"


def test_after_sigkill_the_next_run_finds_the_lock_stale_and_proceeds(tmp_path, capsys):
    out = tmp_path / "out"
    code = ("import sys, time; from sarco_nn.run_lock import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SarcoError, match=f"in use by `sarco predict` pid {holder.pid} "):
            with output_lock(out):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        holder.kill()
        holder.stdout.close()
    assert (out / LOCK_FILE).exists()  # SIGKILL ran no cleanup
    with output_lock(out):
        pass
    assert f"took over the lock of `sarco predict` pid {holder.pid}" in capsys.readouterr().err


def test_predict_into_a_locked_folder_is_refused_in_one_line_before_any_model_loads(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise SarcoError("the model was looked up", fix="never, while -o is locked")

    monkeypatch.setattr("sarco_nn.model_store.find_model", no_model)
    scans = _nifti_scans(tmp_path / "scans", ["a", "b"])
    out = tmp_path / "out"
    with output_lock(out) as lock:
        refused = sarco_inprocess("predict", "-i", scans, "-o", out, "--fast", "-w", tmp_path / "ws")
        assert refused.code == 2 and len(refused.error_lines()) == 1, refused.output
        assert f"{out}: output folder is in use by `sarco predict` pid {os.getpid()}" in refused.stderr
        assert "delete the lock file" in refused.stderr and "model was looked up" not in refused.output
        assert lock.exists() and sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    # free again (a killed run's stale lock too): predict gets past the lock, and releases it on the error
    _write_lock(out, pid=_dead_pid())
    reached = sarco_inprocess("predict", "-i", scans, "-o", out, "--fast", "-w", tmp_path / "ws")
    assert reached.code == 2 and "the model was looked up" in reached.stderr and "took over the lock" in reached.stderr
    assert not (out / LOCK_FILE).exists()


def test_merge_names_a_part_whose_lock_is_live_as_still_running(tmp_path):
    p0 = _part(tmp_path / "p0", 0, 2, ["a"], ["a"])
    p1 = _part(tmp_path / "p1", 1, 2, ["d", "e"], ["d"])
    with output_lock(p1):
        with pytest.raises(SarcoError) as refused:
            _merge([p0, p1], tmp_path / "all")
        assert (f"part 1 of 2 lacks 1 of 2 case(s) (e) (still running: `sarco predict` pid {os.getpid()} on host "
                f"{socket.gethostname()}") in str(refused.value)
        assert "Fix: wait for the parts still running to finish" in str(refused.value)
        merged = _merge([p0, p1], tmp_path / "all", allow_incomplete=True)
        assert "still running: `sarco predict`" in merged.warnings[0]
    _write_lock(p1, pid=_dead_pid())  # killed: its stale lock says nothing is running
    with pytest.raises(SarcoError, match=r"\(e\) \(interrupted: no sarco run holds its folder\)"):
        _merge([p0, p1], tmp_path / "all")
    assert (p1 / LOCK_FILE).exists()  # merge only reads the part folders


def test_predict_merge_into_a_busy_folder_is_refused(tmp_path):
    p0 = _part(tmp_path / "p0", 0, 1, ["a"], ["a"])
    with output_lock(tmp_path / "all", "sarco predict-merge"):
        refused = sarco_inprocess("predict-merge", p0, "-o", tmp_path / "all")
    assert refused.code == 2 and len(refused.error_lines()) == 1 and "in use by `sarco predict-merge`" in refused.stderr
    assert not (tmp_path / "all" / RESULTS_FILE).exists()
    merged = sarco_inprocess("predict-merge", p0, "-o", tmp_path / "all")
    assert merged.code == 0, merged.output
    assert not (tmp_path / "all" / LOCK_FILE).exists()


def test_predict_passes_its_one_options_object_into_its_locked_run(monkeypatch, tmp_path):
    """`predict` takes the lock, `_predict_locked` runs with the same `PredictOptions` (one list of
    options, no second signature to keep in step); keywords are its fields, an unknown one is refused."""
    import inspect

    from sarco_nn import inference
    from sarco_nn.predict_options import PredictOptions
    from sarco_nn.workspace import Workspace

    assert list(inspect.signature(inference._predict_locked).parameters) == ["workspace", "inputs", "out_dir", "o"]
    seen = []
    monkeypatch.setattr(inference, "_predict_locked", lambda ws, inputs, out, o: seen.append(o) or (out, 0))
    ws = Workspace(tmp_path / "ws")
    inference.predict(ws, tmp_path / "in", tmp_path / "a", PredictOptions(fast=True), l3_csv="l3.csv", slab=3)
    inference.predict(ws, tmp_path / "in", tmp_path / "b", fast=True, l3_csv=Path("l3.csv"), slab=3)
    assert seen[0] == seen[1] == PredictOptions(fast=True, l3_csv=Path("l3.csv"), slab=3)  # paths as Path
    with pytest.raises(TypeError, match="no_such_option"):
        inference.predict(ws, tmp_path / "in", tmp_path / "c", no_such_option=1)
    with pytest.raises(TypeError, match="PredictOptions"):
        inference.predict(ws, tmp_path / "in", tmp_path / "d", 501)  # the old positional dataset


def test_classify_predict_holds_the_output_lock_like_predict(tmp_path, monkeypatch):
    # before: `sarco classify predict` took no lock, so two runs into one -o (or one beside a
    # `sarco predict`) each replaced predictions.csv unsaid (HOSTILE_FINDINGS #68)
    seen = []

    def no_model(*args, **kwargs):
        seen.append(read_holder(out))  # the lock is held while models are looked up and run
        raise SarcoError("the model was looked up", fix="never, while -o is locked")

    monkeypatch.setattr("sarco_nn.classification.predict.find_models", no_model)
    scans = _nifti_scans(tmp_path / "scans", ["a", "b"])
    out = tmp_path / "out"
    with output_lock(out, "sarco predict") as lock:
        refused = sarco_inprocess("classify", "predict", "-i", scans, "-o", out, "-w", tmp_path / "ws")
        assert refused.code == 2 and len(refused.error_lines()) == 1, refused.output
        assert f"{out}: output folder is in use by `sarco predict` pid {os.getpid()}" in refused.stderr
        assert "model was looked up" not in refused.output and not seen
        assert lock.exists() and sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    reached = sarco_inprocess("classify", "predict", "-i", scans, "-o", out, "-w", tmp_path / "ws")
    assert reached.code == 2 and "the model was looked up" in reached.stderr
    assert [h.command for h in seen] == ["sarco classify predict"] and seen[0].pid == os.getpid()
    assert not (out / LOCK_FILE).exists() and not out.exists()  # released; the empty folder it made removed
