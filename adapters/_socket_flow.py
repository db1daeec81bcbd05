"""``SocketFlow``: a flow over a blocking ``socket.socket``, with no event loop.

Sending
-------
The threads that call the flow do the I/O themselves. Every send happens with the lock held and
never blocks: ``sendmsg`` with ``MSG_DONTWAIT`` hands the kernel what it takes at once, in one
vectored call, and a thread that must wait for room (a writer past the high-water mark,
``close``, ``shutdown(WRITE)``, ``flush``) waits in ``poll`` with the lock released, then sends
again. So ``abort()`` and ``close(timeout)`` can always wake a waiting writer: a thread blocked
inside ``sendmsg`` could only be woken by a FIN, which would tell the peer "clean end".

``write`` returns once its data is queued (the contract). With nothing queued before it, a
write that answers a read (the first write since the flow was read from) or that is at least
as large as the low-water mark goes straight to the kernel, as ``sendall`` would; only what
the kernel does not take is queued. Other writes are coalesced. The queue goes to the kernel
when it reaches the low-water mark; when a ``read`` is about to wait for input (so a request
is sent before its reply is awaited); or, at the latest, about ``FLUSH_DELAY`` seconds after the
write, from one process-wide flusher thread. While the kernel's buffer is full the flusher
comes back, soon while the kernel takes some data, with a growing delay while it takes none.
So queued data never depends on the writer calling again. The flusher thread exists only
while some flow has data waiting.

Receiving
---------
Input is read only by a thread that waits for it: ``read`` (when nothing is buffered) and
``close`` (until the peer's EOF, and only while the receive buffer is below its limit). One
``recv`` at a time, without the lock; its ``bytes`` go to the reader as they are, or into the
core. When a send fails (the peer reset the connection, say), what the kernel still holds
for the flow is read into the core first, as far as the receive limit has room, and stays
readable before the send's error: closing the socket would throw it away.

Closing
-------
``close(timeout=None)`` flushes, sends EOF (``shutdown(SHUT_WR)``) and waits for the peer's EOF,
reading input into the flow meanwhile (another thread can still ``read`` it; with the receive
buffer full and nobody reading, ``close`` waits). Past the deadline the flow is aborted with
``ErrorKind.TIMED_OUT``. ``abort()`` resets the connection (``SO_LINGER`` 0, then close) and
wakes waiting threads with the error; a thread blocked in ``recv`` or ``poll`` is woken with
``shutdown(SHUT_RD)``, which sends nothing. The socket is closed as soon as the flow is CLOSED
and no thread is inside a system call on it.

A reader already waiting when another thread calls ``shutdown(READ)`` returns ``Eof()`` when
the next input or the peer's EOF arrives: the socket's receive side stays open so that the
peer's EOF (and the end of ``close()``) can still be seen.

POSIX only (``sendmsg``, ``poll``, ``MSG_DONTWAIT``).
"""

from __future__ import annotations

import atexit
import contextlib
import heapq
import itertools
import logging
import math
import os
import select
import socket
import threading
from collections.abc import Callable
from time import monotonic

from sansflow import (
    WOULD_WAIT,
    Flow,
    FlowError,
    FlowState,
    Ok,
    ReadResult,
    ReceiveState,
    SendState,
    WriteResult,
)
from sansflow._adapter import BlockingDriverFlow, check_timeout

from ._common import (
    READ_SIZE,
    RECEIVING,
    addresses,
    eof_failure,
    receive_kept,
    send_queued,
    set_linger_zero,
)
from ._handshake import held_by_reader, held_by_wire, step_layers

__all__ = ["FLUSH_DELAY", "SocketFlow"]

FLUSH_DELAY = 0.0005
"""Seconds a small write may wait in the queue for more to join it before it is sent."""

_RETRY_MAX = 0.1  # the flusher's longest wait between tries while the kernel takes nothing
_POLL_SLICE = 0.1  # a thread waiting for room looks at the flow at least this often
_FLUSHER_LINGER = 0.5  # the flusher thread exits after this long with nothing scheduled
_SEND_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)
# POLLRDHUP fires when our receive side is shut down, which is how abort() wakes a thread
# waiting for room at once; without it (not Linux) the thread notices within _POLL_SLICE.
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)
_OK = Ok(None)
_CLOSED = FlowState.CLOSED
_SEND_OPEN = SendState.OPEN
_RECEIVE_OPEN = ReceiveState.OPEN
_log = logging.getLogger("sansflow")
# The longest single wait: poll takes an int of milliseconds and locks a bounded timeout, so
# a later deadline (an infinite one among them) is waited for in turns.
_WAIT_MAX = 3600.0

BytesLike = bytes | bytearray | memoryview


def _poll(fd: int, events: int, timeout: float) -> int:
    """The events that fired on ``fd`` within ``timeout`` seconds."""
    poller = select.poll()
    poller.register(fd, events)
    ready = poller.poll(math.ceil(max(timeout, 0.0) * 1000))
    return ready[0][1] if ready else 0


def _left(deadline: float) -> float:
    """Seconds until ``deadline``, at most ``_WAIT_MAX``: the next wait's timeout."""
    return min(deadline - monotonic(), _WAIT_MAX)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else _left(deadline)


def _passed(deadline: float | None) -> bool:
    return deadline is not None and monotonic() >= deadline


class SocketFlow(BlockingDriverFlow):
    """A flow over a connected, blocking stream socket. Create one with ``connect``,
    ``connect_unix`` or ``wrap``.

    Methods block the calling thread and return ``Ok``/``Eof``/``Error`` values; an ``OSError``
    from the socket never escapes them: it ends the flow and shows up as an ``Error`` result
    that keeps the exception as its ``cause``. The flow owns the socket and closes it once the
    flow is CLOSED. ``with flow:`` closes it on a normal exit and aborts it on an exception;
    ``for data in flow:`` yields data until ``Eof`` and raises ``BrokenFlowError`` at an
    ``Error``.
    """

    __slots__ = (
        "_answering",
        "_changed",
        "_flush_at",
        "_lock",
        "_outside",
        "_receiving",
        "_retry",
        "_scheduled",
        "_shut_rd",
        "_sock",
        "_waiters",
        "_wire",
    )
    _core: Flow  # the core this flow drives (AdapterFlow only reads its state)
    _lock: threading.Lock

    def __init__(self, sock: socket.socket, core: Flow) -> None:
        super().__init__(core, **addresses(sock))
        # The core on the socket (ciphertext under TLS), and the TLS layers over it, innermost
        # first; the application uses the outermost layer's plaintext core (``_core``).
        self._wire = core
        self._sock: socket.socket | None = sock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # input arrived or was read; CLOSED
        self._waiters = 0  # threads waiting on _changed: a notify is skipped when there are none
        self._receiving = False  # a thread is receiving into the core (the receive role)
        self._outside = 0  # threads in recv or poll on the socket, without the lock
        self._shut_rd = False
        self._scheduled = False  # the flow is on the flusher's schedule
        self._retry = FLUSH_DELAY  # the flusher's next delay while the kernel buffer is full
        self._answering = False  # a read came after the last write: the next write answers it
        self._flush_at = max(core.low_water, 1)

    # -- the application side --------------------------------------------------------------

    def read(self, max_bytes: int | None = None) -> ReadResult:
        """Up to ``max_bytes`` bytes (all that is buffered if ``None``), never an empty ``Ok``.

        Waits until data, the peer's EOF or an error arrives. Buffered data comes first, then
        ``Eof()`` or the ``Error`` on this and every later call. Before it waits, queued output
        is handed to the kernel (as much as it takes at once), so a request is sent before its
        reply is awaited. ``BusyError`` if another thread is reading.
        """
        lock = self._lock
        lock.acquire()
        try:
            if self._reading:
                self._claim_read()  # raises BusyError
            self._answering = True
            core = self._core
            result = core.read(max_bytes)
            if result is WOULD_WAIT:
                self._reading = True  # the lock is released while waiting
                try:
                    while result is WOULD_WAIT:
                        # (A due EOF is sent by whoever made it due.)
                        if core.queued:
                            self._send()
                            # A send that failed ended the flow, and let go of the socket.
                            result = core.read(max_bytes)
                            if result is not WOULD_WAIT:
                                break
                        if self._receiving:
                            self._wait(None)  # close() is receiving: it wakes us with its input
                        else:
                            # What arrives goes to this reader as it is, unless TLS decrypts it.
                            take = 0 if self._layers else max_bytes or READ_SIZE
                            data = self._receive(None, take)
                            if data is not None:
                                return Ok(data)
                        result = core.read(max_bytes)
                finally:
                    self._reading = False
            if self._layers and held_by_reader(core, result):
                self._send()  # decrypt what the layers hold, before a read waits for more
            if self._waiters:  # a close() may be waiting for room below the receive limit
                self._changed.notify_all()
            return result
        finally:
            lock.release()

    def write(self, data: BytesLike) -> WriteResult:
        """Queue ``data``: ``Ok(None)`` once it is queued, ``Eof()`` after ``close``/
        ``shutdown(WRITE)``, or the flow's ``Error``.

        Waits only while the queue is past the high-water mark. Read-only buffers are queued
        without a copy, writable ones are copied. The data reaches the kernel at the latest
        about ``FLUSH_DELAY`` seconds later (see the module's docstring), or at once with
        ``flush()``. ``BusyError`` if another thread is writing; nothing is queued then.
        """
        lock = self._lock
        lock.acquire()
        try:
            if self._writing:
                self._claim_write()  # raises BusyError
            core = self._core
            if (type(data) is bytes and (self._answering or len(data) >= self._flush_at)
                    and not core.queued and core.send_state is _SEND_OPEN and not self._layers):
                # A reply or a large write, and nothing queued before it: straight to the
                # kernel, as sendall would; only what it does not take is queued (as a
                # read-only view, no copy).
                self._answering = False
                sock = self._sock
                assert sock is not None  # the flow is not CLOSED while it can send
                try:
                    sent = sock.send(data, _SEND_FLAGS)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._fail(exc)
                    sent = 0
                if sent == len(data):
                    return _OK
                data = memoryview(data)[sent:]
            result = core.write(data)
            if result is WOULD_WAIT:
                result = self._write_slow(lambda: core.write(data))
            if type(result) is Ok and (not self._scheduled or self._answering
                                       or core.queued >= self._flush_at):
                self._queued_more(False)
            return result
        finally:
            lock.release()

    def flush(self) -> None:
        """Hand everything queued to the kernel now, waiting for room; return once the queue
        is empty or the flow failed. Never raises for an I/O failure."""
        with self._lock:
            self._send_until(self._flushed, None)

    # -- TLS (lock held) --------------------------------------------------------------------

    def _step(self) -> None:
        """Let the TLS layers move what they can (decrypt what arrived, encrypt what the
        application queued); threads waiting on the flow look again."""
        if self._layers:
            step_layers(self._layers)
            self._notify()

    def _handshake(self, timeout: float | None) -> bool:
        """Send and receive until the outermost layer's handshake is done or the flow ended;
        ``False`` if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else monotonic() + timeout
        layer = self._layers[-1]
        app = self._core
        while True:
            self._send()
            if layer.handshake_done or app.state is _CLOSED:
                return True
            if _passed(deadline):
                return False
            if self._wants_input() and not self._receiving:
                self._receive(deadline)
            else:
                self._wait(deadline)

    # -- the primitives of BlockingDriverFlow (close, shutdown, writev; lock held) -----------

    def _push(self) -> None:
        self._notify()  # a reader waiting for close()'s input returns Eof() after shutdown(READ)

    def _wait_room(self) -> None:
        self._send_until(self._writable, None)

    def _wait_flushed(self) -> None:
        self._send_until(self._flushed, None)

    def _wait_closed(self, timeout: float | None) -> bool:
        """Flush and send EOF, then receive until the peer's EOF (another thread may read what
        arrives; with the receive buffer full and nobody reading, wait for a reader)."""
        deadline = None if timeout is None else monotonic() + timeout
        core = self._wire
        while core.state is not _CLOSED:
            if not self._flushed():
                self._send_until(self._flushed, deadline)
            elif self._wants_input() and not self._receiving:
                self._receive(deadline)
            else:
                self._wait(deadline)  # for a reader to make room, or for its input
            if _passed(deadline):
                return core.state is _CLOSED
        return True

    def _settle(self) -> None:
        self._release_if_closed()

    # -- receiving (lock held) ----------------------------------------------------------------

    def _wants_input(self) -> bool:
        core = self._wire
        return (core.state is not _CLOSED and core.receive_state in RECEIVING
                and not core.reading_paused)

    def _receive(self, deadline: float | None, take: int = 0) -> bytes | None:
        """Take the receive role for one ``recv`` (without the lock) and feed the core.

        Input of at most ``take`` bytes, which the core would hand to the next read as it is,
        is returned instead: the reader's way around buffering it.
        """
        sock = self._sock
        assert sock is not None  # released only when CLOSED and no thread is in a call
        data: bytes | OSError | None = None
        self._receiving = True
        self._outside += 1
        self._lock.release()
        try:
            if deadline is None:
                data = sock.recv(READ_SIZE)
            elif _poll(sock.fileno(), select.POLLIN, _left(deadline)):
                data = sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        except OSError as exc:
            data = exc
        finally:
            self._lock.acquire()
            self._receiving = False
            self._outside -= 1
        core = self._wire
        if type(data) is bytes:
            if data and len(data) <= take and core.receive_state is _RECEIVE_OPEN:
                if self._waiters:
                    self._changed.notify_all()
                return data
            if data:
                core.receive_data(data)
            else:
                core.receive_eof()  # ignored if the flow failed meanwhile (shutdown(SHUT_RD))
        elif isinstance(data, OSError):
            core.receive_error(data)
        if self._layers:
            self._send()  # decrypt it; send what the TLS session answers
        if self._waiters:  # also when nothing came: a waiting reader may take the role over
            self._changed.notify_all()
        if core.state is _CLOSED:
            self._release_if_closed()
        return None

    # -- sending (lock held) ------------------------------------------------------------------

    def _queued_more(self, idle: bool) -> None:
        """After a write queued data: send now, or put the flow on the flusher's schedule."""
        core = self._core
        if self._answering or core.queued >= self._flush_at:
            self._answering = False
            self._send()
        if self._pending() and not self._scheduled:
            self._schedule(FLUSH_DELAY)

    def _send(self) -> None:
        """Hand the kernel what it takes now, then our EOF if it is due; never waits. Under
        TLS, the layers encrypt what the application queued as the kernel takes records."""
        core = self._wire
        sock = self._sock
        if self._layers and self._send_waits_for_peer():
            # A renegotiation holds what the application wrote until the peer's answer is
            # in, and no reader is receiving: take what the kernel holds, without waiting
            # (the flusher comes back while the plaintext stays queued).
            assert sock is not None  # the layers wait only while the flow is not CLOSED
            receive_kept(lambda size: sock.recv(size, socket.MSG_DONTWAIT), core)
        while True:
            self._step()
            if not core.queued:
                break
            assert sock is not None  # data is queued only while the flow is not CLOSED
            held = self._layers and held_by_wire(core)
            failure = send_queued(core, lambda buffers: sock.sendmsg(buffers, (), _SEND_FLAGS))
            if failure is not None:
                self._fail(failure)
                return
            if core.queued or not held:
                break  # the kernel's buffer is full, or nothing waits to be encrypted
        if core.eof_due:
            assert sock is not None  # EOF is due only while the flow is not CLOSED
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self._fail(eof_failure(sock, exc))
                return
            core.eof_sent()
            self._release_if_closed()

    def _send_waits_for_peer(self) -> bool:
        """A TLS layer holds queued plaintext until the peer's handshake messages are
        received, and no other thread is receiving them."""
        return (any(layer.send_waits_for_peer for layer in self._layers)
                and not self._receiving and self._wants_input())

    def _flushed(self) -> bool:
        app, wire = self._core, self._wire
        return not (app.queued or app.eof_due or wire.queued or wire.eof_due)

    def _pending(self) -> int:
        """Bytes waiting to be sent: the queue, and under TLS the plaintext not yet encrypted."""
        return self._wire.queued + (self._core.queued if self._layers else 0)

    def _writable(self) -> bool:
        return self._core.write_ready

    def _send_until(self, done: Callable[[], bool], deadline: float | None) -> None:
        """Send, waiting for room in the kernel, until ``done()`` or the deadline passes.

        ``done()`` must hold once the flow is CLOSED (nothing is left to send then).
        """
        events = select.POLLOUT | _POLLRDHUP
        while True:
            self._send()
            if done():
                return
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                return
            fired = self._poll(events, _POLL_SLICE if remaining is None
                               else min(remaining, _POLL_SLICE))
            if fired & _POLLRDHUP and not fired & select.POLLOUT:
                events = select.POLLOUT  # the peer's EOF, not our abort: stop asking for it

    def _poll(self, events: int, timeout: float) -> int:
        sock = self._sock
        assert sock is not None
        self._outside += 1
        self._lock.release()
        try:
            return _poll(sock.fileno(), events, timeout)
        finally:
            self._lock.acquire()
            self._outside -= 1
            self._release_if_closed()

    def _schedule(self, delay: float) -> None:
        self._scheduled = True
        _FLUSHER.schedule(self, delay)

    def _flush_scheduled(self) -> None:
        """The flusher's turn: send what the kernel takes now; try again later if it was full.

        If another thread holds the lock, it is busy with the flow (and about to let go: the
        lock is never held across a wait), so the flusher tries again later instead of
        waiting in line behind a writer.
        """
        if not self._lock.acquire(blocking=False):
            _FLUSHER.schedule(self, FLUSH_DELAY)
            return
        try:
            self._scheduled = False
            before = self._pending()
            self._send()
            pending = self._pending()
            if not pending or pending < before:
                self._retry = FLUSH_DELAY  # done, or the kernel takes data: soon again
            else:
                self._retry = min(self._retry * 2, _RETRY_MAX)  # it takes none: back off
            if pending and self._sock is not None:
                self._schedule(self._retry)
        finally:
            self._lock.release()

    # -- waiting, failing and releasing (lock held) ---------------------------------------------

    def _wait(self, deadline: float | None) -> None:
        """Wait for a change on ``_changed``, or until the deadline."""
        remaining = _remaining(deadline)
        if remaining is not None and remaining <= 0:
            return
        self._waiters += 1
        try:
            self._changed.wait(remaining)
        finally:
            self._waiters -= 1

    def _notify(self) -> None:
        if self._waiters:
            self._changed.notify_all()

    def _fail(self, exc: OSError) -> None:
        """A send raised ``exc``: the flow fails with it, once it has taken in what the kernel
        still holds for it (the peer's last bytes; see ``receive_kept``), which closing the
        socket would lose. Not while another thread is in ``recv``: what the kernel holds is
        its to take, and reading beside it could leave a gap in the stream."""
        sock = self._sock
        assert sock is not None  # a send just used it
        if not self._receiving:
            receive_kept(lambda size: sock.recv(size, socket.MSG_DONTWAIT), self._wire)
        self._wire.receive_error(exc)
        self._step()
        self._notify()
        self._release_if_closed()

    def _abort(self, error: FlowError | None) -> None:
        core = self._wire
        if core.state is not _CLOSED:
            self._core.abort(error)  # the TLS layers' plaintext core: no close_notify goes out
            core.abort(error)
            if self._sock is not None:
                set_linger_zero(self._sock)  # close() then sends an RST, not a FIN
        self._notify()
        self._release_if_closed()

    def _release_if_closed(self) -> None:
        """Close the socket once the flow is CLOSED and no thread is in a call on it."""
        sock = self._sock
        if sock is None or self._wire.state is not _CLOSED:
            return
        if self._outside:
            if not self._shut_rd:
                # Wakes a thread blocked in recv or poll without sending anything: the RST
                # still comes from the close, which the last thread out does.
                self._shut_rd = True
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)
            return
        self._sock = None
        sock.close()
        self._notify()
        if self._scheduled:
            _FLUSHER.wake()  # its entry is moot now


def _deadline(timeout: float | None) -> float | None:
    check_timeout(timeout)
    return None if timeout is None else monotonic() + timeout


# -- the flusher -----------------------------------------------------------------------------


class _Flusher:
    """One daemon thread for the whole process that sends data that writes left queued.

    Flows are scheduled with a delay; when it has passed, the thread sends whatever the kernel
    takes at once (``SocketFlow._flush_scheduled``). The thread starts when needed and exits
    after ``_FLUSHER_LINGER`` seconds with nothing scheduled.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, SocketFlow]] = []
        self._order = itertools.count()  # equal deadlines keep their order; flows never compare
        self._running = False
        self._wakes_at = math.inf  # when the thread will look at the heap again by itself

    def schedule(self, flow: SocketFlow, delay: float) -> None:
        due = monotonic() + delay
        with self._lock:
            heapq.heappush(self._heap, (due, next(self._order), flow))
            if not self._running:
                threading.Thread(target=self._run, name="sansflow-socket-flusher",
                                 daemon=True).start()
                self._running = True  # only once started: a failed start is retried next time
            elif due < self._wakes_at:
                self._changed.notify()

    def wake(self) -> None:
        """Have the thread look at its schedule again."""
        with self._lock:
            self._changed.notify()

    def _run(self) -> None:
        heap = self._heap
        idle_since = monotonic()
        while True:
            with self._lock:
                now = monotonic()
                while heap and heap[0][2]._sock is None:
                    heapq.heappop(heap)  # a released flow: nothing to send, no need to wait
                due = []
                while heap and heap[0][0] <= now:
                    due.append(heapq.heappop(heap)[2])
                if due:
                    self._wakes_at = -math.inf  # busy: new entries are seen without a notify
                    idle_since = math.inf
                elif heap:
                    self._wakes_at = heap[0][0]
                    self._changed.wait(heap[0][0] - now)
                    continue
                else:
                    idle_since = min(idle_since, now)
                    if now - idle_since >= _FLUSHER_LINGER:
                        self._running = False
                        return
                    self._wakes_at = math.inf
                    self._changed.wait(_FLUSHER_LINGER - (now - idle_since))
                    continue
            self._flush(due)

    def _flush(self, flows: list[SocketFlow]) -> None:
        for flow in flows:
            try:
                flow._flush_scheduled()
            except Exception:  # one flow's bug must not stop the others' data
                _log.exception("sansflow: flushing %r failed", flow)

    def flush_all(self) -> None:
        """Send what every scheduled flow's kernel buffer takes now (at interpreter exit)."""
        with self._lock:
            flows = [entry[2] for entry in self._heap]
            self._heap.clear()
        self._flush(flows)


_FLUSHER = _Flusher()
atexit.register(_FLUSHER.flush_all)
if hasattr(os, "register_at_fork"):
    # The child has no flusher thread and must not inherit a lock some thread held.
    os.register_at_fork(after_in_child=_FLUSHER._reset)
