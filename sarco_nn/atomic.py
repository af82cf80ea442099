"""Atomic output: write beside the target, then rename, so a half-written file never looks finished.

The one atomic writer of sarco: reports, plans splits, provenance, checkpoints, weights and load
reports all go through `atomic_path` (or the text/bytes/JSON shorthands below). A reader (or a
resumed run) therefore sees either the old file or the whole new one, never a torn file.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "pid_alive", "remove_stale_partials", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path with the target's extensions; it replaces the target only on success.

    The temporary keeps the target's suffixes (``.nii.gz``, ``.png``) so writers that choose the
    format from the name (SimpleITK, matplotlib, torch) behave as they would on the target.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    tmp = target.with_name(f".{stem}.partial{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete the temporaries `atomic_path` left in `folder` when its process was killed (SIGKILL runs
    no cleanup); those of a process still running are kept. Returns what was removed."""
    import re

    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = re.fullmatch(r"\..+\.partial(\d+)(\..*)?", path.name)
        if match is None or not path.is_file() or pid_alive(int(match.group(1))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host may still run (True when it cannot be told, or is this one):
    the one liveness rule of the files a killed run leaves (`remove_stale_partials`, `run_lock`)."""
    if pid == os.getpid() or os.name != "posix":  # (on Windows os.kill would end the process)
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return True  # cannot tell (not POSIX): keep the file
    return True


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `target` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | Path, data: Any, indent: int | None = 2, newline: bool = False, **dumps: Any) -> None:
    """Write `data` as JSON atomically; `newline` ends the file with one; `dumps` go to json.dumps."""
    write_text_atomic(target, json.dumps(data, indent=indent, **dumps) + ("\n" if newline else ""))
