"""The anyio adapter, on both of anyio's backends: the conformance kit over loopback TCP (and
a few checks over AF_UNIX), against the asyncio and trio adapters, and what the kit does not
reach (wrapping, resets, the end of the run, servers, TLS, copy and proxy).

Each test runs under ``anyio.fail_after``, so that nothing can hang; no test depends on how
long something takes.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from loopback import read_to_end, reset

from sansflow import (
    AsyncFlow,
    Eof,
    Error,
    ErrorKind,
    FlowError,
    FlowState,
    Ok,
    ReadResult,
    Shutdown,
)
from sansflow.adapters import anyio as sf
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import trio as sf_trio
from sansflow.testing import check_anyio_byte_stream
from sansflow.testing import conformance as kit

HOST = "127.0.0.1"
BACKENDS = ["asyncio", "trio"]
TIMEOUT = 20.0
ABORTED = Error(FlowError(ErrorKind.ABORTED))

Pair = tuple[kit.AsyncFlowLike, kit.AsyncFlowLike]


def run(backend: str, main: Callable[[], Awaitable[None]], timeout: float = TIMEOUT) -> None:
    async def bounded() -> None:
        with anyio.fail_after(timeout):
            await main()

    anyio.run(bounded, backend=backend)


def tcp_sockets() -> tuple[socket.socket, socket.socket]:
    """A connected loopback pair (client, server), both blocking."""
    with socket.create_server((HOST, 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


async def read_all(flow: AsyncFlow, max_bytes: int | None = None) -> tuple[bytes, ReadResult]:
    """Everything until Eof or Error, and that final result."""
    chunks = []
    while type(result := await flow.read(max_bytes)) is Ok:
        chunks.append(result.value)
    return b"".join(chunks), result


async def echo(flow: AsyncFlow) -> None:
    async for data in flow:
        await flow.write(data)


async def write_until_stuck(flow: AsyncFlow, limit: int = 32 * 2**20) -> int:
    """Write until a write waits (the peer does not read), the way the conformance kit
    finds out: no write completes for a while. Returns the bytes written; fails once
    ``limit`` bytes went through without a wait."""
    written = 0
    while written < limit:
        with anyio.move_on_after(0.05):
            assert await flow.write(b"x" * 65536) == Ok(None)
            written += 65536
            continue
        return written  # the write waited, and was cancelled: nothing of it is queued
    raise AssertionError(f"no write waited: {written} bytes accepted")


def received(peer: socket.socket) -> str:
    """Everything a plain ``peer`` receives, then how its stream ended."""
    peer.settimeout(TIMEOUT)
    data = b""
    try:
        while chunk := peer.recv(65536):
            data += chunk
    except OSError as exc:
        return f"{len(data)} bytes then {type(exc).__name__}"
    return f"{len(data)} bytes then EOF"


# -- the conformance kit -------------------------------------------------------------------


async def tcp_pair() -> tuple[sf.AnyioFlow, sf.AnyioFlow]:
    """``connect`` for one end, ``wrap`` of the accepted socket for the other: both ways of
    making a flow over TCP."""
    with socket.create_server((HOST, 0)) as listener:
        listener.settimeout(TIMEOUT)
        a = await sf.connect(HOST, listener.getsockname()[1])
        server, _ = listener.accept()
    return a, await sf.wrap(server)


async def unix_pair() -> tuple[sf.AnyioFlow, sf.AnyioFlow]:
    left, right = socket.socketpair()
    return await sf.wrap(left), await sf.wrap(right)


def small_limits_pair() -> Callable[[], Awaitable[Pair]]:
    async def make() -> Pair:
        limits = {"high_water": 4096, "low_water": 1024, "receive_limit": 4096}
        client, server = tcp_sockets()
        return await sf.wrap(client, **limits), await sf.wrap(server, **limits)

    return make


async def asyncio_adapter_peer() -> Pair:
    """An anyio flow against an asyncio adapter flow, in the same (asyncio) loop."""
    client, server = tcp_sockets()
    return await sf.wrap(client), await sf_asyncio.wrap(server)


async def trio_adapter_peer() -> Pair:
    """An anyio flow against a trio adapter flow, in the same trio run."""
    client, server = tcp_sockets()
    return await sf.wrap(client), await sf_trio.wrap(server)


UNIX_CHECKS = ("round_trip", "duplex", "close_waits_for_peer", "water_marks",
               "abort_wakes_waiters", "peer_reset_wakes_waiters", "cancelled_close")
LIMITED = ("duplex", "large_backlog", "water_marks", "write_returns_when_queued",
           "shutdown_during_write", "many_buffers", "cancelled_write")
INTERACTING = ("duplex", "close_waits_for_peer", "state_half_closed_remote", "large_backlog",
               "water_marks", "close_deadline", "abort_wakes_waiters", "peer_reset_wakes_waiters",
               "cancelled_close")
SETUPS: list[tuple[str, str, Callable[[], Awaitable[Pair]], tuple[str, ...] | None]] = [
    ("tcp", "asyncio", tcp_pair, None),
    ("tcp", "trio", tcp_pair, None),
    ("unix", "asyncio", unix_pair, UNIX_CHECKS),
    ("unix", "trio", unix_pair, UNIX_CHECKS),
    ("small-limits", "asyncio", small_limits_pair(), LIMITED),
    ("asyncio-adapter-peer", "asyncio", asyncio_adapter_peer, INTERACTING),
    ("trio-adapter-peer", "trio", trio_adapter_peer, INTERACTING),
    ("asyncio-adapter-peer-swapped", "asyncio", kit.swapped(asyncio_adapter_peer), INTERACTING),
    ("trio-adapter-peer-swapped", "trio", kit.swapped(trio_adapter_peer), INTERACTING),
]


@pytest.mark.parametrize(("backend", "make_pair", "check"), [
    pytest.param(backend, make_pair, check, id=f"{name}-{backend}-{check.name}")
    for name, backend, make_pair, only in SETUPS
    for check in kit.CHECKS
    if only is None or check.name in only
])
def test_the_conformance_kit_passes(backend: str, make_pair: Callable[[], Awaitable[Pair]],
                                    check: kit.Check) -> None:
    anyio.run(partial(kit.run_check, check, make_pair, timeout=TIMEOUT), backend=backend)


# -- wrapping ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrap_takes_an_anyio_socket_stream(backend: str) -> None:
    async def main() -> None:
        with socket.create_server((HOST, 0)) as listener:
            stream = await anyio.connect_tcp(HOST, listener.getsockname()[1])
            theirs, _ = listener.accept()
        with theirs:
            flow = await sf.wrap(stream)
            assert flow.stream is stream
            assert flow.peername == theirs.getsockname()
            assert await flow.write(b"over a stream") == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert theirs.recv(100) == b"over a stream"
            theirs.sendall(b"back")
            theirs.shutdown(socket.SHUT_WR)
            assert await read_all(flow) == (b"back", Eof())
            await flow.close()
            assert (flow.state, flow.error) == (FlowState.CLOSED, None)

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_connection_reset_before_wrap_reads_its_data_then_the_reset(backend: str) -> None:
    """The peer sent data, then reset, before ``wrap()``: the flow reads the data, then
    ``RESET``, over a plain socket (whose reset error may still wait or was read already)
    and over an anyio stream alike."""
    async def main() -> None:
        for read_the_error in (False, True):
            ours, theirs = tcp_sockets()
            theirs.sendall(b"last words")
            reset(theirs)
            await anyio.sleep(0.01)  # loopback delivers at once; let the RST land
            if read_the_error:
                assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
            flow = await sf.wrap(ours)
            assert flow.peername is None
            data, end = await read_all(flow)
            assert data == b"last words"
            assert isinstance(end, Error)
            assert end.error.kind is ErrorKind.RESET
            assert ours.fileno() == -1  # the flow needed the socket no more
            await flow.close()  # changes nothing
            assert flow.state is FlowState.CLOSED
            assert await flow.write(b"x") == end

        with socket.create_server((HOST, 0)) as listener:
            stream = await anyio.connect_tcp(HOST, listener.getsockname()[1])
            theirs, _ = listener.accept()
        reset(theirs)
        await anyio.sleep(0.01)
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        assert raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
        flow = await sf.wrap(stream)
        _, end = await read_all(flow)
        assert isinstance(end, Error)
        assert end.error.kind is ErrorKind.RESET

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrap_refuses_what_cannot_carry_a_flow_and_leaves_it_as_it_was(backend: str) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match=r"socket\.socket or an anyio ByteStream, not int"):
            await sf.wrap(3)  # type: ignore[arg-type]
        with socket.create_server((HOST, 0)) as listener:
            with pytest.raises(ValueError, match="not a listening one"):
                await sf.wrap(listener)
            assert listener.fileno() >= 0
            assert listener.getblocking()
        ours, theirs = tcp_sockets()
        with ours, theirs, pytest.raises(ValueError, match="receive_limit"):
            await sf.wrap(ours, receive_limit=0)

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stream_that_cannot_half_close_ends_both_directions_at_our_eof(
        backend: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """anyio's ``TLSStream`` has no ``send_eof``: our EOF closes it (with its close_notify),
    and the flow ends with a ``TRANSPORT`` error since nothing more can be received."""
    seen: list[tuple[bytes, ReadResult]] = []

    async def main() -> None:
        async def handler(flow: sf.AnyioFlow) -> None:
            seen.append(await read_all(flow))

        async with sf.serve(handler, HOST, 0, ssl=server_ctx) as server:
            stream = await anyio.connect_tcp(HOST, server.port, ssl_context=client_ctx,
                                             tls_hostname="localhost")
            flow = await sf.wrap(stream)
            assert flow.peername == (HOST, server.port)  # the TLS stream's socket's
            assert await flow.write(b"one way") == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert flow.state is FlowState.CLOSED
            assert flow.error is not None
            assert flow.error.kind is ErrorKind.TRANSPORT
            assert "cannot half-close" in str(flow.error)

    run(backend, main)
    assert seen == [(b"one way", Eof())]


class ScriptedStream(anyio.abc.ByteStream):
    """A stream with no socket under it: ``receive`` hands out ``incoming``, then its EOF (or,
    without one, waits until the stream is closed); ``send`` and ``send_eof`` raise what they
    are given."""

    def __init__(self, incoming: list[bytes], *, eof: bool = True,
                 send_fails: BaseException | None = None,
                 eof_fails: BaseException | None = None) -> None:
        self.incoming = incoming
        self.eof = eof
        self.send_fails = send_fails
        self.eof_fails = eof_fails
        self.sent: list[bytes] = []
        self.closed: list[str] = []  # "gracefully", or "forcefully" when cancelled
        self.closing = anyio.Event()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        if self.incoming:
            return self.incoming.pop(0)
        if self.eof:
            raise anyio.EndOfStream
        await self.closing.wait()  # as anyio's streams do, closing wakes a waiting receive
        raise anyio.ClosedResourceError

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        if self.send_fails is not None:
            raise self.send_fails
        self.sent.append(item)

    async def send_eof(self) -> None:
        await anyio.lowlevel.checkpoint()
        if self.eof_fails is not None:
            raise self.eof_fails

    async def aclose(self) -> None:
        # anyio.aclose_forcefully calls aclose in a cancelled scope: its deadline has passed.
        forcefully = anyio.current_effective_deadline() == -math.inf
        self.closed.append("forcefully" if forcefully else "gracefully")
        self.closing.set()
        await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stream_that_cannot_half_close_ends_cleanly_after_the_peers_eof(backend: str) -> None:
    async def main() -> None:
        stream = ScriptedStream([b"request"], eof_fails=NotImplementedError())
        flow = await sf.wrap(stream)
        assert (flow.peername, flow.sockname) == (None, None)
        assert await read_all(flow) == (b"request", Eof())
        assert await flow.write(b"answer") == Ok(None)
        await flow.close()
        assert (flow.state, flow.error) == (FlowState.CLOSED, None)
        assert (stream.sent, stream.closed) == ([b"answer"], ["gracefully"])

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stream_that_raises_something_unexpected_ends_the_flow(backend: str) -> None:
    """Whatever a send raises ends the flow as a ``TRANSPORT`` error with that cause; nothing
    escapes the sender (an error log record would fail the test)."""
    async def main() -> None:
        stream = ScriptedStream([], eof=False, send_fails=RuntimeError("out of order"))
        flow = await sf.wrap(stream)
        assert await flow.write(b"lost") == Ok(None)
        result = await flow.read()
        assert isinstance(result, Error)
        assert result.error.kind is ErrorKind.TRANSPORT
        assert isinstance(result.error.cause, RuntimeError)
        assert "sending failed with RuntimeError: out of order" in str(result.error)
        assert stream.closed == ["forcefully"]

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_eof_fails_the_flow_with_the_oserror_under_it(backend: str) -> None:
    async def main() -> None:
        failure = anyio.BrokenResourceError()
        failure.__cause__ = ConnectionResetError(104, "Connection reset by peer")
        stream = ScriptedStream([], eof=False, eof_fails=failure)
        flow = await sf.wrap(stream)
        await flow.shutdown(Shutdown.WRITE)
        assert flow.state is FlowState.CLOSED
        assert flow.error is not None
        assert flow.error.kind is ErrorKind.RESET
        assert flow.error.cause is failure.__cause__
        assert stream.closed == ["forcefully"]

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_detached_flow_with_input_unread_still_delivers_what_it_sent(backend: str) -> None:
    """FlowByteStream.aclose() lets the flow go without waiting for the peer; a socket
    closed with unread input would send a reset, which drops what the kernel had not sent
    yet, so the unread input is dropped first and the peer reads our data and a FIN."""
    async def main() -> None:
        ours, theirs = tcp_sockets()
        theirs.setblocking(True)
        stream = sf.FlowByteStream(await sf.wrap(ours))
        theirs.sendall(b"never read")
        data = bytes(range(256)) * (16 * 1024)  # 4 MiB: far more than the kernel's buffers

        got: list[bytes | OSError] = []

        async def peer() -> None:
            got.append(await anyio.to_thread.run_sync(read_to_end, theirs))

        async with anyio.create_task_group() as group:
            group.start_soon(peer)
            await stream.send(data)
            await stream.aclose()
        theirs.close()
        assert got == [data]

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_abort_closes_a_stream_without_a_socket_forcefully(backend: str) -> None:
    async def main() -> None:
        stream = ScriptedStream([], eof=False)
        flow = await sf.wrap(stream)
        await flow.abort()
        assert await flow.read() == ABORTED
        assert stream.closed == ["forcefully"]

    run(backend, main)


# -- resets and the end of the run ---------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_abort_resets_the_connection_and_wakes_a_waiting_reader(backend: str) -> None:
    ours, theirs = tcp_sockets()

    async def main() -> None:
        flow = await sf.wrap(ours)
        results: list[ReadResult] = []

        async def reader() -> None:
            results.append(await flow.read())

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            assert await flow.write(b"dropped?") == Ok(None)
            await flow.abort()
        assert results == [ABORTED]
        assert flow.state is FlowState.CLOSED
        await flow.abort()  # nothing more happens

    run(backend, main)
    with theirs:
        assert received(theirs).endswith("then ConnectionResetError")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_flow_still_sending_when_the_run_ends_is_reset(backend: str) -> None:
    """The sender outlives the main task: the run's end cancels it, and it aborts the flow,
    so the peer sees a reset rather than a clean end after part of the data."""
    ours, theirs = tcp_sockets()

    async def main() -> None:
        flow = await sf.wrap(ours)
        await write_until_stuck(flow)  # the sender is stuck in a send

    run(backend, main)
    with theirs:
        assert received(theirs).endswith("then ConnectionResetError")
    assert ours.fileno() == -1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_peer_reset_fails_a_waiting_writer_with_its_oserror(backend: str) -> None:
    ours, theirs = tcp_sockets()

    async def main() -> None:
        flow = await sf.wrap(ours)
        await write_until_stuck(flow)
        reset(theirs)
        result = await flow.write(b"more")
        assert isinstance(result, Error)
        assert result.error.kind in (ErrorKind.RESET, ErrorKind.BROKEN_PIPE)
        assert isinstance(result.error.cause, OSError)
        assert await flow.read() == result

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_accepted_flow_that_does_not_read_holds_its_peer_back(backend: str) -> None:
    """A server's flow takes in no more than its receive limit while its handler does not
    read: the client's writes end up waiting."""
    async def main() -> None:
        async def idle(flow: sf.AnyioFlow) -> None:
            await anyio.sleep_forever()

        async with sf.serve(idle, HOST, 0, grace=0, receive_limit=65536) as server:
            flow = await sf.connect(HOST, server.port)
            await write_until_stuck(flow)
            await flow.abort()

    run(backend, main)


# -- servers -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_server_runs_under_task_group_start(backend: str) -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            port = await tasks.start(sf.serve(echo, HOST, 0, backlog=8).run)
            async with await sf.connect(HOST, port) as flow:
                await flow.write(b"started")
                await flow.shutdown(Shutdown.WRITE)
                assert await read_all(flow) == (b"started", Eof())
            with tempfile.TemporaryDirectory() as directory:
                path = str(Path(directory) / "flow.sock")
                assert await tasks.start(sf.serve_unix(echo, path).run) == path
                async with await sf.connect_unix(path) as flow:
                    await flow.write(b"over AF_UNIX")
                    await flow.shutdown(Shutdown.WRITE)
                    assert await read_all(flow) == (b"over AF_UNIX", Eof())
                tasks.cancel_scope.cancel()
            assert not Path(path).exists()  # the server removed its socket file

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_server_runs_once_and_an_error_leaves_its_block_as_it_is(backend: str) -> None:
    class Boom(Exception):
        pass

    async def main() -> None:
        server = sf.serve(echo, HOST, 0)
        with pytest.raises(Boom):
            async with server:
                raise Boom
        with pytest.raises(RuntimeError, match="runs once"):
            async with server:
                pass

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_connect_unix_to_nowhere_raises_the_shared_errors(backend: str) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "nothing.sock"
            with pytest.raises(FileNotFoundError, match=r"nothing\.sock"):
                await sf.connect_unix(path)
            with socket.socket(socket.AF_UNIX) as bound:
                bound.bind(str(path))  # bound, not listening
                with pytest.raises(ConnectionRefusedError, match=r"nothing\.sock"):
                    await sf.connect_unix(path)

    run(backend, main)


# -- TLS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_half_close_between_two_anyio_flows(
        backend: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """The client's shutdown(WRITE) sends close_notify; the server reads the request, then
    Eof(), and answers after it; both end cleanly."""
    ended: list[ReadResult] = []

    async def answer_after_eof(flow: sf.AnyioFlow) -> None:
        request, end = await read_all(flow)
        ended.append(end)
        await flow.write(b"got %d bytes" % len(request))

    async def main() -> None:
        async with sf.serve(answer_after_eof, HOST, 0, ssl=server_ctx) as server:
            flow = await sf.connect(HOST, server.port, ssl=client_ctx, timeout=10,
                                    server_hostname="localhost")
            assert flow.tls is not None
            assert flow.tls.server_hostname == "localhost"
            assert await flow.write(b"x" * 300_000) == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"got 300000 bytes", Eof())
            await flow.close(timeout=10)
            assert flow.error is None
        assert ended == [Eof()]

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_against_the_other_adapters_servers(
        backend: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """An anyio client against the trio adapter's TLS server (trio backend) or the asyncio
    adapter's (asyncio backend), in the same run."""
    other = sf_trio if backend == "trio" else sf_asyncio
    data = bytes(range(256)) * 4096  # 1 MiB

    async def main() -> None:
        async with other.serve(echo, HOST, 0, ssl=server_ctx) as server:
            flow = await sf.connect(HOST, server.port, ssl=client_ctx)

            async def send() -> None:
                for at in range(0, len(data), 100_000):
                    assert await flow.write(data[at:at + 100_000]) == Ok(None)
                await flow.shutdown(Shutdown.WRITE)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send)
                assert await read_all(flow) == (data, Eof())
            await flow.close(timeout=10)
            assert flow.error is None

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_starttls_with_wrap_tls(backend: str, server_ctx: ssl.SSLContext,
                                client_ctx: ssl.SSLContext) -> None:
    async def starttls_echo(flow: sf.AnyioFlow) -> None:
        assert await flow.read(9) == Ok(b"STARTTLS\n")
        assert await flow.write(b"GO\n") == Ok(None)
        await echo(await sf.wrap_tls(flow, server_ctx, server_side=True))

    async def main() -> None:
        async with sf.serve(starttls_echo, HOST, 0) as server:
            plain = await sf.connect(HOST, server.port)
            assert await plain.write(b"STARTTLS\n") == Ok(None)
            assert await plain.read() == Ok(b"GO\n")
            flow = await sf.wrap_tls(plain, client_ctx, server_hostname="localhost")
            assert flow is plain
            assert flow.tls is not None
            assert await flow.write(b"secret") == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"secret", Eof())
            await flow.close(timeout=10)
            assert flow.error is None
            with pytest.raises(TypeError, match="takes a AnyioFlow"):
                await sf.wrap_tls(object(), client_ctx)  # type: ignore[arg-type]

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_handshake_raises_and_the_server_logs_it(
        backend: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
        caplog: pytest.LogCaptureFixture) -> None:
    handled: list[object] = []

    async def handler(flow: sf.AnyioFlow) -> None:
        handled.append(flow)

    async def main() -> None:
        async with sf.serve(handler, HOST, 0, ssl=server_ctx) as server:
            with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
                await sf.connect(HOST, server.port, ssl=client_ctx, server_hostname="wrong.test")
            with anyio.fail_after(5):
                while not caplog.records:  # the server's side ends on its own task
                    await anyio.sleep(0.01)

    with caplog.at_level(logging.WARNING, logger="sansflow"):
        run(backend, main)
    assert handled == []
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "BAD_CERTIFICATE" in caplog.records[0].getMessage()  # the alert, not a reset


@pytest.mark.parametrize("backend", BACKENDS)
def test_silent_peers_time_the_handshake_out(backend: str, server_ctx: ssl.SSLContext,
                                             client_ctx: ssl.SSLContext,
                                             caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        with socket.create_server((HOST, 0)) as listener:  # accepts, never answers
            port = listener.getsockname()[1]
            with pytest.raises(TimeoutError, match=f"{HOST}:{port}"):
                await sf.connect(HOST, port, ssl=client_ctx, timeout=0.2)
        async with sf.serve(echo, HOST, 0, ssl=server_ctx, handshake_timeout=0.1) as server:
            silent = await sf.connect(HOST, server.port)  # plain TCP: never says hello
            clients.append(silent.sockname[1])
            result = await silent.read()
            assert isinstance(result, Error)
            assert result.error.kind is ErrorKind.RESET
            await silent.close()

    clients: list[int] = []
    with caplog.at_level(logging.WARNING, logger="sansflow"):
        run(backend, main)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].getMessage() == (
        f"sansflow: TLS handshake failed: 127.0.0.1:{clients[0]}: "
        "TLS handshake timed out after 0.1 s")


# -- copy and proxy ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_proxy_relays_both_ways_and_copy_passes_the_end_on(backend: str) -> None:
    async def main() -> None:
        async with sf.serve(echo, HOST, 0) as upstream:
            client, front = await tcp_pair()
            back = await sf.connect(HOST, upstream.port)
            async with anyio.create_task_group() as tasks:
                results: list[Any] = []

                async def relay() -> None:
                    results.append(await sf.proxy(front, back))

                tasks.start_soon(relay)
                assert await client.write(b"through the proxy") == Ok(None)
                await client.shutdown(Shutdown.WRITE)
                assert await read_all(client) == (b"through the proxy", Eof())
            result = results[0]
            assert (result.a_to_b.write_bytes, result.b_to_a.write_bytes) == (17, 17)
            await client.close(timeout=5)

            source, sink = await tcp_pair()
            assert await source.write(b"copied") == Ok(None)
            await source.shutdown(Shutdown.WRITE)
            stats = await sf.copy(sink, sink)  # echoes sink's input back to source
            assert stats.write_bytes == 6
            assert await read_all(source) == (b"copied", Eof())

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_idle_proxy_aborts_both_flows(backend: str) -> None:
    async def main() -> None:
        client, front = await tcp_pair()
        back, server = await tcp_pair()
        result = await sf.proxy(front, back, idle_timeout=0.05)
        assert result.error is not None
        assert result.error.kind is ErrorKind.TIMED_OUT
        for peer in (client, server):
            end = await peer.read()
            assert isinstance(end, Error) or end == Eof()
            await peer.abort()

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flow_byte_stream_over_anyio_flows_keeps_anyios_stream_contract(backend: str) -> None:
    """``FlowByteStream``, re-exported here, over this adapter's flows passes the anyio
    stream checker."""
    async def make() -> tuple[sf.FlowByteStream, sf.FlowByteStream]:
        a, b = await tcp_pair()
        return sf.FlowByteStream(a), sf.FlowByteStream(b)

    anyio.run(check_anyio_byte_stream, make, backend=backend)
