"""The blocking-socket adapter over real sockets (127.0.0.1 and socketpair), driven by threads.

Every wait is bounded: a thread that does not finish in ``TIMEOUT`` seconds fails the test.
An autouse fixture checks that each test leaves no file descriptor and no thread behind.
"""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import inspect
import logging
import math
import os
import queue
import random
import re
import select
import socket
import ssl
import struct
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Generic, TypeVar

import pytest
from loopback import full_backlog_port, has_ipv6_loopback, refusing_port, reset

from sansflow import (
    HIGH_WATER,
    LOW_WATER,
    RECEIVE_LIMIT,
    BrokenFlowError,
    BusyError,
    Eof,
    Error,
    ErrorKind,
    FlowState,
    Ok,
    ReadResult,
    ReceiveState,
    SendState,
    Shutdown,
    error_message,
)
from sansflow.adapters import _socket_flow as socket_flow
from sansflow.adapters import socket as sf
from sansflow.adapters._common import READ_SIZE
from sansflow.adapters._connect import BACKLOG
from sansflow.adapters._handshake import HANDSHAKE_TIMEOUT
from sansflow.adapters._server import GRACE

HOST = "127.0.0.1"
TIMEOUT = 20.0  # the bound on any single wait; generous, as a slow machine is not a bug
T = TypeVar("T")
FLUSHER_NAME = "sansflow-socket-flusher"


# -- tools -----------------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def running_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name != FLUSHER_NAME}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.002)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Each test closes every socket it opened and ends every thread it started."""
    fds = open_fds() if os.path.isdir("/proc/self/fd") else None
    threads = running_threads()
    yield
    wait_until(lambda: running_threads() <= threads, "the test's threads to end")
    if fds is not None:
        wait_until(lambda: open_fds() <= fds, f"open file descriptors back to {fds}")


class Background(Generic[T]):
    """A call running on its own thread; ``join`` returns its result or raises its error."""

    def __init__(self, function: Callable[[], T], name: str = "test-background") -> None:
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(function,), name=name,
                                        daemon=True)
        self._thread.start()

    def _run(self, function: Callable[[], T]) -> None:
        try:
            self._result = function()
        except BaseException as exc:
            self._error = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = TIMEOUT) -> T:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self._thread.name} did not finish in {timeout} s"
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


def tcp_sockets(*, sndbuf: int | None = None, rcvbuf: int | None = None,
                ) -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on 127.0.0.1; ``sndbuf`` shrinks the first one's send buffer,
    ``rcvbuf`` the second one's receive buffer (set before the handshake, so the window
    really is that small)."""
    with socket.create_server((HOST, 0)) as listener:
        if rcvbuf is not None:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if sndbuf is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    return client, server


@contextmanager
def flow_pair(**options: int) -> Iterator[tuple[sf.SocketFlow, sf.SocketFlow]]:
    """Two connected flows over TCP; both are aborted at the end, whatever happened."""
    a_sock, b_sock = tcp_sockets()
    a, b = sf.wrap(a_sock, **options), sf.wrap(b_sock, **options)
    try:
        yield a, b
    finally:
        a.abort()
        b.abort()


@contextmanager
def flow_and_peer(**options: int) -> Iterator[tuple[sf.SocketFlow, socket.socket]]:
    """A flow and a plain socket as its peer (with a timeout, so no peer call hangs)."""
    a_sock, peer = tcp_sockets()
    peer.settimeout(TIMEOUT)
    a = sf.wrap(a_sock, **options)
    try:
        yield a, peer
    finally:
        a.abort()
        peer.close()


def read_exactly(flow: sf.SocketFlow, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        result = flow.read(size - len(got))
        assert isinstance(result, Ok), f"{result!r} after {len(got)} of {size} bytes"
        got += result.value
    return bytes(got)


def read_to_end(flow: sf.SocketFlow, max_bytes: int | None = None) -> tuple[bytes, ReadResult]:
    got = bytearray()
    while True:
        result = flow.read(max_bytes)
        if not isinstance(result, Ok):
            return bytes(got), result
        got += result.value


def recv_to_end(sock: socket.socket) -> bytes:
    got = bytearray()
    while data := sock.recv(65536):
        got += data
    return bytes(got)


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes that are not all alike, so a lost, repeated or misplaced chunk shows."""
    return random.Random(seed).randbytes(size)


def state(flow: sf.SocketFlow) -> FlowState:
    """``flow.state``, read afresh (a type checker keeps its narrowing of ``flow.state``)."""
    return flow.state


def released(sock: socket.socket) -> bool:
    return sock.fileno() == -1


_BLOCK = pattern((1 << 20) + 13, seed=7)


def stream(offset: int, size: int) -> bytes:
    """Bytes ``offset`` to ``offset + size`` of an endless stream with an odd period."""
    out = bytearray()
    while size:
        start = offset % len(_BLOCK)
        piece = _BLOCK[start:start + size]
        out += piece
        offset += len(piece)
        size -= len(piece)
    return bytes(out)


class Filler:
    """Writes 16 KiB chunks of ``stream`` to a flow until a write does not return Ok."""

    def __init__(self, flow: sf.SocketFlow, chunk: int = 16 * 1024) -> None:
        self.flow = flow
        self.chunk = chunk
        self.accepted = 0
        self.max_queued = 0
        self.end: object = None
        self.worker = Background(self._run, name="filler")

    def _run(self) -> None:
        while True:
            result = self.flow.write(stream(self.accepted, self.chunk))
            if result != Ok(None):
                self.end = result
                return
            self.accepted += self.chunk
            self.max_queued = max(self.max_queued, self.flow.queued)
            assert self.accepted < 64 * 1024 * 1024, "write() never waited"

    def until_blocked(self) -> None:
        """Return once no write was accepted for a while and a write is still running."""
        last, since = -1, time.monotonic()
        deadline = since + TIMEOUT
        while time.monotonic() - since < 0.3 or not self.flow._writing:
            assert time.monotonic() < deadline, "the writer never blocked"
            assert self.worker.running, "the writer stopped"
            if self.accepted != last:
                last, since = self.accepted, time.monotonic()
            time.sleep(0.005)


# -- round trips -----------------------------------------------------------------------------


def test_round_trip_both_ways_then_clean_close() -> None:
    with flow_pair() as (a, b):
        assert a.write(b"ping") == Ok(None)
        assert read_exactly(b, 4) == b"ping"
        assert b.writev([b"po", memoryview(b"ng"), bytearray(b"!")]) == Ok(None)
        assert read_exactly(a, 5) == b"pong!"
        closing = Background(a.close)
        assert b.read() == Eof()
        assert b.state is FlowState.HALF_CLOSED_REMOTE
        b.close(timeout=TIMEOUT)
        closing.join()
        for flow in (a, b):
            assert flow.state is FlowState.CLOSED
            assert flow.error is None
            assert flow.read() == Eof()
            assert flow.write(b"late") == Eof()


def test_writable_buffers_are_copied_read_only_ones_are_not_corrupted() -> None:
    with flow_pair(low_water=1 << 20, high_water=1 << 21) as (a, b):
        scratch = bytearray(b"first")
        assert a.write(b"x") == Ok(None)  # sent at once: the next writes wait in the queue
        assert a.write(scratch) == Ok(None)
        assert a.writev([scratch, memoryview(scratch)]) == Ok(None)
        scratch[:] = b"XXXXX"
        a.flush()
        assert a.queued == 0
        assert read_exactly(b, 16) == b"xfirstfirstfirst"


def test_socketpair_round_trip_half_close_and_release() -> None:
    left, right = socket.socketpair()
    a, b = sf.wrap(left), sf.wrap(right)
    try:
        assert a.write(b"over a socketpair") == Ok(None)
        a.shutdown(Shutdown.WRITE)
        assert a.send_state is SendState.EOF_SENT
        assert read_to_end(b) == (b"over a socketpair", Eof())
        assert b.write(b"reply") == Ok(None)
        b.close(timeout=TIMEOUT)
        assert read_to_end(a) == (b"reply", Eof())
        assert a.state is b.state is FlowState.CLOSED
        assert released(left)
        assert released(right)
    finally:
        a.abort()
        b.abort()


def test_four_mib_through_tiny_socket_buffers_arrives_byte_exact() -> None:
    a_sock, b_sock = tcp_sockets(sndbuf=4096, rcvbuf=4096)
    a, b = sf.wrap(a_sock), sf.wrap(b_sock)
    total = 4 * 1024 * 1024
    data = pattern(total, seed=1)
    sizes = [1, 1000, 65536, 300_000, 7, 16384, 128 * 1024]

    def send() -> None:
        offset = index = 0
        while offset < total:
            size = min(sizes[index % len(sizes)], total - offset)
            chunk = data[offset:offset + size]
            if index % 3 == 2:
                result = a.writev(chunk[i:i + 4096] for i in range(0, size, 4096))
            else:
                result = a.write(chunk)
            assert result == Ok(None)
            assert a.queued <= a.high_water + max(sizes)
            offset += size
            index += 1
        a.close(timeout=TIMEOUT)

    try:
        sending = Background(send)
        rng = random.Random(3)
        got = bytearray()
        while isinstance(result := b.read(rng.choice((512, 4096, 65536, None))), Ok):
            got += result.value
        assert result == Eof()
        assert got == data
        b.close(timeout=TIMEOUT)
        sending.join()
        assert a.state is b.state is FlowState.CLOSED
        assert a.error is None
        assert b.error is None
    finally:
        a.abort()
        b.abort()


# -- half-close and close ----------------------------------------------------------------------


def test_half_close_each_way() -> None:
    with flow_pair() as (a, b):
        assert a.write(b"request") == Ok(None)
        a.shutdown(Shutdown.WRITE)
        assert a.state is FlowState.HALF_CLOSED_LOCAL
        assert a.send_state is SendState.EOF_SENT
        assert a.write(b"more") == Eof()
        assert read_to_end(b) == (b"request", Eof())
        assert b.state is FlowState.HALF_CLOSED_REMOTE
        assert b.read() == Eof()  # sticky
        assert b.write(b"response") == Ok(None)  # the other direction still works
        b.shutdown(Shutdown.WRITE)
        assert state(b) is FlowState.CLOSED
        assert read_to_end(a) == (b"response", Eof())
        assert state(a) is FlowState.CLOSED
        assert a.error is None
        assert b.error is None


def test_close_waits_for_the_peer_and_late_input_stays_readable() -> None:
    a_sock, b_sock = tcp_sockets()
    a, b = sf.wrap(a_sock), sf.wrap(b_sock)
    try:
        assert a.write(b"bye") == Ok(None)
        closing = Background(a.close)
        assert read_to_end(b) == (b"bye", Eof())
        time.sleep(0.1)
        assert closing.running, "close() returned before the peer's EOF"
        assert a.state is FlowState.HALF_CLOSED_LOCAL
        assert b.write(b"late reply") == Ok(None)
        b.close(timeout=TIMEOUT)
        closing.join()
        assert state(a) is FlowState.CLOSED
        assert released(a_sock)
        assert released(b_sock)
        assert read_to_end(a) == (b"late reply", Eof())  # received while closing
    finally:
        a.abort()
        b.abort()


def test_close_is_idempotent_and_concurrent_closes_share_the_end() -> None:
    with flow_pair() as (a, b):
        closers = [Background(a.close) for _ in range(3)]
        assert b.read() == Eof()
        b.close(timeout=TIMEOUT)
        for closer in closers:
            closer.join()
        a.close()
        a.close(timeout=0)
        assert a.state is FlowState.CLOSED
        assert a.error is None


def test_close_deadline_aborts_with_timed_out_and_resets_the_peer() -> None:
    with flow_and_peer() as (a, peer):
        assert a.write(b"last words") == Ok(None)
        a.close(timeout=0.2)
        assert a.state is FlowState.CLOSED
        assert a.error is not None
        assert a.error.kind is ErrorKind.TIMED_OUT
        assert error_message(a.error) == "timed out: close() deadline passed"
        assert a.read() == Error(a.error)
        assert a.write(b"x") == Eof()  # our EOF went out before the deadline: that end stands
        assert recv_to_end(peer) == b"last words"  # then our FIN
        # The RST came after the FIN: sending meets it (as EPIPE: Linux reports a reset in
        # CLOSE_WAIT that way).
        with pytest.raises((ConnectionResetError, BrokenPipeError)):  # noqa: PT012
            for _ in range(100):
                peer.sendall(b"anyone?")
                time.sleep(0.01)


def test_close_deadline_holds_while_the_queue_cannot_drain() -> None:
    with flow_and_peer() as (a, peer):
        filler = Filler(a)
        filler.until_blocked()
        a.close(timeout=0.3)  # the peer reads nothing: neither the queue nor EOF can go out
        filler.worker.join()
        assert filler.end == Eof()  # close() came first: the waiting write was refused
        assert a.state is FlowState.CLOSED
        assert a.error is not None
        assert a.error.kind is ErrorKind.TIMED_OUT
        assert a.queued == 0
        wait_until(lambda: a._sock is None, "the socket to be released")
        with pytest.raises(ConnectionResetError):  # noqa: PT012
            while peer.recv(1 << 20):  # what the kernel had taken, then the RST
                pass


def test_an_interrupted_close_aborts_the_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: sf.SocketFlow, deadline: float | None, take: int = 0) -> None:
        raise KeyboardInterrupt  # as Ctrl-C would, while close() waits for the peer's EOF

    with flow_and_peer() as (a, peer):
        monkeypatch.setattr(sf.SocketFlow, "_receive", interrupted)
        with pytest.raises(KeyboardInterrupt):
            a.close()
        assert a.state is FlowState.CLOSED
        assert a.error is not None
        assert a.error.kind is ErrorKind.ABORTED
        assert a._sock is None
        assert recv_to_end(peer) == b""  # our EOF went out before the interruption


@pytest.mark.parametrize("timeout", [math.inf, 1e300], ids=["infinite", "huge"])
def test_close_with_an_endless_timeout_waits_for_the_peer(timeout: float) -> None:
    """A timeout past what poll and locks take (an int of milliseconds) is waited for in
    turns: the close ends cleanly when the peer's EOF comes, not with an OverflowError."""
    with flow_pair() as (a, b):
        closing = Background(partial(a.close, timeout=timeout))
        assert b.read() == Eof()  # a's EOF: a now waits for b's
        assert closing.running
        b.close(timeout=TIMEOUT)
        closing.join()
        assert (a.state, a.error) == (FlowState.CLOSED, None)


def test_close_with_timeout_zero_completes_when_the_peer_is_done() -> None:
    with flow_pair() as (a, b):
        b.shutdown(Shutdown.WRITE)
        wait_until(lambda: a.read() == Eof(), "b's EOF")
        a.close(timeout=0)
        # Either the EOF went out at once and the close was clean, or the deadline won.
        assert a.state is FlowState.CLOSED


def test_close_while_a_writer_waits_for_room() -> None:
    with flow_pair() as (a, b):
        filler = Filler(a)
        filler.until_blocked()
        closing = Background(a.close)
        data, end = read_to_end(b)
        filler.worker.join()
        assert filler.end == Eof()
        assert end == Eof()
        assert data == stream(0, filler.accepted)
        b.close(timeout=TIMEOUT)
        closing.join()
        assert a.state is FlowState.CLOSED
        assert a.error is None


def test_shutdown_read_discards_input_and_close_still_sees_the_peer_eof() -> None:
    with flow_pair() as (a, b):
        assert b.write(b"unwanted") == Ok(None)
        b.flush()
        a.shutdown(Shutdown.READ)
        assert a.read() == Eof()
        assert a.receive_state is ReceiveState.DISCARDING
        assert a.write(b"still writing") == Ok(None)
        assert read_exactly(b, 13) == b"still writing"
        assert b.write(b"dropped too") == Ok(None)
        closing = Background(a.close)
        assert b.read() == Eof()
        b.close(timeout=TIMEOUT)
        closing.join()
        assert a.state is FlowState.CLOSED
        assert a.error is None
        assert a.buffered == 0


def test_shutdown_both() -> None:
    with flow_pair() as (a, b):
        a.shutdown(Shutdown.BOTH)
        assert a.read() == Eof()
        assert a.write(b"x") == Eof()
        assert b.read() == Eof()
        b.close(timeout=TIMEOUT)
        a.close(timeout=TIMEOUT)
        assert a.state is b.state is FlowState.CLOSED


# -- abort and errors ------------------------------------------------------------------------


def test_abort_keeps_received_data_readable_and_is_idempotent() -> None:
    with flow_pair() as (a, b):
        assert b.write(b"arrived") == Ok(None)
        b.flush()
        assert a.read(1) == Ok(b"a")
        assert a.buffered == 6  # one 7-byte send arrives as one piece
        a.abort()
        a.abort()
        error = a.error
        assert error is not None
        assert error.kind is ErrorKind.ABORTED
        assert a.read() == Ok(b"rrived")
        assert a.read() == Error(error)
        assert a.read() == Error(error)
        end = b.read()
        assert isinstance(end, Error)
        assert end.error.kind is ErrorKind.RESET


def test_peer_reset_while_reading_is_an_error_naming_econnreset() -> None:
    with flow_and_peer() as (a, peer):
        reading = Background(a.read)
        wait_until(lambda: a._reading, "the reader to wait")
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        result = reading.join()
        assert isinstance(result, Error)
        assert result.error.kind is ErrorKind.RESET
        assert isinstance(result.error.cause, ConnectionResetError)
        assert error_message(result.error) == "connection reset by peer (ECONNRESET)"
        assert a.state is FlowState.CLOSED
        assert a.error == result.error
        assert a.write(b"x") == result
        a.close(timeout=TIMEOUT)  # nothing to do, never raises


def test_peer_reset_mid_transfer_fails_the_writer() -> None:
    with flow_and_peer() as (a, peer):
        filler = Filler(a)
        assert len(peer.recv(65536)) > 0
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        filler.worker.join()
        assert isinstance(filler.end, Error)
        assert filler.end.error.kind in (ErrorKind.RESET, ErrorKind.BROKEN_PIPE)
        assert isinstance(filler.end.error.cause, OSError)
        assert filler.end.error.cause.errno in (errno.ECONNRESET, errno.EPIPE)
        assert a.state is FlowState.CLOSED
        assert a.queued == 0  # the queue went with the connection
        wait_until(lambda: a._sock is None, "the socket to be released")


def peer_sends_then_resets(peer: socket.socket, data: bytes, ours: int) -> None:
    """``peer`` sends ``data`` and, once all of it waits in the kernel for descriptor
    ``ours``, resets the connection; returns once the reset has arrived."""
    peer.sendall(data)
    wait_until(lambda: struct.unpack("i", fcntl.ioctl(ours, termios.FIONREAD, b"\0" * 4))[0]
               >= len(data), "the data to arrive")
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    poller = select.poll()
    poller.register(ours, select.POLLERR)
    assert poller.poll(int(TIMEOUT * 1000)), "the reset did not arrive"


def test_a_failed_send_keeps_what_the_kernel_holds_as_far_as_the_receive_limit() -> None:
    """The peer's last bytes, in the kernel when our send fails on its reset, are read before
    the send's error; the receive limit bounds how much the flow takes in."""
    limit = 4096
    with flow_and_peer(receive_limit=limit) as (a, peer):
        assert a._sock is not None
        data = pattern(3 * limit)
        peer_sends_then_resets(peer, data, a._sock.fileno())
        assert a.write(b"x") == Ok(None)
        a.flush()  # its send fails
        assert a.state is FlowState.CLOSED
        assert a.error is not None
        assert a.error.kind is ErrorKind.RESET
        assert a._sock is None  # released
        assert read_to_end(a) == (data[:limit], Error(a.error))


def test_a_failed_send_to_a_live_peer_takes_only_what_is_there() -> None:
    """A peer that shut down only its reading side fails our send (EPIPE) yet could go on
    sending: the flow takes what the kernel holds now, then fails with the send's error."""
    ours, theirs = socket.socketpair()
    with theirs:
        a = sf.wrap(ours)
        theirs.shutdown(socket.SHUT_RD)
        theirs.sendall(b"last words")
        failed = a.write(b"x" * a.low_water)  # large: straight to the kernel, which refuses
        assert isinstance(failed, Error)
        assert failed.error.kind is ErrorKind.BROKEN_PIPE
        assert a._sock is None  # released
        assert read_to_end(a) == (b"last words", failed)


def test_peer_never_reads_the_writer_waits_and_the_queue_stays_bounded() -> None:
    with flow_and_peer() as (a, peer):
        filler = Filler(a)
        filler.until_blocked()
        assert filler.max_queued <= a.high_water + filler.chunk
        assert a.queued > a.low_water
        accepted = filler.accepted
        time.sleep(0.1)
        assert filler.accepted == accepted
        assert filler.worker.running
        got = bytearray()
        peer.settimeout(TIMEOUT)
        while len(got) < 4 * 1024 * 1024:  # the writer moves again once the peer reads
            got += peer.recv(1 << 20)
        assert got == stream(0, len(got))
        a.abort()
        filler.worker.join()
        assert filler.max_queued <= a.high_water + filler.chunk


def test_flood_pauses_receiving_at_the_limit() -> None:
    limit = 64 * 1024
    total = 4 * 1024 * 1024
    data = pattern(total, seed=2)
    # Small kernel buffers both ways: left to autotuning, they could hold all 4 MiB.
    peer, a_sock = tcp_sockets(sndbuf=64 * 1024, rcvbuf=64 * 1024)
    peer.settimeout(TIMEOUT)
    a = sf.wrap(a_sock, receive_limit=limit)
    try:
        def flood() -> None:
            peer.sendall(data)
            peer.shutdown(socket.SHUT_WR)

        flooding = Background(flood)
        closing = Background(a.close)  # close() receives while it waits for the peer's EOF
        wait_until(lambda: a._core.reading_paused, "the receive buffer to fill")
        most = 0
        for _ in range(50):
            most = max(most, a.buffered)
            time.sleep(0.002)
        assert flooding.running, "the peer sent everything although nobody read"
        assert closing.running
        assert limit <= most <= limit + READ_SIZE
        got = bytearray()
        while isinstance(result := a.read(), Ok):
            most = max(most, a.buffered)
            got += result.value
        assert result == Eof()
        assert got == data
        assert most <= limit + READ_SIZE
        flooding.join()
        closing.join()
        assert a.state is FlowState.CLOSED
        assert a.error is None
    finally:
        a.abort()
        peer.close()


# -- busy errors -----------------------------------------------------------------------------


def test_two_readers_the_second_gets_busy_error_and_changes_nothing() -> None:
    with flow_pair() as (a, b):
        reading = Background(a.read)
        wait_until(lambda: a._reading, "the first reader to wait")
        with pytest.raises(BusyError):
            a.read()
        assert b.write(b"for the first reader") == Ok(None)
        assert reading.join() == Ok(b"for the first reader")
        assert b.write(b"next") == Ok(None)
        assert read_exactly(a, 4) == b"next"


def test_two_writers_the_second_gets_busy_error_and_queues_nothing() -> None:
    with flow_pair() as (a, b):
        filler = Filler(a)
        filler.until_blocked()
        queued = a.queued
        with pytest.raises(BusyError):
            a.write(b"refused")
        with pytest.raises(BusyError):
            a.writev([b"refused"])
        assert a.queued == queued
        reading = Background(lambda: read_to_end(b))
        blocked_at = filler.accepted
        wait_until(lambda: filler.accepted > blocked_at + (1 << 20), "the writer to move again")
        a.abort()
        filler.worker.join()
        data, _ = reading.join()
        assert data == stream(0, len(data))
        assert b"refused" not in data


# -- coalescing: nothing is ever stranded -----------------------------------------------------


def test_ping_pong_with_small_writes_does_not_deadlock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Each message goes out with read()'s send.
    monkeypatch.setattr(socket_flow, "FLUSH_DELAY", 60.0)
    with flow_pair() as (a, b):
        rounds = 2000

        def echo() -> int:
            count = 0
            while isinstance(result := b.read(), Ok):
                data = result.value
                for i in range(0, len(data), 16):  # echoed in small writes
                    assert b.write(data[i:i + 16]) == Ok(None)
                count += 1
            b.close(timeout=TIMEOUT)
            return count

        echoing = Background(echo)
        for n in range(rounds):
            message = struct.pack(">I", n) * 16
            for i in range(0, 64, 16):
                assert a.write(message[i:i + 16]) == Ok(None)
            assert read_exactly(a, 64) == message  # no flush(): read() sends first
        a.close(timeout=TIMEOUT)
        assert echoing.join() >= 1
        assert a.state is FlowState.CLOSED
        assert a.error is None


def test_request_response_with_a_separate_reader_thread() -> None:
    """The writer never reads: what it leaves queued reaches the peer without its help."""
    with flow_pair() as (a, b):
        replies: queue.Queue[bytes] = queue.Queue()

        def reader() -> None:
            while isinstance(result := a.read(), Ok):
                replies.put(result.value)

        def echo() -> None:
            while isinstance(result := b.read(), Ok):
                assert b.write(result.value) == Ok(None)
            b.close(timeout=TIMEOUT)

        reading, echoing = Background(reader), Background(echo)
        for n in range(300):
            request = b"%08d" % n
            for piece in (request[:3], request[3:5], request[5:]):
                assert a.write(piece) == Ok(None)
            got = b""
            while len(got) < len(request):
                got += replies.get(timeout=TIMEOUT)
            assert got == request
        a.close(timeout=TIMEOUT)
        reading.join()
        echoing.join()
        assert a.state is FlowState.CLOSED


def test_a_write_left_queued_is_delivered_while_the_writer_sleeps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    delay = 0.5
    monkeypatch.setattr(socket_flow, "FLUSH_DELAY", delay)
    with flow_pair() as (a, b):
        written = time.monotonic()
        assert a.write(b"x") == Ok(None)  # not a reply: waits for company
        assert a.write(b"yz") == Ok(None)
        queued = a.queued
        if time.monotonic() - written < delay:  # else the flusher may rightly have sent it
            assert queued == 3
        receiving = Background(lambda: read_exactly(b, 3))
        assert receiving.join() == b"xyz"  # nobody but the flusher sent it
        wait_until(lambda: a.queued == 0, "the flusher to count its send")


def test_a_write_answering_a_read_goes_out_at_once_others_wait_for_company(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_flow, "FLUSH_DELAY", 60.0)  # the flusher stays out of the way
    with flow_pair() as (a, b):
        for piece in (b"bu", b"rs", b"t"):  # no read since the last write: coalesced
            assert a.write(piece) == Ok(None)
        assert a.queued == 5
        assert a.writev([b"x" * (a.low_water - 5)]) == Ok(None)  # low water: sent at once
        assert a.queued == 0
        assert read_exactly(b, a.low_water) == b"burst" + b"x" * (a.low_water - 5)
        assert b.write(b"re") == Ok(None)  # the first write since a read: a reply
        assert b.queued == 0
        assert b.write(bytearray(b"ply")) == Ok(None)  # then coalesced again
        assert b.queued == 3
        assert read_exactly(a, 2) == b"re"
        assert a.writev([b"an", b"d"]) == Ok(None)  # a reply too, as a vectored write
        assert a.queued == 0
        b.flush()
        assert read_exactly(a, 3) == b"ply"
        assert read_exactly(b, 3) == b"and"


def test_read_sends_what_is_queued_before_it_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only read() can send the coalesced writes.
    monkeypatch.setattr(socket_flow, "FLUSH_DELAY", 60.0)
    with flow_pair() as (a, b):
        assert a.write(b"question") == Ok(None)
        a.flush()
        assert b.write(b"an") == Ok(None)
        assert b.write(b"swer") == Ok(None)
        assert b.queued == 6
        assert read_exactly(b, 8) == b"question"  # it receives, so it sends first
        assert b.queued == 0
        assert Background(lambda: read_exactly(a, 6)).join() == b"answer"


def test_the_flusher_retries_while_the_kernel_buffer_is_full() -> None:
    a_sock, b_sock = tcp_sockets(sndbuf=4096, rcvbuf=4096)
    # High water above everything written: write() never waits for room, so once the kernel
    # buffer is full only the flusher sends.
    a, b = sf.wrap(a_sock, high_water=4 << 20), sf.wrap(b_sock)
    total = 2 * 1024 * 1024
    data = pattern(total, seed=4)
    try:
        for i in range(0, total, 1024):
            assert a.write(data[i:i + 1024]) == Ok(None)
        assert a.queued > 0, "the kernel took 2 MiB through a 4 KiB buffer at once"
        # From here on, the writing thread does nothing for the flow.
        assert read_exactly(b, total) == data
        wait_until(lambda: a.queued == 0, "the queue to drain")
    finally:
        a.abort()
        b.abort()


def test_a_large_write_the_kernel_takes_in_part_is_resumed_at_the_exact_byte() -> None:
    a_sock, peer = tcp_sockets(sndbuf=4096, rcvbuf=4096)
    peer.settimeout(TIMEOUT)
    a = sf.wrap(a_sock, high_water=4 << 20)
    try:
        data = pattern(1 << 20, seed=6)
        assert a.write(data) == Ok(None)  # straight to the kernel, which takes a part
        assert 0 < a.queued < len(data)
        got = bytearray()
        while len(got) < len(data):  # the rest comes from the flusher
            got += peer.recv(1 << 20)
        assert got == data
    finally:
        a.abort()
        peer.close()


def test_the_flusher_does_not_wait_for_a_busy_flow_and_comes_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_flow, "FLUSH_DELAY", 60.0)  # the test plays the flusher's visits
    with flow_pair() as (a, b):
        assert a.write(b"late") == Ok(None)  # no read before it: queued for the flusher
        with a._lock:  # as a thread busy with the flow holds it
            Background(a._flush_scheduled).join()  # returns at once, without sending
            assert a.queued == 4
            assert a._scheduled  # it comes back later
        a._flush_scheduled()  # the next visit: the lock is free
        assert a.queued == 0
        assert read_exactly(b, 4) == b"late"


def test_flush_hands_everything_to_the_kernel() -> None:
    with flow_and_peer(low_water=1 << 20, high_water=1 << 21) as (a, peer):
        assert a.write(b"a") == Ok(None)
        for _ in range(100):
            assert a.write(b"bc") == Ok(None)
        a.flush()
        assert a.queued == 0
        got = b""
        while len(got) < 201:
            got += peer.recv(1024)
        assert got == b"a" + b"bc" * 100


def test_small_writes_are_coalesced_into_few_sends() -> None:
    with flow_and_peer() as (a, peer):
        sends = 0
        sock = a._sock
        assert sock is not None

        class Counting(socket.socket):
            def sendmsg(self, *args: object, **kwargs: object) -> int:
                nonlocal sends
                sends += 1
                return super().sendmsg(*args, **kwargs)  # type: ignore[arg-type]

        counting = Counting(sock.family, sock.type, sock.proto, fileno=sock.detach())
        a._sock = counting
        for _ in range(10_000):
            assert a.write(b"x" * 100) == Ok(None)
        a.shutdown(Shutdown.WRITE)
        assert len(recv_to_end(peer)) == 1_000_000
        assert sends < 10_000 // 20, f"{sends} sends for 10000 writes of 100 bytes"


# -- bad input -------------------------------------------------------------------------------


def test_bad_arguments_raise_and_change_nothing() -> None:
    with flow_pair() as (a, b):
        for bad in ("text", None, 1, [b"list"]):
            with pytest.raises(TypeError):
                a.write(bad)  # type: ignore[arg-type]
        for bad_buffers in (b"bytes", "text", 1, [b"ok", "text"], [None]):
            with pytest.raises(TypeError):
                a.writev(bad_buffers)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_bytes"):
            a.read(0)
        with pytest.raises(ValueError, match="max_bytes"):
            a.read(-1)
        for bad_size in ("1", 1.5, True):
            with pytest.raises(TypeError):
                a.read(bad_size)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            a.close(timeout=-1)
        with pytest.raises(ValueError, match="timeout"):
            a.close(timeout=math.nan)
        for bad_timeout in ("1", True, [1]):
            with pytest.raises(TypeError, match="timeout"):
                a.close(timeout=bad_timeout)  # type: ignore[arg-type]
        for bad_how in ("write", None, 1):
            with pytest.raises(TypeError):
                a.shutdown(bad_how)  # type: ignore[arg-type]
        assert a.state is FlowState.OPEN
        assert a.queued == 0
        assert a.write(b"still fine") == Ok(None)
        assert read_exactly(b, 10) == b"still fine"


def test_wrap_refuses_what_is_not_a_connected_stream_socket() -> None:
    with pytest.raises(TypeError, match="socket"):
        sf.wrap("127.0.0.1:80")  # type: ignore[arg-type]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            pytest.raises(ValueError, match="stream"):
        sf.wrap(udp)
    with socket.socket() as unconnected, pytest.raises(ValueError, match="connected"):
        sf.wrap(unconnected)
    closed = socket.socket()
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        sf.wrap(closed)
    context = ssl.create_default_context()
    with socket.socket() as plain:
        tls = context.wrap_socket(plain, do_handshake_on_connect=False,
                                  server_hostname="localhost")
        with tls, pytest.raises(TypeError, match="SSLSocket"):
            sf.wrap(tls)
    left, right = socket.socketpair()
    with left, right:
        with pytest.raises(ValueError, match="high_water"):
            sf.wrap(left, high_water=0)
        with pytest.raises(TypeError):
            sf.wrap(left, bogus=1)  # type: ignore[call-arg]
        assert left.fileno() != -1  # a refused wrap leaves the socket to its owner


def test_wrap_makes_a_non_blocking_socket_blocking() -> None:
    left, right = socket.socketpair()
    os.set_blocking(left.fileno(), False)  # only the descriptor: gettimeout() still says None
    right.settimeout(0)
    a, b = sf.wrap(left), sf.wrap(right)
    try:
        for sock in (left, right):  # else recv would not wait: the reader would spin
            assert sock.gettimeout() is None
            assert os.get_blocking(sock.fileno())
        reading = Background(a.read)
        assert b.write(b"woken") == Ok(None)
        b.flush()
        assert reading.join() == Ok(b"woken")
    finally:
        a.abort()
        b.abort()


def test_connect_checks_options_before_connecting_and_raises_when_refused() -> None:
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(ValueError, match="low_water"):
            sf.connect(HOST, port, low_water=10, high_water=5)
        with pytest.raises(TypeError):
            sf.connect(HOST, port, bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ConnectionRefusedError):
        sf.connect(HOST, port)  # nobody listens there any more


def test_serve_refuses_bad_arguments() -> None:
    with pytest.raises(TypeError, match="callable"):
        sf.serve("handler", HOST, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="high_water"):
        sf.serve(lambda flow: None, HOST, 0, high_water=0)
    with pytest.raises(ValueError, match="grace"):
        sf.serve(lambda flow: None, HOST, 0, grace=-1)
    server = sf.serve(lambda flow: None, HOST, 0)
    with pytest.raises(RuntimeError, match="with statement"):
        _ = server.port


# -- serve -----------------------------------------------------------------------------------


def echo_handler(flow: sf.SocketFlow) -> None:
    while isinstance(result := flow.read(), Ok):
        assert flow.write(result.value) == Ok(None)


def test_serve_two_hundred_concurrent_echo_flows_close_cleanly() -> None:
    count = 200
    together = threading.Barrier(count, timeout=TIMEOUT)

    def client(n: int) -> tuple[FlowState, object, bytes, bytes]:
        flow = sf.connect(HOST, port)
        try:
            together.wait()  # all 200 connections are open at once
            data = pattern(8 * 1024, seed=n)
            for i in range(0, len(data), 2048):
                assert flow.write(data[i:i + 2048]) == Ok(None)
            flow.shutdown(Shutdown.WRITE)
            echoed, end = read_to_end(flow)
            assert end == Eof()
            flow.close(timeout=TIMEOUT)
            return flow.state, flow.error, echoed, data
        finally:
            flow.abort()

    with sf.serve(echo_handler, HOST, 0) as server:
        port = server.port
        clients = [Background(partial(client, n), name=f"client-{n}") for n in range(count)]
        results = [c.join() for c in clients]
    for state, error, echoed, data in results:
        assert state is FlowState.CLOSED
        assert error is None
        assert echoed == data


def test_serve_closes_the_flow_when_the_handler_returns() -> None:
    seen: list[ReadResult] = []

    def handler(flow: sf.SocketFlow) -> None:
        seen.append(flow.read())  # then return without closing

    with sf.serve(handler, HOST, 0) as server:
        flow = sf.connect(HOST, server.port)
        assert flow.write(b"hi") == Ok(None)
        assert flow.read() == Eof()  # the server's close sent EOF
        flow.close(timeout=TIMEOUT)
        assert flow.state is FlowState.CLOSED
        assert flow.error is None
    assert seen == [Ok(b"hi")]


def test_leaving_serve_with_an_endless_grace_waits_for_the_handlers() -> None:
    """``grace=math.inf``: leaving the ``with`` block waits for running handlers, however
    long, and aborts nothing."""
    seen: list[ReadResult] = []

    def handler(flow: sf.SocketFlow) -> None:
        seen.append(flow.read())

    with sf.serve(handler, HOST, 0, grace=math.inf) as server:
        flow = sf.connect(HOST, server.port)
        wait_until(lambda: any(server._connections.values()), "the handler to run")

        def write_once_leaving() -> None:
            wait_until(lambda: server._stopping, "the server to be left")
            assert flow.write(b"late") == Ok(None)
            flow.close(timeout=TIMEOUT)

        late = Background(write_once_leaving)
    late.join()
    assert seen == [Ok(b"late")]
    assert (flow.state, flow.error) == (FlowState.CLOSED, None)


@pytest.mark.expect_log("sansflow", "connection handler")
def test_serve_aborts_and_logs_when_the_handler_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    def handler(flow: sf.SocketFlow) -> None:
        flow.read()
        raise RuntimeError("handler bug")

    with caplog.at_level(logging.ERROR, logger="sansflow"), \
            sf.serve(handler, HOST, 0) as server:
        flow = sf.connect(HOST, server.port)
        try:
            assert flow.write(b"trigger") == Ok(None)
            result = flow.read()
            assert isinstance(result, Error)
            assert result.error.kind is ErrorKind.RESET
        finally:
            flow.abort()
    failures = [r for r in caplog.records if r.exc_info and r.name == "sansflow"]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)


def test_leaving_serve_aborts_handlers_still_running_after_the_grace() -> None:
    results: list[ReadResult] = []
    started = threading.Event()

    def handler(flow: sf.SocketFlow) -> None:
        started.set()
        results.append(flow.read())  # the client never sends

    client_sock: socket.socket | None = None
    try:
        with sf.serve(handler, HOST, 0, grace=0.1) as server:
            client_sock = socket.create_connection((HOST, server.port))
            client_sock.settimeout(TIMEOUT)
            assert started.wait(TIMEOUT)
        assert len(results) == 1
        assert isinstance(results[0], Error)
        assert results[0].error.kind is ErrorKind.ABORTED
        with pytest.raises(ConnectionResetError):
            client_sock.recv(1)
    finally:
        if client_sock is not None:
            client_sock.close()


# -- the one API: with, for, names, connect, unix, serve_forever -------------------------------


class Boom(Exception):
    pass


def test_with_closes_on_a_normal_exit_and_aborts_on_an_exception() -> None:
    with flow_and_peer() as (flow, peer):
        with flow as entered:
            assert entered is flow
            assert flow.write(b"bye") == Ok(None)
            peer.shutdown(socket.SHUT_WR)
        assert (flow.state, flow.error) == (FlowState.CLOSED, None)
        assert recv_to_end(peer) == b"bye"  # then EOF: a clean close
    with flow_and_peer() as (flow, peer):
        with pytest.raises(Boom), flow:
            raise Boom
        result = flow.read()
        assert isinstance(result, Error)
        assert result.error.kind is ErrorKind.ABORTED
        with pytest.raises(ConnectionResetError):
            peer.recv(1)


def test_for_yields_data_until_eof_and_raises_broken_flow_error_at_an_error() -> None:
    with flow_and_peer() as (flow, peer):
        peer.sendall(b"one")
        peer.shutdown(socket.SHUT_WR)
        assert b"".join(flow) == b"one"
    with flow_and_peer() as (flow, peer):
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        with pytest.raises(BrokenFlowError) as caught:
            list(flow)
        assert caught.value.error.kind is ErrorKind.RESET
        assert isinstance(caught.value, ConnectionError)


def test_peername_and_sockname_are_taken_when_the_flow_is_made_and_outlive_it() -> None:
    a_sock, b_sock = tcp_sockets()
    names = (a_sock.getpeername(), a_sock.getsockname())
    a, b = sf.wrap(a_sock), sf.wrap(b_sock)
    assert (a.peername, a.sockname) == names
    assert (b.peername, b.sockname) == names[::-1]
    a.abort()
    b.abort()
    assert (a.peername, a.sockname) == names  # the socket is closed: still the same


OPTIONS = {"high_water": HIGH_WATER, "low_water": LOW_WATER, "receive_limit": RECEIVE_LIMIT}


@pytest.mark.parametrize(("name", "expected"), [
    ("connect", {"timeout": None, "ssl": None, "server_hostname": None, **OPTIONS}),
    ("connect_unix", {"timeout": None, "ssl": None, "server_hostname": None, **OPTIONS}),
    ("wrap", OPTIONS),
    ("serve", {"backlog": BACKLOG, "grace": GRACE, "ssl": None,
               "handshake_timeout": HANDSHAKE_TIMEOUT, **OPTIONS}),
    ("serve_unix", {"backlog": BACKLOG, "grace": GRACE, "ssl": None,
                    "handshake_timeout": HANDSHAKE_TIMEOUT, **OPTIONS}),
])
def test_options_are_named_keywords_with_the_shared_defaults(
        name: str, expected: dict[str, object]) -> None:
    """Visible to help() and mypy; a misspelt option is a TypeError naming the function."""
    function = getattr(sf, name)
    parameters = inspect.signature(function).parameters.values()
    assert {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY} == expected
    with pytest.raises(TypeError, match=rf"{name}\(\) got an unexpected keyword"):
        function(*[None] * (len(parameters) - len(expected)), bogus=1)


def test_bad_addresses_and_timeouts_raise_before_any_io() -> None:
    with socket.create_server((HOST, 0)) as listener:  # it would accept: nothing may connect
        port = listener.getsockname()[1]
        with pytest.raises(TypeError, match="port"):
            sf.connect(HOST, str(port))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="host"):
            sf.connect(None, port)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            sf.connect(HOST, port, timeout=-1)
        with pytest.raises(TypeError, match="timeout"):
            sf.connect(HOST, port, timeout="1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="port"):
            sf.serve(echo_handler, HOST, str(port))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="path"):
            sf.connect_unix(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="path"):
            sf.serve_unix(echo_handler, 3)  # type: ignore[arg-type]
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_connect_refused_is_connection_refused_error_naming_host_and_port() -> None:
    with refusing_port() as port, pytest.raises(ConnectionRefusedError) as caught:
        sf.connect(HOST, port)
    assert f"connection refused by {HOST}:{port}" in str(caught.value)


def test_connect_to_a_name_that_does_not_resolve_is_gaierror_naming_it() -> None:
    with pytest.raises(socket.gaierror) as caught:
        sf.connect("nowhere.invalid", 80)
    assert "nowhere.invalid:80" in str(caught.value)


def test_connect_timeout_is_timeout_error_naming_host_and_port() -> None:
    with full_backlog_port() as port, pytest.raises(TimeoutError) as caught:
        sf.connect(HOST, port, timeout=0.1)
    assert str(caught.value) == (f"[Errno {errno.ETIMEDOUT}] connect to {HOST}:{port} "
                                 "timed out after 0.1 s")


def test_a_timeout_that_passed_during_the_lookup_connects_nowhere() -> None:
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(TimeoutError, match="timed out after 1e-09 s"):
            sf.connect(HOST, port, timeout=1e-9)
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection was even attempted


def resolving_to(*ports: int) -> Callable[..., list[tuple[object, ...]]]:
    """A ``getaddrinfo`` that resolves any name to 127.0.0.1 on each of ``ports`` in turn."""
    def getaddrinfo(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (HOST, port))
                for port in ports]
    return getaddrinfo


def test_connect_tries_each_address_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    with refusing_port() as refused, refusing_port() as refused_too, \
            sf.serve(echo_handler, HOST, 0) as server:
        monkeypatch.setattr(socket, "getaddrinfo", resolving_to(refused, server.port))
        with sf.connect("several.test", 80) as flow:
            assert flow.peername == (HOST, server.port)
        monkeypatch.setattr(socket, "getaddrinfo", resolving_to(refused, refused_too))
        with pytest.raises(ConnectionRefusedError,
                           match=r"refused by several\.test:80 \(all 2 addresses\)"):
            sf.connect("several.test", 80)


def test_the_timeout_is_for_the_whole_connect_not_each_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first address takes all the time: the connect times out without trying the next
    (each address with its own timeout would end with its refusal)."""
    with full_backlog_port() as silent, refusing_port() as refused:
        monkeypatch.setattr(socket, "getaddrinfo", resolving_to(silent, refused))
        with pytest.raises(TimeoutError, match=r"connect to two\.test:80 timed out after 0\.1 s"):
            sf.connect("two.test", 80, timeout=0.1)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_connect_and_serve_over_ipv6() -> None:
    with sf.serve(echo_handler, "::1", 0) as server, sf.connect("::1", server.port) as flow:
        assert flow.peername[:2] == ("::1", server.port)
        assert flow.write(b"over IPv6") == Ok(None)
        flow.shutdown(Shutdown.WRITE)
        assert b"".join(flow) == b"over IPv6"
    with refusing_port("::1") as port, pytest.raises(ConnectionRefusedError,
                                                     match=rf"\[::1\]:{port}"):
        sf.connect("::1", port)


def test_serve_on_host_none_listens_on_every_interface() -> None:
    hosts = [HOST, "::1"] if has_ipv6_loopback() else [HOST]
    with sf.serve(echo_handler, None, 0) as server:
        for host in hosts:
            with sf.connect(host, server.port) as flow:
                assert flow.write(host.encode()) == Ok(None)
                flow.shutdown(Shutdown.WRITE)
                assert b"".join(flow) == host.encode()


@pytest.fixture
def unix_path() -> Iterator[str]:
    """A path for an AF_UNIX socket, short enough for sun_path."""
    with tempfile.TemporaryDirectory() as directory:
        yield os.path.join(directory, "flow.sock")


def test_connect_unix_and_serve_unix(unix_path: str) -> None:
    with sf.serve_unix(echo_handler, unix_path) as server:
        assert server.path == unix_path
        with pytest.raises(RuntimeError, match="path, not a port"):
            _ = server.port
        with sf.connect_unix(Path(unix_path)) as flow:
            assert flow.peername == unix_path
            assert flow.writev([b"over ", b"AF_UNIX"]) == Ok(None)
            flow.shutdown(Shutdown.WRITE)
            assert b"".join(flow) == b"over AF_UNIX"
        assert (flow.state, flow.error) == (FlowState.CLOSED, None)
    assert not os.path.exists(unix_path)  # the server removes the socket file it made


def test_serve_unix_replaces_a_stale_socket_file(unix_path: str) -> None:
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(unix_path)  # a server that ended without removing its file
    with sf.serve_unix(echo_handler, unix_path), sf.connect_unix(unix_path) as flow:
        assert flow.write(b"x") == Ok(None)
        assert read_exactly(flow, 1) == b"x"


def test_connect_unix_failures_name_the_path(unix_path: str) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(unix_path)):
        sf.connect_unix(unix_path)
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(unix_path)  # not listening
        with pytest.raises(ConnectionRefusedError, match=re.escape(unix_path)):
            sf.connect_unix(unix_path, timeout=TIMEOUT)


def test_connect_unix_to_a_full_backlog_times_out(unix_path: str) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(unix_path)
        listener.listen(0)
        fillers = []
        try:
            while True:  # fill the backlog until a connect would have to wait
                filler = socket.socket(socket.AF_UNIX)
                fillers.append(filler)
                filler.setblocking(False)
                if filler.connect_ex(unix_path) == errno.EAGAIN:
                    break
            with pytest.raises(TimeoutError, match=re.escape(f"connect to {unix_path} timed")):
                sf.connect_unix(unix_path, timeout=0.05)
        finally:
            for filler in fillers:
                filler.close()


def test_serve_forever_returns_once_a_handler_closes_the_server() -> None:
    def stop_serving(flow: sf.SocketFlow) -> None:
        assert flow.read() == Ok(b"stop")
        server.close()  # from the handler's own thread: it does not wait for itself
        assert flow.write(b"stopped") == Ok(None)

    server = sf.serve(stop_serving, HOST, 0)
    with pytest.raises(RuntimeError, match="with statement"):
        server.serve_forever()
    with server:
        with sf.connect(HOST, server.port) as flow:
            assert flow.write(b"stop") == Ok(None)
            server.serve_forever()
            assert b"".join(flow) == b"stopped"
        with pytest.raises(ConnectionRefusedError):
            sf.connect(HOST, server.port)  # no longer listening
    server.serve_forever()  # closed: returns at once


# -- resources -------------------------------------------------------------------------------


def test_no_file_descriptor_or_thread_is_left_behind() -> None:
    fds = open_fds()
    threads = threading.active_count()
    for _ in range(3):
        with sf.serve(echo_handler, HOST, 0) as server:
            flows = [sf.connect(HOST, server.port) for _ in range(20)]
            for n, flow in enumerate(flows):
                assert flow.write(b"%d" % n) == Ok(None)
            for n, flow in enumerate(flows):
                assert read_exactly(flow, len(b"%d" % n)) == b"%d" % n
            for flow in flows[:10]:
                flow.close(timeout=TIMEOUT)
            for flow in flows[10:]:
                flow.abort()
    wait_until(lambda: open_fds() <= fds, "every socket to be closed")
    # The flusher thread exits once idle; then the count is back where it was.
    wait_until(lambda: threading.active_count() <= threads, "every thread to end")


def test_the_flusher_thread_exits_when_idle() -> None:
    with flow_pair() as (a, b):
        assert a.write(b"x") == Ok(None)
        assert a.write(b"y") == Ok(None)
        assert read_exactly(b, 2) == b"xy"
    wait_until(lambda: all(t.name != FLUSHER_NAME for t in threading.enumerate()),
               "the flusher thread to exit")


# -- examples --------------------------------------------------------------------------------


def load_example(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_echo_examples_talk_to_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    server_example = load_example("socket_echo_server")
    client_example = load_example("socket_echo_client")
    ports: queue.Queue[int] = queue.Queue()
    stop = threading.Event()
    serving = Background(partial(server_example.main, ["--port", "0"], ready=ports.put,
                                 stop=stop))
    try:
        port = ports.get(timeout=TIMEOUT)
        assert client_example.main(["--port", str(port), "hello", "echo"]) == 0
    finally:
        stop.set()
        assert serving.join() == 0
    out = capsys.readouterr().out
    assert f"echo server listening on 127.0.0.1:{port}" in out
    assert "hello echo\n" in out


def test_a_read_whose_flush_meets_a_reset_answers_the_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A read first sends what is queued; when that send finds the connection reset, the
    flow has ended (and let go of its socket) before the read would receive: it answers the
    error instead of receiving on a socket that is gone."""
    monkeypatch.setattr(socket_flow, "FLUSH_DELAY", 60.0)  # the write stays queued for read()
    with flow_and_peer() as (flow, peer):
        assert flow.write(b"request") == Ok(None)
        assert flow.queued == len(b"request")
        reset(peer)
        time.sleep(0.05)  # the RST arrives
        result = flow.read()
        assert isinstance(result, Error)
        assert result.error.kind in (ErrorKind.RESET, ErrorKind.BROKEN_PIPE)
        assert flow.state is FlowState.CLOSED


def test_a_server_is_entered_once() -> None:
    server = sf.serve(echo_handler, HOST, 0)
    with server, pytest.raises(RuntimeError, match="entered once"), server:
        pass


def test_wrap_takes_a_socket_with_a_timeout_as_a_blocking_one() -> None:
    """A socket with a timeout would poll before every recv: the flow makes it blocking and
    does its own waiting."""
    ours, theirs = tcp_sockets()
    ours.settimeout(5)
    with sf.wrap(ours) as flow, theirs:
        assert ours.gettimeout() is None
        theirs.sendall(b"hello")
        theirs.shutdown(socket.SHUT_WR)
        assert flow.read() == Ok(b"hello")
        assert flow.read() == Eof()
