"""`sarco predict --io-workers N` (issue #16, item 4): reading ahead and writing behind the network
changes nothing in the results, journals a case only once its files are on disk, in input order,
and a read that fails in a reader thread still gives that case its own failed row."""

from __future__ import annotations

import csv
import os
import shutil
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import sarco_inprocess
from sarco_nn.atomic import atomic_path, remove_stale_partials
from sarco_nn.io_pipeline import IO_NICE, ReadAhead, WriteBehind, io_executor


# --- the pipeline itself (no model, milliseconds) ------------------------------------------------

@pytest.mark.parametrize("workers", [1, 3])
def test_write_behind_finishes_in_input_order_and_only_after_the_job(workers):
    executor = io_executor(workers)
    on_disk: set[int] = set()
    finished: list[int] = []

    def finish(done: Future, case: int) -> None:
        assert case in on_disk or case == 2 or done.exception() is not None, f"case {case} finished before its files were written"
        finished.append(case)

    def write(case: int) -> None:
        time.sleep(0.02 * ((7 - case) % 4))  # later cases often finish writing first
        if case == 4:
            raise OSError("no space")
        on_disk.add(case)

    writes = WriteBehind(executor, finish, limit=workers)
    for case in range(8):
        writes.submit(None if case == 2 else (lambda c=case: write(c)), case)
        assert len(writes) <= workers + 1
    writes.close()
    executor.shutdown()
    assert finished == list(range(8))


def test_read_ahead_keeps_order_and_reads_at_most_depth_ahead():
    executor = io_executor(2)
    started: list[int] = []
    lock = threading.Lock()

    def read(item: int) -> int:
        with lock:
            started.append(item)
        time.sleep(0.01 * (item % 3))
        return item * 10

    seen = []
    for item, future in ReadAhead(executor, read, range(6), depth=2):
        time.sleep(0.03)
        assert max(started) <= item + 2, "read further ahead than --io-workers allows"
        seen.append((item, future.result()))
    executor.shutdown()
    assert seen == [(i, i * 10) for i in range(6)]


def test_one_worker_reads_each_case_only_when_it_is_reached():
    events: list[str] = []
    reads = ReadAhead(io_executor(1), lambda i: events.append(f"read {i}"), range(3), depth=0)
    for item, _ in reads:
        events.append(f"network {item}")
    assert events == ["read 0", "network 0", "read 1", "network 1", "read 2", "network 2"]


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="thread priorities are a POSIX facility")
def test_io_threads_yield_the_cpu_to_the_network():
    executor = io_executor(2)
    niceness = executor.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    executor.shutdown()
    assert niceness >= os.getpriority(os.PRIO_PROCESS, 0) + min(IO_NICE, 19 - os.getpriority(os.PRIO_PROCESS, 0))
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == os.getpriority(os.PRIO_PROCESS, 0)


def test_a_killed_writers_half_file_is_removed_and_a_live_ones_kept(tmp_path):
    dead = tmp_path / ".case.partial999999999.nii.gz"  # no such process
    dead.write_bytes(b"half")
    kept = tmp_path / "case.nii.gz"
    kept.write_bytes(b"whole")
    with atomic_path(tmp_path / "live.png") as live:  # being written by this process right now
        live.write_bytes(b"...")
        assert remove_stale_partials(tmp_path) == [dead]
        assert live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz", "live.png"]


def test_io_workers_below_one_is_one_line_error(tmp_path):
    result = sarco_inprocess("predict", "-i", tmp_path, "-o", tmp_path / "out", "--io-workers", "0")
    assert result.code == 2 and "--io-workers" in result.output and "Traceback" not in result.output


# --- end to end on the suite's tiny trained model -------------------------------------------------

def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_two_io_workers_give_the_results_of_one(tiny_model, tmp_path, monkeypatch):
    """Three slices, a whole volume (L3 from a CSV, with its thumbnail) and a truncated file that
    only fails when read in full: identical results.csv, masks and file sets with 1 and 2 workers."""
    from dataset_conversion.phantom import write_dropin_dataset

    import sarco_nn.l3.choose as choose

    scans = tmp_path / "scans"
    shutil.copytree(tiny_model.held / "images", scans)
    volume = write_dropin_dataset(tmp_path / "vol", n_cases=1, seed=7, matrix=128, volumes=True, case_prefix="vol")
    shutil.copy(volume / "images" / "vol_000.nii.gz", scans)
    truth = _rows(volume / "truth.csv")[0]
    (scans / "l3.csv").write_text(f"case_id,l3_slice\nvol_000,{truth['l3_slice_index']}\n")  # tables beside
    shutil.copy(tiny_model.held / "clinical.csv", scans)  # the scans, as users keep them: not scans
    good = (scans / "held_000.nii.gz").read_bytes()
    (scans / "held_0005_cut.nii.gz").write_bytes(good[: len(good) // 2])  # header intact, pixels cut

    threads: dict[int, list[str]] = {1: [], 2: []}
    real = choose.load_l3_slice
    workers_now = [1]

    def spying(*args, **kwargs):
        threads[workers_now[0]].append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(choose, "load_l3_slice", spying)
    outs = {}
    for workers in (1, 2):
        workers_now[0] = workers
        outs[workers] = tmp_path / f"out{workers}"
        result = sarco_inprocess("predict", "-i", scans, "-o", outs[workers], "--fast", "--device", "cpu",
                                 "--l3-csv", scans / "l3.csv", "--clinical", scans / "clinical.csv",
                                 "--io-workers", str(workers), "-w", tiny_model.workspace)
        assert result.code == 1 and "Traceback" not in result.output, result.output  # 1: the cut file failed
    assert threads[1] and set(threads[1]) == {"MainThread"}
    assert threads[2] and all(name.startswith("sarco-io") for name in threads[2]), threads[2]

    one, two = _rows(outs[1] / "results.csv"), _rows(outs[2] / "results.csv")
    assert len(one) == 5
    assert one == two
    by_case = {r["case_id"]: r for r in two}
    cut = by_case["held_0005_cut"]
    assert cut["status"] == "failed" and "held_0005_cut.nii.gz" in cut["reasons"] and not cut["mask"], cut
    assert "unexpected" not in cut["reasons"], cut["reasons"]
    assert all(r["mask"] and float(r["sma_cm2"]) > 0 for c, r in by_case.items() if c != "held_0005_cut")
    assert by_case["vol_000"]["l3_thumbnail"] and (outs[2] / by_case["vol_000"]["l3_thumbnail"]).is_file()

    def files(out: Path) -> list[str]:
        return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.suffix in (".gz", ".png"))

    assert files(outs[1]) == files(outs[2]) and not [f for f in files(outs[2]) if "/." in f]
    for row in one:
        if row["mask"]:
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(outs[1] / row["mask"])))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(outs[2] / row["mask"])))
            assert np.array_equal(a, b), row["mask"]
    assert (outs[1] / "errors.log").read_text().split(" ", 2)[2] == (outs[2] / "errors.log").read_text().split(" ", 2)[2]
