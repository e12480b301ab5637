"""Run a function once per input, each call in its own process with a time limit.

A call that runs over is killed (SIGTERM, then SIGKILL), not abandoned: one pathological input
costs its time limit and nothing more, and no stray process keeps burning CPU and memory.
Processes come from a fork server that imported ``preload`` once, so a call starts in
milliseconds instead of importing music21 again, and no thread of the caller is forked."""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

KILL_GRACE = 2.0  # seconds a terminated process gets before SIGKILL


@dataclass
class Outcome:
    value: Any = None
    error: str | None = None  # the process died or the function raised
    timed_out: bool = False


@dataclass
class _Call:
    index: int
    process: BaseProcess
    deadline: float


def _context(preload: Sequence[str]) -> BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))  # no effect once the server runs; harmless
        return ctx
    return multiprocessing.get_context("spawn")


def _child(func: Callable[[Any], Any], arg: Any, conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it kills us
    try:
        conn.send(Outcome(func(arg)))
    except Exception as exc:  # reported as this input's failure, without a traceback on stderr
        conn.send(Outcome(error=f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _start(ctx: BaseContext, func: Callable[[Any], Any], index: int, arg: Any,
           seconds: float) -> tuple[Connection, _Call]:
    reader, writer = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(func, arg, writer), daemon=True)
    process.start()
    writer.close()  # the child holds the only writer now: its death reads as EOF here
    return reader, _Call(index, process, time.monotonic() + seconds)


def _stop(process: BaseProcess) -> None:
    """End a child for good, whether it answered, died or ran out of time."""
    if process.is_alive():
        process.terminate()
        process.join(KILL_GRACE)
    if process.is_alive():
        process.kill()
    process.join()
    process.close()  # frees its sentinel now, not at garbage collection (hundreds of files)


def _receive(conn: Connection, process: BaseProcess) -> Outcome:
    try:
        return conn.recv()
    except (EOFError, OSError):  # it died before answering (e.g. killed for memory)
        process.join(KILL_GRACE)
        return Outcome(error=f"the process died (exit code {process.exitcode})")


def _finished(running: dict[Connection, _Call]) -> Iterator[tuple[int, Outcome]]:
    """Wait for the first answer, death or deadline; yield those calls and stop their processes."""
    timeout = max(0.0, min(c.deadline for c in running.values()) - time.monotonic())
    ready = set(wait(list(running), timeout))
    now = time.monotonic()
    for conn in [c for c in running if c in ready or running[c].deadline <= now]:
        call = running.pop(conn)
        outcome = _receive(conn, call.process) if conn in ready else Outcome(timed_out=True)
        conn.close()
        _stop(call.process)
        yield call.index, outcome


def run_each(func: Callable[[Any], Any], args: Sequence[Any], workers: int, seconds: float,
             preload: Sequence[str] = ()) -> Iterator[tuple[int, Outcome]]:
    """``(index, outcome)`` of ``func(arg)`` for every arg, as they finish, ``workers`` at once.

    ``func`` must be importable by name (it runs in another process); so must its results."""
    ctx = _context(preload)
    pending = deque(enumerate(args))
    running: dict[Connection, _Call] = {}
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                conn, call = _start(ctx, func, *pending.popleft(), seconds)
                running[conn] = call
            yield from _finished(running)
    finally:  # interrupted, or the caller stopped reading: leave nothing running
        for conn, call in running.items():
            conn.close()
            _stop(call.process)
