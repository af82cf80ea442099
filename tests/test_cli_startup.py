"""A fast CLI: `sarco --help` and `sarco measure` never import torch, nnU-Net, MONAI or matplotlib.

Those imports cost ~5 s of CPU (13 s wall on a busy 2-core machine); only the commands that run
a network may pay for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "nnunetv2", "monai", "matplotlib", "torchvision", "sklearn")


def _loaded_heavy_modules(code: str) -> list[str]:
    probe = code + f"\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_cli_and_help_import_no_heavy_package():
    code = ("import sarco_nn.cli as cli\n"
            "try:\n    cli.app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "for sub in ('train', 'predict', 'pretrain', 'plan', 'check-weights'):\n"
            "    try:\n        cli.app([sub, '--help'], standalone_mode=False)\n    except SystemExit:\n        pass\n")
    assert _loaded_heavy_modules(code) == []


def test_measure_of_one_mask_imports_no_heavy_package(tmp_path):
    mask = np.zeros((1, 64, 64), np.uint8)
    mask[0, 20:40, 10:50] = 1
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing((0.8, 0.8, 5.0))
    sitk.WriteImage(image, str(tmp_path / "mask.nii.gz"))
    code = ("import sarco_nn.cli as cli\n"
            f"cli.app(['measure', {str(tmp_path / 'mask.nii.gz')!r}, '--json'], standalone_mode=False)\n")
    assert _loaded_heavy_modules(code) == []


#: The console script's own code (`pip`'s wrapper of `sarco = "sarco_nn.cli:main"`), run after a
#: finder that, when `module` is first imported, says "ready" and waits for the parent's SIGINT.
_WAIT_FOR_CTRL_C_IN_IMPORT = """
import os, sys, time
class _WaitForCtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            print("ready", flush=True)
            time.sleep(30)  # the parent's SIGINT arrives here, in the middle of the import
        return None
sys.meta_path.insert(0, _WaitForCtrlC())
sys.argv = ["sarco", "--help"]
from sarco_nn.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("module", ["typer", "sarco_nn.commands.measure_cmd"])
def test_ctrl_c_while_sarco_imports_is_one_line_and_exit_130(module):
    # before: a KeyboardInterrupt traceback from inside the import, exit 1 (the handler of run_app
    # was not installed yet). The SIGINT is sent once the child is inside the import: no race.
    import signal

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # the child starts with Ctrl-C at its default, as an interactive `sarco` does: a suite run as a
    # background job (`cmd &` leaves SIGINT ignored, inherited) would otherwise test the ignored case
    child = subprocess.Popen([sys.executable, "-c", _WAIT_FOR_CTRL_C_IN_IMPORT.format(module=module)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert "Traceback" not in err and child.returncode == 130, (child.returncode, err)
    assert err.strip() == "interrupted (Ctrl-C) while sarco was starting: nothing was done"


def test_importing_the_cli_gives_ctrl_c_back_to_the_importer():
    # a program (or pytest) that imports the cli keeps its own Ctrl-C handling afterwards
    code = ("import signal\n"
            "mine = lambda signum, frame: None\n"
            "signal.signal(signal.SIGINT, mine)\n"
            "import sarco_nn.cli\n"
            "assert signal.getsignal(signal.SIGINT) is mine, signal.getsignal(signal.SIGINT)\n")
    assert _loaded_heavy_modules(code) == []


def test_a_start_with_ctrl_c_ignored_keeps_it_ignored():
    # a background job or nohup starts with SIGINT ignored; the start-up handler must not undo that
    import signal

    from sarco_nn.commands.startup import exit_130_on_ctrl_c

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        restore = exit_130_on_ctrl_c()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        restore()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("module", ["typer", "sarco_nn.commands.measure_cmd"])
def test_a_cli_import_that_fails_gives_ctrl_c_back_to_the_importer(module):
    # before: the start-up handler stayed installed when the import failed (a broken install), so a
    # program that caught the ImportError had its Ctrl-C turned into sarco's start-up line and exit 130
    code = f"""
import signal, sys
class _Broken:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise ImportError("broken install: " + name)
        return None
sys.meta_path.insert(0, _Broken())
mine = lambda signum, frame: None
signal.signal(signal.SIGINT, mine)
try:
    import sarco_nn.cli
except ImportError as exc:
    assert "broken install" in str(exc), exc
else:
    raise AssertionError("the import did not fail")
assert signal.getsignal(signal.SIGINT) is mine, signal.getsignal(signal.SIGINT)
print("[]")
"""
    assert _loaded_heavy_modules(code) == []


def test_ctrl_c_while_typer_prints_help_says_nothing_was_done(monkeypatch, capsys):
    # before: "run the same command again to resume", though no command ran (HOSTILE_FINDINGS #66 notes)
    import click
    import typer
    import typer.rich_utils  # noqa: F401  (its help printer is made to raise below)

    import sarco_nn.cli as cli
    from sarco_nn.commands.runner import INTERRUPTED_BEFORE_LINE, INTERRUPTED_LINE, run_app

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    for context in {click.Context, getattr(getattr(typer, "_click", click), "Context", click.Context)}:
        monkeypatch.setattr(context, "get_help", ctrl_c)  # click's help (typer 0.29 carries its own click)
    monkeypatch.setattr("typer.rich_utils.rich_format_help", ctrl_c, raising=False)  # typer's rich help
    for argv in (["sarco", "predict", "--help"], ["sarco", "--help"], ["sarco"]):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as stopped:
            run_app(cli.app)
        assert stopped.value.code == 130 and capsys.readouterr().err.strip() == INTERRUPTED_BEFORE_LINE, argv
    monkeypatch.undo()
    monkeypatch.setattr(cli.api, "predict", ctrl_c)  # a command that has started and resumes
    monkeypatch.setattr(sys, "argv", ["sarco", "predict", "-i", "scans", "-o", "out"])
    with pytest.raises(SystemExit) as stopped:
        run_app(cli.app)
    assert stopped.value.code == 130 and capsys.readouterr().err.strip() == INTERRUPTED_LINE


@pytest.mark.parametrize("function, argv, line", [
    ("measure", ["measure", "mask.nii.gz"], "no resume"),
    ("evaluate", ["evaluate", "pred", "-r", "ref"], "no resume"),
    ("convert", ["convert", "drop", "--name", "Ci"], "no resume"),
    ("predict", ["predict", "-i", "scans", "-o", "out"], "resume"),
    ("classify_train", ["classify", "train", "0"], "resume"),
    ("train", ["train", "0"], "--continue"),
])
def test_ctrl_c_says_resume_only_where_the_command_resumes(monkeypatch, capsys, function, argv, line):
    """measure / evaluate / convert said "run the same command again to resume" (nothing resumes there):
    the line now follows the command's own `runner.resumes` mark."""
    import sarco_nn.cli as cli
    from sarco_nn.commands.runner import INTERRUPTED_LINE, INTERRUPTED_NO_RESUME_LINE, run_app

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.api, function, ctrl_c)
    monkeypatch.setattr(sys, "argv", ["sarco", *argv])
    with pytest.raises(SystemExit) as stopped:
        run_app(cli.app)
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 130
    if line == "no resume":
        assert err == INTERRUPTED_NO_RESUME_LINE and "resume;" in err and "start over" in err
    elif line == "resume":
        assert err == INTERRUPTED_LINE
    else:
        assert err.startswith("interrupted (Ctrl-C): run it again with --continue") and err != INTERRUPTED_LINE
