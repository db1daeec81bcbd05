"""``wrap()`` on every adapter, for sockets that are not a healthy connected stream.

A socket that cannot carry a flow at all (listening, never connected, not a stream, closed) is a
programming mistake: ``ValueError`` at ``wrap()``, the socket left to its owner as it was. A
connection that already ended before ``wrap()`` (the peer reset it, or sent its EOF) is an I/O
outcome: ``wrap()`` gives back a flow, whose reads return what the peer sent, then how it ended.

The sockets are made and their state checked before any adapter sees them (a loopback RST or
FIN is waited for with ``poll``, never with a sleep); each adapter then gets its own copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import select
import socket
import struct
import termios
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pytest
import trio
from loopback import reset

from sansflow import Eof, Error, ErrorKind, FlowError, FlowState, Ok, ReadResult, WriteResult
from sansflow import error_message as message_of
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop does not exist on Windows
    uvloop = None  # type: ignore[assignment]

HOST = "127.0.0.1"
ADAPTERS = ["asyncio", "uvloop", "trio", "socket"] if uvloop is not None else [
    "asyncio", "trio", "socket"]
WAIT = 10.0  # seconds: the bound on every wait for the kernel, never an expectation
T = TypeVar("T")


# -- the adapters behind one face -------------------------------------------------------------


class AsyncFlow(Protocol):
    async def read(self, max_bytes: int | None = None) -> ReadResult: ...
    async def write(self, data: bytes) -> WriteResult: ...
    async def close(self, timeout: float | None = None) -> None: ...
    async def abort(self) -> None: ...
    @property
    def state(self) -> FlowState: ...
    @property
    def error(self) -> FlowError | None: ...


@dataclass
class Session:
    """What a flow over a wrapped socket did: every read up to the first that was not ``Ok``,
    the answer to one write, and how the flow ended after ``close()``."""

    reads: list[ReadResult]
    written: WriteResult | None
    state: FlowState
    error: FlowError | None


def run_async(adapter: str, main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on a fresh loop of the adapter's kind, bounded in time."""
    if adapter == "trio":
        async def bounded() -> T:
            with trio.fail_after(WAIT):
                return await main()

        return trio.run(bounded)
    loop = uvloop.new_event_loop() if adapter == "uvloop" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), WAIT))
    finally:
        loop.close()


async def wrap_async(adapter: str, sock: Any, **options: int) -> AsyncFlow:
    if adapter == "trio":
        return await sf_trio.wrap(sock, **options)
    return await sf_asyncio.wrap(sock, **options)


async def use_async(flow: AsyncFlow, reply: bytes) -> Session:
    try:
        reads = [await flow.read()]
        while isinstance(reads[-1], Ok):
            reads.append(await flow.read())
        written = await flow.write(reply) if reply else None
        await flow.close(timeout=WAIT)
        return Session(reads, written, flow.state, flow.error)
    finally:
        await flow.abort()  # nothing happens once CLOSED


def use_socket(flow: sf_socket.SocketFlow, reply: bytes) -> Session:
    try:
        reads = [flow.read()]
        while isinstance(reads[-1], Ok):
            reads.append(flow.read())
        written = flow.write(reply) if reply else None
        flow.close(timeout=WAIT)
        return Session(reads, written, flow.state, flow.error)
    finally:
        flow.abort()


def session(adapter: str, sock: socket.socket, reply: bytes = b"", **options: int) -> Session:
    """Wrap ``sock``, read until a result that is not ``Ok``, write ``reply``, close."""
    if adapter == "socket":
        return use_socket(sf_socket.wrap(sock, **options), reply)

    async def main() -> Session:
        return await use_async(await wrap_async(adapter, sock, **options), reply)

    return run_async(adapter, main)


def wrap_refused(adapter: str, sock: Any) -> ValueError:
    """The ``ValueError`` that ``wrap(sock)`` raises. Should it return a flow instead, the
    flow is aborted (letting go of the socket) before the test fails."""
    if adapter == "socket":
        try:
            flow = sf_socket.wrap(sock)
        except ValueError as exc:
            return checked_message(exc)
        flow.abort()
        pytest.fail(f"wrap() took {sock!r}")

    async def main() -> ValueError:
        try:
            flow = await wrap_async(adapter, sock)
        except ValueError as exc:
            return checked_message(exc)
        await flow.abort()
        pytest.fail(f"wrap() took {sock!r}")

    return run_async(adapter, main)


def checked_message(error: ValueError) -> ValueError:
    assert str(error).startswith("wrap() takes "), error
    return error


# -- sockets in every state -------------------------------------------------------------------


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback pair: (the connecting end, the accepted end)."""
    with socket.create_server((HOST, 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=WAIT)
        listener.settimeout(WAIT)
        server, _ = listener.accept()
    client.settimeout(None)
    server.settimeout(None)
    return client, server


def wait_for(sock: socket.socket, events: int) -> int:
    """Wait (bounded) until one of ``events`` shows on ``sock``; the events that showed."""
    poller = select.poll()
    poller.register(sock, events)
    ready = poller.poll(int(WAIT * 1000))
    assert ready, f"the kernel did not report {events:#x} on {sock!r}"
    return ready[0][1]


def pending_error(sock: socket.socket) -> bool:
    """Whether an error waits on ``sock``, without taking it (``SO_ERROR`` would)."""
    poller = select.poll()
    poller.register(sock, 0)
    ready = poller.poll(0)
    return bool(ready and ready[0][1] & select.POLLERR)


def peer_reset(side: str, sent: bytes) -> socket.socket:
    """The ``side`` end of a connection whose peer sent ``sent`` and then reset it."""
    client, server = tcp_pair()
    ours, peer = (server, client) if side == "accepted" else (client, server)
    if sent:
        peer.sendall(sent)
        # Our kernel has the bytes before the RST follows them.
        wait_for(ours, select.POLLIN)
    reset(peer)
    wait_for(ours, select.POLLERR)
    with pytest.raises(OSError, match="not connected") as caught:
        ours.getpeername()  # on Linux, as for a socket never connected
    assert caught.value.errno == errno.ENOTCONN
    return ours


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=["accepted", "connecting"])
def side(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


# -- programming mistakes: ValueError, the socket untouched ----------------------------------


def listening() -> socket.socket:
    return socket.create_server((HOST, 0))


def never_connected() -> socket.socket:
    return socket.socket()


def bound_never_connected() -> socket.socket:
    sock = socket.socket()
    sock.bind((HOST, 0))
    return sock


def refused() -> socket.socket:
    """A socket whose connect() failed (nothing listens on the port)."""
    with socket.socket() as unused:
        unused.bind((HOST, 0))
        port = unused.getsockname()[1]
    sock = socket.socket()
    with pytest.raises(ConnectionRefusedError):
        sock.connect((HOST, port))
    return sock


def refused_not_yet_checked() -> socket.socket:
    """A non-blocking connect() that failed, its error still waiting in ``SO_ERROR``."""
    with socket.socket() as unused:
        unused.bind((HOST, 0))
        port = unused.getsockname()[1]
    sock = socket.socket()
    sock.setblocking(False)
    assert sock.connect_ex((HOST, port)) in (errno.EINPROGRESS, errno.ECONNREFUSED)
    wait_for(sock, select.POLLERR)
    sock.setblocking(True)
    return sock


def udp_connected() -> socket.socket:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind((HOST, 0))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(other.getsockname())  # has a peer, but is not a stream
    return sock


def udp() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def unix_datagram_pair_end() -> socket.socket:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    right.close()
    return left


def unix_listening() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("")  # Linux's abstract namespace: an autobound name, no file
    sock.listen()
    return sock


def unix_never_connected() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


MISTAKES: dict[str, tuple[Callable[[], socket.socket], str]] = {
    # name: (how to make the socket, a word the message must contain)
    "listening": (listening, "listening"),
    "never connected": (never_connected, "connected"),
    "bound, never connected": (bound_never_connected, "connected"),
    "connect refused": (refused, "connected"),
    "connect refused, error not yet read": (refused_not_yet_checked, "connected"),
    "udp": (udp, "stream"),
    "udp with a peer": (udp_connected, "stream"),
    "unix datagram": (unix_datagram_pair_end, "stream"),
    "unix listening": (unix_listening, "listening"),
    "unix never connected": (unix_never_connected, "connected"),
}


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "non-blocking"])
@pytest.mark.parametrize("case", list(MISTAKES))
def test_wrap_refuses_a_socket_that_is_not_a_connected_stream(
        adapter: str, case: str, blocking: bool) -> None:
    make, word = MISTAKES[case]
    with make() as sock:
        sock.setblocking(blocking)
        timeout = sock.gettimeout()
        assert word in str(wrap_refused(adapter, sock))
        # Left to its owner as it was: open, in the same mode.
        assert sock.fileno() != -1
        assert sock.gettimeout() == timeout
        assert sock.getblocking() is blocking


def test_a_refused_listening_socket_still_accepts(adapter: str) -> None:
    with listening() as sock:
        wrap_refused(adapter, sock)
        with socket.create_connection(sock.getsockname(), timeout=WAIT):
            sock.settimeout(WAIT)
            accepted, _ = sock.accept()
            accepted.close()


def test_wrap_refuses_a_closed_socket(adapter: str) -> None:
    sock = socket.socket()
    sock.close()
    assert "closed" in str(wrap_refused(adapter, sock))


def test_wrap_refuses_a_connect_still_in_progress(adapter: str) -> None:
    # A listener whose accept queue is full drops further SYNs: the connect stays in progress.
    with socket.create_server((HOST, 0), backlog=0) as listener, \
            socket.create_connection(listener.getsockname(), timeout=WAIT), \
            socket.socket() as sock:
        sock.setblocking(False)
        assert sock.connect_ex(listener.getsockname()) == errno.EINPROGRESS
        assert "connect() has not finished" in str(wrap_refused(adapter, sock))
        assert sock.fileno() != -1
        assert sock.getblocking() is False


# -- trio: the socket underneath a SocketStream --------------------------------------------


@pytest.mark.parametrize("case", ["listening", "never connected", "unix listening"])
def test_trio_wrap_checks_the_socket_of_a_socket_stream(case: str) -> None:
    make, word = MISTAKES[case]

    async def main() -> None:
        with make() as sock:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            with pytest.raises(ValueError, match=word):
                await sf_trio.wrap(stream)
            assert sock.fileno() != -1

    trio.run(main)


def test_trio_wrap_refuses_a_socket_stream_over_a_closed_socket() -> None:
    async def main() -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket()))
        await stream.aclose()
        with pytest.raises(ValueError, match="closed"):
            await sf_trio.wrap(stream)

    trio.run(main)


def test_trio_wrap_of_a_reset_socket_stream_reads_the_reset() -> None:
    sock = peer_reset("accepted", b"last words")

    async def main() -> Session:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        return await use_async(await sf_trio.wrap(stream), b"")

    done = trio.run(main)
    assert done.reads[0] == Ok(b"last words")
    assert_reset(done.reads[1])


# -- sockets that work -------------------------------------------------------------------------


def test_wrap_takes_an_af_unix_socketpair_end(adapter: str) -> None:
    ours, peer = socket.socketpair()
    with peer:
        peer.sendall(b"ping")
        peer.shutdown(socket.SHUT_WR)
        done = session(adapter, ours, reply=b"pong")
        assert ours.fileno() == -1  # the flow owned it and closed it
        peer.settimeout(WAIT)
        assert recv_all(peer) == b"pong"
    assert done.reads == [Ok(b"ping"), Eof()]
    assert done.written == Ok(None)
    assert (done.state, done.error) == (FlowState.CLOSED, None)


def test_wrap_takes_a_connection_the_peer_half_closed(adapter: str, side: str) -> None:
    client, server = tcp_pair()
    ours, peer = (server, client) if side == "accepted" else (client, server)
    with peer:
        peer.sendall(b"request")
        peer.shutdown(socket.SHUT_WR)
        wait_for(ours, select.POLLRDHUP)  # the FIN is in: our kernel says CLOSE_WAIT
        done = session(adapter, ours, reply=b"reply")
        assert ours.fileno() == -1
        peer.settimeout(WAIT)
        assert recv_all(peer) == b"reply"  # then our EOF
    assert done.reads == [Ok(b"request"), Eof()]
    assert done.written == Ok(None)
    assert (done.state, done.error) == (FlowState.CLOSED, None)


# -- connections that ended before wrap(): a flow that says how ----------------------------


def assert_reset(result: object) -> None:
    assert isinstance(result, Error), result
    assert result.error.kind is ErrorKind.RESET
    assert "ECONNRESET" in message_of(result.error)


@pytest.mark.parametrize("sent", [b"", b"last words"], ids=["no data", "data first"])
def test_wrap_of_a_reset_connection_reads_the_reset(adapter: str, side: str, sent: bytes) -> None:
    sock = peer_reset(side, sent)
    assert pending_error(sock)
    done = session(adapter, sock, reply=b"too late")
    assert sock.fileno() == -1
    assert done.reads[:-1] == ([Ok(sent)] if sent else [])
    assert_reset(done.reads[-1])
    assert done.written == done.reads[-1]  # the same error for writes
    assert done.state is FlowState.CLOSED


def test_wrap_of_a_reset_connection_whose_error_was_already_read(adapter: str, side: str) -> None:
    sock = peer_reset(side, b"last words")
    # The caller looked at the pending error: the kernel now reports a plain EOF on recv,
    # and only TCP_INFO still tells this socket from one that was never connected.
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET
    assert not pending_error(sock)
    done = session(adapter, sock)
    assert done.reads[:-1] == [Ok(b"last words")]
    assert_reset(done.reads[-1])
    assert done.state is FlowState.CLOSED


def test_wrap_of_a_connection_the_peer_ended_then_reset(adapter: str) -> None:
    """The peer's clean EOF came first: reads end with ``Eof()``; the reset that followed
    ends the flow with an error all the same (our direction can no longer send: EPIPE)."""
    client, server = tcp_pair()
    client.sendall(b"complete")
    client.shutdown(socket.SHUT_WR)
    wait_for(server, select.POLLRDHUP)
    reset(client)
    wait_for(server, select.POLLERR)
    done = session(adapter, server, reply=b"too late")
    assert done.reads == [Ok(b"complete"), Eof()]
    assert done.state is FlowState.CLOSED
    assert done.error is not None
    assert done.error.kind is ErrorKind.BROKEN_PIPE
    # Queued, then failing as it is sent, or failing at once where it went straight out.
    assert done.written in (Ok(None), Error(done.error))


@pytest.mark.parametrize("error_read", [False, True], ids=["error waiting", "error read"])
def test_wrap_of_a_reset_connection_with_more_than_the_receive_limit(
        adapter: str, error_read: bool) -> None:
    """Everything the kernel kept before the reset is readable, in order, then the reset."""
    client, server = tcp_pair()
    with server:
        client.setblocking(False)
        sent = bytes(range(256)) * (16 << 10)  # 4 MiB: more than the kernel takes
        taken = 0
        with contextlib.suppress(BlockingIOError):
            while taken < len(sent):
                taken += client.send(sent[taken:])
        wait_for(server, select.POLLIN)
        reset(client)  # what is still in the client's send buffer is lost
        wait_for(server, select.POLLERR)
        kept = received_bytes(server)
        if error_read:
            assert server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET
        limit = 4096
        assert kept > limit
        done = session(adapter, server, receive_limit=limit, low_water=0, high_water=1)
    data = b"".join(result.value for result in done.reads if isinstance(result, Ok))
    assert data == sent[:kept]
    assert_reset(done.reads[-1])


def received_bytes(sock: socket.socket) -> int:
    """The bytes waiting in ``sock``'s receive queue."""
    return int(struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0" * 4))[0])


def recv_all(sock: socket.socket) -> bytes:
    return b"".join(iter_recv(sock))


def iter_recv(sock: socket.socket) -> Iterator[bytes]:
    while chunk := sock.recv(65536):
        yield chunk
