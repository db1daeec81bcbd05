"""The asyncio adapter, on asyncio's own loop and on uvloop, over loopback TCP and socketpairs.

Each test is a plain function that runs a coroutine on a fresh loop of each kind, bounded by a
timeout, and checks afterwards that no task, file descriptor or loop error was left behind.
Waits are bounded; no test depends on how long something takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.util
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from loopback import full_backlog_port, has_ipv6_loopback, reset

from sansflow import (
    BusyError,
    Eof,
    Error,
    ErrorKind,
    FlowError,
    FlowState,
    Ok,
    ReceiveState,
    SendState,
    Shutdown,
    error_message,
)
from sansflow.adapters import asyncio as sf

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop does not exist on Windows
    uvloop = None

HOST = "127.0.0.1"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ABORTED = Error(FlowError(ErrorKind.ABORTED))
LOOPS = ["asyncio", "uvloop"] if uvloop is not None else ["asyncio"]
TRANSPORTS = ["tcp", "socketpair"]
FD_DIR = "/proc/self/fd"
# The most one transport read hands over (asyncio's selector loop: 256 KiB; uvloop: 256,000
# bytes): reading pauses at the receive limit, so the buffer may pass it by one read.
TRANSPORT_READ = 256 * 1024


# -- running a test on each kind of loop ----------------------------------------------------


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        assert uvloop is not None
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def open_fds() -> int:
    """Open file descriptors, less libuv's reserved ``/dev/null`` (opened once per loop)."""
    if not os.path.isdir(FD_DIR):
        return 0
    count = 0
    for name in os.listdir(FD_DIR):
        with contextlib.suppress(OSError):
            count += os.readlink(os.path.join(FD_DIR, name)) != os.devnull
    return count


def run(kind: str, main: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    """Run ``main()`` on a fresh loop of ``kind``; fail on a timeout, a task or a file
    descriptor left behind, or anything reported to the loop's exception handler."""
    loop = new_loop(kind)
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))

    async def checked() -> None:
        before = open_fds()
        await asyncio.wait_for(main(), timeout)
        # A closed socket's descriptor goes once the loop has run its close callbacks.
        for _ in range(200):
            if open_fds() <= before:
                break
            await asyncio.sleep(0.01)
        assert open_fds() == before, "a file descriptor was left open"
        assert asyncio.all_tasks() == {asyncio.current_task()}, "a task was left behind"

    try:
        loop.run_until_complete(checked())
    finally:
        with contextlib.suppress(Exception):
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            if leftover:
                loop.run_until_complete(asyncio.wait(leftover))
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert not reported, f"the loop reported: {reported}"


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


# -- transports ------------------------------------------------------------------------------


def tcp_sockets(bufsize: int | None = None) -> tuple[socket.socket, socket.socket]:
    """A connected loopback pair; ``bufsize`` shrinks both kernel buffers before connecting."""
    with socket.create_server((HOST, 0)) as listener:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if bufsize is not None:
            for sock in (listener, client):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        client.settimeout(10)
        client.connect(listener.getsockname())
        listener.settimeout(10)
        server, _ = listener.accept()
    client.settimeout(None)
    server.settimeout(None)
    return client, server


def unix_sockets() -> tuple[socket.socket, socket.socket]:
    """A connected AF_UNIX pair made through a listening socket (not ``socketpair()``)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "listener")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen()
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(path)
            server, _ = listener.accept()
    return client, server


def raw_sockets(transport: str, bufsize: int | None = None
                ) -> tuple[socket.socket, socket.socket]:
    if transport == "tcp":
        return tcp_sockets(bufsize)
    if transport == "unix":
        assert bufsize is None
        return unix_sockets()
    left, right = socket.socketpair()
    if bufsize is not None:
        for sock in (left, right):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
    return left, right


@contextlib.asynccontextmanager
async def flow_pair(transport: str = "tcp", bufsize: int | None = None,
                    **options: int) -> AsyncIterator[tuple[sf.AsyncioFlow, sf.AsyncioFlow]]:
    """Two wrapped, connected flows; both are aborted on the way out unless already CLOSED."""
    left, right = raw_sockets(transport, bufsize)
    a = await sf.wrap(left, **options)
    b = await sf.wrap(right, **options)
    try:
        yield a, b
    finally:
        for flow in (a, b):
            await flow.abort()


@contextlib.asynccontextmanager
async def flow_and_socket(transport: str = "tcp", bufsize: int | None = None, **options: int
                          ) -> AsyncIterator[tuple[sf.AsyncioFlow, socket.socket]]:
    """A flow and, as its peer, a plain non-blocking socket driven by the test."""
    left, right = raw_sockets(transport, bufsize)
    right.setblocking(False)
    flow = await sf.wrap(left, **options)
    try:
        yield flow, right
    finally:
        await flow.abort()
        right.close()


# -- small helpers -------------------------------------------------------------------------


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def read_exactly(flow: sf.AsyncioFlow, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        result = await flow.read(size - len(data))
        assert isinstance(result, Ok), result
        data += result.value
    return bytes(data)


async def read_all(flow: sf.AsyncioFlow, max_bytes: int | None = None
                   ) -> tuple[bytes, Eof | Error]:
    data = bytearray()
    while True:
        result = await flow.read(max_bytes)
        if not isinstance(result, Ok):
            return bytes(data), result
        assert 0 < len(result.value) <= (max_bytes or len(result.value))
        data += result.value


async def until(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Let the loop run until ``condition()`` holds (failing after ``limit`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.002)


def send_state_of(flow: sf.AsyncioFlow) -> SendState:
    """``flow.send_state``, out of reach of the type checker's narrowing from an earlier
    assert."""
    return flow.send_state


async def settle(rounds: int = 20) -> None:
    """Let callbacks and I/O that are already due run (a few loop iterations)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


async def sock_recv_all(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while chunk := await loop.sock_recv(sock, 65536):
        data += chunk
    return bytes(data)


async def fill_until_blocked(flow: sf.AsyncioFlow, chunk: bytes) -> bytes:
    """Write ``chunk`` until one more would wait (the queue high, counting what the
    transport holds); return what was written."""
    written = bytearray()
    while not (flow.queued > flow.low_water and flow.queued + len(chunk) > flow.high_water):
        assert await asyncio.wait_for(flow.write(chunk), 5) == Ok(None)
        written += chunk
    return bytes(written)


def snapshot(flow: sf.AsyncioFlow) -> tuple[object, ...]:
    return (flow.state, flow.send_state, flow.receive_state, flow.error, flow.queued,
            flow.buffered)


def is_reset(result: object) -> bool:
    return isinstance(result, Error) and result.error.kind in (
        ErrorKind.RESET, ErrorKind.BROKEN_PIPE)


# -- round trips, half-close, close --------------------------------------------------------


def test_round_trip_both_ways(loop_kind: str, transport: str) -> None:
    async def main() -> None:
        async with flow_pair(transport) as (a, b):
            assert await a.write(b"hello") == Ok(None)
            assert await read_exactly(b, 5) == b"hello"
            assert await b.writev([b"wor", bytearray(b"ld"), memoryview(b"!!")]) == Ok(None)
            assert await read_exactly(a, 7) == b"world!!"
            assert await a.write(b"abcdef") == Ok(None)
            await until(lambda: b.buffered == 6, "six bytes arrive")
            assert await b.read(4) == Ok(b"abcd")
            assert await b.read() == Ok(b"ef")
            await asyncio.gather(a.close(), b.close())
            for flow in (a, b):
                assert (flow.state, flow.error, flow.transport) == (FlowState.CLOSED, None, None)
                assert await flow.read() == Eof()
                assert await flow.write(b"x") == Eof()

    run(loop_kind, main)


def test_connect_and_serve_round_trip(loop_kind: str) -> None:
    async def main() -> None:
        seen: list[bytes] = []

        async def handler(flow: sf.AsyncioFlow) -> None:
            data, end = await read_all(flow)
            seen.append(data)
            assert end == Eof()
            assert flow.state is FlowState.HALF_CLOSED_REMOTE
            assert await flow.write(data[::-1]) == Ok(None)

        async with sf.serve(handler, HOST, 0) as server:
            assert server.sockets
            assert server.port == server.sockets[0].getsockname()[1]
            flow = await sf.connect(HOST, server.port)
            assert await flow.write(b"stressed") == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert flow.send_state is SendState.EOF_SENT
            assert await read_all(flow) == (b"desserts", Eof())
            await flow.close()
            assert (flow.state, flow.error) == (FlowState.CLOSED, None)
        assert seen == [b"stressed"]

    run(loop_kind, main)


def test_first_write_of_a_burst_goes_straight_through(loop_kind: str, transport: str) -> None:
    async def main() -> None:
        async with flow_and_socket(transport) as (flow, peer):
            loop = asyncio.get_running_loop()

            async def receive(size: int) -> bytes:
                data = bytearray()
                while len(data) < size:
                    chunk = await asyncio.wait_for(loop.sock_recv(peer, size - len(data)), 10)
                    assert chunk, "EOF too early"
                    data += chunk
                return bytes(data)

            # None of these awaits yields to the loop: the first write is handed to the
            # transport at once, the rest of the burst waits for one flush.
            assert await flow.write(b"first") == Ok(None)
            assert flow.queued == 0
            assert await flow.write(b"|second") == Ok(None)
            assert await flow.writev([b"|third", bytearray(b"|4")]) == Ok(None)
            assert await flow.write(bytearray(b"|fifth")) == Ok(None)
            assert flow.queued == len(b"|second|third|4|fifth")
            assert await receive(26) == b"first|second|third|4|fifth"
            assert flow.queued == 0
            # The flush ended that burst: the next write goes straight through again, a
            # writable buffer as the core's copy of it.
            buffer = bytearray(b"mutable")
            assert await flow.write(buffer) == Ok(None)
            assert flow.queued == 0
            buffer[:] = b"CHANGED"
            assert await receive(7) == b"mutable"
            # Nothing of this flow has run on the loop since (no flush, no input, no wait):
            # still the same burst, so this one is queued behind a flush.
            await settle()
            assert await flow.write(b"later") == Ok(None)
            assert flow.queued == 5
            assert await receive(5) == b"later"
            # That flush ended it: a vectored write goes straight through, in one call.
            assert await flow.writev([b"vec", bytearray(b"tor"), memoryview(b"ed")]) == Ok(None)
            assert flow.queued == 0
            assert await receive(8) == b"vectored"

    run(loop_kind, main)


def test_each_loop_gets_the_cheaper_receive_path(loop_kind: str) -> None:
    async def main() -> None:
        # asyncio's own loops read a plain Protocol's input with recv(256 KiB), costly for
        # small reads; uvloop hands a plain Protocol exact-size bytes with one callback.
        async with flow_pair() as (a, b):
            buffered = isinstance(a._driver, asyncio.BufferedProtocol)
            assert buffered is (loop_kind == "asyncio")
            assert await a.write(b"x" * 70_000) == Ok(None)
            assert await read_exactly(b, 70_000) == b"x" * 70_000

    run(loop_kind, main)


@pytest.mark.parametrize("first", ["a", "b"])
def test_half_close_either_way_then_write_after_peer_eof(loop_kind: str, transport: str,
                                                         first: str) -> None:
    async def main() -> None:
        async with flow_pair(transport) as pair:
            closer, other = pair if first == "a" else pair[::-1]
            assert await closer.write(b"last words") == Ok(None)
            await closer.shutdown(Shutdown.WRITE)
            assert closer.state is FlowState.HALF_CLOSED_LOCAL
            assert closer.send_state is SendState.EOF_SENT
            assert await closer.write(b"more") == Eof()
            assert await read_all(other) == (b"last words", Eof())
            assert other.state is FlowState.HALF_CLOSED_REMOTE
            assert await other.read() == Eof()  # sticky
            # The other direction is still open: writes after the peer's EOF all arrive.
            big = payload(300_000)
            assert await other.write(big) == Ok(None)
            assert await other.writev([b"and ", b"done"]) == Ok(None)
            assert await read_exactly(closer, len(big) + 8) == big + b"and done"
            await other.close()
            assert (other.state, other.error) == (FlowState.CLOSED, None)
            assert await read_all(closer) == (b"", Eof())
            await closer.close()
            assert (closer.state, closer.error) == (FlowState.CLOSED, None)

    run(loop_kind, main)


def test_close_waits_for_the_peer_while_input_stays_readable(loop_kind: str,
                                                             transport: str) -> None:
    async def main() -> None:
        async with flow_pair(transport) as (a, b):
            closing = asyncio.ensure_future(a.close())
            assert await read_all(b) == (b"", Eof())  # a's EOF went out...
            await settle()
            assert not closing.done()  # ...but a waits for b's
            assert a.state is FlowState.HALF_CLOSED_LOCAL
            assert await b.write(b"late reply") == Ok(None)
            reader = asyncio.ensure_future(read_all(a))
            await settle()
            assert not closing.done()
            await b.close()
            await asyncio.wait_for(closing, 10)
            assert await reader == (b"late reply", Eof())
            assert (a.state, a.error, a.transport) == (FlowState.CLOSED, None, None)
            await a.close()  # idempotent, returns at once

    run(loop_kind, main)


def test_two_closes_wait_for_the_same_end(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, b):
            first = asyncio.ensure_future(a.close())
            second = asyncio.ensure_future(a.close())
            await settle()
            assert not first.done()
            assert not second.done()
            await b.close()
            await asyncio.wait_for(asyncio.gather(first, second), 10)
            assert (a.state, a.error) == (FlowState.CLOSED, None)

    run(loop_kind, main)


@pytest.mark.parametrize("transport_kind", [*TRANSPORTS, "unix"])
@pytest.mark.parametrize("size", [300 * 1024, 4 * 1024 * 1024])
def test_close_after_a_large_reply_releases_the_transport_once(
        loop_kind: str, transport_kind: str, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    # b's close() writes its EOF while the transport still holds part of the reply, with a's
    # EOF already in: the transport's last flush both finishes b's send side and ends the
    # flow. Releasing the transport from inside that flush made asyncio's selector transport
    # deliver connection_lost twice (the second time logging an AttributeError).
    async def main() -> None:
        # Report loop errors the default way, on the "asyncio" logger, as an application sees.
        asyncio.get_running_loop().set_exception_handler(None)
        async with flow_pair(transport_kind) as (a, b):
            data = payload(size, seed=11)
            assert await b.write(data) == Ok(None)
            reader = asyncio.ensure_future(read_all(a))
            closing = asyncio.ensure_future(a.close())
            await b.close()
            await asyncio.wait_for(closing, 10)
            assert await reader == (data, Eof())
            for flow in (a, b):
                assert (flow.state, flow.error, flow.transport) == (FlowState.CLOSED, None, None)
            await settle()

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run(loop_kind, main)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]


def test_close_deadline_aborts_with_timed_out(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, b):
            assert await a.write(b"data") == Ok(None)
            await a.close(timeout=0.1)  # b never closes
            assert a.state is FlowState.CLOSED
            assert a.error == FlowError(ErrorKind.TIMED_OUT, detail="close() deadline passed")
            assert a.transport is None
            assert await a.read() == Error(a.error)
            assert await a.write(b"x") == Eof()  # our EOF had gone out: that direction ended
            # b got the data and our EOF, then the reset: the EOF stays sticky.
            assert await read_all(b) == (b"data", Eof())
            end = await b.write(b"anyone?")
            while end == Ok(None):
                await asyncio.sleep(0.01)
                end = await b.write(b"anyone?")
            assert is_reset(end), end

    run(loop_kind, main)


def test_eof_is_sent_only_once_the_transport_has_flushed(loop_kind: str,
                                                          transport: str) -> None:
    async def main() -> None:
        # A high water far above the data: all of it goes into the transport at once.
        async with flow_and_socket(transport, bufsize=4096, high_water=1 << 20,
                                   low_water=1 << 18) as (flow, peer):
            data = payload(300_000, seed=6)
            assert await flow.write(data) == Ok(None)
            shutting = asyncio.ensure_future(flow.shutdown(Shutdown.WRITE))
            await settle()
            transport_side = flow.transport
            assert transport_side is not None
            # The transport keeps what the socket did not take; the core counts it queued
            # until the transport has sent it.
            assert 0 < transport_side.get_write_buffer_size() <= flow.queued
            assert not shutting.done()
            assert flow.send_state is SendState.EOF_QUEUED
            assert await sock_recv_all(peer) == data
            await asyncio.wait_for(shutting, 10)
            assert send_state_of(flow) is SendState.EOF_SENT
            peer.shutdown(socket.SHUT_WR)
            await flow.close(timeout=10)
            assert (flow.state, flow.error) == (FlowState.CLOSED, None)

    run(loop_kind, main)


def test_close_deadline_with_data_stuck_in_the_transport_is_an_error(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_and_socket(bufsize=4096, high_water=1 << 20,
                                   low_water=1 << 18) as (flow, peer):
            assert await flow.write(payload(300_000, seed=7)) == Ok(None)
            peer.shutdown(socket.SHUT_WR)  # the peer is done sending, and never reads
            await flow.close(timeout=0.2)
            assert flow.state is FlowState.CLOSED
            assert flow.error is not None
            assert flow.error.kind is ErrorKind.TIMED_OUT  # not a clean close: bytes were lost
            with pytest.raises(ConnectionResetError):
                await sock_recv_all(peer)

    run(loop_kind, main)


def test_close_deadline_zero_and_bad_timeouts(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, _):
            before = snapshot(a)
            for bad in ("1", None.__class__, True, [1]):
                with pytest.raises(TypeError, match="timeout"):
                    await a.close(timeout=bad)  # type: ignore[arg-type]
            for bad_value in (-1, -0.5, float("nan")):
                with pytest.raises(ValueError, match="timeout"):
                    await a.close(timeout=bad_value)
            assert snapshot(a) == before
            await a.close(timeout=0)
            assert a.error is not None
            assert a.error.kind is ErrorKind.TIMED_OUT

    run(loop_kind, main)


# -- abort and resets ------------------------------------------------------------------------


def test_abort_wakes_reader_and_writer_and_peer_sees_reset(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair(bufsize=4096) as (a, b):
            reader = asyncio.ensure_future(a.read())
            chunk = payload(32 * 1024)

            async def write_forever() -> Ok[None] | Eof | Error:
                while True:
                    result = await a.write(chunk)
                    if result != Ok(None):
                        return result

            writer = asyncio.ensure_future(write_forever())
            await until(lambda: a._driver._write_waiter is not None, "the writer waits")
            assert not reader.done()
            await a.abort()
            assert await asyncio.wait_for(reader, 5) == ABORTED
            assert await asyncio.wait_for(writer, 5) == ABORTED
            assert (a.state, a.error, a.transport) == (FlowState.CLOSED, ABORTED.error, None)
            assert a.queued == 0
            _, end = await read_all(b)
            assert isinstance(end, Error)
            assert end.error.kind is ErrorKind.RESET
            assert isinstance(end.error.cause, ConnectionResetError)
            assert "ECONNRESET" in error_message(end.error)
            assert b.transport is None
            assert b.state is FlowState.CLOSED
            await a.abort()  # idempotent
            assert a.error == ABORTED.error

    run(loop_kind, main)


def test_peer_reset_is_an_error_and_data_before_it_is_kept(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_and_socket() as (flow, peer):
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(peer, b"before the reset")
            await until(lambda: flow.buffered == 16, "the data arrives")
            reset(peer)
            await until(lambda: flow.state is FlowState.CLOSED, "the reset arrives")
            assert flow.transport is None
            assert await flow.read() == Ok(b"before the reset")
            end = await flow.read()
            assert isinstance(end, Error)
            assert end.error.kind is ErrorKind.RESET
            assert error_message(end.error) == "connection reset by peer (ECONNRESET)"
            assert getattr(end.error.cause, "errno", None) == errno.ECONNRESET
            assert await flow.read() == end
            assert await flow.write(b"x") == end
            await flow.close()  # no OSError escapes, nothing waits
            assert flow.error is end.error

    run(loop_kind, main)


def test_peer_resets_mid_transfer(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_and_socket(bufsize=8192) as (flow, peer):
            loop = asyncio.get_running_loop()
            chunk = payload(50_000)
            results: list[object] = []

            async def write_until_refused() -> None:
                while True:
                    result = await flow.write(chunk)
                    results.append(result)
                    if result != Ok(None):
                        return

            writer = asyncio.ensure_future(write_until_refused())
            assert len(await loop.sock_recv(peer, 1000)) > 0
            await until(lambda: flow._driver._write_waiter is not None, "the writer waits")
            reset(peer)
            await asyncio.wait_for(writer, 10)
            assert is_reset(results[-1]), results[-1]
            assert all(r == Ok(None) for r in results[:-1])
            assert flow.state is FlowState.CLOSED
            assert flow.transport is None
            assert flow.queued == 0
            assert await flow.read() == results[-1]
            await flow.close(timeout=5)

    run(loop_kind, main)


def test_transport_closed_under_the_flow(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, b):
            assert await b.write(b"kept") == Ok(None)
            await until(lambda: a.buffered == 4, "the data arrives")
            transport = a.transport
            assert transport is not None
            transport.close()
            await until(lambda: a.transport is None, "the transport is released")
            assert a.state is FlowState.CLOSED
            assert a.error is not None
            assert a.error.kind is ErrorKind.TRANSPORT
            assert await read_all(a) == (b"kept", Eof())
            assert await a.write(b"x") == Error(a.error)

    run(loop_kind, main)


# -- backpressure and receive limits -------------------------------------------------------


def test_peer_that_never_reads_holds_the_writer(loop_kind: str, transport: str) -> None:
    async def main() -> None:
        # Water marks unlike asyncio's defaults, so that the transport's limits must follow.
        async with flow_and_socket(transport, bufsize=4096, high_water=20_000,
                                   low_water=5_000) as (flow, _peer):
            chunk = payload(10_000)
            high = flow.high_water
            largest = 0

            async def write_forever() -> None:
                nonlocal largest
                while True:
                    assert await flow.write(chunk) == Ok(None)
                    largest = max(largest, flow.queued)

            writer = asyncio.ensure_future(write_forever())
            await until(lambda: flow._driver._write_waiter is not None, "the writer waits")
            await settle()
            assert not writer.done()
            assert flow._driver._write_paused
            assert flow.queued <= high + len(chunk)
            assert largest <= high + len(chunk)
            transport_side = flow.transport
            assert transport_side is not None
            # The transport's own buffer is bounded too: high water plus one flush.
            assert transport_side.get_write_buffer_size() <= 2 * high + len(chunk)
            queued = flow.queued
            writer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await writer
            assert flow.queued == queued  # the cancelled write queued nothing
            assert not flow._writing

    run(loop_kind, main)


def test_flood_pauses_reading_at_the_receive_limit(loop_kind: str, transport: str) -> None:
    async def main() -> None:
        limit = 100_000
        async with flow_pair(transport, receive_limit=limit) as (a, b):
            data = payload(4 * 1024 * 1024, seed=1)
            sender = asyncio.ensure_future(b.write(data))
            await until(lambda: a._core.reading_paused, "reading pauses")
            await settle()
            assert limit <= a.buffered <= limit + TRANSPORT_READ
            transport_side = a.transport
            assert transport_side is not None
            assert not transport_side.is_reading()
            assert not sender.done() or b.queued > 0 or b.transport is not None
            received = await read_exactly(a, len(data))
            assert received == data
            assert await sender == Ok(None)
            assert transport_side.is_reading()
            await asyncio.gather(a.close(), b.close())
            assert (a.error, b.error) == (None, None)

    run(loop_kind, main)


def test_shutdown_read_discards_and_resumes_a_paused_flow(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair(receive_limit=50_000) as (a, b):
            sender = asyncio.ensure_future(b.write(payload(1_000_000)))
            await until(lambda: a._core.reading_paused, "reading pauses")
            await a.shutdown(Shutdown.READ)
            assert a.receive_state is ReceiveState.DISCARDING
            assert a.buffered == 0
            assert await a.read() == Eof()
            assert await asyncio.wait_for(sender, 10) == Ok(None)
            await b.shutdown(Shutdown.WRITE)
            # a keeps reading (and dropping) until b's EOF.
            await until(lambda: a.receive_state is ReceiveState.EOF_RECEIVED, "b's EOF")
            assert a.state is FlowState.HALF_CLOSED_REMOTE
            assert a.buffered == 0
            assert await a.write(b"still open") == Ok(None)
            assert await b.read() == Ok(b"still open")
            await asyncio.gather(a.close(), b.close())
            assert (a.state, a.error, b.error) == (FlowState.CLOSED, None, None)

    run(loop_kind, main)


def test_shutdown_both(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, b):
            assert await b.write(b"dropped") == Ok(None)
            await until(lambda: a.buffered == 7, "the data arrives")
            await a.shutdown(Shutdown.BOTH)
            assert await a.read() == Eof()
            assert await a.write(b"x") == Eof()
            assert await read_all(b) == (b"", Eof())
            await b.close()
            await a.close()
            assert (a.state, a.error, b.error) == (FlowState.CLOSED, None, None)

    run(loop_kind, main)


@pytest.mark.parametrize("transport_kind", TRANSPORTS)
def test_tiny_socket_buffers_carry_every_byte_once_in_order(loop_kind: str,
                                                            transport_kind: str) -> None:
    async def main() -> None:
        data = payload(4 * 1024 * 1024, seed=2)
        async with flow_pair(transport_kind, bufsize=2048) as (a, b):
            rng = random.Random(3)

            async def send() -> None:
                offset = 0
                while offset < len(data):
                    size = rng.randint(1, 70_000)
                    piece = data[offset:offset + size]
                    kind = rng.randrange(4)
                    if kind == 0:
                        result = await a.write(piece)
                    elif kind == 1:
                        result = await a.write(bytearray(piece))
                    elif kind == 2:
                        result = await a.write(memoryview(piece))
                    else:
                        third = max(1, len(piece) // 3)
                        parts: list[bytes | bytearray | memoryview] = [
                            piece[:third], bytearray(piece[third:2 * third]),
                            memoryview(piece)[2 * third:]]
                        result = await a.writev(iter(parts))
                    assert result == Ok(None)
                    offset += len(piece)
                await a.close()

            async def receive() -> bytes:
                received = bytearray()
                while True:
                    result = await b.read(rng.choice([None, 1, 1000, 65536, 200_000]))
                    if isinstance(result, Eof):
                        await b.close()
                        return bytes(received)
                    assert isinstance(result, Ok), result
                    received += result.value

            _, received = await asyncio.gather(send(), receive())
            assert len(received) == len(data)
            assert received == data
            assert (a.state, a.error, b.state, b.error) == (FlowState.CLOSED, None,
                                                            FlowState.CLOSED, None)

    run(loop_kind, main, timeout=60)


# -- one reader, one writer ------------------------------------------------------------------


def test_second_reader_is_busy(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, b):
            first = asyncio.ensure_future(a.read())
            await settle()
            before = snapshot(a)
            with pytest.raises(BusyError, match="already reading"):
                await a.read()
            assert snapshot(a) == before
            assert await b.write(b"for the first") == Ok(None)
            assert await asyncio.wait_for(first, 5) == Ok(b"for the first")
            assert await b.write(b"next") == Ok(None)
            assert await read_exactly(a, 4) == b"next"  # the guard was released

    run(loop_kind, main)


def test_second_writer_is_busy(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_and_socket(bufsize=4096) as (flow, peer):
            chunk = payload(40_000)
            await fill_until_blocked(flow, chunk)
            blocked = asyncio.ensure_future(flow.write(chunk))
            await until(lambda: flow._driver._write_waiter is not None, "the writer waits")
            before = snapshot(flow)
            with pytest.raises(BusyError, match="already writing"):
                await flow.write(b"x")
            with pytest.raises(BusyError, match="already writing"):
                await flow.writev([b"x"])
            assert snapshot(flow) == before
            # Drain the peer: the first writer goes through.
            loop = asyncio.get_running_loop()
            drained = 0
            while not blocked.done():
                with contextlib.suppress(BlockingIOError):
                    drained += len(peer.recv(1 << 20))
                await asyncio.sleep(0.001)
            assert await blocked == Ok(None)
            assert await flow.write(b"after") == Ok(None)
            assert loop.is_running()

    run(loop_kind, main)


def test_close_may_run_while_a_reader_waits(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, b):
            reader = asyncio.ensure_future(read_all(a))
            closing = asyncio.ensure_future(a.close())
            assert await read_all(b) == (b"", Eof())
            assert await b.write(b"reply") == Ok(None)
            await b.close()
            await asyncio.wait_for(closing, 5)
            assert await reader == (b"reply", Eof())

    run(loop_kind, main)


# -- cancellation --------------------------------------------------------------------------


def test_cancelled_write_queues_all_or_nothing(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_and_socket(bufsize=4096) as (flow, peer):
            chunk = payload(30_000, seed=4)
            sent = await fill_until_blocked(flow, chunk)
            queued = flow.queued
            split: list[bytes | bytearray | memoryview] = [chunk[:10], bytearray(chunk[10:])]
            for attempt in (chunk, split):
                task = asyncio.ensure_future(
                    flow.write(attempt) if isinstance(attempt, bytes) else flow.writev(attempt))
                await until(lambda: flow._driver._write_waiter is not None, "the write waits")
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert flow.queued == queued
            # The stream carries exactly what was written, with no piece of the cancelled ones.
            assert await flow.write(b"THE END") == Ok(None)
            closing = asyncio.ensure_future(flow.close())
            received = await sock_recv_all(peer)
            assert received == sent + b"THE END"
            peer.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(closing, 10)
            assert (flow.state, flow.error) == (FlowState.CLOSED, None)

    run(loop_kind, main)


def test_cancelled_read_loses_nothing(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, b):
            for _ in range(3):
                reader = asyncio.ensure_future(a.read())
                await settle()
                reader.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await reader
            assert await b.write(b"kept") == Ok(None)
            await until(lambda: a.buffered == 4, "the data arrives")
            reader = asyncio.ensure_future(a.read())
            reader.cancel()  # cancelled before it ran: nothing read
            with pytest.raises(asyncio.CancelledError):
                await reader
            assert await a.read() == Ok(b"kept")

    run(loop_kind, main)


def deliver(flow: sf.AsyncioFlow, data: bytes) -> None:
    """Hand ``data`` to the flow's protocol as its transport would, through the callbacks
    the loop uses (a lent buffer on asyncio's own loops, ``data_received`` on uvloop)."""
    driver: Any = flow._driver
    if hasattr(driver, "get_buffer"):
        buffer = driver.get_buffer(len(data))
        buffer[:len(data)] = data
        driver.buffer_updated(len(data))
    else:
        driver.data_received(data)


@pytest.mark.parametrize("then", ["more", "eof", "nothing"])
def test_read_cancelled_with_its_data_in_hand_loses_nothing(loop_kind: str, then: str) -> None:
    # A waiting reader is handed what arrives with its wake-up; cancelled before its task
    # runs, it must put the data back in front of anything that arrived after it.
    async def main() -> None:
        async with flow_pair(receive_limit=4) as (a, _b):
            reader = asyncio.ensure_future(a.read())
            await until(lambda: a._driver._read_waiter is not None, "the read waits")
            deliver(a, b"handed")
            if then == "more":
                deliver(a, b" later")  # uvloop reads several times per poll
            elif then == "eof":
                a._driver.eof_received()
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
            assert a._driver._read_paused  # 6 bytes kept against a limit of 4
            expected = b"handed later" if then == "more" else b"handed"
            assert await read_exactly(a, len(expected)) == expected
            assert not a._driver._read_paused
            if then == "eof":
                assert await a.read() == Eof()

    run(loop_kind, main)


def test_a_waiting_read_gets_at_most_max_bytes_of_what_arrives(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, b):
            for max_bytes in (3, None, 100):
                reader = asyncio.ensure_future(a.read(max_bytes))
                await until(lambda: a._driver._read_waiter is not None, "the read waits")
                assert await b.write(b"abcdef") == Ok(None)
                first = await reader
                assert isinstance(first, Ok)
                assert first.value == b"abcdef"[:max_bytes or 6]
                assert a.buffered == 6 - len(first.value)
                if a.buffered:
                    assert await a.read() == Ok(b"def")

    run(loop_kind, main)


def test_cancelled_close_aborts_and_releases_the_socket(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, b):
            closing = asyncio.ensure_future(a.close())
            assert await read_all(b) == (b"", Eof())
            await settle()
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            assert (a.state, a.error) == (FlowState.CLOSED, ABORTED.error)
            await until(lambda: a.transport is None, "the transport is released")
            end = await b.write(b"x")
            while end == Ok(None):
                await asyncio.sleep(0.01)
                end = await b.write(b"x")
            assert is_reset(end), end

    run(loop_kind, main)


def test_cancelled_shutdown_write_keeps_the_eof_queued(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_and_socket(bufsize=4096) as (flow, peer):
            sent = await fill_until_blocked(flow, payload(30_000, seed=5))
            shutting = asyncio.ensure_future(flow.shutdown(Shutdown.WRITE))
            second = asyncio.ensure_future(flow.shutdown(Shutdown.WRITE))
            await settle()
            assert flow.send_state is SendState.EOF_QUEUED
            shutting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await shutting
            assert flow.send_state is SendState.EOF_QUEUED
            assert await sock_recv_all(peer) == sent
            await asyncio.wait_for(second, 10)
            assert send_state_of(flow) is SendState.EOF_SENT

    run(loop_kind, main)


# -- bad input -----------------------------------------------------------------------------


def test_bad_arguments_raise_and_change_nothing(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair() as (a, b):
            assert await b.write(b"buffered") == Ok(None)
            await until(lambda: a.buffered == 8, "the data arrives")
            before = snapshot(a)
            bad_calls: list[tuple[Callable[[], Awaitable[object]], type[Exception]]] = [
                (lambda: a.write("text"), TypeError),  # type: ignore[arg-type]
                (lambda: a.write(None), TypeError),  # type: ignore[arg-type]
                (lambda: a.write(5), TypeError),  # type: ignore[arg-type]
                (lambda: a.writev(b"one buffer"), TypeError),  # type: ignore[arg-type]
                (lambda: a.writev(5), TypeError),  # type: ignore[arg-type]
                (lambda: a.writev([b"ok", "text"]), TypeError),  # type: ignore[list-item]
                (lambda: a.writev(iter([b"ok", None])), TypeError),  # type: ignore[arg-type]
                (lambda: a.read(0), ValueError),
                (lambda: a.read(-1), ValueError),
                (lambda: a.read("3"), TypeError),  # type: ignore[arg-type]
                (lambda: a.read(1.5), TypeError),  # type: ignore[arg-type]
                (lambda: a.shutdown("write"), TypeError),  # type: ignore[arg-type]
                (lambda: a.close(timeout=-1), ValueError),
            ]
            for call, exc_type in bad_calls:
                with pytest.raises(exc_type):
                    await call()
                assert snapshot(a) == before
                assert not a._reading
                assert not a._writing
            assert await a.read() == Ok(b"buffered")

    run(loop_kind, main)


def test_bad_options_and_sockets_are_refused(loop_kind: str) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="low_water"):
            await sf.connect(HOST, 1, high_water=10, low_water=20)
        with pytest.raises(TypeError):
            await sf.connect(HOST, 1, receive_limit="big")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="receive_limit"):
            sf.serve(lambda flow: asyncio.sleep(0), HOST, 0, receive_limit=0)
        with pytest.raises(TypeError, match="handler"):
            sf.serve("not callable", HOST, 0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="socket"):
            await sf.wrap(3)  # type: ignore[arg-type]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                pytest.raises(ValueError, match="stream socket"):
            await sf.wrap(udp)
        left, right = socket.socketpair()
        with left, right, pytest.raises(ValueError, match="high_water"):
            await sf.wrap(left, high_water=0)

    run(loop_kind, main)


# -- connecting: addresses, failures, timeouts --------------------------------------------


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def tcp_address(port: int) -> tuple[Any, Any, int, str, Any]:
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (HOST, port))


async def echo_once(flow: sf.AsyncioFlow, message: bytes) -> None:
    assert await flow.write(message) == Ok(None)
    await flow.shutdown(Shutdown.WRITE)
    assert await read_all(flow) == (message, Eof())
    await flow.close(timeout=10)
    assert flow.error is None


def test_connect_refused_names_the_address(loop_kind: str) -> None:
    async def main() -> None:
        port = unused_port()
        with pytest.raises(ConnectionRefusedError, match=f"refused by 127.0.0.1:{port}$"):
            await sf.connect(HOST, port)

    run(loop_kind, main)


def test_connect_to_a_name_that_does_not_resolve(loop_kind: str) -> None:
    async def main() -> None:
        with pytest.raises(socket.gaierror, match=r"nothing\.invalid:80$") as caught:
            await sf.connect("nothing.invalid", 80)
        assert isinstance(caught.value.__cause__, socket.gaierror)

    run(loop_kind, main)


@pytest.mark.parametrize("timeout", [0.2, 0, 1e-9])
def test_connect_timeout_covers_the_whole_connect(loop_kind: str, timeout: float) -> None:
    async def main() -> None:
        with full_backlog_port() as port:
            with pytest.raises(TimeoutError, match=f"127.0.0.1:{port} timed out") as caught:
                await sf.connect(HOST, port, timeout=timeout)
            assert isinstance(caught.value, OSError)
            assert caught.value.errno == errno.ETIMEDOUT
        # the socket of the abandoned attempt is closed: run() checks that no fd is left

    run(loop_kind, main)


def test_cancelled_connect_leaves_nothing_behind(loop_kind: str) -> None:
    async def main() -> None:
        with full_backlog_port() as port:
            connecting = asyncio.ensure_future(sf.connect(HOST, port))
            await settle()
            connecting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await connecting

    run(loop_kind, main)


def test_connect_tries_each_address_in_turn(loop_kind: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with sf.serve(echo, HOST, 0) as server:
            with full_backlog_port() as stuck:
                refused = unused_port()
                # refused at once, then one that hangs past the attempt delay, then the server
                addresses = [tcp_address(refused), tcp_address(stuck), tcp_address(server.port)]

                async def resolve(host: str | None, port: int, flags: int = 0
                                  ) -> list[tuple[Any, Any, int, str, Any]]:
                    assert (host, port, flags) == ("several.test", 80, 0)
                    return addresses

                monkeypatch.setattr(sf, "_resolve", resolve)
                monkeypatch.setattr(sf, "ATTEMPT_DELAY", 0.05)
                flow = await sf.connect("several.test", 80, timeout=10)
                assert flow.peername == (HOST, server.port)
                await echo_once(flow, b"third time lucky")

                addresses = [tcp_address(refused), tcp_address(unused_port())]
                with pytest.raises(ConnectionRefusedError,
                                   match=r"refused by several\.test:80 \(all 2 addresses\)$"):
                    await sf.connect("several.test", 80)

    run(loop_kind, main)


@needs_ipv6
def test_ipv6_connect_and_serve(loop_kind: str) -> None:
    async def main() -> None:
        async with sf.serve(echo, "::1", 0) as server:
            port = server.port
            flow = await sf.connect("::1", port)
            assert flow.peername[:2] == ("::1", port)
            await echo_once(flow, b"over IPv6")
        with pytest.raises(ConnectionRefusedError, match=rf"refused by \[::1\]:{port}$"):
            await sf.connect("::1", port)

    run(loop_kind, main)


async def called(call: Callable[[], object]) -> None:
    """``call()``, and what it returned awaited if it is a coroutine."""
    result = call()
    if asyncio.iscoroutine(result):
        await result


def test_addresses_are_checked_before_any_io(loop_kind: str) -> None:
    async def main() -> None:
        bad_calls: list[tuple[Callable[[], object], type[Exception], str]] = [
            (lambda: sf.connect(HOST, "80"), TypeError, "port"),  # type: ignore[arg-type]
            (lambda: sf.connect(HOST, 80.0), TypeError, "port"),  # type: ignore[arg-type]
            (lambda: sf.connect(HOST, 65536), ValueError, "port"),
            (lambda: sf.connect(None, 80), TypeError, "host"),  # type: ignore[arg-type]
            (lambda: sf.connect(HOST, 80, timeout=-1), ValueError, "timeout"),
            (lambda: sf.connect(HOST, 80, timeout="1"), TypeError, "timeout"),  # type: ignore
            (lambda: sf.connect_unix(5), TypeError, "path"),  # type: ignore[arg-type]
            (lambda: sf.connect_unix("/x", timeout=-1), ValueError, "timeout"),
            (lambda: sf.serve(echo, HOST, "80"), TypeError, "port"),  # type: ignore[arg-type]
            (lambda: sf.serve(echo, 5, 80), TypeError, "host"),  # type: ignore[arg-type]
            (lambda: sf.serve_unix(echo, None), TypeError, "path"),  # type: ignore[arg-type]
            (lambda: sf.serve_unix(echo, "/x", high_water=0), ValueError, "high_water"),
        ]
        for call, exc_type, text in bad_calls:
            with pytest.raises(exc_type, match=text):
                await called(call)

    run(loop_kind, main)


# -- AF_UNIX ---------------------------------------------------------------------------------


@pytest.fixture
def socket_path() -> Iterator[str]:
    """A path for an AF_UNIX socket, short enough for ``sun_path``."""
    with tempfile.TemporaryDirectory() as directory:
        yield os.path.join(directory, "flow.sock")


def test_connect_unix_and_serve_unix(loop_kind: str, socket_path: str) -> None:
    async def main() -> None:
        served: list[sf.AsyncioFlow] = []

        async def handler(flow: sf.AsyncioFlow) -> None:
            served.append(flow)
            await echo(flow)

        async with sf.serve_unix(handler, socket_path) as server:
            assert server.path == socket_path
            with pytest.raises(RuntimeError, match="path, not a port"):
                _ = server.port
            flow = await sf.connect_unix(socket_path, timeout=10)
            assert flow.peername == socket_path
            await echo_once(flow, b"over AF_UNIX")
            assert served[0].sockname == socket_path
        assert not os.path.exists(socket_path)  # the server removes the file it made

    run(loop_kind, main)


def test_connect_unix_failures_name_the_path(loop_kind: str, socket_path: str) -> None:
    async def main() -> None:
        with pytest.raises(FileNotFoundError, match=socket_path):
            await sf.connect_unix(socket_path)
        with socket.socket(socket.AF_UNIX) as unlistened:
            unlistened.bind(socket_path)  # a socket file nobody listens on
            with pytest.raises(ConnectionRefusedError, match=f"refused by {socket_path}$"):
                await sf.connect_unix(socket_path)
            unlistened.listen()
            with pytest.raises(TimeoutError, match=f"{socket_path} timed out after 0 s"):
                await sf.connect_unix(socket_path, timeout=0)

    run(loop_kind, main)


# -- addresses of a flow -------------------------------------------------------------------


def test_peername_and_sockname_outlive_the_flow(loop_kind: str) -> None:
    async def main() -> None:
        served: list[sf.AsyncioFlow] = []

        async def handler(flow: sf.AsyncioFlow) -> None:
            served.append(flow)

        async with sf.serve(handler, HOST, 0) as server:
            port = server.port
            flow = await sf.connect(HOST, port)
            assert await read_all(flow) == (b"", Eof())
            await flow.close()
            await until(lambda: bool(served) and served[0].transport is None,
                        "the server flow ends")
        assert flow.peername == (HOST, port)
        assert flow.sockname[0] == HOST
        assert (served[0].peername, served[0].sockname) == (flow.sockname, flow.peername)
        left, right = socket.socketpair()
        wrapped = await sf.wrap(left)
        right.close()
        assert await read_all(wrapped) == (b"", Eof())
        await wrapped.close()
        assert (wrapped.peername, wrapped.sockname) == ("", "")

    run(loop_kind, main)


# -- many flows, servers, handlers -----------------------------------------------------------


async def echo(flow: sf.AsyncioFlow) -> None:
    while isinstance(result := await flow.read(), Ok):
        if await flow.write(result.value) != Ok(None):
            return


def test_two_hundred_concurrent_echo_flows(loop_kind: str) -> None:
    async def main() -> None:
        async with sf.serve(echo, HOST, 0, backlog=512) as server:

            async def client(index: int) -> None:
                flow = await sf.connect(HOST, server.port)
                message = payload(5000 + index, seed=index)
                assert await flow.write(message) == Ok(None)
                await flow.shutdown(Shutdown.WRITE)
                assert await read_all(flow) == (message, Eof())
                await flow.close(timeout=10)
                assert (flow.state, flow.error, flow.transport) == (FlowState.CLOSED, None, None)

            await asyncio.gather(*(client(i) for i in range(200)))

    run(loop_kind, main, timeout=60)


def test_handler_that_returns_gets_its_flow_closed(loop_kind: str) -> None:
    async def main() -> None:
        flows: list[sf.AsyncioFlow] = []

        async def handler(flow: sf.AsyncioFlow) -> None:
            flows.append(flow)
            assert await flow.write(b"bye") == Ok(None)

        async with sf.serve(handler, HOST, 0) as server:
            flow = await sf.connect(HOST, server.port)
            assert await read_all(flow) == (b"bye", Eof())
            await flow.close(timeout=10)
            assert flow.error is None
            await until(lambda: flows[0].transport is None, "the server flow is released")
            assert (flows[0].state, flows[0].error) == (FlowState.CLOSED, None)

    run(loop_kind, main)


@pytest.mark.expect_log("sansflow", "connection handler raised")
def test_handler_that_raises_is_logged_and_aborted(loop_kind: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async def handler(flow: sf.AsyncioFlow) -> None:
            await flow.read()
            raise RuntimeError("handler bug")

        async with sf.serve(handler, HOST, 0) as server:
            flow = await sf.connect(HOST, server.port)
            assert await flow.write(b"trigger") == Ok(None)
            _, end = await read_all(flow)
            assert isinstance(end, Error)
            assert end.error.kind is ErrorKind.RESET
            await flow.close()
            records = [r for r in caplog.records if r.name == "sansflow"]
            assert [r.levelno for r in records] == [logging.ERROR]
            # the server keeps serving: the next handler runs (and fails) the same way
            flow = await sf.connect(HOST, server.port)
            assert await flow.write(b"trigger") == Ok(None)
            assert is_reset((await read_all(flow))[1])
            await flow.close()

    with caplog.at_level(logging.ERROR, logger="sansflow"):
        run(loop_kind, main)
    records = [r for r in caplog.records if r.name == "sansflow"]
    assert len(records) == 2
    for record in records:
        assert record.exc_info is not None
        assert "handler bug" in str(record.exc_info[1])


def test_serve_forever_waits_until_the_server_stops(loop_kind: str) -> None:
    async def main() -> None:
        server = sf.serve(echo, HOST, 0)
        with pytest.raises(RuntimeError, match="not listening"):
            await server.serve_forever()
        async with server:
            forever = asyncio.ensure_future(server.serve_forever())
            await settle()
            assert not forever.done()
            flow = await sf.connect(HOST, server.port)
            await echo_once(flow, b"still serving")
        await asyncio.wait_for(forever, 5)  # leaving the block ends it

        async def serve_until_cancelled(ready: asyncio.Future[int]) -> None:
            async with sf.serve(echo, HOST, 0) as server:
                ready.set_result(server.port)
                await server.serve_forever()

        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        serving = asyncio.ensure_future(serve_until_cancelled(ready))
        port = await ready
        flow = await sf.connect(HOST, port)
        await echo_once(flow, b"until cancelled")
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        with pytest.raises(ConnectionRefusedError):
            await sf.connect(HOST, port)

    run(loop_kind, main)


def test_serve_on_every_interface_has_one_port(loop_kind: str) -> None:
    async def main() -> None:
        async with sf.serve(echo, None, 0) as server:
            families = {sock.family for sock in server.sockets}
            assert socket.AF_INET in families
            assert {sock.getsockname()[1] for sock in server.sockets} == {server.port}
            hosts = [HOST, "::1"] if socket.AF_INET6 in families and has_ipv6_loopback() \
                else [HOST]
            for host in hosts:
                flow = await sf.connect(host, server.port)
                await echo_once(flow, host.encode())

    run(loop_kind, main)


def test_leaving_serve_ends_running_handlers(loop_kind: str) -> None:
    async def main() -> None:
        started = asyncio.Event()
        ended: list[str] = []

        async def handler(flow: sf.AsyncioFlow) -> None:
            started.set()
            try:
                await flow.read()  # the client never sends
            finally:
                ended.append("handler")

        async with sf.serve(handler, HOST, 0, grace=0) as server:
            flow = await sf.connect(HOST, server.port)
            await asyncio.wait_for(started.wait(), 5)
            port = server.port
        assert ended == ["handler"]
        _, end = await read_all(flow)
        assert isinstance(end, Error)
        assert end.error.kind is ErrorKind.RESET
        await flow.close()
        with pytest.raises(ConnectionRefusedError):
            await sf.connect(HOST, port)

    run(loop_kind, main)


def test_server_properties_outside_the_block(loop_kind: str) -> None:
    server = sf.serve(echo, HOST, 0)
    assert server.sockets == ()
    with pytest.raises(RuntimeError, match="not listening"):
        _ = server.port

    async def main() -> None:
        async with server:
            with pytest.raises(RuntimeError, match="already running"):
                await server.__aenter__()

    run(loop_kind, main)


def test_wrap_owns_the_socket(loop_kind: str) -> None:
    async def main() -> None:
        left, right = socket.socketpair()
        flow = await sf.wrap(left)
        with right:
            right.sendall(b"x")
            right.shutdown(socket.SHUT_WR)
            assert await read_all(flow) == (b"x", Eof())
            await flow.close()
            assert right.recv(10) == b""
        assert flow.transport is None

    run(loop_kind, main)


def test_repr_and_options(loop_kind: str) -> None:
    async def main() -> None:
        async with flow_pair(high_water=1000, low_water=100, receive_limit=5000) as (a, _):
            assert (a.high_water, a.low_water, a.receive_limit) == (1000, 100, 5000)
            assert repr(a).startswith("<sansflow.adapters.asyncio.AsyncioFlow <Flow OPEN")

    run(loop_kind, main)


# -- the examples --------------------------------------------------------------------------


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def examples() -> tuple[ModuleType, ModuleType]:
    return load_example("asyncio_echo_server"), load_example("asyncio_echo_client")


def test_echo_examples(loop_kind: str, examples: tuple[ModuleType, ModuleType],
                       capsys: pytest.CaptureFixture[str]) -> None:
    server, client = examples

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()
        stop = asyncio.Event()
        serving = asyncio.ensure_future(
            server.main(["--port", "0"], ready=ready.set_result, stop=stop))
        port = await asyncio.wait_for(ready, 5)
        assert await client.echo(HOST, port, b"hello") == b"hello"
        big = payload(300_000)
        assert await client.echo(HOST, port, big) == big
        assert await client.main(["--port", str(port), "from main"]) == 0
        stop.set()
        assert await serving == 0

    run(loop_kind, main)
    out = capsys.readouterr().out
    assert "echo server listening on 127.0.0.1:" in out
    assert "from main" in out


def test_example_argument_parsing(examples: tuple[ModuleType, ModuleType]) -> None:
    server, client = examples
    args = server.parse_args(["--port", "0", "--uvloop"])
    assert (args.host, args.port, args.uvloop) == ("127.0.0.1", 0, True)
    args = client.parse_args(["hi", "--port", "9"])
    assert (args.message, args.port, args.uvloop) == ("hi", 9, False)


@pytest.mark.parametrize("loop_flag", [[], ["--uvloop"]] if uvloop is not None else [[]])
def test_echo_examples_run_as_scripts(loop_flag: list[str]) -> None:
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "asyncio_echo_server.py"), "--port", "0", *loop_flag],
        stdout=subprocess.PIPE, text=True,
        # Ctrl-C reaches it even when this run ignores SIGINT (started in the background).
        preexec_fn=partial(signal.signal, signal.SIGINT, signal.SIG_DFL))
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("echo server listening on 127.0.0.1:"), line
        port = line.rsplit(":", 1)[1].strip()
        client = subprocess.run(
            [sys.executable, str(EXAMPLES / "asyncio_echo_client.py"), "--port", port,
             "echo me", *loop_flag],
            capture_output=True, text=True, timeout=30, check=True)
        assert client.stdout == "echo me\n"
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()
