"""What a flow under test offers, and the wrappers that give other flows that async API.

``AsyncFlowLike`` is the API every check drives; ``BlockingFlowLike`` is the blocking one of
the socket adapter, which ``threaded(flow)`` turns into the async API, each call running in a
worker thread.

Cross-adapter checks need both ends in one program: an asyncio client against a trio server,
say. The server's loop runs in a ``LoopThread``; ``bridged(flow, loop)`` gives its flow the
async API in the caller's loop, each call hopping over through a worker thread
(``anyio.to_thread``) into the flow's own loop. Such a call cannot be cancelled once sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import anyio

from ..._adapter import AsyncAdapterFlow
from ..._api import FlowView
from ..._results import ReadResult, WriteResult
from ..._state import Shutdown

BytesLike = bytes | bytearray | memoryview
T = TypeVar("T")


# -- what a flow under test offers ---------------------------------------------------------


class AsyncFlowLike(FlowView, Protocol):
    """The async adapter API that every check drives (asyncio, trio and in-memory flows).

    ``read``/``write``/``writev`` return ``Ok``/``Eof``/``Error``; ``close``, ``shutdown`` and
    ``abort`` return nothing and never raise for an I/O failure.
    """

    async def read(self, max_bytes: int | None = None) -> ReadResult: ...

    async def write(self, data: BytesLike) -> WriteResult: ...

    async def writev(self, buffers: Iterable[BytesLike]) -> WriteResult: ...

    async def close(self, timeout: float | None = None) -> None: ...

    async def shutdown(self, how: Shutdown) -> None: ...

    async def abort(self) -> None: ...


class BlockingFlowLike(FlowView, Protocol):
    """The same API with plain (blocking) methods: the socket adapter's flows."""

    def read(self, max_bytes: int | None = None) -> ReadResult: ...

    def write(self, data: BytesLike) -> WriteResult: ...

    def writev(self, buffers: Iterable[BytesLike]) -> WriteResult: ...

    def close(self, timeout: float | None = None) -> None: ...

    def shutdown(self, how: Shutdown) -> None: ...

    def abort(self) -> None: ...


PairFactory = Callable[[], Awaitable[tuple[AsyncFlowLike, AsyncFlowLike]]]
"""An async callable returning two freshly connected flows ``(a, b)``."""


# -- blocking flows ------------------------------------------------------------------------


class ThreadedFlow(AsyncAdapterFlow):
    """A blocking flow seen through the async API: each call runs in a worker thread.

    A call cannot be cancelled once it runs (a blocking ``read`` ends only when data, EOF or
    an error arrives), so run the kit with ``supports_cancellation=False``.
    """

    __slots__ = ("_flow",)

    def __init__(self, flow: BlockingFlowLike) -> None:
        super().__init__(flow)  # the state view shows the wrapped flow's state
        self._flow = flow

    @property
    def flow(self) -> BlockingFlowLike:
        return self._flow


    async def read(self, max_bytes: int | None = None) -> ReadResult:
        return await anyio.to_thread.run_sync(self._flow.read, max_bytes)

    async def write(self, data: BytesLike) -> WriteResult:
        return await anyio.to_thread.run_sync(self._flow.write, data)

    async def writev(self, buffers: Iterable[BytesLike]) -> WriteResult:
        return await anyio.to_thread.run_sync(self._flow.writev, buffers)

    async def close(self, timeout: float | None = None) -> None:
        await anyio.to_thread.run_sync(self._flow.close, timeout)

    async def shutdown(self, how: Shutdown) -> None:
        await anyio.to_thread.run_sync(self._flow.shutdown, how)

    async def abort(self) -> None:
        # Abandoned if cancelled: an abort that hangs must not hang whoever gave up on it.
        await anyio.to_thread.run_sync(self._flow.abort, abandon_on_cancel=True)

    def __repr__(self) -> str:
        return f"threaded({self._flow!r})"


def threaded(flow: BlockingFlowLike) -> ThreadedFlow:
    """``flow`` (a blocking-socket adapter's flow) with the async API the checks drive."""
    return ThreadedFlow(flow)


def swapped(make_pair: PairFactory) -> PairFactory:
    """``make_pair`` with its two flows exchanged, to check the other end as ``a``."""

    async def make_swapped() -> tuple[AsyncFlowLike, AsyncFlowLike]:
        a, b = await make_pair()
        return b, a

    return make_swapped


# -- flows whose event loop runs in another thread -----------------------------------------


class LoopThread(Protocol):
    """An event loop running in its own thread."""

    def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``function(*args)`` in the loop and return its result; blocks the calling
        thread, which must not be the loop's own."""
        ...


class _TrioLoopThread:
    def __init__(self) -> None:
        import trio

        self._trio = trio
        self._started = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="sansflow-trio", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            raise RuntimeError("the trio loop thread did not start") from self._failure

    def _main(self) -> None:
        try:
            self._trio.run(self._serve)
        except BaseException as exc:  # reported to the thread that waits for the start
            self._failure = exc
            self._started.set()

    async def _serve(self) -> None:
        self._token = self._trio.lowlevel.current_trio_token()
        self._stop = self._trio.Event()
        self._started.set()
        await self._stop.wait()

    def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        # A fresh context: the caller's (its event loop's name for sniffio, say) stays home.
        return contextvars.Context().run(
            self._trio.from_thread.run, function, *args, trio_token=self._token
        )

    def close(self) -> None:
        assert self._stop is not None
        self._trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()


class _AsyncioLoopThread:
    def __init__(self, *, use_uvloop: bool = False) -> None:
        if use_uvloop:
            import uvloop

            self._loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sansflow-asyncio", daemon=True
        )
        self._thread.start()

    def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def run() -> T:
            return await function(*args)

        # A fresh context: the caller's (its event loop's name for sniffio, say) stays home.
        future = contextvars.Context().run(asyncio.run_coroutine_threadsafe, run(), self._loop)
        return future.result()

    def close(self) -> None:
        # Tasks an adapter left behind are cancelled and awaited, so that the loop closes
        # without "task was destroyed but it is pending".
        self.call(_cancel_other_tasks)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@contextmanager
def trio_loop_thread() -> Iterator[LoopThread]:
    """A trio event loop in a new thread, stopped (and joined) on exit."""
    loop = _TrioLoopThread()
    try:
        yield loop
    finally:
        loop.close()


@contextmanager
def asyncio_loop_thread(*, use_uvloop: bool = False) -> Iterator[LoopThread]:
    """An asyncio (or uvloop) event loop in a new thread, stopped and closed on exit."""
    loop = _AsyncioLoopThread(use_uvloop=use_uvloop)
    try:
        yield loop
    finally:
        loop.close()


class BridgedFlow(AsyncAdapterFlow):
    """A flow living in ``loop`` (another thread), with the async API in the caller's loop."""

    __slots__ = ("_flow", "_loop")

    def __init__(self, flow: AsyncFlowLike, loop: LoopThread) -> None:
        super().__init__(flow)  # the state view shows the wrapped flow's state
        self._flow = flow
        self._loop = loop

    @property
    def flow(self) -> AsyncFlowLike:
        return self._flow


    async def _call(self, function: Callable[..., Awaitable[T]], *args: Any,
                    abandon: bool = False) -> T:
        return await anyio.to_thread.run_sync(self._loop.call, function, *args,
                                              abandon_on_cancel=abandon)

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        return await self._call(self._flow.read, max_bytes)

    async def write(self, data: BytesLike) -> WriteResult:
        return await self._call(self._flow.write, data)

    async def writev(self, buffers: Iterable[BytesLike]) -> WriteResult:
        return await self._call(self._flow.writev, buffers)

    async def close(self, timeout: float | None = None) -> None:
        await self._call(self._flow.close, timeout)

    async def shutdown(self, how: Shutdown) -> None:
        await self._call(self._flow.shutdown, how)

    async def abort(self) -> None:
        # Abandoned if cancelled: an abort that hangs must not hang whoever gave up on it.
        await self._call(self._flow.abort, abandon=True)

    def __repr__(self) -> str:
        return f"bridged({self._flow!r})"


def bridged(flow: AsyncFlowLike, loop: LoopThread) -> BridgedFlow:
    """``flow``, which belongs to ``loop``'s thread, usable from the caller's event loop."""
    return BridgedFlow(flow, loop)
