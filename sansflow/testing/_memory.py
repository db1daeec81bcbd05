"""An async adapter over ``FlowPair``: two flows joined in memory, driven by anyio.

It is the smallest complete adapter, and the reference the conformance kit is tested on:
the transport is ``FlowPair``'s wire, and every operation ends by pumping the wire and
waking whoever waits. Nothing runs in the background, so nothing needs shutting down.
"""

from __future__ import annotations

import anyio

from .._adapter import AsyncDriverFlow
from .._errors import FlowError
from .._flow import HIGH_WATER, LOW_WATER, RECEIVE_LIMIT, Flow
from .._results import WOULD_WAIT, ReadResult, WriteResult
from .._state import FlowState
from ._pair import FlowPair

__all__ = ["MemoryFlow", "memory_flow_pair"]

_BytesLike = bytes | bytearray | memoryview


class _Link:
    """The wire both flows share, and the one event that wakes every waiter on a change."""

    __slots__ = ("_changed", "_pair")

    def __init__(self, pair: FlowPair) -> None:
        self._pair = pair
        self._changed = anyio.Event()

    def pump(self) -> None:
        """Move everything that can move, then wake every waiter to look again."""
        self._pair.pump()
        self._changed.set()
        self._changed = anyio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


class MemoryFlow(AsyncDriverFlow):
    """One end of ``memory_flow_pair``, with the async adapter API.

    One reader and one writer at a time; a second concurrent reader (or writer) gets
    ``BusyError`` before anything else happens. ``close``, ``shutdown`` and ``writev`` are
    ``AsyncDriverFlow``'s; the primitives below are the whole transport.
    """

    __slots__ = ("_link",)
    _core: Flow  # the core this flow drives (AdapterFlow only reads its state)

    def __init__(self, core: Flow, link: _Link) -> None:
        super().__init__(core)
        self._link = link

    # -- the application side ------------------------------------------------------------

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        """Buffered data, else wait for some; then ``Eof()`` or the ``Error``, sticky."""
        self._claim_read()
        try:
            while (result := self._core.read(max_bytes)) is WOULD_WAIT:
                await self._link.changed()
            self._link.pump()  # reading made room: the wire may deliver more
            return result
        finally:
            self._reading = False

    async def write(self, data: _BytesLike) -> WriteResult:
        """Queue ``data`` (all of it, or none if cancelled), waiting below high water."""
        if self._writing:
            self._claim_write()
        core = self._core
        result = core.write(data)
        if result is WOULD_WAIT:
            result = await self._write_slow(lambda: core.write(data))
        self._link.pump()
        return result

    # -- the transport: FlowPair's wire --------------------------------------------------

    def _push(self) -> None:
        self._link.pump()

    def _queued_more(self, idle: bool) -> None:
        self._link.pump()

    async def _wait_room(self) -> None:
        await self._link.changed()

    async def _wait_flushed(self) -> None:
        await self._link.changed()

    async def _wait_closed(self, timeout: float | None) -> bool:
        with anyio.move_on_after(timeout):
            while self._core.state is not FlowState.CLOSED:
                await self._link.changed()
        return self._core.state is FlowState.CLOSED

    async def _abort(self, error: FlowError | None) -> None:
        self._core.abort(error)
        self._link.pump()  # the wire turns a local abort into the peer's reset

    async def _settle(self) -> None:
        await anyio.lowlevel.checkpoint()


async def memory_flow_pair(*, high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
                           receive_limit: int = RECEIVE_LIMIT, capacity: int = 64 * 1024
                           ) -> tuple[MemoryFlow, MemoryFlow]:
    """Two connected in-memory flows (call it inside a running anyio event loop).

    ``capacity`` is what each direction of the wire holds, like a socket buffer: with the
    peer not reading, a writer waits once the wire, the peer's receive buffer and its own
    queue are full.
    """
    pair = FlowPair(
        Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit),
        Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit),
        capacity=capacity,
    )
    link = _Link(pair)
    await anyio.lowlevel.checkpoint()
    return MemoryFlow(pair.a, link), MemoryFlow(pair.b, link)
