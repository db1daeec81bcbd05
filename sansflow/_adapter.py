"""What every adapter's flow shares, with no I/O: ``AdapterFlow`` (state view, busy guard),
``AsyncAdapterFlow`` / ``BlockingAdapterFlow`` (``with`` and iteration, from the flow's own
``read``, ``close`` and ``abort``), and ``AsyncDriverFlow`` / ``BlockingDriverFlow``: the
policy every adapter follows (``close`` and its deadline, ``shutdown``, ``writev``, the slow
write path), written once over a few transport primitives that each adapter supplies."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._api import BrokenFlowError, FlowView
from ._errors import BusyError, ErrorKind, FlowError
from ._flow import Flow, buffer_list
from ._results import WOULD_WAIT, Eof, Ok, ReadResult, WouldWait, WriteResult
from ._state import FlowState, ReceiveState, SendState, Shutdown

if TYPE_CHECKING:
    from ._tls import TlsInfo, TlsLayer

__all__ = [
    "AdapterFlow", "AsyncAdapterFlow", "AsyncDriverFlow", "BlockingAdapterFlow",
    "BlockingDriverFlow", "check_timeout", "close_deadline_passed",
]

_Self = TypeVar("_Self")


class AdapterFlow:
    """The base of an adapter's flow: the core, a read-only view of its state, the busy flags.

    Adapters subclass ``AsyncDriverFlow`` or ``BlockingDriverFlow``, which add the shared
    policy over a few transport primitives; a subclass of this class alone writes ``read``,
    ``write``, ``writev``, ``close``, ``shutdown`` and ``abort`` itself. The core stays
    private, so that no caller writes to it behind the adapter's back; a subclass that drives
    it declares ``_core: Flow``.

    One reader and one writer may use a flow at once; a second concurrent reader (or writer)
    gets ``BusyError``, checked before anything else so that it changes nothing.
    """

    __slots__ = ("_core", "_layers", "_peername", "_reading", "_sockname", "_writing")

    def __init__(self, core: FlowView, *, peername: Any = None, sockname: Any = None) -> None:
        self._core = core
        # The TLS layers the flow carries, innermost first; under TLS, ``_core`` is the
        # outermost one's plaintext core.
        self._layers: list[TlsLayer] = []
        self._reading = False
        self._writing = False
        self._peername = peername
        self._sockname = sockname

    @property
    def peername(self) -> Any:
        """The peer's address when the flow was made (``(host, port)`` for IPv4, a 4-tuple for
        IPv6, the path for AF_UNIX); ``None`` where there is no socket, or the connection had
        ended by then. Taken once, so it still answers after the flow is closed."""
        return self._peername

    @property
    def sockname(self) -> Any:
        """Our own address when the flow was made; ``None`` where there is no socket."""
        return self._sockname

    @property
    def tls(self) -> TlsInfo | None:
        """What the TLS handshake settled on (version, cipher, ALPN protocol, the peer's
        certificate); ``None`` for a flow without TLS."""
        layers = self._layers
        return layers[-1].tls if layers else None

    def _add_layer(self, layer: TlsLayer) -> None:
        """Carry ``layer`` over the core the application used so far, whose plaintext core the
        application uses from now on."""
        self._layers.append(layer)
        self._core = layer.outer

    @property
    def state(self) -> FlowState:
        return self._core.state

    @property
    def send_state(self) -> SendState:
        return self._core.send_state

    @property
    def receive_state(self) -> ReceiveState:
        return self._core.receive_state

    @property
    def error(self) -> FlowError | None:
        return self._core.error

    @property
    def high_water(self) -> int:
        return self._core.high_water

    @property
    def low_water(self) -> int:
        return self._core.low_water

    @property
    def receive_limit(self) -> int:
        return self._core.receive_limit

    @property
    def queued(self) -> int:
        """Bytes written and not yet sent."""
        return self._core.queued

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return self._core.buffered

    _WHO = "task"  # who else may be using the flow, for BusyError's message

    def _claim_read(self) -> None:
        if self._reading:
            raise BusyError(f"another {self._WHO} is already reading this flow")
        self._reading = True

    def _claim_write(self) -> None:
        if self._writing:
            raise BusyError(f"another {self._WHO} is already writing to this flow")
        self._writing = True

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} {self._core!r}>"


def _data_or_stop(result: ReadResult, stop: type[Exception]) -> bytes:
    """What one step of iterating over a flow gives for ``result``."""
    if type(result) is Ok:
        return result.value
    if type(result) is Eof:
        raise stop
    raise BrokenFlowError(result.error)  # type: ignore[union-attr]  # neither Ok nor Eof


class AsyncAdapterFlow(AdapterFlow):
    """``AdapterFlow`` for an async adapter: ``async with`` closes on a normal exit and aborts
    on an exception; ``async for`` yields data until ``Eof`` and raises ``BrokenFlowError`` at
    an ``Error``. The subclass supplies ``read``, ``close`` and ``abort``."""

    __slots__ = ()

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        raise NotImplementedError

    async def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    async def abort(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, traceback: TracebackType | None) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()

    def __aiter__(self: _Self) -> _Self:
        return self

    async def __anext__(self) -> bytes:
        return _data_or_stop(await self.read(), StopAsyncIteration)


class BlockingAdapterFlow(AdapterFlow):
    """``AsyncAdapterFlow`` without ``await``: ``with`` and ``for`` over a blocking flow."""

    __slots__ = ()
    _WHO = "thread"

    def read(self, max_bytes: int | None = None) -> ReadResult:
        raise NotImplementedError

    def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, traceback: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __iter__(self: _Self) -> _Self:
        return self

    def __next__(self) -> bytes:
        return _data_or_stop(self.read(), StopIteration)


def check_timeout(timeout: object) -> None:
    """Refuse a ``close(timeout=...)`` that is not ``None`` or a number of seconds >= 0."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if not timeout >= 0:  # also refuses NaN
        raise ValueError(f"timeout must be at least 0 seconds, not {timeout!r}")


def close_deadline_passed() -> FlowError:
    """The error that ends a flow whose ``close(timeout)`` deadline passed first."""
    return FlowError(ErrorKind.TIMED_OUT, detail="close() deadline passed")


_EOF_QUEUED = SendState.EOF_QUEUED

_Attempt = Callable[[], "WriteResult | WouldWait"]
_BytesLike = bytes | bytearray | memoryview


class AsyncDriverFlow(AsyncAdapterFlow):
    """``AsyncAdapterFlow`` with the policy every async adapter follows, over the primitives
    its transport supplies. ``read`` and ``write`` stay with the adapter: they are the hot
    paths, and each transport has its own fastest way to them.

    The policy:

    - ``close(timeout)``: the core's ``close`` (flush, then EOF), then wait until the flow is
      CLOSED and the transport released. When ``timeout`` passes first, the flow is aborted
      with ``close_deadline_passed()``; when the wait is interrupted (cancelled), the flow is
      aborted and the exception propagates: the transport is never left open.
    - ``shutdown(how)``: the core's ``shutdown``, then, while our EOF is queued, wait for it to
      be handed to the transport.
    - ``writev``: the buffers are taken once (a generator survives a wait), and all or none
      are queued.
    - A write that finds the queue full waits for room and tries again (``_write_slow``).

    The primitives (the adapter's transport, and nothing else):

    - ``_push()``: the application changed the core: hand the transport what is due (data,
      then our EOF) as far as it takes it without waiting, and wake whoever waits.
    - ``_queued_more(idle)``: a write queued data (``idle``: nothing was queued before it).
      The adapter's burst policy: the first write of a burst goes out at once, later ones are
      coalesced until the flow's tasks let the loop run.
    - ``_wait_room()``: wait until the queue may have room (or the flow changed).
    - ``_wait_flushed()``: wait until our queued EOF may have been handed over.
    - ``_wait_closed(timeout)``: wait until the flow is CLOSED and the transport released;
      ``False`` if ``timeout`` seconds passed first.
    - ``_abort(error)``: abort the core with ``error`` (``None``: aborted locally), reset the
      transport, wake everyone; return once the transport is released.
    - ``_cancel_point()`` / ``_settle()``: before and after an operation, where the event
      loop has rules for them (trio's checkpoints); ``_settle`` also releases the transport
      of a flow that just ended, where that needs a wait. Both do nothing by default.
    """

    __slots__ = ()
    _core: Flow

    async def writev(self, buffers: Iterable[_BytesLike]) -> WriteResult:
        """Queue every buffer, in order, or none of them; same waiting and cancellation rules
        as ``write``."""
        if self._writing:
            self._claim_write()
        await self._cancel_point()
        buffers = buffer_list(buffers)  # a one-shot iterator must survive a retry
        core = self._core
        idle = not core.queued
        result = core.writev(buffers)
        if result is WOULD_WAIT:
            retry = buffers
            result = await self._write_slow(lambda: core.writev(retry))
            idle = False
        if type(result) is Ok:
            self._queued_more(idle)
        else:
            await self._settle()
        return result

    async def _write_slow(self, attempt: _Attempt) -> WriteResult:
        """The queue is full: wait for room and ``attempt()`` again, until it answers.
        Cancelled while waiting, it has queued nothing. The caller then sends what it queued
        as its own burst policy says."""
        self._writing = True
        try:
            while (result := attempt()) is WOULD_WAIT:
                await self._wait_room()
            return result
        finally:
            self._writing = False

    async def shutdown(self, how: Shutdown) -> None:
        """``WRITE``: flush and send EOF, returning once the EOF is handed to the transport
        (without waiting for the peer). ``READ``: drop buffered and future input; reads answer
        ``Eof()``. ``BOTH``: both. Idempotent. Cancelling it stops only the wait: the EOF stays
        queued behind the data. Never raises for an I/O failure."""
        await self._cancel_point()
        core = self._core
        core.shutdown(how)
        self._push()
        if how is not Shutdown.READ:
            while core.send_state is _EOF_QUEUED:
                await self._wait_flushed()
        await self._settle()

    async def close(self, timeout: float | None = None) -> None:
        """The seed's close: flush, send EOF, wait for the peer's EOF, release the transport.

        Input that arrives meanwhile stays readable by another task. Idempotent: a second
        call waits for the same end; on a CLOSED flow it returns at once. After ``timeout``
        seconds the flow is aborted (``ErrorKind.TIMED_OUT``, the connection reset) and
        ``close`` returns. If it is cancelled, the flow is aborted first, then the
        cancellation propagates. Never raises for an I/O failure.
        """
        check_timeout(timeout)
        self._core.close()
        self._push()
        try:
            ended = await self._wait_closed(timeout)
        except BaseException:
            await self._abort(None)
            raise
        if not ended:
            await self._abort(close_deadline_passed())

    async def abort(self) -> None:
        """Drop the send queue, reset the connection (an RST for TCP) and end the flow with
        ``ErrorKind.ABORTED``; waiting readers and writers wake with it. Returns once the
        transport is released; nothing happens to a flow already CLOSED."""
        await self._abort(None)
        await self._settle()

    # -- the primitives ----------------------------------------------------------------------

    def _push(self) -> None:
        raise NotImplementedError

    def _queued_more(self, idle: bool) -> None:
        raise NotImplementedError

    async def _wait_room(self) -> None:
        raise NotImplementedError

    async def _wait_flushed(self) -> None:
        raise NotImplementedError

    async def _wait_closed(self, timeout: float | None) -> bool:
        raise NotImplementedError

    async def _abort(self, error: FlowError | None) -> None:
        raise NotImplementedError

    async def _cancel_point(self) -> None:
        pass

    async def _settle(self) -> None:
        pass


class BlockingDriverFlow(BlockingAdapterFlow):
    """``AsyncDriverFlow``'s policy for a blocking adapter, over the same primitives without
    ``await``. Each operation runs holding ``_lock`` (the adapter's lock, which guards the
    core; its primitives let go of it while they wait), so one thread may read while another
    writes and a third closes.
    """

    __slots__ = ()
    _core: Flow
    _lock: AbstractContextManager[Any]

    def writev(self, buffers: Iterable[_BytesLike]) -> WriteResult:
        """Queue every buffer, in order, or none of them; same waiting rules as ``write``."""
        buffers = buffer_list(buffers)  # a generator must survive a retry after waiting
        with self._lock:
            if self._writing:
                self._claim_write()
            core = self._core
            idle = not core.queued
            result = core.writev(buffers)
            if result is WOULD_WAIT:
                result = self._write_slow(lambda: core.writev(buffers))
                idle = False
            if type(result) is Ok:
                self._queued_more(idle)
            return result

    def _write_slow(self, attempt: _Attempt) -> WriteResult:
        """The queue is full: wait for room and ``attempt()`` again, until it answers."""
        self._writing = True
        try:
            while (result := attempt()) is WOULD_WAIT:
                self._wait_room()
            return result
        finally:
            self._writing = False

    def shutdown(self, how: Shutdown) -> None:
        """``WRITE``: flush, send EOF, return without waiting for the peer. ``READ``: discard
        buffered and later input; reads return ``Eof()``. ``BOTH``: both. Idempotent; never
        raises for an I/O failure."""
        with self._lock:
            core = self._core
            core.shutdown(how)
            self._push()
            if how is not Shutdown.READ:
                while core.send_state is _EOF_QUEUED:
                    self._wait_flushed()
            self._settle()

    def close(self, timeout: float | None = None) -> None:
        """The seed's close: flush, send EOF, wait for the peer's EOF, release the transport.

        Input that arrives meanwhile stays readable by another thread. After ``timeout``
        seconds (``None``: no limit) the flow is aborted with ``ErrorKind.TIMED_OUT`` and
        ``close`` returns. An exception that interrupts it (such as ``KeyboardInterrupt``)
        aborts the flow, then propagates. Idempotent: a second call waits for the same end,
        or returns at once when CLOSED. Never raises for an I/O failure.
        """
        check_timeout(timeout)
        with self._lock:
            self._core.close()
            self._push()
            try:
                ended = self._wait_closed(timeout)
            except BaseException:
                self._abort(None)  # never leave the transport open
                raise
            if not ended:
                self._abort(close_deadline_passed())
            self._settle()

    def abort(self) -> None:
        """Drop the queue and reset the connection (an RST for TCP); waiting readers and
        writers wake with the ``Error`` (``ErrorKind.ABORTED``). Nothing happens once CLOSED."""
        with self._lock:
            self._abort(None)
            self._settle()

    # -- the primitives (called with the lock held) ------------------------------------------

    def _push(self) -> None:
        raise NotImplementedError

    def _queued_more(self, idle: bool) -> None:
        raise NotImplementedError

    def _wait_room(self) -> None:
        raise NotImplementedError

    def _wait_flushed(self) -> None:
        raise NotImplementedError

    def _wait_closed(self, timeout: float | None) -> bool:
        raise NotImplementedError

    def _abort(self, error: FlowError | None) -> None:
        raise NotImplementedError

    def _settle(self) -> None:
        """After an operation: release the transport of a flow that has just ended."""
        raise NotImplementedError
