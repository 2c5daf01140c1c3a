"""Worker processes that decode untrusted images: the validator's files
(``inspect_file``), the scoring job's downloaded bytes (``rxvision.serving.isolated_decode``).

Image decoders are C code fed with untrusted bytes: a decoder that crashes the process (a
segfault, an abort) or hangs must cost one file, not the run. ``DecodePool`` feeds its
workers chunks of tasks, sees a dead or overdue worker, files the task it was on as
``decoder_crash`` or ``decode_timeout`` (through the caller's ``lost``), starts a new
worker and hands it the rest of the chunk.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing.forkserver
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Generic, Protocol, TypeVar

from rxvision.data.decode import DECODE_TIMEOUT, DECODER_CRASH
from rxvision.errors import RxVisionError
from rxvision.forkserver import worker_context

log = logging.getLogger(__name__)


class Keyed(Protocol):
    """A task names what it decodes: a lost worker's task is filed under its key."""

    @property
    def key(self) -> str: ...


TaskT = TypeVar("TaskT", bound=Keyed)
LimitsT = TypeVar("LimitsT")
ResultT = TypeVar("ResultT")


def _worker_main(conn: Connection, inspect: Callable[[Any, Any], Any], limits: Any) -> None:
    """Run ``inspect`` on each task of each chunk received, one reply per task, until None
    arrives."""
    # Ctrl-C goes to the whole process group: the parent decides, workers keep quiet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for task in chunk:
            conn.send(("facts", inspect(task, limits)))


@dataclass
class _Slot:
    """One worker process and the tasks in flight to it (up to two chunks), in order."""

    process: BaseProcess
    conn: Connection
    chunk: list[Any] = field(default_factory=list)
    done: int = 0
    ready: bool = False
    since: float = 0.0  # when the current file started (last reply or hand-out)

    @property
    def busy(self) -> bool:
        return self.done < len(self.chunk)

    @property
    def pending(self) -> int:
        """Files handed out and not answered yet."""
        return len(self.chunk) - self.done

    @property
    def current(self) -> Any:
        return self.chunk[self.done]


class DecodePool(Generic[TaskT, LimitsT, ResultT]):
    """Worker processes that run ``inspect(task, limits)``; a crash or a hang costs one
    task only, filed as ``lost(task, code, message)``.

    ``inspect`` runs in the workers (importable by qualified name, its tasks, limits and
    results picklable); ``lost`` runs here. ``workers=0`` inspects in this process: no
    isolation, no time limit (for debugging and for fast property tests of ``inspect``).
    """

    MAX_START_FAILURES = 3
    GATHER_S = 0.003
    START_TIMEOUT_S = 60.0  # a new worker must say "ready" within this; not a file's fault

    def __init__(
        self,
        limits: LimitsT,
        *,
        workers: int,
        file_timeout_s: float,
        inspect: Callable[[TaskT, LimitsT], ResultT],
        lost: Callable[[TaskT, str, str], ResultT],
        chunk_size: int = 8,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.limits = limits
        self.workers = workers
        self.file_timeout_s = file_timeout_s
        self.chunk_size = chunk_size
        self.inspect = inspect
        self.lost = lost
        self._slots: list[_Slot] = []
        self._start_failures = 0
        self._context = _mp_context(inspect)

    def __enter__(self) -> DecodePool[TaskT, LimitsT, ResultT]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def imap_unordered(self, tasks: Iterable[TaskT]) -> Iterator[ResultT]:
        """A result for every task, in completion order; ``tasks`` is consumed lazily.
        No worker starts before the first task (a shard served by the cache has none)."""
        if self.workers == 0:
            for task in tasks:
                yield self.inspect(task, self.limits)
            return
        source = iter(tasks)
        first = next(source, None)
        if first is None:
            return
        source = itertools.chain([first], source)
        retry: deque[TaskT] = deque()
        try:
            self._slots = [self._start_worker() for _ in range(self.workers)]
            for index in range(len(self._slots)):
                self._hand_out(index, source, retry)
                self._hand_out(index, source, retry)
            while any(slot.busy for slot in self._slots):
                self._wait()
                for index, slot in enumerate(self._slots):
                    yield from self._collect(slot)
                    lost, filed = self._check_health(slot)
                    if filed is not None:
                        yield filed
                    if lost:
                        slot = self._replace(index, slot, retry, blamed=filed is not None)
                    self._hand_out(index, source, retry)
        finally:
            self.close()

    def close(self) -> None:
        """Stop every worker: politely, then by force."""
        for slot in self._slots:
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(None)
        deadline = time.monotonic() + 1.0
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
            slot.conn.close()
        self._slots = []

    def _start_worker(self) -> _Slot:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child, self.inspect, self.limits),
            name="rxvision-decode",
            daemon=True,
        )
        process.start()
        child.close()
        return _Slot(process=process, conn=parent, since=time.monotonic())

    def _hand_out(self, index: int, source: Iterator[TaskT], retry: deque[TaskT]) -> None:
        """Keep slot ``index`` fed: up to two chunks in flight, so its worker starts the
        next file while this process is still collecting the last reply. Re-queued files
        go first, then new ones."""
        slot = self._slots[index]
        if slot.pending > self.chunk_size:
            return
        chunk: list[TaskT] = []
        while retry and len(chunk) < self.chunk_size:
            chunk.append(retry.popleft())
        for task in source:
            chunk.append(task)
            if len(chunk) >= self.chunk_size:
                break
        if not chunk:
            return
        was_busy = slot.busy
        try:
            slot.conn.send(chunk)
        except OSError:
            retry.extendleft(reversed(chunk))
            if was_busy:
                return  # the worker died at work: _check_health files it
            # the worker died while idle (killed from outside): no file is to blame
            log.warning("a decode worker died while idle; starting another")
            slot.process.join()
            self._replace(index, slot, retry, blamed=False)
            self._hand_out(index, source, retry)
            return
        if was_busy:
            slot.chunk, slot.done = slot.chunk[slot.done :] + chunk, 0
        else:  # the clock of an idle worker's first file starts now
            slot.chunk, slot.done, slot.since = chunk, 0, time.monotonic()

    def _wait(self) -> None:
        busy = [slot for slot in self._slots if slot.busy]
        now = time.monotonic()
        due = min(slot.since + self._time_limit(slot) for slot in busy)
        handles: list[Any] = [slot.conn for slot in busy]
        handles += [slot.process.sentinel for slot in busy]
        if wait(handles, timeout=max(0.01, due - now)) and all(slot.pending > 1 for slot in busy):
            # every worker has work queued: let replies gather, so this process wakes
            # once per few files rather than per file (its cycles are the workers' too)
            time.sleep(self.GATHER_S)

    def _collect(self, slot: _Slot) -> Iterator[ResultT]:
        """Replies already sent by ``slot``'s worker."""
        while slot.busy:
            try:
                if not slot.conn.poll():
                    return
                kind, payload = slot.conn.recv()
            except (EOFError, OSError):
                return  # the worker died; _check_health files it
            if kind == "ready":
                # the first file's clock starts now: start-up is not decoding time
                slot.ready, slot.since = True, time.monotonic()
                continue
            slot.done += 1
            slot.since = time.monotonic()
            yield payload

    def _check_health(self, slot: _Slot) -> tuple[bool, ResultT | None]:
        """Whether ``slot``'s worker is lost (dead or overdue), and the result to file for
        the task it was on (None when no task is to blame)."""
        if not slot.busy:
            return False, None
        if not slot.process.is_alive():
            slot.process.join()
            if not slot.ready:
                self._count_start_failure(slot)
                return True, None
            return True, self.lost(slot.current, DECODER_CRASH, _death(slot.process.exitcode))
        if time.monotonic() - slot.since > self._time_limit(slot):
            slot.process.kill()
            slot.process.join()
            if not slot.ready:
                self._count_start_failure(slot)
                return True, None
            message = f"decoding took longer than {self.file_timeout_s:g} s"
            return True, self.lost(slot.current, DECODE_TIMEOUT, message)
        return False, None

    def _time_limit(self, slot: _Slot) -> float:
        return self.file_timeout_s if slot.ready else self.START_TIMEOUT_S

    def _count_start_failure(self, slot: _Slot) -> None:
        """A worker that died or hung before saying ready: no file is to blame, but a
        broken worker must not loop forever."""
        self._start_failures += 1
        if self._start_failures >= self.MAX_START_FAILURES:
            raise RxVisionError(
                f"decode worker died on start {self._start_failures} times "
                f"(exit code {slot.process.exitcode}); see the log above"
            )

    def _replace(self, index: int, slot: _Slot, retry: deque[TaskT], *, blamed: bool) -> _Slot:
        """Start a new worker in ``slot``'s place; the rest of its chunk goes first in line."""
        rest = slot.chunk[slot.done + 1 :] if blamed else slot.chunk[slot.done :]
        retry.extendleft(reversed(rest))
        slot.conn.close()
        replacement = self._start_worker()
        self._slots[index] = replacement
        log.warning("restarted a decode worker (%d files re-queued)", len(rest))
        return replacement


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the decoder process died with {name} while decoding this file"
    return f"the decoder process exited with code {exitcode} while decoding this file"


def start_forkserver(inspect: Callable[..., Any]) -> None:
    """Start the forkserver that a pool running ``inspect`` will fork its workers from,
    now: it loads and warms the decoder (``rxvision.pool_worker``) while this process
    goes on with other work. A no-op where it runs already or there is no forkserver.
    Started by the pool's first worker instead, the server's start-up and each worker's
    first decode (~300 ms in a fresh process, measured) are waited for."""
    context = _mp_context(inspect)
    if context.get_start_method() == "forkserver":
        multiprocessing.forkserver.ensure_running()


def _mp_context(inspect: Callable[..., Any]) -> Any:
    """forkserver where there is one: workers never inherit threads or locks of the caller;
    the caller's main module, this one and ``inspect``'s are loaded once in the server, so
    each new worker starts in milliseconds (when this pool is the first to start it)."""
    modules = ["rxvision.data.decode_pool"]
    if inspect.__module__.startswith("rxvision."):  # a test's inspect is its own business
        modules.append(inspect.__module__)
    return worker_context(modules)
