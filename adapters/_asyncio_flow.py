"""``AsyncioFlow``: a flow on an asyncio transport (asyncio's own loops and uvloop).

The adapter is one protocol object, ``_Driver`` (``_BufferedDriver`` on asyncio's own
loops), sitting on an asyncio transport. It runs the sans-IO loop: feed what arrives into the
core, hand what the core queued to the transport, and wake whoever waits. It talks to the
transport directly (no ``StreamReader`` / ``StreamWriter``), so a flow costs one protocol,
one transport and the core.

Where the bytes sit:

- Sending: the first write of a burst that finds nothing queued and the transport taking
  data goes straight to ``transport.write`` (a request, then a wait for its reply, costs no
  extra loop iteration). The rest of the burst is appended to the core's queue behind one
  flush scheduled for the next loop iteration, which hands everything queued to
  ``transport.writelines`` in one call. A task about to wait for a read flushes first.
  What the transport keeps (what the socket did not take at once) is
  acknowledged to the core only once the transport has sent it, so the core's queue counts
  every byte still in the process, and its water marks hold writers back against all of it:
  the flow never holds more than the contract's bound, the high-water mark plus one write.
  The transport pauses us above the low-water mark; new data then waits in the core.
- Closing: our EOF is due once the transport has sent every byte; then ``write_eof`` shuts
  the socket down and the core counts the EOF as sent, so ``close`` ends cleanly only when
  every byte left the process. When the peer's EOF came first, the transport's ``close``
  sends our FIN instead.
- Receiving: the core keeps each read as an exact-size ``bytes``, without copying it again.
  On uvloop the protocol is a plain ``Protocol``: uvloop reads into its own buffer and hands
  out exact-size ``bytes``, one callback per read. On asyncio's own loops it is a
  ``BufferedProtocol`` reading into a 64 KiB buffer lent from a small shared pool, because
  their plain-``Protocol`` path reads with ``recv(256 KiB)``, which costs three extra system
  calls (``mmap``, ``mremap``, ``munmap``) per small read in a process that has not yet
  raised glibc's mmap threshold. When the core's receive buffer reaches its limit, reading
  from the transport pauses until the application reads; it may overshoot by one read.
  A read that waits is handed what arrives with its wake-up (when it fits the read's
  ``max_bytes``), past the core, which would only take it in and give it back; a read
  cancelled at that moment puts it back in front of the core's buffer (``Flow.unread``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from functools import partial
from typing import Protocol, cast

from sansflow import (
    WOULD_WAIT,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    Ok,
    ReceiveState,
    SendState,
    Shutdown,
)
from sansflow._adapter import AsyncDriverFlow
from sansflow._flow import Buffer
from sansflow._results import ReadResult, WriteResult
from sansflow._tls import TlsLayer

from ._common import (
    READ_SIZE,
    RECEIVING,
    eof_failure,
    receive_kept,
    set_linger_zero,
)
from ._handshake import held_by_reader, held_by_wire, step_layers

__all__ = ["AsyncioFlow"]

_OK: Ok[None] = Ok(None)

# Receive buffers shared by every flow of a _BufferedDriver in the process. The transport
# holds one only from get_buffer() to buffer_updated(), and the core copies the bytes out, so
# a handful serve any number of flows (the selector loop holds one at a time; the proactor one
# per pending read) and an idle flow holds none. list.pop and list.append are atomic.
_FREE_BUFFERS: list[memoryview] = []
_MAX_FREE_BUFFERS = 16
# Module constants: an enum attribute lookup costs as much as a hot path's other work.
_CLOSED = FlowState.CLOSED
_EOF_QUEUED = SendState.EOF_QUEUED
_SEND_OPEN = SendState.OPEN
_EOF_RECEIVED = ReceiveState.EOF_RECEIVED


class _Server(Protocol):
    """What a driver tells the server that accepted its connection (``asyncio.Server``)."""

    def _connection_made(self, driver: _Driver) -> None: ...
    def _connection_lost(self, driver: _Driver) -> None: ...


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class _Driver(asyncio.Protocol):
    """The asyncio protocol that moves bytes between a transport and a core ``Flow``.

    Every transport event and every application call that changes the core ends in
    ``_update``: pull out (data, then EOF), follow the receive limit, wake, release.

    Sending takes one of two roads. A write that finds nothing queued, the transport
    writable and no earlier write of the same burst gone ahead of it goes straight to
    ``transport.write`` (``_direct``; under TLS, through the layers into records sent at once):
    a request followed by a wait for its reply costs no loop iteration and no scheduled call.
    Any other write stays queued in the core behind one
    scheduled flush (``_flush_pending``), which hands everything queued to the transport in
    one call. A burst ends when something of this flow runs on the loop (input arrives, the
    flush runs, the transport resumes writing, or a task of this flow is about to wait): only
    then is ``_direct`` armed again, so a writer that never yields sends its first write at
    once and the rest coalesced.
    """

    __slots__ = (
        "_app",
        "_core",
        "_direct",
        "_eof_written",
        "_flush_pending",
        "_flushed_waiters",
        "_handed",
        "_handshake_waiters",
        "_in_flush",
        "_layers",
        "_loop",
        "_lost",
        "_lost_waiters",
        "_read_max",
        "_read_paused",
        "_read_waiter",
        "_released",
        "_server",
        "_transport",
        "_writable",
        "_write_paused",
        "_write_waiter",
    )

    def __init__(self, core: Flow, loop: asyncio.AbstractEventLoop,
                 server: _Server | None = None) -> None:
        self._core = core  # the core on the transport: ciphertext under TLS
        # The TLS layers over it, innermost first (none for a plain flow), and the core the
        # application uses: the outermost layer's plaintext flow, or the core itself.
        self._layers: list[TlsLayer] = []
        self._app = core
        self._handshake_waiters: list[asyncio.Future[bool]] | None = None
        self._loop = loop
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._read_waiter: asyncio.Future[bytes | None] | None = None
        self._read_max = 0  # the most the waiting reader takes with its wake-up
        self._write_waiter: asyncio.Future[None] | None = None
        # Each waiting shutdown(WRITE) / close() has its own future, so that a cancelled
        # caller cancels only its own wait.
        self._flushed_waiters: list[asyncio.Future[None]] | None = None
        self._lost_waiters: list[asyncio.Future[bool]] | None = None
        self._flush_pending = False
        # Bytes at the head of the core's queue that the transport holds: handed over, not yet
        # acknowledged with core.sent() (see _count_sent).
        self._handed = 0
        self._writable = False  # connected, not paused, EOF not written, not released
        self._direct = False  # _writable, and no write went straight through in this burst
        self._eof_written = False  # write_eof() called
        self._in_flush = False
        self._write_paused = False
        self._read_paused = False
        self._released = False  # we let go of the transport (or it went away)
        self._lost = False  # connection_lost ran: the transport is gone; close() waits for it

    # -- transport events ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        # Paused while the transport holds more than low water, resumed once it is back at
        # low water: the core counts those bytes as queued, so a writer waiting for the queue
        # to drain to low water is woken then (the flush that follows counts them sent).
        low_water = self._core.low_water
        transport.set_write_buffer_limits(high=low_water, low=low_water)
        self._writable = self._direct = not self._write_paused
        if self._layers:
            self._update()  # a client's hello goes out
        if self._server is not None:
            self._server._connection_made(self)

    def data_received(self, data: bytes) -> None:
        self._direct = self._writable  # the loop has control: a burst of writes is over
        waiter = self._read_waiter
        if waiter is not None and len(data) <= self._read_max and not waiter.done():
            # A reader waits, so the core holds nothing: the data goes to the reader with its
            # wake-up, past the core, which would only take it in and give it back.
            self._read_waiter = None
            waiter.set_result(data)
            return
        core = self._core
        core.receive_data(data)  # bytes: kept as they are, no copy
        if self._layers:
            self._update()  # decrypted (or answered), readers of the plaintext woken
        if core.reading_paused and not self._read_paused:
            self._pause_reading()
        # Data arrived, so a read has a result now: no need to ask the core.
        waiter = self._read_waiter
        if waiter is not None:
            self._read_waiter = None
            if not waiter.done():  # cancelled, its task not yet run
                waiter.set_result(None)

    def eof_received(self) -> bool:
        core = self._core
        if core.receive_state in RECEIVING:
            core.receive_eof()
        self._update()
        return True  # keep the transport open: our own direction may still be sending

    def connection_lost(self, exc: BaseException | None) -> None:
        transport, self._transport = self._transport, None
        self._released = self._lost = True
        self._writable = self._direct = False
        core = self._core
        if isinstance(exc, OSError) and transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:  # uvloop reports a failed write_eof() here
                exc = eof_failure(sock, exc)
        if exc is not None:
            core.receive_error(exc)
        elif core.state is not _CLOSED:
            # Closed under us without an error: whatever the peer sent has all arrived, but
            # nothing more can be sent, so a writer must not wait for a transport that is gone.
            if core.receive_state in RECEIVING:
                core.receive_eof()
            core.receive_error(FlowError(ErrorKind.TRANSPORT, detail="the transport was closed"))
        if self._layers:
            step_layers(self._layers)
        self._wake()
        waiters = self._lost_waiters
        if waiters is not None:
            self._lost_waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)
        if self._server is not None:
            self._server._connection_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._writable = self._direct = False

    def resume_writing(self) -> None:
        self._write_paused = False
        self._writable = self._direct = not (self._eof_written or self._released)
        # Act on the next loop iteration, not in here: asyncio's selector transport calls us
        # from inside its write handler, which goes on once we return (shutting down the
        # socket for a pending write_eof(), or ending its close()). A transport closed from
        # in here (our EOF counted as sent, the peer's already in) gets connection_lost
        # scheduled by close() and then run once more by that handler.
        self._flush_soon()

    # -- the loop: pull out, follow the receive limit, wake, release ---------------------

    def _flush(self) -> None:
        self._flush_pending = False
        self._direct = self._writable
        self._update()

    def _update(self) -> None:
        core = self._core
        layers = self._layers
        if not self._released:
            while True:
                if layers:
                    step_layers(layers)  # plaintext in and out, records to send
                if not (core.queued or core.eof_due):
                    break
                held = layers and held_by_wire(core)
                before = core.queued
                self._pull_out()
                if not (held and core.queued < before):
                    break
            if self._read_paused and not core.reading_paused:
                self._resume_reading()
            if core.state is _CLOSED:
                self._release()
        self._wake()

    def _pull_out(self) -> None:
        """Count what the transport sent, hand it everything else queued in one call, then
        our EOF once it is due."""
        core = self._core
        transport = self._transport
        if self._in_flush or transport is None or transport.is_closing():
            return
        self._in_flush = True
        try:
            self._count_sent(transport)
            # A loop, because a transport may pause and resume us inside write().
            while core.queued > self._handed and not self._write_paused:
                buffers = _after(core.buffers_to_send(), self._handed)
                if len(buffers) == 1:
                    transport.write(buffers[0])
                else:
                    transport.writelines(buffers)
                self._handed = core.queued
                self._count_sent(transport)
                if self._handed > core.low_water and not self._write_paused:
                    # CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 forget to pause the protocol
                    # in writelines() (gh-127655); setting the limits again makes the
                    # transport check, through its public API.
                    transport.set_write_buffer_limits(high=core.low_water, low=core.low_water)
            if core.eof_due:
                self._send_eof(transport)
            elif self._handed and core.send_state is _EOF_QUEUED:
                # Our EOF waits for the transport to send everything: with both limits at
                # zero, it pauses us now and resumes us exactly when its buffer is empty.
                transport.set_write_buffer_limits(high=0, low=0)
        finally:
            self._in_flush = False

    def _count_sent(self, transport: asyncio.Transport) -> None:
        """Acknowledge to the core what the transport has sent of what we handed it: it keeps
        the bytes the socket did not take, the last ones handed; the rest left the process."""
        held = transport.get_write_buffer_size()
        if held < self._handed:
            self._core.sent(self._handed - held)
            self._handed = held

    def _write_through(self, data: bytes) -> None:
        """Hand ``data`` to the transport past the core's empty queue (which would only take
        it in and give it back). Whatever of it the socket did not take at once, the core
        counts as queued, as handed over already."""
        transport = self._transport
        assert transport is not None  # only while _direct, so connected
        transport.write(data)
        held = transport.get_write_buffer_size()
        if held:
            self._core.write(memoryview(data)[len(data) - held:])  # read-only: not copied
            self._handed = held

    def _flush_soon(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _send_eof(self, transport: asyncio.Transport) -> None:
        """Our EOF, due once the transport has sent every byte (the core counts them queued
        until then): for TCP, ``shutdown(SHUT_WR)``. So data stuck in the transport cannot
        end in a clean-looking CLOSED."""
        core = self._core
        self._eof_written = True
        self._writable = self._direct = False
        if core.receive_state is not _EOF_RECEIVED:
            try:
                transport.write_eof()
            except OSError as exc:
                # The transport has not failed (it reads on): the peer's last bytes, then why.
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    exc = eof_failure(sock, exc)
                    receive_kept(partial(os.read, sock.fileno()), core)
                core.receive_error(exc)
                return
        # else: the peer's EOF came first, so the flow is CLOSED now and the transport
        # released at once: its close() sends the FIN (one system call instead of two).
        core.eof_sent()

    def _pause_reading(self) -> None:
        transport = self._transport
        if transport is not None:
            self._read_paused = True
            transport.pause_reading()

    def _resume_reading(self) -> None:
        self._read_paused = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _wake(self) -> None:
        """Wake each waiter whose condition now holds; a waiter is woken once, not per chunk."""
        core = self._app
        reader = self._read_waiter
        if reader is not None and core.read_ready:
            self._read_waiter = None
            if not reader.done():
                reader.set_result(None)
        waiter = self._write_waiter
        if waiter is not None and core.write_ready:
            self._write_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        waiters = self._flushed_waiters
        if waiters is not None and core.send_state is not _EOF_QUEUED:
            self._flushed_waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        handshakes = self._handshake_waiters
        if handshakes is not None and (self._layers[-1].handshake_done or core.state is _CLOSED):
            self._handshake_waiters = None
            for handshake in handshakes:
                if not handshake.done():
                    handshake.set_result(True)

    # -- TLS -------------------------------------------------------------------------------

    def _take_back(self, waiter: asyncio.Future[bytes | None]) -> None:
        """A waiting reader was interrupted (cancelled): input handed to it with its wake-up
        goes back into the core, in front of whatever arrived since, so that none is lost."""
        if waiter.done() and not waiter.cancelled() and (data := waiter.result()) is not None:
            core = self._core
            core.unread(data)
            if core.reading_paused and not self._read_paused:
                self._pause_reading()

    def _add_layer(self, layer: TlsLayer) -> None:
        """Carry ``layer`` over the core the application used so far; the application uses
        its plaintext core from now on."""
        self._layers.append(layer)
        self._app = layer.outer

    async def _wait_handshake(self, timeout: float | None) -> bool:
        """Wait until the outermost layer's handshake is done or the flow ended; ``False``
        if ``timeout`` passed first."""
        if self._layers[-1].handshake_done or self._app.state is _CLOSED:
            return True
        if self._handshake_waiters is None:
            self._handshake_waiters = []
        return await self._wait_listed(self._handshake_waiters, timeout)

    def _release(self) -> None:
        """Let go of the transport once the core is CLOSED: a FIN after a clean end (the
        transport flushes what it holds first), an RST after a failure or an abort."""
        transport = self._transport
        if self._released or transport is None:
            return
        self._released = True
        self._writable = self._direct = False
        if self._core.error is None:
            transport.close()
        else:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                set_linger_zero(sock)
            transport.abort()

    def _abort_now(self, error: FlowError | None = None) -> None:
        """Abort without waiting: the core fails, the transport is reset, everyone wakes."""
        self._app.abort(error)  # the layers see it: no close_notify goes out
        self._core.abort(error)
        transport = self._transport
        if transport is not None and self._released:
            # Closed cleanly but still flushing its last bytes: an abort cuts that short too.
            transport.abort()
        self._update()

    # -- waiting ---------------------------------------------------------------------------

    async def _wait_flushed(self) -> None:
        """Wait until our EOF has left the transport (or the send direction failed)."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        waiters = self._flushed_waiters
        if waiters is None:
            waiters = self._flushed_waiters = []
        waiters.append(waiter)
        try:
            await waiter
        finally:
            # Still listed only if it was not woken (woken waiters leave with their list).
            if self._flushed_waiters is waiters:
                waiters.remove(waiter)

    async def _wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until the transport is gone; ``False`` if ``timeout`` passed first."""
        if self._lost:
            return True
        if self._lost_waiters is None:
            self._lost_waiters = []
        return await self._wait_listed(self._lost_waiters, timeout)

    async def _wait_listed(self, waiters: list[asyncio.Future[bool]], timeout: float | None
                           ) -> bool:
        """Wait on a new future in ``waiters``, which whoever wakes them sets to ``True``;
        ``False`` if ``timeout`` passed first."""
        waiter: asyncio.Future[bool] = self._loop.create_future()
        waiters.append(waiter)
        timer = None if timeout is None else self._loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in waiters:  # timed out or cancelled (a wake-up takes the whole list)
                waiters.remove(waiter)


class _BufferedDriver(_Driver, asyncio.BufferedProtocol):
    """``_Driver`` for asyncio's own loops: the transport reads into a buffer we lend it.

    A plain ``Protocol`` on asyncio's selector loop gets each read as a new ``bytes`` from
    ``recv(256 KiB)``: above glibc's mmap threshold, so a small message costs an ``mmap``,
    an ``mremap`` and a ``munmap`` per read (measured: ping-pong at a quarter of the rate, in
    a fresh process). Here the transport reads into a 64 KiB buffer lent from a small shared
    pool and the core keeps an exact-size copy. uvloop needs none of this: it reads into its
    own buffer and hands out exact-size ``bytes``, with one callback instead of two.
    """

    __slots__ = ("_lent",)

    def __init__(self, core: Flow, loop: asyncio.AbstractEventLoop,
                 server: _Server | None = None) -> None:
        super().__init__(core, loop, server)
        self._lent: memoryview | None = None  # the receive buffer the transport holds

    def get_buffer(self, sizehint: int) -> memoryview:
        buffer = self._lent
        if buffer is None:
            try:
                buffer = _FREE_BUFFERS.pop()
            except IndexError:
                buffer = memoryview(bytearray(READ_SIZE))
            self._lent = buffer
        return buffer

    def buffer_updated(self, nbytes: int) -> None:
        buffer = self._lent
        assert buffer is not None  # the transport got it from get_buffer
        data = buffer[:nbytes].tobytes()
        # The reader or the core keeps a copy: the buffer can serve the next read, of any flow.
        self._lent = None
        if len(_FREE_BUFFERS) < _MAX_FREE_BUFFERS:
            _FREE_BUFFERS.append(buffer)
        # From here on as in data_received (inlined: this runs once per read).
        self._direct = self._writable
        waiter = self._read_waiter
        if waiter is not None and nbytes <= self._read_max and not waiter.done():
            self._read_waiter = None
            waiter.set_result(data)
            return
        core = self._core
        core.receive_data(data)
        if self._layers:
            self._update()
        if core.reading_paused and not self._read_paused:
            self._pause_reading()
        waiter = self._read_waiter
        if waiter is not None:
            self._read_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool:
        buffer = self._lent
        if buffer is not None:  # lent for the read that found EOF, and unused
            self._lent = None
            if len(_FREE_BUFFERS) < _MAX_FREE_BUFFERS:
                _FREE_BUFFERS.append(buffer)
        return super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        # A lent buffer is dropped, not reused: a loop with overlapped I/O (the proactor)
        # may still be writing into it while a cancelled read completes.
        self._lent = None
        super().connection_lost(exc)


def _new_driver(core: Flow, loop: asyncio.AbstractEventLoop,
                server: _Server | None = None) -> _Driver:
    if isinstance(loop, asyncio.BaseEventLoop):  # asyncio's own loops, not uvloop
        return _BufferedDriver(core, loop, server)
    return _Driver(core, loop, server)


class AsyncioFlow(AsyncDriverFlow):
    """A sansflow flow carried by an asyncio transport (asyncio's own loop or uvloop).

    Get one from ``connect``, ``wrap`` or a ``serve`` handler. One task may read while another
    writes; a second concurrent reader (or writer) gets ``sansflow.BusyError``. Every method is
    a coroutine; none raises for an I/O failure (it shows as an ``Error`` result).
    """

    __slots__ = ("_driver",)
    _core: Flow  # the core this flow drives (AdapterFlow only reads its state)

    def __init__(self, core: Flow, driver: _Driver) -> None:
        transport = driver._transport
        assert transport is not None  # made once connected
        # The transport's own record, as addresses() would have them (None where the socket
        # has none): asyncio's transports took them once already.
        super().__init__(core, peername=transport.get_extra_info("peername"),
                         sockname=transport.get_extra_info("sockname"))
        self._driver = driver
        self._layers = driver._layers  # the same list: the driver steps them

    @property
    def transport(self) -> asyncio.Transport | None:
        """The asyncio transport underneath, until it is released (then ``None``)."""
        return self._driver._transport

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        """``Ok(data)`` with 1 to ``max_bytes`` bytes (all that is buffered if ``None``),
        waiting for data if none is buffered; then ``Eof()`` or the flow's ``Error``, sticky.

        Cancelling a waiting read loses nothing: data that arrives stays buffered, also data
        handed to the read as it was cancelled.
        """
        if self._reading:
            self._claim_read()
        core = self._core
        result = core.read(max_bytes)
        driver = self._driver
        if result is WOULD_WAIT:
            if core.queued:
                # Send what this task wrote before it sleeps (a request, then a wait for the
                # reply), not one loop iteration later.
                driver._update()
            self._reading = True
            try:
                while True:
                    # This task yields: its burst of writes is over.
                    driver._direct = driver._writable
                    waiter: asyncio.Future[bytes | None] = driver._loop.create_future()
                    driver._read_waiter = waiter
                    # Input that arrives meanwhile may come with the wake-up (not under TLS:
                    # the layers decrypt it first).
                    driver._read_max = 0 if driver._layers else max_bytes or sys.maxsize
                    try:
                        data = await waiter
                    except BaseException:
                        driver._take_back(waiter)
                        raise
                    if data is not None:
                        result = Ok(data)
                        break
                    result = core.read(max_bytes)
                    if result is not WOULD_WAIT:
                        break
            finally:
                self._reading = False
                driver._read_waiter = None
        if driver._read_paused or (driver._layers and held_by_reader(core, result)):
            driver._update()  # room to receive, or to decrypt, more
        return result

    async def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        """Queue ``data``: ``Ok(None)`` once it is in the send queue (not yet on the wire),
        ``Eof()`` after ``close``/``shutdown(WRITE)``, or the flow's ``Error``.

        Waits while the queue is above its high-water mark. Cancelling a waiting write queues
        none of ``data``. A writable buffer is copied; a read-only one is queued as it is.
        """
        if self._writing:
            self._claim_write()
        driver = self._driver
        core = self._core
        if driver._direct and not core.queued:
            # First of a burst, nothing queued ahead of it, the transport taking data:
            # straight through.
            if type(data) is bytes and core.send_state is _SEND_OPEN and not driver._layers:
                # Past the core's queue, which would only take it in and give it back.
                driver._direct = False
                driver._write_through(data)
                return _OK
            # Anything else through the queue: the core copies a writable buffer (the
            # transport may keep a reference to what it could not send at once, and the
            # caller may change the buffer once we return), or answers Eof or Error. Under
            # TLS the layers encrypt it and the records go out now, as a plain write would.
            result = core.write(data)
            if result is not WOULD_WAIT:  # (an empty queue never says wait)
                driver._direct = False
                driver._update()
                return result
        else:
            result = core.write(data)
        if result is WOULD_WAIT:
            result = await self._write_slow(lambda: core.write(data))
            if type(result) is Ok:
                # If the queue drained while we waited, this is the first write of a new
                # burst (the loop had control), handed over now.
                self._queued_more(core.queued == len(data))
            return result
        # Per write, in a burst: the flush is already pending, nothing more to do.
        if not driver._flush_pending:
            driver._flush_pending = True
            driver._loop.call_soon(driver._flush)
        return result

    # -- the transport primitives of AsyncDriverFlow ------------------------------------

    def _push(self) -> None:
        self._driver._update()

    def _queued_more(self, idle: bool) -> None:
        driver = self._driver
        if idle and driver._direct:
            # First of a burst, nothing queued ahead of it, the transport taking data.
            driver._direct = False
            driver._update()
        elif self._core.queued:
            driver._flush_soon()

    async def _wait_room(self) -> None:
        driver = self._driver
        driver._direct = driver._writable  # this task yields: its burst of writes is over
        waiter: asyncio.Future[None] = driver._loop.create_future()
        driver._write_waiter = waiter
        try:
            await waiter
        finally:
            driver._write_waiter = None

    async def _wait_flushed(self) -> None:
        await self._driver._wait_flushed()

    async def _wait_closed(self, timeout: float | None) -> bool:
        return await self._driver._wait_lost(timeout)

    async def _abort(self, error: FlowError | None) -> None:
        driver = self._driver
        driver._abort_now(error)
        await driver._wait_lost()

    async def _detach(self) -> None:
        """Release the transport without waiting for the peer's EOF (a facade's ``aclose``):
        what is queued is sent, then our EOF (under TLS, close_notify), then the transport is
        closed, which sends what it holds and a FIN. The caller resets the connection if this
        is cancelled.

        After ``shutdown`` our EOF is out of the flow's own core; under TLS that EOF is the
        close_notify, which may still wait in a layer (until the wire's queue is down to low
        water) or in the wire's queue (while the transport is paused). So the layers are
        stepped, and looked at again whenever the transport moves: with our EOF queued, every
        step of the driver wakes a waiting writer.
        """
        await self.shutdown(Shutdown.BOTH)
        driver = self._driver
        wire = driver._core
        while driver._transport is not None:
            self._push()
            pending = any(layer._outgoing.pending for layer in self._layers)
            if wire.queued <= driver._handed and not pending:
                break
            await self._wait_room()
        transport = driver._transport
        if transport is not None:
            transport.close()
        await self.close()


def _after(buffers: list[Buffer], skip: int) -> list[Buffer]:
    """``buffers`` without their first ``skip`` bytes, which the transport has already.

    Those are whole buffers: the transport keeps the tail of all that was queued when it was
    last handed data, and the core's first buffer starts where ``sent()`` stopped."""
    if not skip:
        return buffers
    index = 0
    while skip > 0:
        skip -= len(buffers[index])  # the core's buffers are bytes or 1-D byte views
        index += 1
    assert skip == 0  # whole buffers, as above
    return buffers[index:]
