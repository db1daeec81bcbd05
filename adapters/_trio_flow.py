"""``TrioFlow``: a flow carried over a trio stream (a socket's directly).

How bytes move:

- Sending: ``write`` appends to the core's send queue and returns; it waits only when the
  core says so (the queue is above its low-water mark and the write would pass the
  high-water mark), until sends drain the queue to low water. Whatever is queued when a send
  happens goes out in one vectored call. A flow's *sender*, a trio system task
  (``trio.lowlevel.spawn_system_task``: ``wrap`` and ``connect`` have no nursery to offer),
  sends what the flow's own tasks leave queued, then our EOF. It starts when a write leaves
  data queued (an idle or read-only flow has none), sleeps while there is nothing to send,
  and ends once the send direction is finished (EOF sent, failure, abort), so no task
  outlives a CLOSED flow. If the run's main task ends first, the sender is cancelled and
  aborts the flow: the connection is never left open.
- Receiving: the task that reads receives from the stream when the core has nothing
  buffered; ``close()`` receives until the peer's EOF whenever no reader is doing so (what it
  receives stays readable). A flag makes sure only one task receives at a time; a task that
  finds it taken parks until the holder lets go, so trio's conflict detection never fires.
- ``close()`` and ``shutdown(WRITE)`` wait until the queue is flushed and our EOF sent. A
  failure while sending ends the flow with that error; readers, writers and closers waiting
  wake up with it. On a socket, what the kernel still holds for the flow (the peer's last
  bytes before its reset) is taken in first, as far as the receive limit has room, and is
  read before the error: closing the socket would throw it away.

On a ``trio.SocketStream`` over a real descriptor (POSIX), sends never wait: they are
``os.write`` / ``os.writev`` (at most ``IOV_MAX`` buffers) on the socket's non-blocking
descriptor, and a send the kernel takes in part continues from the exact byte where it
stopped. So any task can flush on the spot, and several do: a reader before it waits for
input (a request goes out before the wait for its answer), a writer told to wait, ``close``
and ``shutdown``. The sender then only sends what is left and waits for the socket to take
more. Which writes go out at once follows the writer's bursts, like TCP autocorking: the
first write since the flow's tasks last let others run (a ``read``, a wait for room, the
sender running) is sent at once, so a lone message or an answer costs no extra latency;
the writes that follow it, until the writer lets others run, stay queued for the sender,
which sends them together when it runs: a loop of small writes costs a few system calls,
not one each. Our EOF is ``shutdown(SHUT_WR)``. Receives are reads on the same descriptor,
waiting for it to become readable only when nothing is there (the checkpoints of trio's
``recv``, without its per-call wrapping). Elsewhere (Windows, trio's fake sockets) the
sender sends through the trio socket (``send``, ``sendmsg``) and reads use ``recv``; on any
other stream the sender calls ``send_all`` with the queued buffers joined (only when there
are several), then ``send_eof``, and reads use ``receive_some``.

A ``write`` that queues its data returns without a scheduling point (it is a cancellation
point: a cancelled scope stops it before it queues anything); it lets other tasks run only
when it had to wait for room. A real checkpoint per write would let the sender run after
every write and send each alone. Cancelling a ``write`` leaves its whole buffer queued (it
returned) or none of it (it was waiting for room). Cancelling ``shutdown(WRITE)`` only stops
the wait: the EOF stays queued and is still sent after the data.

A stream without ``send_eof`` (a ``trio.SSLStream``, say) cannot half-close: our EOF then
closes the whole stream (``aclose``, which for TLS sends ``close_notify``). If the peer's EOF
had already arrived, the flow ends cleanly; otherwise it ends with a ``TRANSPORT`` error, since
nothing more can be received. So ``close()`` ends cleanly only after the peer's EOF has been
read, and ``shutdown(WRITE)`` ends both directions.
"""

from __future__ import annotations

import math
import os as _os
import socket as _stdlib_socket
from contextlib import suppress
from typing import Any

import trio
from trio.lowlevel import Abort, RaiseCancelT, Task

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
from sansflow._flow import Buffer

from ._common import (
    IOV_MAX,
    READ_SIZE,
    RECEIVING,
    addresses,
    discard_input,
    eof_failure,
    receive_kept,
    send_queued,
    set_linger_zero,
)
from ._handshake import step_layers

__all__ = ["TrioFlow"]


# What a stream (or a trio socket, used directly) raises when the transport fails or was
# closed under us. Anything else from a stream ends the flow too (the sender must not
# crash), as a TRANSPORT error that keeps the exception as its cause.
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_SEND_OPEN = SendState.OPEN
_EOF_QUEUED = SendState.EOF_QUEUED
_CLOSED = FlowState.CLOSED

_NO_HALF_CLOSE = FlowError(
    ErrorKind.TRANSPORT,
    detail="the stream cannot half-close (no send_eof): sending EOF closed both directions",
)
_SENDER_NAME = "sansflow.adapters.trio sender"

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_reschedule = trio.lowlevel.reschedule
_current_task = trio.lowlevel.current_task
# Sync sends: a socket's descriptor written to directly, where the OS has writev (POSIX).
_HAVE_WRITEV = hasattr(_os, "writev")
_os_write = _os.write
_os_read = _os.read
_wait_readable = trio.lowlevel.wait_readable
_os_writev: Any = getattr(_os, "writev", None)


class TrioFlow(AsyncDriverFlow):
    """A flow over a trio stream. Every method is async; ``async with flow:`` closes it (aborts
    it on an exception) and ``async for data in flow`` reads it until ``Eof``.

    One task may read and another write at the same time; a second concurrent reader (or
    writer) gets ``sansflow.BusyError``. ``close``, ``shutdown`` and ``abort`` may run from any
    task, alongside a reader and a writer. ``read``, ``close``, ``shutdown`` and ``abort`` are
    trio checkpoints; ``write`` and ``writev`` are cancellation points that let other tasks
    run only when they had to wait (see the module documentation).
    """

    __slots__ = ("_corked", "_in_send", "_lot", "_parked", "_receiving",
                 "_released", "_sender", "_sender_idle", "_sender_scope", "_socket",
                 "_stream", "_sync", "_wire", "_write_waiter")
    _core: Flow  # the core this flow drives (AdapterFlow only reads its state)

    def __init__(self, stream: trio.abc.Stream, core: Flow) -> None:
        # A SocketStream's socket is used directly: exact partial sends, vectored sends.
        sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        super().__init__(core, **addresses(sock))
        # The core on the stream (ciphertext under TLS), and the TLS layers over it, innermost
        # first; the application uses the outermost layer's plaintext core (``_core``).
        self._wire = core
        self._stream = stream
        self._socket = sock if sock is not None and hasattr(sock, "sendmsg") else None
        # On POSIX, a socket with a real descriptor is sent to without waiting (os.write /
        # os.writev on its non-blocking descriptor): any task may then flush it on the spot.
        self._sync = self._socket is not None and _HAVE_WRITEV and _has_fileno(self._socket)
        # A write went out at once since the flow's tasks last let others run: the writes
        # that follow it are left to the sender, which sends them together (sync sends only).
        self._corked = False
        # Closers, shutdowners, a reader waiting for close() to stop receiving: they park
        # here and look again whenever the flow changes.
        self._lot = trio.lowlevel.ParkingLot()
        self._parked = 0  # tasks in _lot (or just woken from it): checked on hot paths
        self._receiving = False  # a task is inside a receive from the stream
        self._released = False  # the stream is closed (or being closed)
        self._sender: Task | None = None  # the sending task, while it runs
        self._sender_idle = False  # it sleeps until _wake_sender reschedules it
        self._sender_scope: trio.CancelScope | None = None
        # The sender is inside a send or EOF call on the stream, or (sync sends) waits for
        # the socket to take more.
        self._in_send = False
        self._write_waiter: Task | None = None  # a writer waiting for room in the queue

    @property
    def stream(self) -> trio.abc.Stream:
        """The trio stream underneath (let the flow drive it)."""
        return self._stream


    # -- application side ----------------------------------------------------------------

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        """Up to ``max_bytes`` bytes (all that is buffered if ``None``) as ``Ok(data)``, or
        ``Eof()``, or ``Error(error)``; waits while nothing is buffered and the peer may send.

        Before it waits, what this flow has queued is sent (a request goes out before the
        wait for its answer, not one scheduling round later). Cancelling it loses nothing:
        data received stays buffered for the next read.
        """
        self._claim_read()
        self._corked = False  # every read lets other tasks run
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
                    self._step()
                    if self._sync and self._wire.queued and not self._in_send:
                        self._send_now()
                    if self._layers and (result := core.read(max_bytes)) is not WOULD_WAIT:
                        # Decrypted from what the flow below held (records, a close_notify)
                        # while the receive limit kept the layer from taking it.
                        await _cancel_shielded_checkpoint()
                        return result
                    await self._receive()
                result = core.read(max_bytes)
                if result is not WOULD_WAIT:
                    return result
        finally:
            self._reading = False
            if self._parked:  # a close() waiting for this reader to go before it receives
                self._lot.unpark_all()

    async def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        """Queue ``data``: ``Ok(None)`` once it is in the send queue (not yet on the wire).

        Waits only while the queue is above its low-water mark and ``data`` would push it past
        the high-water mark. ``Eof()`` after ``close()``/``shutdown(WRITE)``; the flow's
        ``Error`` after a failure. Cancelling it leaves the whole buffer queued or none of it.
        A writable buffer is copied; a read-only one is queued as it is.
        """
        if self._writing:
            self._claim_write()  # raises BusyError
        await _checkpoint_if_cancelled()
        core = self._core
        result = core.write(data)
        if result is WOULD_WAIT:
            result = await self._write_slow(lambda: core.write(data))
        elif type(result) is not Ok:
            await _cancel_shielded_checkpoint()  # a loop on Eof or Error still lets others run
            return result
        if type(result) is Ok:
            self._queued_more(False)
        return result

    async def abort(self) -> None:
        """Drop the queue, reset the connection and end the flow with ``ErrorKind.ABORTED``.

        On a socket, an RST (``SO_LINGER`` 0, then close); on other streams,
        ``trio.aclose_forcefully``. Waiting readers and writers wake with the error, and the
        sender stops. Nothing happens to a flow that is already CLOSED. A trio checkpoint:
        the flow is aborted even if this is cancelled.
        """
        await self._abort(None)
        await trio.lowlevel.checkpoint()

    # -- TLS -------------------------------------------------------------------------------

    def _step(self) -> None:
        """Let the TLS layers move what they can (decrypt what arrived, encrypt what the
        application queued), and wake whoever that concerns."""
        if not self._layers:
            return
        step_layers(self._layers)
        if self._write_waiter is not None and self._core.write_ready:
            self._wake_writer()
        if self._parked:
            self._lot.unpark_all()

    async def _handshake(self, timeout: float | None) -> bool:
        """Send and receive until the outermost layer's handshake is done or the flow ended;
        ``False`` if ``timeout`` seconds passed first."""
        layer = self._layers[-1]
        app = self._core
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                self._kick()
                if layer.handshake_done or app.state is _CLOSED:
                    return True
                if (self._receiving or self._reading or self._released
                        or self._wire.receive_state not in RECEIVING):
                    await self._park()
                else:
                    await self._receive()
        return False

    # -- the primitives of AsyncDriverFlow (close, shutdown, writev) -------------------------

    def _push(self) -> None:
        self._wake()  # a writer waiting for room now gets Eof
        self._kick()  # often the EOF goes out here, and the peer's had arrived already

    async def _wait_room(self) -> None:
        self._kick()  # may make room right here
        if self._core.write_ready:
            # Room without waiting: still a scheduling point, as the wait would have been.
            await _cancel_shielded_checkpoint()
        else:
            await self._wait_for_room()
        self._corked = False  # the writer let others run: its burst is over

    async def _wait_flushed(self) -> None:
        self._kick()
        if self._core.send_state is _EOF_QUEUED:
            await self._park()

    async def _wait_closed(self, timeout: float | None) -> bool:
        if timeout is None:
            await self._closing()
        else:
            with trio.move_on_after(timeout):
                await self._closing()
        wire = self._wire
        if wire.state is not _CLOSED:
            return False
        await self._release(graceful=wire.error is None)
        await trio.lowlevel.checkpoint()
        return True

    async def _wait_flushed_wire(self) -> None:
        """Wait once while the wire's EOF is queued (after a failed handshake's alert)."""
        self._kick()
        if self._wire.send_state is _EOF_QUEUED:
            await self._park()

    async def _cancel_point(self) -> None:
        await _checkpoint_if_cancelled()

    async def _settle(self) -> None:
        wire = self._wire
        if wire.state is _CLOSED:
            await self._release(graceful=wire.error is None)
        await _cancel_shielded_checkpoint()

    # -- sending ---------------------------------------------------------------------------

    def _queued_more(self, idle: bool) -> None:
        """A write queued data. The first since the flow's tasks last let others run is sent
        at once where that cannot block (a request, an answer, a lone message: no added
        latency); the rest are left to the sender, which sends whatever is queued by the time
        it runs in one call (a burst of small writes: few system calls)."""
        core = self._core
        if not core.queued:
            return  # an empty write
        if self._layers:
            self._kick()  # records made of it go out as the plain flow's data would
            return
        if self._sync and not self._corked and not self._in_send:
            self._corked = True
            if self._send_now():
                return
        if self._sender_idle:
            self._wake_sender()
        elif self._sender is None:
            self._start_sender()

    def _kick(self) -> None:
        """Whatever is due (queued data, then EOF) is sent now where that cannot block, and
        otherwise by the sender, woken or started for it."""
        self._step()
        core = self._wire
        if self._sync and not self._in_send and core.queued:
            self._send_now()
        if core.eof_due and self._socket is not None:
            self._socket_eof()  # shutdown(SHUT_WR) never blocks
        if core.queued or core.eof_due or self._send_waits_for_peer():
            if self._sender_idle:
                self._wake_sender()
            elif self._sender is None:
                self._start_sender()

    def _send_waits_for_peer(self) -> bool:
        """A TLS layer holds queued plaintext until the peer's handshake messages are
        received, and the flow can receive them."""
        wire = self._wire
        return (bool(self._layers) and not self._released and wire.receive_state in RECEIVING
                and not wire.reading_paused
                and any(layer.send_waits_for_peer for layer in self._layers))

    def _send_now(self) -> bool:
        """Send what the socket takes without waiting (sync sends only); ``True`` once
        nothing is left queued. A transport error ends the flow here."""
        core = self._wire
        while not self._released:
            failure = send_queued(core, self._send_without_waiting)
            if failure is not None:
                self._fail_now(failure)
                return True
            if core.queued or not self._layers:
                break
            self._step()  # the socket took every record: encrypt more while it takes them
            if not core.queued:
                break
        if self._write_waiter is not None and self._core.write_ready:
            self._wake_writer()
        if core.queued:
            return False
        if self._parked:
            self._lot.unpark_all()  # a FlowStream waiting for the queue to drain
        return True

    def _send_without_waiting(self, buffers: list[Buffer]) -> int:
        # fileno() is -1 once the socket is closed: never write to a reused number.
        fd = self._socket.fileno()  # type: ignore[union-attr]  # sync sends have a socket
        return _os_write(fd, buffers[0]) if len(buffers) == 1 else _os_writev(fd, buffers)

    def _start_sender(self) -> None:
        if not self._released:
            self._sender = trio.lowlevel.spawn_system_task(self._sender_main, name=_SENDER_NAME)

    def _wake_sender(self) -> None:
        self._sender_idle = False
        task = self._sender
        assert task is not None  # idle means running and asleep
        _reschedule(task)

    def _sender_woken(self, raise_cancel: RaiseCancelT) -> Abort:
        """Cancelled while asleep: the sender is no longer idle (it is ending)."""
        self._sender_idle = False
        return Abort.SUCCEEDED

    async def _sender_main(self) -> None:
        """The sender's system task. It never raises anything but ``trio.Cancelled`` for the
        run's own shutdown (an exception from a system task would crash the whole run)."""
        core = self._wire
        try:
            with trio.CancelScope() as scope:  # cancelled by abort: the sender just ends
                self._sender_scope = scope
                await self._send_until_done()
        except trio.Cancelled:
            # The run's main task ended with this flow still sending: never leave the
            # connection open. Then let the system nursery see its own cancellation.
            await self._abort(None)
            raise
        except BaseException as exc:  # a system task must not crash the run
            if core.state is not _CLOSED:
                core.receive_error(FlowError(
                    ErrorKind.TRANSPORT, exc,
                    f"sending failed with {type(exc).__name__}: {exc}",
                ))
            self._step()
            with trio.CancelScope(shield=True):
                await self._release(graceful=False)
        finally:
            self._sender = None
            self._sender_scope = None
            self._sender_idle = False
            self._in_send = False
            self._wake()

    async def _send_until_done(self) -> None:
        """Send what is queued, then our EOF; sleep while there is nothing to send; return
        once the send direction is finished."""
        core = self._wire
        while True:
            if self._sync and core.queued:
                if self._send_now():
                    continue
                self._in_send = True
                try:
                    await self._socket.wait_writable()  # type: ignore[union-attr]
                except _TRANSPORT_ERRORS as exc:
                    await self._failed(exc)
                    return
                finally:
                    self._in_send = False
            elif core.queued:
                self._in_send = True
                try:
                    sent = await self._send_some()
                except _TRANSPORT_ERRORS as exc:
                    await self._failed(exc)
                    return
                finally:
                    self._in_send = False
                core.sent(sent)  # ignored if the flow failed meanwhile
                self._step()  # room on the wire: more records
                if not core.queued and self._parked:
                    self._lot.unpark_all()  # a FlowStream waiting for the queue to drain
                if self._write_waiter is not None and self._core.write_ready:
                    self._wake_writer()
            elif core.eof_due:
                if self._socket is not None:
                    self._socket_eof()
                else:
                    await self._stream_eof()
                return
            elif self._send_waits_for_peer():
                # A renegotiation holds what the application wrote until the peer's answer
                # is received: receive it, unless a reader (or close) is receiving already.
                if self._receiving:
                    await self._park()
                else:
                    await self._receive()
            elif core.send_state is _SEND_OPEN and not self._released:
                self._corked = False  # the writer's burst is over: it let us run
                self._sender_idle = True
                await _wait_task_rescheduled(self._sender_woken)
            else:
                return

    async def _send_some(self) -> int:
        """One send of what is queued, waiting as long as it takes; returns the bytes sent."""
        core = self._wire
        sock = self._socket
        if sock is not None:
            buffers = core.buffers_to_send(IOV_MAX)
            if len(buffers) == 1:
                return await sock.send(buffers[0])
            return await sock.sendmsg(buffers)
        buffers = core.buffers_to_send()
        data = buffers[0] if len(buffers) == 1 else b"".join(buffers)
        await self._stream.send_all(data)
        return len(data)

    def _socket_eof(self) -> None:
        """Our EOF on a socket: ``shutdown(SHUT_WR)``, which never blocks."""
        core = self._wire
        sock = self._socket
        assert sock is not None
        if self._released:
            return
        try:
            sock.shutdown(_stdlib_socket.SHUT_WR)
        except OSError as exc:
            self._fail_now(eof_failure(sock, exc))
            return
        core.eof_sent()
        if core.state is _CLOSED:
            self._close_socket()
        self._wake()

    async def _stream_eof(self) -> None:
        """Our EOF on a stream: ``send_eof``, or closing it all when it cannot half-close."""
        core = self._wire
        send_eof = getattr(self._stream, "send_eof", None)
        if send_eof is None:
            core.eof_sent()
            if core.state is not _CLOSED:
                core.receive_error(_NO_HALF_CLOSE)
            self._wake()
            await self._release(graceful=True)
            return
        self._in_send = True
        try:
            await send_eof()
        except _TRANSPORT_ERRORS as exc:
            await self._failed(exc)
            return
        finally:
            self._in_send = False
        if core.send_state is _EOF_QUEUED:
            core.eof_sent()
        self._wake()
        if core.state is _CLOSED:
            await self._release(graceful=core.error is None)

    async def _wait_for_room(self) -> None:
        """Sleep until the queue drains to low water (or the flow changes)."""
        self._write_waiter = _current_task()
        await _wait_task_rescheduled(self._writer_woken)

    def _writer_woken(self, raise_cancel: RaiseCancelT) -> Abort:
        self._write_waiter = None
        return Abort.SUCCEEDED

    def _wake_writer(self) -> None:
        task = self._write_waiter
        if task is not None:
            self._write_waiter = None
            _reschedule(task)

    # -- receiving -----------------------------------------------------------------------

    async def _receive(self) -> None:
        """One receive into the core; the caller checked that no other task receives.
        Never takes more than the receive limit has room for.

        What a receive took is in the core before it lets other tasks run: a send failing
        meanwhile takes in what the kernel still holds (``_fail_now``), which must come after.
        """
        core = self._wire
        self._receiving = True
        try:
            size = min(READ_SIZE, core.receive_limit - core.buffered)
            sock = self._socket
            data: bytes | bytearray
            at_once = False  # read without waiting: the checkpoint comes once it is fed in
            try:
                if self._sync:
                    assert sock is not None
                    await _checkpoint_if_cancelled()  # close()'s receive loop must see its deadline
                    try:
                        # fileno() is -1 once the socket is closed: never read a reused number.
                        data = _os_read(sock.fileno(), size)
                        at_once = True
                    except BlockingIOError:
                        data = await self._receive_when_readable(size)
                elif sock is not None:
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
            if self._layers:
                self._kick()  # decrypt it; send what the TLS session answers
            if core.state is _CLOSED:
                await self._release(graceful=core.error is None)
            if at_once:
                await _cancel_shielded_checkpoint()  # a checkpoint either way, like trio's recv
        finally:
            self._receiving = False
            if self._parked:
                self._lot.unpark_all()

    async def _receive_when_readable(self, size: int) -> bytes:
        """What the socket has once it is readable (sync sends' twin): a read on its
        non-blocking descriptor after each wait, the checkpoints of trio's ``recv`` without
        its per-call wrapping (which costs more than the read)."""
        sock = self._socket
        assert sock is not None
        while True:
            await _wait_readable(sock)
            try:
                return _os_read(sock.fileno(), size)
            except BlockingIOError:
                pass

    async def _closing(self) -> None:
        """close()'s wait: flush and send EOF (or let the sender do it) while receiving until
        the peer's EOF (unless a reader receives, or the application must read first)."""
        core = self._wire
        while core.state is not _CLOSED:
            if _EOF_QUEUED in (core.send_state, self._core.send_state):
                self._kick()
                if core.state is _CLOSED:
                    return
            if (core.receive_state in RECEIVING and not self._reading
                    and not self._receiving and not core.reading_paused
                    and not self._released):
                await self._receive()
            else:
                await self._park()

    async def _wait_send_might_not_block(self) -> None:
        """For ``FlowStream.wait_send_all_might_not_block``: wait until the queue is empty
        and the transport would take a send. Returns at once if sending would fail rather
        than block."""
        await _checkpoint_if_cancelled()
        core = self._core
        while (core.queued or self._in_send) and core.send_state is _SEND_OPEN:
            self._kick()
            if not (core.queued or self._in_send):
                break
            await self._park()
        if self._released or core.send_state is not _SEND_OPEN:
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
        """Wait until another task lets go of the stream or the flow's state changes."""
        self._parked += 1
        try:
            await self._lot.park()
        finally:
            self._parked -= 1

    def _wake(self) -> None:
        """The flow changed: every waiter looks again, and the sender sends what is now due
        (our EOF) or ends."""
        if self._parked:
            self._lot.unpark_all()
        if self._write_waiter is not None:
            self._wake_writer()
        if self._sender_idle:
            self._wake_sender()

    # -- ending --------------------------------------------------------------------------

    def _fail_now(self, exc: OSError) -> None:
        """A send on the socket raised ``exc``: fail the core with it, close the socket.

        Where the flow reads the descriptor itself (sync sends), the core first takes in what
        the kernel still holds for it (the peer's last bytes, readable after a reset; see
        ``receive_kept``), which closing the socket would lose. No task holds input it has
        read but not fed in: a receive feeds the core before it lets others run. Through the
        trio socket (Windows) that input cannot be taken without waiting, and is lost.
        """
        core = self._wire
        if core.state is not _CLOSED:
            if self._sync:
                sock = self._socket
                assert sock is not None
                receive_kept(lambda size: _os_read(sock.fileno(), size), core)
            core.receive_error(exc)
        self._stop_sender()
        self._step()
        self._wake()
        self._close_socket()

    async def _failed(self, exc: BaseException) -> None:
        """The transport raised ``exc``: fail the core with its cause, release the stream."""
        core = self._wire
        if core.state is not _CLOSED:  # else: our own abort closed the stream
            cause = exc.__cause__
            core.receive_error(
                cause if isinstance(exc, trio.BrokenResourceError) and cause is not None else exc
            )
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
        core = self._wire
        core.abort(error)
        self._stop_sender()
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
        set_linger_zero(sock)
        self._close_socket()

    def _close_socket(self) -> None:
        if not self._released:
            self._released = True
            assert self._socket is not None
            self._socket.close()  # wakes tasks waiting on it with ClosedResourceError

    async def _release(self, *, graceful: bool) -> None:
        """Close the stream once. ``graceful``: a clean end (FIN, TLS close_notify)."""
        if self._released:
            return
        if self._socket is not None:
            self._close_socket()
            return
        self._released = True
        if graceful:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._stream.aclose()
        else:
            await trio.aclose_forcefully(self._stream)

    async def _detach(self) -> None:
        """Release the stream for ``FlowStream.aclose``, without waiting for the peer.

        First lets what is queued be sent (under TLS, with our close_notify after it, so that
        the peer reads a clean end); then closes gracefully. If that wait is cancelled, or the
        flow fails, the connection is reset instead, so that the peer cannot mistake the end
        for a clean one.
        """
        core, wire = self._core, self._wire
        if self._layers and core.send_state is _SEND_OPEN:
            core.shutdown(Shutdown.WRITE)

        def sending() -> bool:
            return bool(core.queued or wire.queued or self._in_send
                        or (self._layers and core.send_state is _EOF_QUEUED))

        try:
            while sending() and not self._released:
                self._kick()
                if not sending():
                    break
                await self._park()
        except BaseException:
            await self._abort(None)
            raise
        if core.queued or wire.queued:
            await self._abort(None)
            return
        wire.abort()  # (the TLS layers' close_notify is out: this drops only what follows)
        core.abort()
        self._stop_sender()
        self._wake()
        if self._sync:
            sock = self._socket
            assert sock is not None
            discard_input(lambda size: _os_read(sock.fileno(), size))
        await self._release(graceful=True)


def _has_fileno(sock: trio.socket.SocketType) -> bool:
    """Whether ``sock`` is backed by a real, open descriptor."""
    return not _is_fake(sock) and sock.fileno() >= 0


def _is_fake(sock: trio.socket.SocketType) -> bool:
    """Whether ``sock`` is one of ``trio.testing``'s fake sockets, which have no descriptor."""
    try:
        sock.fileno()
    except NotImplementedError:
        return True
    return False
