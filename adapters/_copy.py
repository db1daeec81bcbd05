"""``copy`` and ``proxy`` for every adapter: loops that do what ``sansflow.Relay`` decides.

``copy(src, dst)`` moves src's data to dst until src ends, then passes the end on: src's EOF
becomes dst's ``shutdown(WRITE)`` (a FIN), a failure of src becomes ``dst.abort()`` (a reset,
never a clean FIN), a failed write to dst aborts src. It returns the direction's
``CopyStats``. ``proxy(a, b, *, idle_timeout=None)`` runs both directions at once and returns
when both ended, with a ``ProxyResult``: one direction's EOF leaves the other running, with no
timer. Neither function closes the flows: that stays with whoever opened them (``with`` /
``async with``); after a clean proxy both flows are CLOSED already.

The async loop is written once over the public ``AsyncFlow`` API: asyncio (uvloop alike) and
trio (and anyio) differ only in how tasks are started and in their clock (``_Runtime``; trio and
anyio share one, over task groups). The blocking loop
runs each direction in a thread. A direction reads at most the destination's high-water mark
at a time, so it holds one read's data plus what the destination queues: about two
high-water marks.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from time import monotonic
from typing import Any, Protocol, TypeVar

from sansflow import (
    CopyStats,
    ProxyRelay,
    ProxyResult,
    ReadResult,
    Relay,
    RelayStep,
    Shutdown,
    WriteResult,
)

__all__ = [
    "ANYIO", "AsyncEnd", "BlockingEnd", "copy_asyncio", "copy_blocking", "copy_trio",
    "proxy_asyncio", "proxy_blocking", "proxy_trio",
]

_BytesLike = bytes | bytearray | memoryview


class AsyncEnd(Protocol):
    """What ``copy`` and ``proxy`` use of an async flow (every ``AsyncFlow`` has it)."""

    @property
    def high_water(self) -> int: ...

    async def read(self, max_bytes: int | None = None) -> ReadResult: ...

    async def write(self, data: _BytesLike) -> WriteResult: ...

    async def shutdown(self, how: Shutdown) -> None: ...

    async def abort(self) -> None: ...


class BlockingEnd(Protocol):
    """What ``copy`` and ``proxy`` use of a blocking flow (every ``BlockingFlow`` has it)."""

    @property
    def high_water(self) -> int: ...

    def read(self, max_bytes: int | None = None) -> ReadResult: ...

    def write(self, data: _BytesLike) -> WriteResult: ...

    def shutdown(self, how: Shutdown) -> None: ...

    def abort(self) -> None: ...


_End = TypeVar("_End", AsyncEnd, BlockingEnd)


def _last_call(step: RelayStep, src: _End, dst: _End) -> Callable[[], Any] | None:
    """The call that ends a direction after ``step`` (``None`` for ``STOP``)."""
    if step is RelayStep.SHUTDOWN_DST:
        return partial(dst.shutdown, Shutdown.WRITE)
    if step is RelayStep.ABORT_DST:
        return dst.abort
    if step is RelayStep.SHUTDOWN_SRC:
        return partial(src.shutdown, Shutdown.READ)
    if step is RelayStep.ABORT_SRC:
        return src.abort
    return None


# -- async: asyncio, uvloop and trio ---------------------------------------------------------


class _Runtime(Protocol):
    """What differs between asyncio and trio: the clock, sleeping, and running tasks."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...

    async def run(self, jobs: list[Callable[[], Awaitable[None]]],
                  watcher: Callable[[], Awaitable[None]] | None) -> None:
        """Run ``jobs`` at once and ``watcher`` beside them; return when every job has
        returned, cancelling the watcher if it still runs."""


class _Asyncio:
    def now(self) -> float:
        import asyncio

        return asyncio.get_running_loop().time()

    async def sleep_until(self, deadline: float) -> None:
        import asyncio

        await asyncio.sleep(deadline - self.now())

    async def run(self, jobs: list[Callable[[], Awaitable[None]]],
                  watcher: Callable[[], Awaitable[None]] | None) -> None:
        import asyncio

        tasks = [asyncio.ensure_future(job()) for job in jobs]
        others = [asyncio.ensure_future(watcher())] if watcher is not None else []
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            others += tasks  # a job failed, or we are cancelled: nothing may outlive us
            raise
        finally:
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)


class _TaskGroups:
    """trio's and anyio's runtime: the jobs run in a task group (a nursery), the watcher in
    one around it. The library is imported on first use, so that neither is needed by the
    other's users."""

    def __init__(self, library: str, open_group: str) -> None:
        self._library = library
        self._open_group = open_group
        self._module: Any = None

    @property
    def _lib(self) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._library)
        return self._module

    def now(self) -> float:
        return float(self._lib.current_time())

    async def sleep_until(self, deadline: float) -> None:
        await self._lib.sleep_until(deadline)

    async def run(self, jobs: list[Callable[[], Awaitable[None]]],
                  watcher: Callable[[], Awaitable[None]] | None) -> None:
        open_group = getattr(self._lib, self._open_group)
        # A job's exception comes out bare, as from asyncio's gather and the blocking proxy,
        # not in the exception group a task group would wrap it in.
        failures: list[Exception] = []

        async def guarded(job: Callable[[], Awaitable[None]]) -> None:
            try:
                await job()
            except Exception as exc:
                failures.append(exc)
                outer.cancel_scope.cancel()  # nothing may outlive the failed job

        async with open_group() as outer:
            if watcher is not None:
                outer.start_soon(guarded, watcher)
            async with open_group() as inner:
                for job in jobs:
                    inner.start_soon(guarded, job)
            outer.cancel_scope.cancel()
        if failures:
            raise failures[0]


async def _pump(runtime: _Runtime, relay: Relay, src: AsyncEnd, dst: AsyncEnd) -> None:
    size = dst.high_water
    step = RelayStep.READ
    while step is RelayStep.READ or step is RelayStep.WRITE:
        if step is RelayStep.READ:
            step = relay.on_read(await src.read(size), runtime.now())
        else:
            step = relay.on_write(await dst.write(relay.pending), runtime.now())
    last = _last_call(step, src, dst)
    if last is not None:
        await last()


async def _copy(runtime: _Runtime, src: AsyncEnd, dst: AsyncEnd) -> CopyStats:
    relay = Relay(runtime.now())
    await _pump(runtime, relay, src, dst)
    return relay.stats


async def _proxy(runtime: _Runtime, a: AsyncEnd, b: AsyncEnd,
                 idle_timeout: float | None) -> ProxyResult:
    relays = ProxyRelay(runtime.now(), idle_timeout=idle_timeout)

    async def watch() -> None:
        while (deadline := relays.deadline) is not None:
            await runtime.sleep_until(deadline)
            if relays.expire(runtime.now()):
                await a.abort()
                await b.abort()

    jobs: list[Callable[[], Awaitable[None]]] = [
        partial(_pump, runtime, relays.a_to_b, a, b),
        partial(_pump, runtime, relays.b_to_a, b, a),
    ]
    await runtime.run(jobs, None if idle_timeout is None else watch)
    return relays.result


_ASYNCIO = _Asyncio()
_TRIO = _TaskGroups("trio", "open_nursery")
ANYIO = _TaskGroups("anyio", "create_task_group")
"""anyio's runtime, for the anyio adapter's ``copy`` and ``proxy``."""


async def copy_asyncio(src: AsyncEnd, dst: AsyncEnd) -> CopyStats:
    """Copy src to dst until src ends, then pass its end on (see the module's text)."""
    return await _copy(_ASYNCIO, src, dst)


async def proxy_asyncio(a: AsyncEnd, b: AsyncEnd, *, idle_timeout: float | None = None
                        ) -> ProxyResult:
    """Copy a to b and b to a at once until both ended (see the module's text)."""
    return await _proxy(_ASYNCIO, a, b, idle_timeout)


async def copy_trio(src: AsyncEnd, dst: AsyncEnd) -> CopyStats:
    """Copy src to dst until src ends, then pass its end on (see the module's text)."""
    return await _copy(_TRIO, src, dst)


async def proxy_trio(a: AsyncEnd, b: AsyncEnd, *, idle_timeout: float | None = None
                     ) -> ProxyResult:
    """Copy a to b and b to a at once until both ended (see the module's text)."""
    return await _proxy(_TRIO, a, b, idle_timeout)


# -- blocking: threads -----------------------------------------------------------------------


def _pump_blocking(relay: Relay, src: BlockingEnd, dst: BlockingEnd,
                   lock: threading.Condition) -> None:
    # The lock guards the relays, which the idle-timeout watcher (another thread) also ends.
    size = dst.high_water
    step = RelayStep.READ
    while step is RelayStep.READ or step is RelayStep.WRITE:
        if step is RelayStep.READ:
            result = src.read(size)
            with lock:
                step = relay.on_read(result, monotonic())
        else:
            written = dst.write(relay.pending)
            with lock:
                step = relay.on_write(written, monotonic())
    last = _last_call(step, src, dst)
    if last is not None:
        last()


def copy_blocking(src: BlockingEnd, dst: BlockingEnd) -> CopyStats:
    """Copy src to dst until src ends, then pass its end on (see the module's text)."""
    relay = Relay(monotonic())
    _pump_blocking(relay, src, dst, threading.Condition())
    return relay.stats


def proxy_blocking(a: BlockingEnd, b: BlockingEnd, *, idle_timeout: float | None = None
                   ) -> ProxyResult:
    """Copy a to b and b to a at once, each in a thread, until both ended (see the module's
    text). The calling thread watches the idle timeout meanwhile."""
    relays = ProxyRelay(monotonic(), idle_timeout=idle_timeout)
    changed = threading.Condition()
    finished: list[str] = []
    failures: list[BaseException] = []

    def run(relay: Relay, src: BlockingEnd, dst: BlockingEnd) -> None:
        try:
            _pump_blocking(relay, src, dst, changed)
        except BaseException as exc:  # handed to the caller's thread, which raises it
            failures.append(exc)
        with changed:
            finished.append(threading.current_thread().name)
            changed.notify_all()

    threads = [
        threading.Thread(target=run, args=(relays.a_to_b, a, b), name="sansflow proxy a->b",
                         daemon=True),
        threading.Thread(target=run, args=(relays.b_to_a, b, a), name="sansflow proxy b->a",
                         daemon=True),
    ]
    for thread in threads:
        thread.start()
    ended = False
    try:
        with changed:
            while len(finished) < len(threads) and not failures:
                if relays.expire(monotonic()):
                    break
                deadline = relays.deadline
                changed.wait(None if deadline is None else deadline - monotonic())
            else:
                ended = not failures
    finally:
        if not ended:  # a timeout, a failure or an interruption: the threads must end
            a.abort()
            b.abort()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    return relays.result
