"""sansflow over asyncio (and uvloop): ``connect``, ``wrap``, ``serve`` and ``AsyncioFlow``.

The adapter is one protocol object, ``_Driver``, sitting on an asyncio transport. It runs the
sans-IO loop: feed what arrives into the core, hand what the core queued to the transport,
and wake whoever waits. It talks to the transport directly (no ``StreamReader`` /
``StreamWriter``), so a flow costs one protocol, one transport and the core.

Where the bytes sit:

- Sending: ``write`` appends to the core's queue and schedules one flush per batch (the next
  loop iteration), which hands everything queued to ``transport.writelines`` in one call and
  acknowledges it all. The transport's own buffer is bounded by the flow's water marks
  (``set_write_buffer_limits``): while asyncio says "pause writing", the data stays in the
  core, so the core's high-water mark holds writers back.
- Closing: ``write_eof`` makes the transport shut down once its buffer is flushed; only then
  does the core count our EOF as sent, so ``close`` ends cleanly only when every byte left
  the process.
- Receiving: the transport reads into a 64 KiB buffer lent from a small shared pool
  (``BufferedProtocol``) and the core keeps a copy. When the core's receive buffer reaches
  its limit, reading from the transport pauses until the application reads.

Usage::

    from sansflow import Ok, Eof, Error, error_message
    from sansflow.adapters import asyncio as sf

    flow = await sf.connect("127.0.0.1", 8000)
    await flow.write(b"hello")
    match await flow.read():
        case Ok(data): ...
        case Eof(): ...
        case Error(err): print(error_message(err))
    await flow.close()
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, cast

from sansflow import (
    WOULD_WAIT,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    ReceiveState,
    SendState,
    Shutdown,
    WouldWait,
)
from sansflow._results import ReadResult, WriteResult

from ._common import READ_SIZE, AdapterFlow, set_linger_zero

__all__ = ["AsyncioFlow", "Server", "connect", "serve", "wrap"]

logger = logging.getLogger("sansflow")

Handler = Callable[["AsyncioFlow"], Awaitable[object]]

_SERVER_CLOSE_TIMEOUT = 10.0

# Receive buffers shared by every flow in the process. The transport holds one only from
# get_buffer() to buffer_updated(), and the core copies the bytes out, so a handful serve any
# number of flows (asyncio's selector loop and uvloop hold one at a time; the proactor one per
# pending read) and an idle flow holds none. list.pop and list.append are atomic.
_FREE_BUFFERS: list[memoryview] = []
_MAX_FREE_BUFFERS = 16
_RECEIVING = (ReceiveState.OPEN, ReceiveState.DISCARDING)


class _Driver(asyncio.BufferedProtocol):
    """The asyncio protocol that moves bytes between a transport and a core ``Flow``.

    Every transport event and every application call that changes the core ends in
    ``_update``: pull out (data, then EOF), follow the receive limit, wake, release.
    """

    __slots__ = (
        "_call_soon",
        "_core",
        "_eof_written",
        "_flush_pending",
        "_flushed_waiter",
        "_in_flush",
        "_lent",
        "_loop",
        "_lost",
        "_on_made",
        "_read_paused",
        "_read_waiter",
        "_released",
        "_transport",
        "_write_paused",
        "_write_waiter",
    )

    def __init__(self, core: Flow, loop: asyncio.AbstractEventLoop,
                 on_made: Callable[[], None] | None = None) -> None:
        self._core = core
        self._loop = loop
        self._call_soon = loop.call_soon
        self._on_made = on_made
        self._transport: asyncio.Transport | None = None
        self._lent: memoryview | None = None  # the receive buffer the transport holds
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._flushed_waiter: asyncio.Future[None] | None = None
        # Done once the transport is gone (connection_lost): the end that close() waits for.
        self._lost: asyncio.Future[None] = loop.create_future()
        self._flush_pending = False
        self._eof_written = False  # write_eof() called; the EOF is sent once the buffer drains
        self._in_flush = False
        self._write_paused = False
        self._read_paused = False
        self._released = False

    # -- transport events ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        core = self._core
        # Bound the transport's buffer like the core's queue: while asyncio has more than
        # high_water buffered, the data waits in the core, where writers feel it.
        transport.set_write_buffer_limits(high=core.high_water, low=core.low_water)
        if self._on_made is not None:
            self._on_made()

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
        core = self._core
        buffer = self._lent
        assert buffer is not None  # the transport got it from get_buffer
        core.receive_data(buffer[:nbytes].tobytes())
        # The core keeps a copy: the buffer can serve the next read, of any flow.
        self._lent = None
        if len(_FREE_BUFFERS) < _MAX_FREE_BUFFERS:
            _FREE_BUFFERS.append(buffer)
        if core.reading_paused and not self._read_paused:
            self._pause_reading()
        waiter = self._read_waiter
        if waiter is not None and core.read_ready:
            self._read_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool:
        buffer = self._lent
        if buffer is not None:  # lent for the read that found EOF, and unused
            self._lent = None
            if len(_FREE_BUFFERS) < _MAX_FREE_BUFFERS:
                _FREE_BUFFERS.append(buffer)
        core = self._core
        if core.receive_state in _RECEIVING:
            core.receive_eof()
        self._update()
        return True  # keep the transport open: our own direction may still be sending

    def connection_lost(self, exc: BaseException | None) -> None:
        # A lent buffer is dropped, not reused: a loop with overlapped I/O (the proactor)
        # may still be writing into it while a cancelled read completes.
        self._lent = None
        self._transport = None
        self._released = True
        core = self._core
        if exc is not None:
            core.receive_error(exc)
        elif core.state is not FlowState.CLOSED:
            # Closed under us without an error: whatever the peer sent has all arrived, but
            # nothing more can be sent, so a writer must not wait for a transport that is gone.
            if core.receive_state in _RECEIVING:
                core.receive_eof()
            core.receive_error(FlowError(ErrorKind.TRANSPORT, detail="the transport was closed"))
        self._wake()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update()

    # -- the loop: pull out, follow the receive limit, wake, release ---------------------

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self._call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self._update()

    def _update(self) -> None:
        core = self._core
        if not self._released:
            if not self._in_flush:
                self._pull_out()
            if self._read_paused and not core.reading_paused:
                self._resume_reading()
            if core.state is FlowState.CLOSED:
                self._release()
        self._wake()

    def _pull_out(self) -> None:
        """Hand everything queued to the transport in one call, then our EOF once it is due."""
        core = self._core
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._in_flush = True
        try:
            # A loop, because a transport may pause and resume us inside write().
            while core.queued and not self._write_paused:
                nbytes = core.queued
                buffers = core.buffers_to_send()
                if len(buffers) == 1:
                    transport.write(buffers[0])
                else:
                    transport.writelines(buffers)
                    if (not self._write_paused
                            and transport.get_write_buffer_size() > core.high_water):
                        # CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 forget to pause the
                        # protocol in writelines() (gh-127655); setting the limits again
                        # makes the transport check, through its public API.
                        transport.set_write_buffer_limits(high=core.high_water,
                                                          low=core.low_water)
                # asyncio's transport keeps what the socket did not take: all of it is sent.
                core.sent(nbytes)
            if core.eof_due:
                self._send_eof(transport)
        finally:
            self._in_flush = False

    def _send_eof(self, transport: asyncio.Transport) -> None:
        """Our EOF is sent once the transport has shut down (for TCP, ``shutdown(SHUT_WR)``),
        which it does after flushing its buffer: only then is the EOF ``eof_sent()``, so
        that data stuck in the transport cannot end in a clean-looking CLOSED."""
        if not self._eof_written:
            try:
                transport.write_eof()
            except OSError as exc:
                self._core.receive_error(exc)
                return
            self._eof_written = True
            if transport.get_write_buffer_size():
                # With both limits at zero the transport pauses us now and resumes us exactly
                # when its buffer is empty, which lands here again.
                transport.set_write_buffer_limits(high=0, low=0)
                return
        if not transport.get_write_buffer_size():
            self._core.eof_sent()

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
        core = self._core
        waiter = self._read_waiter
        if waiter is not None and core.read_ready:
            self._read_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        waiter = self._write_waiter
        if waiter is not None and core.write_ready:
            self._write_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        waiter = self._flushed_waiter
        if waiter is not None and core.send_state is not SendState.EOF_QUEUED:
            self._flushed_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _release(self) -> None:
        """Let go of the transport once the core is CLOSED: a FIN after a clean end (the
        transport flushes what it holds first), an RST after a failure or an abort."""
        transport = self._transport
        if self._released or transport is None:
            return
        self._released = True
        if self._core.error is None:
            transport.close()
        else:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                set_linger_zero(sock)
            transport.abort()

    def _abort_now(self, error: FlowError | None = None) -> None:
        """Abort without waiting: the core fails, the transport is reset, everyone wakes."""
        self._core.abort(error)
        transport = self._transport
        if transport is not None and self._released:
            # Closed cleanly but still flushing its last bytes: an abort cuts that short too.
            transport.abort()
        self._update()

    # -- waiting ---------------------------------------------------------------------------

    async def _wait_readable(self) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._read_waiter = waiter
        try:
            await waiter
        finally:
            self._read_waiter = None

    async def _wait_writable(self) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._write_waiter = waiter
        try:
            await waiter
        finally:
            self._write_waiter = None

    async def _wait_flushed(self) -> None:
        waiter = self._flushed_waiter
        if waiter is None:
            waiter = self._flushed_waiter = self._loop.create_future()
        # Shared by concurrent shutdown() calls: one cancelled caller must not cancel it.
        await asyncio.wait((waiter,))

    async def _wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until the transport is gone; ``False`` if ``timeout`` passed first.

        The shared future is never cancelled by a cancelled waiter, so any number of
        ``close`` calls can wait for it."""
        lost = self._lost
        if lost.done():
            return True
        done, _ = await asyncio.wait((lost,), timeout=timeout)
        return bool(done)


class AsyncioFlow(AdapterFlow):
    """A sansflow flow carried by an asyncio transport (asyncio's own loop or uvloop).

    Get one from ``connect``, ``wrap`` or a ``serve`` handler. One task may read while another
    writes; a second concurrent reader (or writer) gets ``sansflow.BusyError``. Every method is
    a coroutine; none raises for an I/O failure (it shows as an ``Error`` result).
    """

    __slots__ = ("_driver",)

    def __init__(self, core: Flow, driver: _Driver) -> None:
        super().__init__(core)
        self._driver = driver

    @property
    def transport(self) -> asyncio.Transport | None:
        """The asyncio transport underneath, until it is released (then ``None``)."""
        return self._driver._transport

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        """``Ok(data)`` with 1 to ``max_bytes`` bytes (all that is buffered if ``None``),
        waiting for data if none is buffered; then ``Eof()`` or the flow's ``Error``, sticky.

        Cancelling a waiting read loses nothing: data that arrives stays buffered.
        """
        if self._reading:
            self._claim_read()
        result = self._core.read(max_bytes)
        if result is WOULD_WAIT:
            return await self._read_slow(max_bytes)
        if self._driver._read_paused:
            self._driver._update()
        return result

    async def _read_slow(self, max_bytes: int | None) -> ReadResult:
        self._reading = True
        core = self._core
        driver = self._driver
        if driver._flush_pending:
            # Send what this task wrote before it sleeps (a request, then a wait for the
            # reply), not one loop iteration later.
            driver._update()
        try:
            while True:
                await driver._wait_readable()
                result = core.read(max_bytes)
                if result is not WOULD_WAIT:
                    break
        finally:
            self._reading = False
        if driver._read_paused:
            driver._update()
        return result

    async def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        """Queue ``data``: ``Ok(None)`` once it is in the send queue (not yet on the wire),
        ``Eof()`` after ``close``/``shutdown(WRITE)``, or the flow's ``Error``.

        Waits while the queue is above its high-water mark. Cancelling a waiting write queues
        none of ``data``. A writable buffer is copied; a read-only one is queued as it is.
        """
        if self._writing:
            self._claim_write()
        result = self._core.write(data)
        if result is WOULD_WAIT:
            core = self._core
            return await self._write_slow(lambda: core.write(data))
        driver = self._driver
        if not driver._flush_pending:
            driver._flush_pending = True
            driver._call_soon(driver._flush)
        return result

    async def writev(self, buffers: Iterable[bytes | bytearray | memoryview]) -> WriteResult:
        """Queue every buffer, in order, or none of them; sent as one vectored write where
        the transport has one. Same waiting and cancellation rules as ``write``."""
        if self._writing:
            self._claim_write()
        if not isinstance(buffers, (list, tuple, bytes, bytearray, memoryview, str)):
            # A one-shot iterator must survive a retry after waiting.
            buffers = _as_list(buffers)
        result = self._core.writev(buffers)
        if result is WOULD_WAIT:
            core = self._core
            retry = buffers
            return await self._write_slow(lambda: core.writev(retry))
        self._driver._schedule_flush()
        return result

    async def _write_slow(self, attempt: Callable[[], WriteResult | WouldWait]) -> WriteResult:
        self._writing = True
        driver = self._driver
        try:
            while True:
                await driver._wait_writable()
                result = attempt()
                if result is not WOULD_WAIT:
                    break
        finally:
            self._writing = False
        driver._schedule_flush()
        return result

    async def close(self, timeout: float | None = None) -> None:
        """The seed's close: flush, send EOF, wait for the peer's EOF, release the transport.

        Input that arrives meanwhile stays readable by another task. Idempotent: a second
        call waits for the same end. When ``timeout`` seconds pass first, the flow is aborted
        with a ``TIMED_OUT`` error and the connection reset. If the task is cancelled, the
        flow is aborted and the cancellation propagates. Never raises for an I/O failure.
        """
        if timeout is not None:
            _check_timeout(timeout)
        driver = self._driver
        self._core.close()
        driver._update()
        try:
            if await driver._wait_lost(timeout):
                return
        except asyncio.CancelledError:
            driver._abort_now()
            raise
        driver._abort_now(FlowError(ErrorKind.TIMED_OUT, detail="close() deadline passed"))
        await driver._wait_lost()

    async def shutdown(self, how: Shutdown) -> None:
        """``WRITE``: flush and send EOF, returning once the EOF is handed to the transport
        (without waiting for the peer). ``READ``: drop buffered and future input; reads answer
        ``Eof()``. ``BOTH``: both. Never raises for an I/O failure."""
        core = self._core
        driver = self._driver
        core.shutdown(how)
        driver._update()
        while core.send_state is SendState.EOF_QUEUED:
            await driver._wait_flushed()

    async def abort(self) -> None:
        """Drop the send queue, reset the connection (an RST for TCP) and end the flow with
        an "aborted" error; waiting readers and writers wake up with it. Returns once the
        transport is released."""
        driver = self._driver
        driver._abort_now()
        await driver._wait_lost()


def _as_list(buffers: Iterable[bytes | bytearray | memoryview]
             ) -> list[bytes | bytearray | memoryview]:
    try:
        return list(buffers)
    except TypeError:
        raise TypeError(
            f"writev() takes an iterable of buffers, not {type(buffers).__name__}"
        ) from None


def _check_timeout(timeout: object) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, not {timeout!r}")


def _new_core(high_water: int, low_water: int, receive_limit: int) -> Flow:
    return Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)


async def connect(host: str, port: int, *, high_water: int = 64 * 1024,
                  low_water: int = 16 * 1024, receive_limit: int = 256 * 1024) -> AsyncioFlow:
    """Open a TCP connection and return its flow. A failure to connect raises ``OSError``
    (as ``loop.create_connection`` does); after that, I/O failures are ``Error`` results."""
    core = _new_core(high_water, low_water, receive_limit)
    loop = asyncio.get_running_loop()
    driver = _Driver(core, loop)
    await loop.create_connection(lambda: driver, host, port)
    return AsyncioFlow(core, driver)


async def wrap(sock: socket.socket, *, high_water: int = 64 * 1024, low_water: int = 16 * 1024,
               receive_limit: int = 256 * 1024) -> AsyncioFlow:
    """Adopt a connected stream socket (TCP, or AF_UNIX such as one end of a
    ``socket.socketpair()``). The flow owns it from now on: do not use or close it."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"wrap() takes a connected socket.socket, not {type(sock).__name__}")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"wrap() takes a stream socket, not {sock!r}")
    core = _new_core(high_water, low_water, receive_limit)
    loop = asyncio.get_running_loop()
    driver = _Driver(core, loop)
    # Works for every stream family on asyncio's loop and on uvloop; server_side only
    # matters for TLS, which is not used here.
    await loop.connect_accepted_socket(lambda: driver, sock)
    return AsyncioFlow(core, driver)


class Server:
    """A listening server that runs a handler per accepted flow; an async context manager.

    ``async with serve(handler, "127.0.0.1", 0) as server:`` listens on entry; ``server.port``
    is the bound port. Each handler gets its own flow; when it returns, the flow is closed
    (``close(timeout=10)``) unless already CLOSED; if it raises, the flow is aborted and the
    exception logged on the ``"sansflow"`` logger. Leaving the block stops accepting, cancels
    the handlers still running (their flows are aborted) and waits for them: no task and no
    socket outlives the block.
    """

    __slots__ = ("_backlog", "_drivers", "_handler", "_host", "_options", "_port_arg",
                 "_server", "_stopping", "_tasks")

    def __init__(self, handler: Handler, host: str | None, port: int, *, backlog: int,
                 options: dict[str, int]) -> None:
        self._handler = handler
        self._host = host
        self._port_arg = port
        self._backlog = backlog
        self._options = options
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._drivers: set[_Driver] = set()
        self._stopping = False

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets (asyncio's socket wrappers)."""
        if self._server is None:
            return ()
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after asking for port 0)."""
        sockets = self.sockets
        if not sockets:
            raise RuntimeError("the server is not listening; use it as `async with serve(...)`")
        return int(sockets[0].getsockname()[1])

    async def __aenter__(self) -> Server:
        if self._server is not None:
            raise RuntimeError("this server is already running")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._new_driver(loop), self._host, self._port_arg, backlog=self._backlog
        )
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        server = self._server
        assert server is not None
        self._stopping = True
        server.close()
        # Let connections the server already accepted reach connection_made (which, now that
        # we are stopping, aborts them) before collecting what is left.
        await asyncio.sleep(0)
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for driver in list(self._drivers):
            driver._abort_now()
            if driver._transport is not None or driver._released:
                await driver._wait_lost()
            # else: not yet connected; connection_made will abort it (we are stopping).
        await server.wait_closed()

    def _new_driver(self, loop: asyncio.AbstractEventLoop) -> _Driver:
        core = Flow(**self._options)
        driver: _Driver

        def made() -> None:
            if self._stopping:
                driver._abort_now()
                return
            flow = AsyncioFlow(core, driver)
            task = loop.create_task(self._run(flow))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        driver = _Driver(core, loop, made)
        self._drivers.add(driver)
        driver._lost.add_done_callback(lambda _: self._drivers.discard(driver))
        return driver

    async def _run(self, flow: AsyncioFlow) -> None:
        try:
            await self._handler(flow)
        except Exception:
            logger.exception("sansflow: connection handler raised; aborting its flow")
            await flow.abort()
            return
        except BaseException:
            flow._driver._abort_now()
            raise
        if flow.state is not FlowState.CLOSED:
            await flow.close(timeout=_SERVER_CLOSE_TIMEOUT)
        else:
            await flow._driver._wait_lost()


def serve(handler: Handler, host: str | None, port: int, *, backlog: int = 100,
          high_water: int = 64 * 1024, low_water: int = 16 * 1024,
          receive_limit: int = 256 * 1024) -> Server:
    """A ``Server`` that gives each accepted connection's flow to ``handler``.

    Use it as ``async with serve(handler, host, port) as server:``; ``server.port`` is the
    bound port. Flow options (``high_water``, ``low_water``, ``receive_limit``) apply to every
    accepted flow and are checked here.
    """
    if not callable(handler):
        raise TypeError(f"serve() takes an async handler function, not {handler!r}")
    options = {"high_water": high_water, "low_water": low_water, "receive_limit": receive_limit}
    Flow(**options)  # reject bad options now rather than on the first connection
    return Server(handler, host, port, backlog=backlog, options=options)
