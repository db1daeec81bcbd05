"""The trio adapter: a ``sansflow.Flow`` carried over any trio stream, with no background task.

Usage::

    from sansflow import Ok, Eof, Error, error_message
    from sansflow.adapters import trio as sf

    flow = await sf.connect("127.0.0.1", 8000)
    await flow.write(b"hello")
    match await flow.read():
        case Ok(data): ...
        case Eof(): ...
        case Error(err): print(error_message(err))
    await flow.close()

How bytes move: there is no pump task. The task that reads receives from the stream when the
core has nothing buffered; the task that writes queues its data in the core and then sends
everything queued before returning; ``close()`` flushes, sends EOF, and receives until the
peer's EOF whenever no reader is doing so (what it receives stays readable). Two flags, one
per direction, make sure only one task touches each direction of the stream at a time; a task
that finds the direction taken parks until the holder lets go, so trio's own conflict
detection never fires.

On a ``trio.SocketStream`` the adapter sends through the socket itself: ``send`` for one
buffer, ``sendmsg`` for several (so a ``writev`` is one vectored system call), and a send that
the kernel takes in part continues from the exact byte where it stopped. A send cancelled
there has either happened or not, so a cancelled ``write`` leaves its whole buffer queued (for
the next write or ``close()`` to flush). A write returns once its bytes are with the
transport, so one task's successive writes go out one system call each, as with trio's own
``send_all``; whatever is queued when a send starts (the buffers of a ``writev``, the leftover
of a cancelled write with the next write) goes out in one.

On any other stream the adapter calls ``send_all`` with the queued buffers joined (only when
there are several). A cancelled ``send_all`` leaves the stream in an unknown state, so
cancelling a ``write`` (or ``shutdown``) while it is inside ``send_all`` aborts the flow.

A stream without ``send_eof`` (a ``trio.SSLStream``, say) cannot half-close: our EOF then
closes the whole stream (``aclose``, which for TLS sends ``close_notify``). If the peer's EOF
had already arrived, the flow ends cleanly; otherwise it ends with a ``TRANSPORT`` error, since
nothing more can be received. So ``close()`` ends cleanly only after the peer's EOF has been
read, and ``shutdown(WRITE)`` ends both directions.
"""

from __future__ import annotations

import math
import socket as _stdlib_socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import Any, NoReturn

import trio

from sansflow import (
    WOULD_WAIT,
    Eof,
    Error,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    Ok,
    ReadResult,
    SendState,
    Shutdown,
    WriteResult,
    error_message,
)

from ._common import IOV_MAX, READ_SIZE, AdapterFlow

__all__ = ["FlowStream", "TrioFlow", "connect", "serve", "wrap"]

_HIGH_WATER = 64 * 1024
_LOW_WATER = 16 * 1024
_RECEIVE_LIMIT = 256 * 1024
_CLOSE_TIMEOUT = 10.0  # what serve() gives a flow that its handler left open

# What a stream (or a trio socket, used directly) raises when the transport fails or was
# closed under us; anything else is a bug and propagates.
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

_SEND_INTERRUPTED = FlowError(
    ErrorKind.TRANSPORT,
    detail="a send was interrupted part-way; the stream's state is unknown",
)
_NO_HALF_CLOSE = FlowError(
    ErrorKind.TRANSPORT,
    detail="the stream cannot half-close (no send_eof): sending EOF closed both directions",
)

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint


class TrioFlow(AdapterFlow):
    """A flow over a trio stream. Every method is async and a trio checkpoint.

    One task may read and another write at the same time; a second concurrent reader (or
    writer) gets ``sansflow.BusyError``. ``close``, ``shutdown`` and ``abort`` may run from any
    task, alongside a reader and a writer.
    """

    __slots__ = ("_flushing", "_lot", "_parked", "_receiving", "_released", "_send_unknown",
                 "_socket", "_stream")

    def __init__(self, stream: trio.abc.Stream, core: Flow) -> None:
        super().__init__(core)
        self._stream = stream
        # A SocketStream's socket is used directly: exact partial sends, vectored sendmsg.
        sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._socket = sock if sock is not None and hasattr(sock, "sendmsg") else None
        self._lot = trio.lowlevel.ParkingLot()  # tasks waiting for a direction's holder
        self._parked = 0  # tasks in _lot (or just woken from it): checked on every hot path
        self._receiving = False  # a task is inside stream.receive_some
        self._flushing = False  # a task is sending the core's queue (or its EOF)
        self._released = False  # the stream is closed (or being closed)
        self._send_unknown = False  # a send_all was interrupted: the stream is unusable

    @property
    def stream(self) -> trio.abc.Stream:
        """The trio stream underneath (let the flow drive it)."""
        return self._stream

    # -- application side ----------------------------------------------------------------

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        """Up to ``max_bytes`` bytes (all that is buffered if ``None``) as ``Ok(data)``, or
        ``Eof()``, or ``Error(error)``; waits while nothing is buffered and the peer may send.

        Cancelling it loses nothing: data received stays buffered for the next read.
        """
        self._claim_read()
        try:
            await _checkpoint_if_cancelled()
            core = self._core
            result = core.read(max_bytes)
            if result is not WOULD_WAIT:
                await _cancel_shielded_checkpoint()
                return result
            while True:  # every pass below blocks or does I/O, so each is a checkpoint
                if self._receiving:  # close() is receiving: it feeds the core for us
                    await self._park()
                else:
                    await self._receive()
                result = core.read(max_bytes)
                if result is not WOULD_WAIT:
                    return result
        finally:
            self._reading = False
            if self._parked:  # a close() waiting for this reader to go before it receives
                self._lot.unpark_all()

    async def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        """Queue ``data`` and send everything queued; ``Ok(None)`` once it is all sent.

        ``Eof()`` after ``close()``/``shutdown(WRITE)``; the flow's ``Error`` after a failure
        (also when the failure came while sending this data). Cancelling it leaves the whole
        buffer queued (the next write or ``close()`` sends it) or none of it.
        """
        self._claim_write()
        try:
            await _checkpoint_if_cancelled()
            core = self._core
            result = core.write(data)
            while result is WOULD_WAIT:  # queue left over from a cancelled write
                await self._flush()
                result = core.write(data)
            if type(result) is Ok and core.queued:
                await self._flush()
                return self._write_result(result)
            await _cancel_shielded_checkpoint()
            return result
        except BaseException:
            if self._send_unknown:
                await self._abort(_SEND_INTERRUPTED)
            raise
        finally:
            self._writing = False

    async def writev(self, buffers: Iterable[bytes | bytearray | memoryview]) -> WriteResult:
        """Like ``write`` for several buffers: all or none queued, sent as one vectored call
        on a socket (``sendmsg``), joined for other streams."""
        self._claim_write()
        try:
            await _checkpoint_if_cancelled()
            if not isinstance(buffers, (list, tuple, bytes, bytearray, memoryview, str)):
                with suppress(TypeError):  # not iterable: the core says so, clearly
                    buffers = list(buffers)  # a retry after WOULD_WAIT needs them again
            core = self._core
            result = core.writev(buffers)
            while result is WOULD_WAIT:
                await self._flush()
                result = core.writev(buffers)
            if type(result) is Ok and core.queued:
                await self._flush()
                return self._write_result(result)
            await _cancel_shielded_checkpoint()
            return result
        except BaseException:
            if self._send_unknown:
                await self._abort(_SEND_INTERRUPTED)
            raise
        finally:
            self._writing = False

    async def close(self, timeout: float | None = None) -> None:
        """The seed's close: flush, send EOF, wait for the peer's EOF, then release the stream.

        Input that arrives meanwhile stays readable (by another task, or after ``close``).
        Idempotent: a concurrent call waits for the same end; on a CLOSED flow it returns at
        once. After ``timeout`` seconds the flow is aborted (``ErrorKind.TIMED_OUT``) and
        ``close`` returns. If ``close`` is cancelled, the flow is aborted first (the stream is
        never left open), then ``trio.Cancelled`` propagates.
        """
        if timeout is not None:
            _check_timeout(timeout)
        core = self._core
        if core.state is not FlowState.CLOSED:
            core.close()
            self._wake()  # a writer waiting for room now gets Eof
            deadline = math.inf if timeout is None else trio.current_time() + timeout
            try:
                with trio.CancelScope(deadline=deadline) as scope:
                    await self._wait_closed()
            except BaseException:
                await self._abort(None)
                raise
            if scope.cancelled_caught and self._core.state is not FlowState.CLOSED:
                await self._abort(FlowError(ErrorKind.TIMED_OUT, detail="close() deadline passed"))
        await self._release(graceful=core.error is None)
        await trio.lowlevel.checkpoint()

    async def shutdown(self, how: Shutdown) -> None:
        """``WRITE``: flush, send EOF, return without waiting for the peer. ``READ``: drop
        buffered and future input; reads answer ``Eof()``. ``BOTH``: both. Idempotent.

        A read already waiting on the stream when ``READ`` is applied returns ``Eof()`` when the
        next chunk (discarded) or the peer's EOF arrives: trio cannot interrupt a receive
        without a cancel scope around every receive, a cost every read would pay. Input that
        nobody reads stays in the kernel until ``close()`` drains it.
        """
        await _checkpoint_if_cancelled()
        core = self._core
        core.shutdown(how)
        self._wake()
        if how is not Shutdown.READ:
            try:
                while core.send_state is SendState.EOF_QUEUED:
                    await self._flush()
            except BaseException:
                if self._send_unknown:
                    await self._abort(_SEND_INTERRUPTED)
                raise
        if core.state is FlowState.CLOSED:
            await self._release(graceful=core.error is None)
        await _cancel_shielded_checkpoint()

    async def abort(self) -> None:
        """Drop the queue, reset the connection and end the flow with ``ErrorKind.ABORTED``.

        On a socket, an RST (``SO_LINGER`` 0, then close); on other streams,
        ``trio.aclose_forcefully``. Waiting readers and writers wake with the error. Nothing
        happens to a flow that is already CLOSED. The flow is aborted even if this is
        cancelled.
        """
        await self._abort(None)
        await trio.lowlevel.checkpoint()

    # -- moving bytes --------------------------------------------------------------------

    async def _receive(self) -> None:
        """One ``receive_some`` into the core; the caller holds no flag and checked none is
        held. Never takes more than the receive limit has room for."""
        core = self._core
        self._receiving = True
        try:
            size = min(READ_SIZE, core.receive_limit - core.buffered)
            sock = self._socket
            data: bytes | bytearray
            try:
                if sock is not None:
                    data = await sock.recv(size)
                else:
                    data = await self._stream.receive_some(size)
            except _TRANSPORT_ERRORS as exc:
                await self._failed(exc)
                return
            if data:
                core.receive_data(data)
            else:
                core.receive_eof()
                if core.state is FlowState.CLOSED:
                    await self._release(graceful=core.error is None)
        finally:
            self._receiving = False
            if self._parked:
                self._lot.unpark_all()

    def _write_result(self, result: Ok[None]) -> WriteResult:
        """A write's result once its flush is over: the error if the flow failed meanwhile."""
        core = self._core
        if core.send_state is SendState.FAILED:
            assert core.error is not None  # FAILED always carries its error
            return Error(core.error)
        return result

    async def _flush(self) -> None:
        """Send the core's queue, then its EOF if due, until there is nothing left to send;
        if another task is sending, wait for it to finish instead."""
        while self._flushing:
            await self._park()
        core = self._core
        self._flushing = True
        try:
            if self._send_unknown:
                await self._abort(_SEND_INTERRUPTED)
                return
            sock = self._socket
            while True:
                if core.queued:
                    try:
                        if sock is not None:
                            buffers = core.buffers_to_send(IOV_MAX)
                            if len(buffers) == 1:
                                sent = await sock.send(buffers[0])
                            else:
                                sent = await sock.sendmsg(buffers)
                        else:
                            sent = await self._send_all(core)
                    except _TRANSPORT_ERRORS as exc:
                        await self._failed(exc)
                        return
                    if core.send_state is SendState.FAILED:  # aborted while sending
                        return
                    core.sent(sent)
                elif core.eof_due:
                    try:
                        await self._send_eof()
                    except _TRANSPORT_ERRORS as exc:
                        await self._failed(exc)
                        return
                    if core.send_state is SendState.EOF_QUEUED:
                        core.eof_sent()
                    if core.state is FlowState.CLOSED:
                        await self._release(graceful=core.error is None)
                    return
                else:
                    return
        finally:
            self._flushing = False
            if self._parked:
                self._lot.unpark_all()

    async def _send_all(self, core: Flow) -> int:
        """Everything queued, through a stream's ``send_all``; returns the bytes sent."""
        buffers = core.buffers_to_send()
        data = buffers[0] if len(buffers) == 1 else b"".join(buffers)
        try:
            await self._stream.send_all(data)
        except _TRANSPORT_ERRORS:
            raise
        except BaseException:
            # send_all may have sent any part of data: nothing can follow it safely.
            self._send_unknown = True
            raise
        return len(data)

    async def _send_eof(self) -> None:
        send_eof = getattr(self._stream, "send_eof", None)
        if send_eof is not None:
            await send_eof()
            return
        core = self._core
        core.eof_sent()
        if core.state is not FlowState.CLOSED:
            core.receive_error(_NO_HALF_CLOSE)
        await self._release(graceful=True)

    async def _wait_closed(self) -> None:
        """close()'s wait: help flush and send EOF, then receive until the peer's EOF."""
        core = self._core
        while core.state is not FlowState.CLOSED:
            if core.send_state is SendState.EOF_QUEUED:
                await self._flush()
            elif self._reading or self._receiving or core.reading_paused:
                # A reader receives for us; or the buffer is full until the application reads.
                await self._park()
            else:
                await self._receive()

    async def _wait_send_might_not_block(self) -> None:
        """For ``FlowStream.wait_send_all_might_not_block``: wait until the transport would
        take a send. Returns at once if sending would fail rather than block."""
        await _checkpoint_if_cancelled()
        while self._flushing:
            await self._park()
        if self._released or self._core.send_state is not SendState.OPEN:
            await _cancel_shielded_checkpoint()
            return
        try:
            if self._socket is not None:
                await self._socket.wait_writable()
            else:
                await self._stream.wait_send_all_might_not_block()
        except _TRANSPORT_ERRORS:
            pass  # a send would fail at once; that is not blocking

    async def _park(self) -> None:
        """Wait until another task lets go of a direction or the flow's state changes."""
        self._parked += 1
        try:
            await self._lot.park()
        finally:
            self._parked -= 1

    def _wake(self) -> None:
        if self._parked:
            self._lot.unpark_all()

    # -- ending --------------------------------------------------------------------------

    async def _failed(self, exc: BaseException) -> None:
        """The transport raised ``exc``: fail the core with its cause, release the stream."""
        core = self._core
        if core.state is not FlowState.CLOSED:  # else: our own abort closed the stream
            cause = exc.__cause__
            core.receive_error(
                cause if isinstance(exc, trio.BrokenResourceError) and cause is not None else exc
            )
        self._wake()
        await self._release(graceful=False)

    async def _abort(self, error: FlowError | None) -> None:
        core = self._core
        core.abort(error)
        self._wake()
        if self._released:
            return
        if core.error is None:  # it had ended cleanly: nothing to reset
            await self._release(graceful=True)
            return
        sock = self._socket
        if sock is None:
            await self._release(graceful=False)
            return
        self._released = True
        with suppress(OSError):  # not TCP (a Unix socket): a plain close will do
            sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
        sock.close()  # wakes tasks waiting on it with ClosedResourceError

    async def _release(self, *, graceful: bool) -> None:
        """Close the stream once. ``graceful``: a clean end (FIN, TLS close_notify)."""
        if self._released:
            return
        self._released = True
        if self._socket is not None:
            self._socket.close()
        elif graceful:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._stream.aclose()
        else:
            await trio.aclose_forcefully(self._stream)

    async def _detach(self) -> None:
        """Release the stream now, without waiting for the peer (``FlowStream.aclose``).

        Gracefully when nothing is left unsent; with a reset when queued data would be lost,
        so that the peer cannot mistake the end for a clean one.
        """
        core = self._core
        graceful = not core.queued and not self._send_unknown
        if graceful:
            core.abort()
            self._wake()
            await self._release(graceful=True)
        else:
            await self._abort(None)


def _check_timeout(timeout: object) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if not timeout >= 0:  # also rejects NaN
        raise ValueError(f"timeout must be >= 0, not {timeout!r}")


def wrap(stream: trio.abc.Stream, *, high_water: int = _HIGH_WATER,
         low_water: int = _LOW_WATER, receive_limit: int = _RECEIVE_LIMIT) -> TrioFlow:
    """A flow over ``stream``, which the flow now owns (it closes it when the flow ends).

    Any ``trio.abc.HalfCloseableStream`` works; a ``trio.SocketStream`` gets exact partial
    sends and vectored ``sendmsg``. A plain ``trio.abc.Stream`` (``SSLStream``) works too, but
    cannot half-close: see the module documentation.
    """
    if not isinstance(stream, trio.abc.Stream):
        raise TypeError(f"wrap() takes a trio stream, not {type(stream).__name__}")
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    return TrioFlow(stream, core)


async def connect(host: str | bytes, port: int, *, high_water: int = _HIGH_WATER,
                  low_water: int = _LOW_WATER, receive_limit: int = _RECEIVE_LIMIT) -> TrioFlow:
    """Open a TCP connection (``trio.open_tcp_stream``) and return a flow over it."""
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    stream = await trio.open_tcp_stream(host, port)
    return TrioFlow(stream, core)


async def serve(
    handler: Callable[[TrioFlow], Awaitable[object]],
    host: str | bytes | None,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    backlog: int | None = None,
    high_water: int = _HIGH_WATER,
    low_water: int = _LOW_WATER,
    receive_limit: int = _RECEIVE_LIMIT,
) -> NoReturn:
    """Accept TCP connections and run ``handler(flow)`` for each, like ``trio.serve_tcp``.

    Use ``port = await nursery.start(serve, handler, "127.0.0.1", 0)``: the bound port (of
    the first listener, should ``host`` resolve to several addresses) is what ``start``
    returns. When the handler returns, the flow is closed (``close(timeout=10)``) unless it is
    CLOSED; if it raises, the flow is aborted and the exception propagates, crashing the
    server, as with ``trio.serve_tcp``. Runs until cancelled.
    """
    options: dict[str, Any] = {
        "high_water": high_water, "low_water": low_water, "receive_limit": receive_limit,
    }
    Flow(**options)  # bad options fail here, not once per connection
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    bound = int(listeners[0].socket.getsockname()[1])

    async def run(stream: trio.SocketStream) -> None:
        flow = TrioFlow(stream, Flow(**options))
        try:
            await handler(flow)
        except BaseException:
            await flow.abort()
            raise
        await flow.close(timeout=_CLOSE_TIMEOUT)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, run, listeners)
        task_status.started(bound)
    raise AssertionError("serve_listeners returned")  # pragma: no cover


class FlowStream(trio.abc.HalfCloseableStream):
    """A ``trio.abc.HalfCloseableStream`` over a ``TrioFlow``, following trio's contract.

    ``receive_some`` returns ``b""`` at EOF; ``send_eof`` is ``flow.shutdown(WRITE)`` and is
    idempotent; ``send_all`` after ``send_eof`` or ``aclose`` raises
    ``trio.ClosedResourceError``; a flow error raises ``trio.BrokenResourceError`` from its
    cause; a second concurrent call on the same side raises ``trio.BusyResourceError``.
    ``aclose`` releases the flow at once, without waiting for the peer's EOF (trio's meaning,
    not the seed's ``close``), and wakes a blocked ``receive_some`` with
    ``trio.ClosedResourceError``. Every method is a checkpoint.
    """

    __slots__ = ("_closed", "_flow", "_receiving", "_sending")

    def __init__(self, flow: TrioFlow) -> None:
        if not isinstance(flow, TrioFlow):
            raise TypeError(f"FlowStream() takes a TrioFlow, not {type(flow).__name__}")
        self._flow = flow
        self._closed = False
        self._sending = False  # send_all, send_eof, wait_send_all_might_not_block
        self._receiving = False

    @property
    def flow(self) -> TrioFlow:
        return self._flow

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._claim_send()
        try:
            await self._check_open()
            result = await self._flow.write(data)
            if not isinstance(result, Ok):
                self._raise(result)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._claim_send()
        try:
            await self._check_open()
            await self._flow._wait_send_might_not_block()
            if self._closed:
                raise trio.ClosedResourceError("this FlowStream was closed")
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        self._claim_send()
        try:
            await self._check_open()
            await self._flow.shutdown(Shutdown.WRITE)
            error = self._flow.error
            if self._flow.send_state is SendState.FAILED and error is not None:
                self._raise(Error(error))
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await self._check_open()
            result = await self._flow.read(max_bytes)
            if self._closed:  # aclose() while we waited: trio says ClosedResourceError
                raise trio.ClosedResourceError("this FlowStream was closed")
            if isinstance(result, Ok):
                return result.value
            if isinstance(result, Eof):
                return b""
            self._raise(result)
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        self._closed = True
        await self._flow._detach()
        await trio.lowlevel.checkpoint()

    def _claim_send(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already using this stream's send side")
        self._sending = True

    async def _check_open(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("this FlowStream was closed")

    def _raise(self, result: Eof | Error) -> NoReturn:
        """trio's exception for a result that is not ``Ok``."""
        if isinstance(result, Eof):
            raise trio.ClosedResourceError("can't send data after sending EOF")
        error = result.error
        if self._closed or (error.kind is ErrorKind.ABORTED and error.cause is None):
            # We closed it (here, or with flow.abort()): trio calls that "closed", not "broken".
            raise trio.ClosedResourceError(f"the flow was closed: {error_message(error)}")
        raise trio.BrokenResourceError(error_message(error)) from error.cause
