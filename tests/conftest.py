"""Shared fixtures: running the real `sarco` command (in-process or as a subprocess) and one tiny
trained model per test session for the end-to-end reliability, resume and privacy tests."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Parallel runs (`make test`: pytest-xdist, one worker per core): each worker computes on one thread, as every
# `sarco` child already does (_child_env), so two workers never oversubscribe the cores.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

#: The test files that take longest (minutes each: they train a model in a module fixture), started first.
#: `make test` runs pytest-xdist with `--dist loadfile --no-loadscope-reorder`: the scheduler (xdist's
#: `LoadScopeScheduling.schedule`) queues whole files in the order of the collected items and hands each idle worker
#: the next one, so a heavy file collected last (the default: alphabetical) ran alone at the end, the other worker
#: idle. Without `--no-loadscope-reorder` xdist sorts the files by their number of tests instead, and these files
#: have few. Durations of the last CI run (2 cores): test_default_preset ~230 s, test_demo ~220 s, test_end_to_end
#: (the cross-validation and the whole-volume predict) ~220 s.
HEAVY_TEST_FILES = ("test_default_preset.py", "test_demo.py", "test_end_to_end.py")


def pytest_collection_modifyitems(config, items):
    """Move the items of HEAVY_TEST_FILES to the front, in that order, each file's own order kept."""
    rank = {name: i for i, name in enumerate(HEAVY_TEST_FILES)}
    heavy = len(HEAVY_TEST_FILES)
    items[:] = sorted(items, key=lambda item: rank.get(item.path.name, heavy))  # sorted() is stable


#: `sarco` as a child process: the real entry point (`sarco_nn.cli.main`), with its own interpreter.
SARCO = [sys.executable, "-m", "sarco_nn.cli"]


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def error_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("error:")]


def _child_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_") and k != "SARCO_HOME"}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "nnUNet_n_proc_DA": "1",
                "nnUNet_def_n_proc": "1", "TQDM_DISABLE": "1"})
    env.update(extra or {})
    return env


def sarco_subprocess(*args, cwd: Path | None = None, timeout: float = 300, env: dict | None = None) -> CliResult:
    """Run `sarco ARGS` as a child process and wait for it."""
    done = subprocess.run([*SARCO, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_child_env(env), errors="replace")
    return CliResult(done.returncode, done.stdout, done.stderr)


def sarco_popen(*args, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """Start `sarco ARGS` as a child process in its own process group (to be killed midway with its
    data-loader workers, as `kill -9` of a job or a power cut would)."""
    return subprocess.Popen([*SARCO, *map(str, args)], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_child_env(env), start_new_session=True)


def sarco_inprocess(*args) -> CliResult:
    """Run `sarco ARGS` through `sarco_nn.cli.main` in this process (no interpreter start-up).

    main() is what the `sarco` script calls: a SarcoError becomes one `error:` line and exit 2.
    Any other exception escapes and fails the calling test: that would have been a traceback.
    """
    from sarco_nn.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_argv = dict(os.environ), sys.argv
    sys.argv = ["sarco", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return CliResult(code, out.getvalue(), err.getvalue())


@dataclass(frozen=True)
class TinyModel:
    root: Path
    workspace: Path
    held: Path  # a drop-in folder of 3 held-out phantom cases (images/, masks/, clinical.csv)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
    """6 phantom cases (128²) → convert → plan --preset smoke → train all (SMIT, 2 tiny epochs): ~40 s once."""
    from dataset_conversion.phantom import write_dropin_dataset

    root = tmp_path_factory.mktemp("tiny_model")
    drop = write_dropin_dataset(root / "drop", n_cases=6, seed=0, matrix=128)
    held = write_dropin_dataset(root / "held", n_cases=3, seed=5, matrix=128, case_prefix="held")
    ws = root / "ws"
    for args in (["convert", drop, "--name", "Tiny", "-w", ws], ["plan", "--preset", "smoke", "-w", ws],
                 ["train", "all", "--trainer", "smit", "--device", "cpu", "-w", ws]):
        result = sarco_subprocess(*args, cwd=root, timeout=600)
        assert result.code == 0, f"sarco {args[0]} failed:\n{result.output[-3000:]}"
    return TinyModel(root, ws, Path(held))
