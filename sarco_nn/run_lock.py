"""One run at a time per output folder: `sarco predict` (and `predict-merge`, `classify predict`) hold a lock file in -o.

Why: two runs into one folder both append to its journal and both rewrite results.csv, so rows
are lost or duplicated without any error. The lock is a file created atomically (``O_CREAT |
O_EXCL``) holding the holder's pid, host and start time, so a refused run can say who holds it.
SIGKILL runs no cleanup: a lock whose pid is no longer alive on this host is stale and taken over
with a note (`atomic.pid_alive`, the rule `remove_stale_partials` uses). A lock written on another
host (a cluster's shared disk) is never taken over: this host cannot tell whether that run lives.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sarco_nn.atomic import pid_alive
from sarco_nn.errors import SarcoError

__all__ = ["LOCK_FILE", "LockHolder", "read_holder", "live_holder", "output_lock"]

#: The lock file in an output folder (hidden: input fingerprints and listings skip dot files).
LOCK_FILE = ".sarco_predict.lock"

#: Tokens of the locks this process holds: a lock with this pid but another token is a dead
#: process's whose pid was reused by this one (a container restarted), so it is stale.
_HELD: set[str] = set()


@dataclass(frozen=True)
class LockHolder:
    """What a lock file says about the run holding it (pid None: the file is empty or damaged)."""

    path: Path
    pid: int | None
    host: str
    started: str
    command: str
    token: str

    def describe(self) -> str:
        """'`sarco predict` pid 123 on host node7, started 2026-12-02 01:40:28 UTC'."""
        if self.pid is None:
            return "a run whose lock file is empty or damaged (starting right now, or killed while taking it)"
        return f"`{self.command}` pid {self.pid} on host {self.host}, started {self.started}"

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """May the holder still run? True for another host's or a damaged lock (cannot be told)."""
        if self.pid is None or not self.on_this_host():
            return True
        if self.pid == os.getpid():
            return self.token in _HELD
        return pid_alive(self.pid)


def read_holder(folder: str | Path) -> LockHolder | None:
    """The holder of `folder`'s lock, or None when the folder holds no lock file."""
    path = Path(folder) / LOCK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        text = ""
    try:
        data = json.loads(text)
        pid = int(data["pid"])
        if pid <= 0:
            raise ValueError
        return LockHolder(path, pid, str(data.get("host", "?")), str(data.get("started", "?")),
                          str(data.get("command", "sarco")), str(data.get("token", "")))
    except (ValueError, KeyError, TypeError):
        return LockHolder(path, None, "?", "?", "?", "")


def live_holder(folder: str | Path) -> LockHolder | None:
    """The holder of `folder`'s lock when it may still be running (what `predict-merge` asks of a part)."""
    holder = read_holder(folder)
    return holder if holder is not None and holder.alive() else None


def _refusal(folder: Path, holder: LockHolder) -> SarcoError:
    where = "" if holder.pid is None or holder.on_this_host() else (
        f"; a lock from another host is never taken over automatically (this is {socket.gethostname()})")
    return SarcoError(f"output folder is in use by {holder.describe()}{where}", folder,
                      f"wait for it to finish, or if no sarco run is alive, delete the lock file {holder.path}")


def _create(path: Path, content: str) -> bool:
    """Create the lock file with `content` unless it exists (atomic: O_CREAT | O_EXCL)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _acquire(folder: Path, command: str) -> str:
    """Take the lock (a stale one over, with a note on stderr); return its token."""
    token = uuid.uuid4().hex
    content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command, "token": token,
                          "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
    path = folder / LOCK_FILE
    for _ in range(2):  # once more after taking a stale lock over
        if _create(path, content):
            return token
        holder = read_holder(folder)
        if holder is None:
            continue  # released between the two calls
        if holder.alive():
            raise _refusal(folder, holder)
        # stale: remove it only if it is still the one judged dead (another run may have taken it over
        # meanwhile; what remains is the instant between this read and the unlink)
        if read_holder(folder) == holder:
            path.unlink(missing_ok=True)
            print(f"note: {folder}: took over the lock of {holder.describe()} (that process is no longer running)",
                  file=sys.stderr, flush=True)
    holder = read_holder(folder)
    raise _refusal(folder, holder or LockHolder(path, None, "?", "?", "?", ""))


def _created_folders(folder: Path) -> list[Path]:
    """The folders `mkdir(parents=True)` of `folder` would create, deepest first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    return missing


@contextmanager
def output_lock(folder: str | Path, command: str = "sarco predict") -> Iterator[Path]:
    """Hold `folder`'s lock for the `with` block, creating the folder if needed; yield the lock path.

    Another run's live lock is refused in one line naming its pid, host and start time, and the fix.
    The lock is released however the block ends (error, Ctrl-C); folders this call created are removed
    again if the block left them empty (a run refused before writing leaves nothing behind).
    """
    folder = Path(folder)
    created = _created_folders(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SarcoError(f"cannot create the output folder ({exc.strerror or exc})", folder,
                         "give -o a new or empty folder in a writable place") from None
    try:
        try:
            token = _acquire(folder, command)
        except OSError as exc:
            raise SarcoError(f"cannot write the lock file {LOCK_FILE} ({exc.strerror or exc})", folder,
                             "choose a writable -o folder, then run again") from None
        _HELD.add(token)
        try:
            yield folder / LOCK_FILE
        finally:
            _HELD.discard(token)
            holder = read_holder(folder)
            if holder is not None and holder.token == token:  # never remove a lock another run took since
                holder.path.unlink(missing_ok=True)
    finally:
        for path in created:
            try:
                path.rmdir()  # only succeeds while empty
            except OSError:
                break
