"""``AnyioFlow``: a flow carried over an anyio byte stream, on either of anyio's backends.

One implementation for asyncio and trio: the flow uses anyio's streams, events and cancel
scopes, and nothing of the backend below except one call that starts its sender (``_spawn``).

How bytes move:

- Sending: ``write`` appends to the core's send queue and returns; it waits only when the
  core says so (the queue is above its low-water mark and the write would pass the high-water
  mark), until sends drain the queue to low water. A flow's *sender*, a task that no task
  group owns (``wrap`` and ``connect`` have none to offer: a trio system task, or an asyncio
  task), sends whatever is queued when it runs in one ``send`` (the writes of a burst go out
  together), then our EOF (``send_eof``). It starts when a write leaves data queued, sleeps
  while there is nothing to send, and ends once the send direction is finished (EOF sent,
  failure, abort), so no task outlives a CLOSED flow. If the run ends first, its
  cancellation aborts the flow: the connection is never left open. anyio's socket streams
  return from ``send`` once the socket took every byte, so the core's queue counts every
  byte still in the process, and its water marks hold writers back against all of it.
- Receiving: the task that reads receives from the stream when the core has nothing
  buffered; ``close()`` receives until the peer's EOF whenever no reader is doing so (what
  it receives stays readable). Only one task receives at a time; another one waits for the
  flow to change. A receive never asks for more than the receive limit has room for, and
  anyio's receive loses nothing when it is cancelled.
- A ``write`` that queues its data at once is a cancellation point but not a scheduling
  point, as on the trio adapter: a full checkpoint per write would let the sender run after
  every write and send each one alone. Cancelling a ``write`` leaves its whole buffer queued
  (it returned) or none of it (it was waiting for room). Cancelling ``shutdown(WRITE)`` only
  stops the wait: the EOF stays queued behind the data.
- Ending: ``abort()`` sets ``SO_LINGER`` 0 on the socket under the stream (anyio's
  ``SocketAttribute.raw_socket``), so that closing the stream sends an RST; a stream without
  a socket is closed with ``anyio.aclose_forcefully``. A failure of the stream ends the flow
  with the ``OSError`` under anyio's ``BrokenResourceError``.
- A stream that cannot half-close (its ``send_eof`` raises ``NotImplementedError``, as
  anyio's ``TLSStream`` does) takes our EOF as the end of everything: the stream is closed;
  the flow ends cleanly if the peer's EOF had arrived, else with a ``TRANSPORT`` error.
  TLS is the core's ``TlsLayer`` over the plain stream instead, which half-closes.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from sansflow import (
    WOULD_WAIT,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    Ok,
    ReadResult,
    SendState,
    Shutdown,
    WriteResult,
)
from sansflow._adapter import AsyncDriverFlow

from ._common import READ_SIZE, RECEIVING, addresses, discard_input, set_linger_zero
from ._handshake import step_layers

__all__ = ["AnyioFlow"]

# What a stream raises when the transport fails or was closed under us. Anything else from
# a stream ends the flow too (the sender must not crash), as a TRANSPORT error.
_TRANSPORT_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
_SEND_OPEN = SendState.OPEN
_EOF_QUEUED = SendState.EOF_QUEUED
_CLOSED = FlowState.CLOSED

_NO_HALF_CLOSE = FlowError(
    ErrorKind.TRANSPORT,
    detail="the stream cannot half-close (no send_eof): sending EOF closed both directions",
)
_SENDER_NAME = "sansflow.adapters.anyio sender"


class AnyioFlow(AsyncDriverFlow):
    """A flow over an anyio byte stream. Every method is async; ``async with flow:`` closes it
    (aborts it on an exception) and ``async for data in flow`` reads it until ``Eof``.

    One task may read and another write at the same time; a second concurrent reader (or
    writer) gets ``sansflow.BusyError``. ``close``, ``shutdown`` and ``abort`` may run from any
    task, alongside a reader and a writer. ``write`` and ``writev`` are cancellation points
    that let other tasks run only when they had to wait (see the module documentation).
    """

    __slots__ = ("_changed", "_in_send", "_raw", "_receiving", "_released", "_sender",
                 "_sender_idle", "_sender_scope", "_stream", "_waiting", "_wire")
    _core: Flow  # the core this flow drives (AdapterFlow only reads its state)

    def __init__(self, stream: ByteStream, core: Flow, *, sock: Any = None) -> None:
        """``sock``: the socket the addresses are read from, when the stream has none (a
        connection that ended before ``wrap``); by default the stream's own."""
        raw = stream.extra(SocketAttribute.raw_socket, None)
        super().__init__(core, **addresses(raw if sock is None else sock))
        # The core on the stream (ciphertext under TLS); the application uses the outermost
        # TLS layer's plaintext core (``_core``).
        self._wire = core
        self._stream = stream
        self._raw = raw  # for SO_LINGER 0 on abort
        # Readers, writers, closers wait here for the flow to change (``_wake``).
        self._changed = anyio.Event()
        self._waiting = 0  # tasks waiting on _changed: a wake with none costs nothing
        self._receiving = False  # a task is inside a receive from the stream
        self._released = False  # the stream is closed (or being closed)
        self._sender: object | None = None  # the sending task, while it runs
        self._sender_idle: anyio.Event | None = None  # set to wake the sleeping sender
        self._sender_scope: anyio.CancelScope | None = None
        self._in_send = False  # the sender is inside a send or send_eof call

    @property
    def stream(self) -> ByteStream:
        """The anyio stream underneath (let the flow drive it)."""
        return self._stream

    # -- application side ----------------------------------------------------------------

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        """Up to ``max_bytes`` bytes (all that is buffered if ``None``) as ``Ok(data)``, or
        ``Eof()``, or ``Error(error)``; waits while nothing is buffered and the peer may send.
        Cancelling it loses nothing: data received stays buffered for the next read."""
        self._claim_read()
        try:
            await checkpoint_if_cancelled()
            core = self._core
            result = core.read(max_bytes)
            if result is not WOULD_WAIT:
                await cancel_shielded_checkpoint()
                return result
            while True:
                if self._layers:
                    # Decrypted from what the flow below held (records, a close_notify)
                    # while the receive limit kept the layer from taking it.
                    self._kick()
                    if (result := core.read(max_bytes)) is not WOULD_WAIT:
                        await cancel_shielded_checkpoint()
                        return result
                if self._may_receive():
                    await self._receive()
                else:  # close() is receiving for us, or the stream is done
                    await self._wait_change()
                result = core.read(max_bytes)
                if result is not WOULD_WAIT:
                    return result
        finally:
            self._reading = False
            self._wake()  # a close() waiting for this reader to go before it receives

    async def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        """Queue ``data``: ``Ok(None)`` once it is in the send queue (not yet on the wire).

        Waits only while the queue is above its low-water mark and ``data`` would push it past
        the high-water mark. ``Eof()`` after ``close()``/``shutdown(WRITE)``; the flow's
        ``Error`` after a failure. Cancelling it leaves the whole buffer queued or none of it.
        A writable buffer is copied; a read-only one is queued as it is.
        """
        if self._writing:
            self._claim_write()  # raises BusyError
        await checkpoint_if_cancelled()
        core = self._core
        result = core.write(data)
        if result is WOULD_WAIT:
            result = await self._write_slow(lambda: core.write(data))
        elif type(result) is not Ok:
            await cancel_shielded_checkpoint()  # a loop on Eof or Error still lets others run
            return result
        if type(result) is Ok:
            self._kick()
        return result

    # -- waiting ---------------------------------------------------------------------------

    async def _wait_change(self) -> None:
        """Wait until the flow changes (``_wake``)."""
        self._waiting += 1
        try:
            await self._changed.wait()
        finally:
            self._waiting -= 1

    def _wake(self) -> None:
        """The flow changed: every task waiting for it looks again."""
        if self._waiting:
            self._changed.set()
            self._changed = anyio.Event()

    # -- sending ---------------------------------------------------------------------------

    def _kick(self) -> None:
        """Whatever is due (queued data, then EOF) is sent by the sender, woken or started."""
        self._step()
        wire = self._wire
        if (wire.queued or wire.eof_due or self._send_waits_for_peer()) and not self._released:
            idle = self._sender_idle
            if idle is not None:
                self._sender_idle = None
                idle.set()
            elif self._sender is None:
                self._sender = _spawn(self._sender_main)

    async def _sender_main(self) -> None:
        """The sender's task. Nothing escapes it but the cancellation of the run's end: no one
        waits for this task, so an exception would only be logged."""
        wire = self._wire
        try:
            with anyio.CancelScope() as scope:  # cancelled when the send direction ends
                self._sender_scope = scope
                await self._send_until_done()
        except anyio.get_cancelled_exc_class():
            # The run is ending with this flow still sending: never leave the connection
            # open. Then let the cancellation go on.
            with anyio.CancelScope(shield=True):
                await self._abort(None)
            raise
        except BaseException as exc:
            if wire.state is not _CLOSED:
                wire.receive_error(FlowError(
                    ErrorKind.TRANSPORT, exc, f"sending failed with {type(exc).__name__}: {exc}",
                ))
            self._step()
            await self._release(graceful=False)
        finally:
            self._sender = None
            self._sender_scope = None
            self._sender_idle = None
            self._in_send = False
            self._wake()

    async def _send_until_done(self) -> None:
        """Send what is queued, then our EOF; sleep while there is nothing to send; return
        once the send direction is finished."""
        wire = self._wire
        while True:
            if wire.queued:
                # One send for everything queued; b"".join of one bytes is that bytes itself.
                data = b"".join(wire.buffers_to_send())
                self._in_send = True
                try:
                    await self._stream.send(data)
                except _TRANSPORT_ERRORS as exc:
                    await self._failed(exc)
                    return
                finally:
                    self._in_send = False
                wire.sent(len(data))  # ignored if the flow failed meanwhile
                self._step()  # room on the wire: more records
                self._wake()  # writers waiting for room, closers waiting for the flush
            elif wire.eof_due:
                await self._send_eof()
                return
            elif self._send_waits_for_peer():
                # A renegotiation holds what the application wrote until the peer's answer
                # is received: receive it, unless a reader (or close) is receiving already.
                if self._receiving:
                    await self._wait_change()
                else:
                    await self._receive()
            elif wire.send_state is _SEND_OPEN and not self._released:
                idle = self._sender_idle = anyio.Event()
                await idle.wait()
            else:
                return

    async def _send_eof(self) -> None:
        """Our EOF: ``send_eof``, or closing the stream when it cannot half-close."""
        wire = self._wire
        self._in_send = True
        try:
            await self._stream.send_eof()
        except NotImplementedError:
            wire.eof_sent()
            if wire.state is not _CLOSED:
                wire.receive_error(_NO_HALF_CLOSE)
            self._wake()
            await self._release(graceful=True)
            return
        except _TRANSPORT_ERRORS as exc:
            await self._failed(exc)
            return
        finally:
            self._in_send = False
        if wire.send_state is _EOF_QUEUED:
            wire.eof_sent()
        self._wake()
        if wire.state is _CLOSED:
            await self._release(graceful=wire.error is None)

    def _send_waits_for_peer(self) -> bool:
        """A TLS layer holds queued plaintext until the peer's handshake messages are
        received (a renegotiation), and the flow can receive them."""
        wire = self._wire
        return (bool(self._layers) and not self._released and wire.receive_state in RECEIVING
                and not wire.reading_paused
                and any(layer.send_waits_for_peer for layer in self._layers))

    # -- receiving -----------------------------------------------------------------------

    def _may_receive(self) -> bool:
        """Whether a receive from the stream may start now: no other task is receiving, the
        core takes input and has room for it."""
        wire = self._wire
        return (not self._receiving and not self._released
                and wire.receive_state in RECEIVING and not wire.reading_paused)

    async def _receive(self) -> None:
        """One receive into the core; the caller checked ``_may_receive``."""
        wire = self._wire
        self._receiving = True
        try:
            try:
                data = await self._stream.receive(
                    min(READ_SIZE, wire.receive_limit - wire.buffered))
            except anyio.EndOfStream:
                wire.receive_eof()
            except _TRANSPORT_ERRORS as exc:
                await self._failed(exc)
                return
            else:
                wire.receive_data(data)
            if self._layers:
                self._kick()  # decrypt it; send what the TLS session answers
            if wire.state is _CLOSED:
                await self._release(graceful=wire.error is None)
        finally:
            self._receiving = False
            self._wake()

    async def _closing(self) -> None:
        """close()'s wait: let the sender flush and send EOF while receiving until the peer's
        EOF (unless a reader receives, or the application must read first)."""
        wire = self._wire
        while wire.state is not _CLOSED:
            if _EOF_QUEUED in (wire.send_state, self._core.send_state):
                self._kick()
            if not self._reading and self._may_receive():
                await self._receive()
            else:
                await self._wait_change()

    # -- TLS -------------------------------------------------------------------------------

    def _step(self) -> None:
        """Let the TLS layers move what they can (decrypt what arrived, encrypt what the
        application queued), and wake whoever that concerns."""
        if self._layers:
            step_layers(self._layers)
            self._wake()

    async def _handshake(self, timeout: float | None) -> bool:
        """Send and receive until the outermost layer's handshake is done or the flow ended;
        ``False`` if ``timeout`` seconds passed first."""
        layer = self._layers[-1]
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                self._kick()
                if layer.handshake_done or self._core.state is _CLOSED:
                    return True
                if self._reading or not self._may_receive():
                    await self._wait_change()
                else:
                    await self._receive()
        return False

    async def _wait_flushed_wire(self) -> None:
        """Wait once while the wire's EOF is queued (after a failed handshake's alert)."""
        self._kick()
        if self._wire.send_state is _EOF_QUEUED:
            await self._wait_change()

    # -- the primitives of AsyncDriverFlow (close, shutdown, writev) -------------------------

    def _push(self) -> None:
        self._wake()  # a writer waiting for room now gets Eof
        self._kick()

    def _queued_more(self, idle: bool) -> None:
        self._kick()

    async def _wait_room(self) -> None:
        self._kick()  # under TLS, encrypting what is queued may make room at once
        if not self._core.write_ready:
            await self._wait_change()

    async def _wait_flushed(self) -> None:
        self._kick()
        if self._core.send_state is _EOF_QUEUED:
            await self._wait_change()

    async def _wait_closed(self, timeout: float | None) -> bool:
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            await self._closing()
        wire = self._wire
        if wire.state is not _CLOSED:
            return False
        await self._release(graceful=wire.error is None)
        await checkpoint()
        return True

    async def _cancel_point(self) -> None:
        await checkpoint_if_cancelled()

    async def _settle(self) -> None:
        wire = self._wire
        if wire.state is _CLOSED:
            await self._release(graceful=wire.error is None)
        await cancel_shielded_checkpoint()

    # -- ending --------------------------------------------------------------------------

    async def _failed(self, exc: BaseException) -> None:
        """The stream raised ``exc``: fail the core with the ``OSError`` under it, release
        the stream."""
        wire = self._wire
        if wire.state is not _CLOSED:  # else: our own abort closed the stream
            wire.receive_error(_cause(exc))
        self._stop_sender()
        self._step()
        self._wake()
        await self._release(graceful=False)

    def _stop_sender(self) -> None:
        """The send direction is over: the sender ends (from wherever it waits)."""
        scope = self._sender_scope
        if scope is not None:
            scope.cancel()

    async def _abort(self, error: FlowError | None) -> None:
        self._core.abort(error)  # the TLS layers' plaintext core: no close_notify goes out
        wire = self._wire
        wire.abort(error)
        self._stop_sender()
        self._wake()
        if self._released:
            return
        if wire.error is not None and self._raw is not None:  # else it had ended cleanly
            set_linger_zero(self._raw)  # closing sends an RST
        await self._release(graceful=wire.error is None)

    async def _release(self, *, graceful: bool) -> None:
        """Close the stream once, even when cancelled. ``graceful``: a clean end (a stream
        over TLS says goodbye); else it is closed at once (``anyio.aclose_forcefully``)."""
        if self._released:
            return
        self._released = True
        with anyio.CancelScope(shield=True):
            if graceful:
                with suppress(*_TRANSPORT_ERRORS):
                    await self._stream.aclose()
            else:
                await anyio.aclose_forcefully(self._stream)

    async def _detach(self) -> None:
        """Release the stream without waiting for the peer's EOF: what is queued is sent,
        then our EOF (under TLS, close_notify), then the stream is closed gracefully. If that
        wait is cancelled, or the flow fails meanwhile, the connection is reset instead, so
        that the peer cannot take the end for a clean one. The flow ends ``ABORTED``."""
        core, wire = self._core, self._wire

        def sending() -> bool:
            return bool(core.queued or wire.queued or self._in_send
                        or _EOF_QUEUED in (core.send_state, wire.send_state))

        try:
            core.shutdown(Shutdown.WRITE)
            while sending() and not self._released:
                self._kick()
                if not sending():
                    break
                await self._wait_change()
        except BaseException:
            await self._abort(None)
            raise
        wire.abort()  # our EOF is out (or the flow failed): this drops nothing
        core.abort()
        self._stop_sender()
        self._wake()
        raw = self._raw
        if raw is not None:
            discard_input(lambda size: os.read(raw.fileno(), size))  # non-blocking, both backends
        await self._release(graceful=True)


def _cause(exc: BaseException) -> BaseException:
    """What a flow fails with for ``exc``: the error under anyio's ``BrokenResourceError``
    (the socket's ``OSError``), else ``exc`` itself."""
    while isinstance(exc, anyio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _spawn(job: Callable[[], Coroutine[Any, Any, None]]) -> object:
    """Start ``job`` in a task that no task group waits for, on the running backend: a trio
    system task (cancelled when the run's main task ends), or an asyncio task (cancelled
    when ``asyncio.run`` ends). The task is returned: asyncio keeps only a weak reference."""
    trio = sys.modules.get("trio")
    if trio is not None and _in_trio(trio):
        return trio.lowlevel.spawn_system_task(job, name=_SENDER_NAME)
    return asyncio.get_running_loop().create_task(job(), name=_SENDER_NAME)


def _in_trio(trio: Any) -> bool:
    """Whether this is a trio task."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
