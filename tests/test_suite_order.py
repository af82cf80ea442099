"""`make test` starts the slowest test files first (tests/conftest.py HEAVY_TEST_FILES), so they do not run alone
at the end of a parallel run while the other worker idles."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from conftest import HEAVY_TEST_FILES, pytest_collection_modifyitems

TESTS = Path(__file__).resolve().parent


def test_every_heavy_file_exists_so_a_rename_does_not_silently_drop_it():
    assert [name for name in HEAVY_TEST_FILES if not (TESTS / name).is_file()] == []


def test_make_test_keeps_the_collection_order_xdist_would_otherwise_sort_by_test_count():
    parallel = re.search(r"^TEST_PARALLEL = (.*)$", (TESTS.parent / "Makefile").read_text(), re.M).group(1)
    assert "--dist loadfile" in parallel and "--no-loadscope-reorder" in parallel


def test_heavy_files_go_first_in_their_listed_order_each_files_order_kept():
    names = ["test_a.py", HEAVY_TEST_FILES[-1], "test_b.py", HEAVY_TEST_FILES[0], "test_a.py", HEAVY_TEST_FILES[-1]]
    items = [SimpleNamespace(path=TESTS / name, nodeid=f"{name}::t{i}") for i, name in enumerate(names)]
    pytest_collection_modifyitems(None, items)
    assert [item.nodeid for item in items] == [f"{HEAVY_TEST_FILES[0]}::t3", f"{HEAVY_TEST_FILES[-1]}::t1",
                                               f"{HEAVY_TEST_FILES[-1]}::t5", "test_a.py::t0", "test_b.py::t2",
                                               "test_a.py::t4"]
