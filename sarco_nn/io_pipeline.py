"""Reading ahead and writing behind while the network runs (`sarco predict --io-workers N`).

Why threads, not processes: the heavy parts of reading and writing a CT (gzip, ITK's readers and
writers, numpy) run in C with the GIL released, so a thread overlaps them with the network without
pickling volumes between processes or forking a process that holds torch's thread pool. Results
stay identical to a sequential run because only I/O moves: the network runs on the calling thread,
case after case, in input order, and every finished case is handed back in input order.

Why the network is not starved: torch keeps every core it was given (`devices.resolve_device`);
the I/O threads run at a lower scheduling priority (nice +10 on Linux, so they get the CPU the
network leaves idle, roughly a tenth of a core when both want it), and at most N cases are read
ahead and N written behind, so memory stays bounded (a case in flight holds its volume). The
threads' pure-Python work (matplotlib drawing the overlay) shares the GIL with the network's Python
glue between torch kernels, which run without it; `bench/inference_bench.py` times whole batches
with 1 and 2 workers to show the net effect.

`workers` 1 runs everything inline on the calling thread, in today's order: read, network, write.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

__all__ = ["DEFAULT_IO_WORKERS", "IO_NICE", "InlineExecutor", "ReadAhead", "WriteBehind", "io_executor"]

#: Default of `--io-workers`: one case read ahead and one written behind is where most of the
#: overlap is on a small machine; more pays only with slow storage (network file systems).
DEFAULT_IO_WORKERS = 2
#: How much lower the I/O threads' scheduling priority is than the network's (Linux nice levels).
IO_NICE = 10

T = TypeVar("T")
P = TypeVar("P")


class InlineExecutor(Executor):
    """Runs each job at once on the calling thread (`--io-workers 1`); errors land in the Future,
    as a thread pool's would, so the caller handles both the same way."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # KeyboardInterrupt and SystemExit go straight up, as without a pool
            future.set_exception(exc)
        return future


def _lower_priority() -> None:
    """Thread-pool initializer: this thread (not the process) yields the CPU to the network's threads."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), IO_NICE)  # Linux: a TID is a PRIO_PROCESS id
    except (AttributeError, OSError):
        pass  # not Linux or not permitted: plain threads, still correct


def io_executor(workers: int) -> Executor:
    """`InlineExecutor` for 1 worker, else a pool of low-priority threads named sarco-io."""
    if workers < 1:
        raise ValueError(f"io workers must be at least 1, got {workers}")
    if workers == 1:
        return InlineExecutor()
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sarco-io", initializer=_lower_priority)


class ReadAhead(Generic[T]):
    """Yields (item, Future of read(item)) in input order, with up to `depth` later reads already
    submitted; depth 0 submits each read only when its item is reached (the sequential order)."""

    def __init__(self, executor: Executor, read: Callable[[T], Any], items: Iterable[T], depth: int):
        self.executor, self.read, self.items, self.depth = executor, read, list(items), max(0, depth)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[T, Future]]:
        pending: deque[tuple[T, Future]] = deque()
        upcoming = iter(self.items)
        while True:
            while len(pending) <= self.depth:
                item = next(upcoming, _END)
                if item is _END:
                    break
                pending.append((item, self.executor.submit(self.read, item)))
            if not pending:
                return
            yield pending.popleft()


_END = object()


class WriteBehind(Generic[P]):
    """Runs each case's write job in the background and hands finished cases to `finish(future,
    payload)` strictly in submission order, and only once their job is done (so a journal fed by
    `finish` never names a case whose files are not yet on disk). At most `limit` jobs are pending."""

    def __init__(self, executor: Executor, finish: Callable[[Future, P], None], limit: int):
        self.executor, self.finish, self.limit = executor, finish, max(0, limit)
        self._pending: deque[tuple[Future, P]] = deque()

    def submit(self, job: Callable[[], Any] | None, payload: P) -> None:
        """Queue `job` (None: nothing to write) for `payload`; finishes every case already done."""
        if job is None:
            future: Future = Future()
            future.set_result(None)
        else:
            future = self.executor.submit(job)
        self._pending.append((future, payload))
        self._drain()

    def _drain(self, wait_all: bool = False) -> None:
        while self._pending:
            future, payload = self._pending[0]
            if not (future.done() or wait_all or len(self._pending) > self.limit):
                return
            future.exception()  # waits for the job; its error (if any) is the finisher's to judge
            self._pending.popleft()
            self.finish(future, payload)

    def close(self) -> None:
        """Wait for every pending job and finish its case, in order."""
        self._drain(wait_all=True)

    def __len__(self) -> int:
        return len(self._pending)
