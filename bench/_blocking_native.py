"""The blocking peers: ``sendall``/``recv`` and ``sendmsg``/``recv_into``, a thread per end.

Sockets stay in true blocking mode (a socket timeout would turn every call into poll + call and
slow the very path being measured); a watchdog shuts every socket down at the deadline instead,
which wakes any thread blocked on it.

Over TLS the sendall/recv peer is an ``ssl.SSLSocket`` at both ends. It has no half-close:
where the plain run half-closes, the TLS run ends TLS (``unwrap``: close_notify both ways), and
a client that wants an echo reads it first.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from time import monotonic, perf_counter, perf_counter_ns
from types import TracebackType

from ._common import (
    BACKLOG,
    HOST,
    READ_SIZE,
    Measurement,
    Params,
    Stack,
    bulk_result,
    check,
    connections_result,
    payload,
    pingpong_result,
    small_writes_result,
)
from ._tls import SERVER_NAME, contexts

__all__ = ["Watchdog", "sendall_stack", "sendmsg_stack"]

Bytes = bytes | memoryview


class DeadlineExceeded(TimeoutError):
    """A threaded run did not finish in time."""


class Watchdog:
    """Bounds a threaded run: at the deadline, whatever could block is woken up.

    Registered sockets are shut down; registered wakers (a flow's ``abort``, say) are called.
    """

    def __init__(self, timeout: float) -> None:
        self.deadline = monotonic() + timeout
        self.fired = False
        self._wakers: list[Callable[[], object]] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True

    def add(self, sock: socket.socket) -> socket.socket:
        self.add_waker(lambda: sock.shutdown(socket.SHUT_RDWR))
        return sock

    def add_waker(self, wake: Callable[[], object]) -> None:
        with self._lock:
            self._wakers.append(wake)

    def remaining(self) -> float:
        return max(0.0, self.deadline - monotonic())

    def _fire(self) -> None:
        self.fired = True
        self.shutdown_all()

    def shutdown_all(self) -> None:
        with self._lock:
            wakers = list(self._wakers)
        for wake in wakers:
            # OSError: already closed, so nothing can be blocked on it.
            with contextlib.suppress(OSError):
                wake()

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        if self.fired and exc_type is not DeadlineExceeded:
            raise DeadlineExceeded("the run missed its deadline") from exc

    def join(self, threads: list[threading.Thread]) -> None:
        for thread in threads:
            thread.join(self.remaining())
        if any(thread.is_alive() for thread in threads):
            self._fire()
            raise DeadlineExceeded("a thread did not finish before the deadline")


def nodelay(sock: socket.socket) -> socket.socket:
    # asyncio, trio and anyio all set TCP_NODELAY; without it ping-pong measures Nagle.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Variant:
    """How one blocking style sends and receives."""

    def sender(self, sock: socket.socket) -> Callable[[Bytes], object]:
        raise NotImplementedError

    def receiver(self, sock: socket.socket) -> Callable[[], bytes]:
        raise NotImplementedError

    def sink(self, sock: socket.socket) -> int:
        raise NotImplementedError

    def echo(self, sock: socket.socket) -> int:
        raise NotImplementedError


class _Sendall(_Variant):
    def sender(self, sock: socket.socket) -> Callable[[Bytes], object]:
        return sock.sendall

    def receiver(self, sock: socket.socket) -> Callable[[], bytes]:
        recv = sock.recv
        return lambda: recv(READ_SIZE)

    def sink(self, sock: socket.socket) -> int:
        recv = sock.recv
        received = 0
        while data := recv(READ_SIZE):
            received += len(data)
        return received

    def echo(self, sock: socket.socket) -> int:
        recv, sendall = sock.recv, sock.sendall
        received = 0
        while data := recv(READ_SIZE):
            received += len(data)
            sendall(data)
        return received


class _Sendmsg(_Variant):
    def sender(self, sock: socket.socket) -> Callable[[Bytes], object]:
        sendmsg = sock.sendmsg

        def send(data: Bytes) -> None:
            sent = sendmsg((data,))
            if sent < len(data):
                view = memoryview(data)
                while sent < len(view):
                    sent += sendmsg((view[sent:],))

        return send

    def receiver(self, sock: socket.socket) -> Callable[[], bytes]:
        recv_into = sock.recv_into
        buffer = memoryview(bytearray(READ_SIZE))

        def receive() -> bytes:
            return bytes(buffer[: recv_into(buffer)])

        return receive

    def sink(self, sock: socket.socket) -> int:
        recv_into = sock.recv_into
        buffer = bytearray(READ_SIZE)
        received = 0
        while n := recv_into(buffer):
            received += n
        return received

    def echo(self, sock: socket.socket) -> int:
        recv_into = sock.recv_into
        send = self.sender(sock)
        buffer = memoryview(bytearray(READ_SIZE))
        received = 0
        while n := recv_into(buffer):
            received += n
            send(buffer[:n])
        return received


class ThreadedServer:
    """Accepts ``count`` connections, one thread each, running ``role`` until it returns."""

    def __init__(
        self, role: Callable[[socket.socket], int], count: int, dog: Watchdog, tls: bool
    ) -> None:
        self.role = role
        self.count = count
        self.dog = dog
        self.tls = tls
        self.tally: list[int] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.listener = dog.add(socket.create_server((HOST, 0), backlog=BACKLOG))
        self.port = int(self.listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.listener.close()
        if exc_type is not None:
            # The run failed: wake every handler so that none is left blocked on its socket.
            self.dog.shutdown_all()
            for thread in self.threads:
                thread.join(1.0)

    def _accept(self) -> None:
        try:
            # Only the listener has a timeout: ``accept`` is not on the measured path.
            self.listener.settimeout(self.dog.remaining())
            for _ in range(self.count):
                conn, _addr = self.listener.accept()
                conn.setblocking(True)
                nodelay(self.dog.add(conn))
                thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
                thread.start()
                self.threads.append(thread)
        except BaseException as exc:
            self.errors.append(exc)

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self.tls:  # the handshake runs here, in the connection's own thread
                conn = self.dog.add(contexts()[1].wrap_socket(conn, server_side=True))
            with conn:
                self.tally.append(self.role(conn))
                if isinstance(conn, ssl.SSLSocket):
                    conn.unwrap()  # the client's close_notify was the EOF: answer it
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> None:
        self.dog.join([self._acceptor])
        self.dog.join(self.threads)
        if self.errors:
            raise self.errors[0]


def _connect(port: int, dog: Watchdog, tls: bool) -> socket.socket:
    sock = nodelay(dog.add(socket.create_connection((HOST, port))))
    if tls:
        return dog.add(contexts()[0].wrap_socket(sock, server_hostname=SERVER_NAME))
    return sock


def _end_sending(v: _Variant, sock: socket.socket) -> int:
    """Half-close and read to EOF (returns the bytes read); over TLS, end TLS instead."""
    if isinstance(sock, ssl.SSLSocket):
        sock.unwrap()
        return 0
    sock.shutdown(socket.SHUT_WR)
    return v.sink(sock)


def _read_exactly(v: _Variant, sock: socket.socket, nbytes: int) -> int:
    receive, received = v.receiver(sock), 0
    while received < nbytes:
        data = receive()
        check(bool(data), "EOF mid echo")
        received += len(data)
    return received


def _stream(v: _Variant, p: Params, chunk: bytes, count: int) -> tuple[float, int]:
    with Watchdog(p.timeout) as dog, ThreadedServer(v.sink, 1, dog, p.tls) as server:
        with _connect(server.port, dog, p.tls) as sock:
            send = v.sender(sock)
            start = perf_counter()
            for _ in range(count):
                send(chunk)
            extra = _end_sending(v, sock)
            elapsed = perf_counter() - start
        server.join()
    check(extra == 0, "the sink server sent data")
    check(len(server.tally) == 1, "the server did not see EOF")
    return elapsed, server.tally[0]


def _bulk(v: _Variant, p: Params) -> Measurement:
    elapsed, received = _stream(v, p, payload(p.bulk_write), p.bulk_bytes // p.bulk_write)
    return bulk_result(p, elapsed, received)


def _small(v: _Variant, p: Params) -> Measurement:
    elapsed, received = _stream(v, p, payload(p.small_size), p.small_writes)
    return small_writes_result(p, elapsed, received)


def _pingpong(v: _Variant, p: Params) -> Measurement:
    message = payload(p.pingpong_size)
    samples = [0] * p.pingpong_trips
    received = 0
    with Watchdog(p.timeout) as dog, ThreadedServer(v.echo, 1, dog, p.tls) as server:
        with _connect(server.port, dog, p.tls) as sock:
            send, recv = v.sender(sock), v.receiver(sock)
            start = perf_counter()
            for i in range(p.pingpong_trips):
                t0 = perf_counter_ns()
                send(message)
                echo = recv()
                while len(echo) < len(message):
                    more = recv()
                    check(bool(more), "EOF mid round trip")
                    echo += more
                samples[i] = perf_counter_ns() - t0
                check(echo == message, "echo differs from what was sent")
                received += len(echo)
            elapsed = perf_counter() - start
            received += _end_sending(v, sock)
        server.join()
    check(len(server.tally) == 1, "the server did not see EOF")
    return pingpong_result(p, elapsed, samples, server.tally[0], received)


def _connections(v: _Variant, p: Params) -> Measurement:
    data = payload(p.connection_bytes)
    received: list[int] = []
    errors: list[BaseException] = []

    with (
        Watchdog(p.timeout) as dog,
        ThreadedServer(v.echo, p.connections, dog, p.tls) as server,
    ):

        def one() -> None:
            try:
                with _connect(server.port, dog, p.tls) as sock:
                    v.sender(sock)(data)
                    echo = _read_exactly(v, sock, len(data)) if p.tls else 0
                    received.append(echo + _end_sending(v, sock))
            except BaseException as exc:
                errors.append(exc)

        clients = [threading.Thread(target=one, daemon=True) for _ in range(p.connections)]
        start = perf_counter()
        for thread in clients:
            thread.start()
        dog.join(clients)
        elapsed = perf_counter() - start
        server.join()
    if errors:
        raise errors[0]
    check(len(server.tally) == p.connections, "a server connection did not see EOF")
    check(len(received) == p.connections, "a client did not finish")
    check(all(r == p.connection_bytes for r in received), "an echo came back short")
    return connections_result(p, elapsed, sum(server.tally), sum(received))


def _stack(v: _Variant) -> Stack:
    return {
        "bulk": lambda p: _bulk(v, p),
        "pingpong": lambda p: _pingpong(v, p),
        "small_writes": lambda p: _small(v, p),
        "connections": lambda p: _connections(v, p),
    }


def sendall_stack() -> Stack:
    return _stack(_Sendall())


def sendmsg_stack() -> Stack:
    return _stack(_Sendmsg())
