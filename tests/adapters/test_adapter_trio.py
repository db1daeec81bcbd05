"""The trio adapter, over trio's memory streams and over loopback TCP.

Each test is a plain function running ``trio.run`` under ``trio.fail_after``, so that nothing
can hang. Waits are bounded; no test depends on how long something takes.
"""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import os
import random
import select
import socket
import struct
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import anyio
import pytest
import trio
import trio.testing
from loopback import full_backlog_port, has_ipv6_loopback, read_to_end

from sansflow import (
    AsyncAdapterFlow,
    BusyError,
    Eof,
    Error,
    ErrorKind,
    FlowError,
    FlowState,
    Ok,
    ReadResult,
    SendState,
    Shutdown,
    error_message,
)
from sansflow.adapters import _trio_flow as trio_flow
from sansflow.adapters import trio as sf
from sansflow.testing.conformance import AsyncFlowLike, check_flow_pair

HOST = "127.0.0.1"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ABORTED = Error(FlowError(ErrorKind.ABORTED))
KINDS = ["memory", "tcp"]


def run(fn: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    async def bounded() -> None:
        with trio.fail_after(timeout):
            await fn()

    trio.run(bounded)


# -- transports ---------------------------------------------------------------------------


def tcp_sockets(bufsize: int | None = None) -> tuple[socket.socket, socket.socket]:
    """A connected loopback pair; ``bufsize`` shrinks both kernel buffers before connecting."""
    with socket.create_server((HOST, 0)) as listener:
        if bufsize is not None:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        client = socket.socket()
        if bufsize is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    for sock in (client, server):
        sock.setblocking(False)
    return client, server


def socket_stream(sock: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


def streams(kind: str, bufsize: int | None = None) -> tuple[trio.abc.HalfCloseableStream,
                                                             trio.abc.HalfCloseableStream]:
    if kind == "memory":
        return trio.testing.memory_stream_pair()
    if kind == "lockstep":
        return trio.testing.lockstep_stream_pair()
    client, server = tcp_sockets(bufsize)
    return socket_stream(client), socket_stream(server)


@asynccontextmanager
async def flow_pair(kind: str, bufsize: int | None = None,
                    **options: int) -> AsyncIterator[tuple[sf.TrioFlow, sf.TrioFlow]]:
    """Two connected flows; whatever a test leaves open is aborted at the end."""
    a_stream, b_stream = streams(kind, bufsize)
    a, b = await sf.wrap(a_stream, **options), await sf.wrap(b_stream, **options)
    try:
        yield a, b
    finally:
        with trio.CancelScope(shield=True):
            await a.abort()
            await b.abort()


async def released(flow: sf.TrioFlow) -> bool:
    """Whether the flow closed its stream."""
    stream = flow.stream
    if isinstance(stream, trio.SocketStream):
        return stream.socket.fileno() == -1
    # A closed memory stream refuses at once; an open one would wait (bounded by fail_after).
    assert isinstance(stream, trio.StapledStream)
    try:
        await stream.receive_stream.receive_some(1)
    except trio.ClosedResourceError:
        return True
    return False


async def read_exactly(flow: sf.TrioFlow, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        result = await flow.read(size - len(data))
        assert isinstance(result, Ok), result
        data += result.value
    return bytes(data)


async def read_all(flow: sf.TrioFlow, max_bytes: int | None = None) -> tuple[bytes, ReadResult]:
    """Everything until Eof or Error, and that final result."""
    data = bytearray()
    while True:
        result = await flow.read(max_bytes)
        if not isinstance(result, Ok):
            return bytes(data), result
        data += result.value


def state_of(flow: sf.TrioFlow) -> FlowState:
    """``flow.state``, out of reach of the type checker's narrowing from an earlier assert."""
    return flow.state


def send_state_of(flow: sf.TrioFlow) -> SendState:
    return flow.send_state


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def senders() -> int:
    """How many flows' sender tasks are running in this trio run."""
    count = 0
    tasks = [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        assert task is not None
        count += task.name == "sansflow.adapters.trio sender"
        tasks.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


class SendLog:
    """Every send on one flow's socket: (call, buffers, bytes offered, bytes taken)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, flow: sf.TrioFlow) -> None:
        stream = flow.stream
        assert isinstance(stream, trio.SocketStream)
        self.fd = stream.socket.fileno()
        self.sends: list[tuple[str, int, int, int]] = []
        write, writev = trio_flow._os_write, trio_flow._os_writev

        def logged_write(fd: int, data: Any) -> int:
            taken = int(write(fd, data))
            if fd == self.fd:
                self.sends.append(("write", 1, len(data), taken))
            return taken

        def logged_writev(fd: int, buffers: list[Any]) -> int:
            taken = int(writev(fd, buffers))
            if fd == self.fd:
                self.sends.append(("writev", len(buffers), sum(len(b) for b in buffers), taken))
            return taken

        monkeypatch.setattr(trio_flow, "_os_write", logged_write)
        monkeypatch.setattr(trio_flow, "_os_writev", logged_writev)


needs_sync_sends = pytest.mark.skipif(not hasattr(os, "writev"),
                                      reason="sync sends need os.writev (POSIX)")


@pytest.fixture
def without_sync_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flows made from now on send through the trio socket, as where there is no writev."""
    monkeypatch.setattr(trio_flow, "_HAVE_WRITEV", False)


# -- round trips and half-close -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, b):
            assert await a.write(b"ping") == Ok(None)
            assert await read_exactly(b, 4) == b"ping"
            assert await b.writev([b"po", memoryview(b"n"), bytearray(b"g")]) == Ok(None)
            assert await read_exactly(a, 4) == b"pong"
            assert await a.write(b"") == Ok(None)
            assert await a.writev([]) == Ok(None)
            assert a.state is b.state is FlowState.OPEN
            # The peer may read a send before the sender has counted it as sent.
            await trio.testing.wait_all_tasks_blocked()
            assert a.queued == b.queued == 0

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_half_close_both_ways(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, b):
            assert await a.write(b"request") == Ok(None)
            await a.shutdown(Shutdown.WRITE)
            assert a.state is FlowState.HALF_CLOSED_LOCAL
            assert a.send_state is SendState.EOF_SENT
            assert await a.write(b"more") == Eof()

            assert await read_all(b) == (b"request", Eof())
            assert await b.read() == Eof()  # sticky
            assert b.state is FlowState.HALF_CLOSED_REMOTE
            assert await b.write(b"response") == Ok(None)
            await b.shutdown(Shutdown.WRITE)
            assert state_of(b) is FlowState.CLOSED
            assert b.error is None
            assert await released(b)

            assert await read_all(a) == (b"response", Eof())
            assert state_of(a) is FlowState.CLOSED
            assert a.error is None
            assert await released(a)
            await a.close()  # idempotent on a CLOSED flow
            await b.close()
            assert state_of(a) is state_of(b) is FlowState.CLOSED

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_read_discards_input(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, b):
            assert await b.write(b"unwanted") == Ok(None)
            await read_exactly(a, 1)
            await a.shutdown(Shutdown.READ)
            assert a.buffered == 0
            assert await a.read() == Eof()
            assert await b.write(b"ignored too") == Ok(None)
            assert await a.write(b"still writing") == Ok(None)
            assert await read_exactly(b, 13) == b"still writing"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.close)
                await a.close()  # drains and drops the peer's data until its EOF
            assert a.state is b.state is FlowState.CLOSED
            assert a.error is None
            assert await a.read() == Eof()

    run(main)


# -- close --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_close_waits_for_the_peer_and_keeps_input(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, b):
            closed = trio.Event()

            async def closer() -> None:
                await a.close()
                closed.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(closer)
                await trio.testing.wait_all_tasks_blocked()
                assert not closed.is_set()
                assert a.state is FlowState.HALF_CLOSED_LOCAL
                assert await b.read() == Eof()
                assert await b.write(b"late data") == Ok(None)
                await trio.testing.wait_all_tasks_blocked()
                assert not closed.is_set()
                assert a.buffered == 9  # close() received it, for a later read
                await b.close()
            assert closed.is_set()
            assert a.state is b.state is FlowState.CLOSED
            assert a.error is None
            assert b.error is None
            assert await released(a)
            assert await released(b)
            assert await read_all(a) == (b"late data", Eof())

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_reader_arriving_while_close_receives_gets_the_data(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, b):
            got: list[ReadResult] = []

            async def reader() -> None:
                got.append(await a.read())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.close)  # no reader yet: close() receives
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(reader)  # waits for what close() receives
                await trio.testing.wait_all_tasks_blocked()
                assert got == []
                assert await b.write(b"for the reader") == Ok(None)
                await trio.testing.wait_all_tasks_blocked()
                assert got == [Ok(b"for the reader")]
                await b.close()
            assert a.state is FlowState.CLOSED
            assert a.error is None

    run(main)


def test_shutdown_write_waits_for_the_queue_to_be_sent() -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=4096) as (a, b):
            data = payload(512 * 1024)
            done: list[str] = []

            async def writer() -> None:
                assert await a.write(data) == Ok(None)
                done.append("write")

            async def shutdown() -> None:
                await a.shutdown(Shutdown.WRITE)
                done.append("shutdown")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await trio.testing.wait_all_tasks_blocked()
                assert done == ["write"]  # queued: the write is over, the send is not
                assert a.queued > 0
                nursery.start_soon(shutdown)
                await trio.testing.wait_all_tasks_blocked()
                assert done == ["write"]  # the data is not all out: no EOF yet
                assert a.send_state is SendState.EOF_QUEUED
                assert await read_all(b) == (data, Eof())  # the EOF follows the data
            assert done == ["write", "shutdown"]
            assert send_state_of(a) is SendState.EOF_SENT
            assert a.queued == 0

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_close_while_another_task_reads(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, b):
            got: list[tuple[bytes, ReadResult]] = []

            async def reader() -> None:
                got.append(await read_all(a))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(a.close)
                nursery.start_soon(a.close)  # a second close waits for the same end
                await trio.testing.wait_all_tasks_blocked()
                for part in (b"one ", b"two ", b"three"):
                    assert await b.write(part) == Ok(None)
                    await trio.testing.wait_all_tasks_blocked()
                await b.close()
            assert got == [(b"one two three", Eof())]
            assert a.state is FlowState.CLOSED
            assert a.error is None

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_close_deadline_aborts_with_timed_out(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, b):
            assert await b.write(b"unread") == Ok(None)
            await a.close(timeout=0.05)  # the peer never sends its EOF
            assert a.state is FlowState.CLOSED
            error = a.error
            assert error == FlowError(ErrorKind.TIMED_OUT, detail="close() deadline passed")
            assert error_message(error) == "timed out: close() deadline passed"
            assert await released(a)
            assert await a.read() == Ok(b"unread")  # received before the deadline: kept
            assert await a.read() == Error(error)
            assert await a.write(b"x") == Eof()  # our EOF was out: that direction ended cleanly
            assert await b.read() == Eof()  # our EOF went out before the wait

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_cancelled_close_aborts_then_reraises(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, _b):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.close)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            assert scope.cancelled_caught
            assert a.state is FlowState.CLOSED
            assert a.error == FlowError(ErrorKind.ABORTED)
            assert await released(a)

    run(main)


def test_close_validates_timeout() -> None:
    async def main() -> None:
        async with flow_pair("memory") as (a, _b):
            for bad in ("1", None.__class__, True, [1]):
                with pytest.raises(TypeError, match="timeout"):
                    await a.close(timeout=bad)  # type: ignore[arg-type]
            for worse in (-1, -0.5, float("nan")):
                with pytest.raises(ValueError, match="timeout"):
                    await a.close(timeout=worse)
            assert a.state is FlowState.OPEN
            assert a.send_state is SendState.OPEN

    run(main)


# -- abort and errors ---------------------------------------------------------------------


def test_abort_wakes_reader_and_writer_and_resets_the_peer() -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=4096) as (a, b):
            results: dict[str, object] = {}
            data = payload(4 * 1024 * 1024)

            async def reader() -> None:
                results["read"] = await a.read()

            async def writer() -> None:
                results["first"] = await a.write(data)  # queued at once: the queue was empty
                results["write"] = await a.write(data)  # waits for room

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(writer)
                await trio.testing.wait_all_tasks_blocked()
                assert results == {"first": Ok(None)}
                await a.abort()
            assert results == {"read": ABORTED, "first": Ok(None), "write": ABORTED}
            assert a.state is FlowState.CLOSED
            assert a.queued == 0
            assert await released(a)
            await a.abort()  # nothing more happens
            assert a.error == FlowError(ErrorKind.ABORTED)

            received, end = await read_all(b)
            assert data.startswith(received)
            assert isinstance(end, Error)
            assert end.error.kind is ErrorKind.RESET
            assert error_message(end.error) == "connection reset by peer (ECONNRESET)"

    run(main)


@pytest.mark.parametrize("kind", ["memory", "lockstep"])
def test_abort_wakes_reader_and_writer_on_streams(kind: str) -> None:
    async def main() -> None:
        # Tiny water marks: with one write queued, the next one waits for room.
        async with flow_pair(kind, high_water=4, low_water=0) as (a, b):
            results: dict[str, object] = {}

            async def reader() -> None:
                results["read"] = await a.read()

            async def writer() -> None:
                # A lockstep stream blocks every send until the peer receives, so the first
                # write stays queued and the second waits; a memory stream never blocks.
                for name in (("queued", "waiting") if kind == "lockstep" else ()):
                    results[name] = await a.write(b"blocked")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(writer)
                await trio.testing.wait_all_tasks_blocked()
                assert results == ({"queued": Ok(None)} if kind == "lockstep" else {})
                await a.abort()
            expected: dict[str, object] = {"read": ABORTED}
            if kind == "lockstep":
                expected.update(queued=Ok(None), waiting=ABORTED)
            assert results == expected
            assert a.queued == 0
            assert await released(a)
            await trio.testing.wait_all_tasks_blocked()
            assert senders() == 0  # the sender stopped with the abort
            received, end = await read_all(b)
            # The lockstep send was under way when the stream closed: trio still delivers it.
            assert received == (b"blocked" if kind == "lockstep" else b"")
            assert end == Eof()  # trio's memory streams end cleanly when forcefully closed

    run(main)


def test_peer_reset_reads_econnreset() -> None:
    async def main() -> None:
        async with flow_pair("tcp") as (a, b):
            await b.abort()
            result = await a.read()
            assert isinstance(result, Error)
            error = result.error
            assert error.kind is ErrorKind.RESET
            assert isinstance(error.cause, ConnectionResetError)
            assert error.cause.errno == errno.ECONNRESET
            assert error_message(error) == "connection reset by peer (ECONNRESET)"
            assert a.state is FlowState.CLOSED
            assert await released(a)
            assert await a.read() == result
            assert await a.write(b"x") == result

    run(main)


def test_peer_reset_mid_transfer() -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=8192) as (a, b):
            data = payload(4 * 1024 * 1024)
            chunk = 64 * 1024
            results: list[object] = []

            async def writer() -> None:
                for start in range(0, len(data), chunk):
                    result = await a.write(data[start:start + chunk])
                    if result != Ok(None):
                        results.append(result)
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                assert await read_exactly(b, 64 * 1024) == data[:64 * 1024]
                await b.abort()
            [result] = results  # the sender's failure woke the writer waiting for room
            assert isinstance(result, Error)
            error = result.error
            assert error.kind in (ErrorKind.RESET, ErrorKind.BROKEN_PIPE)
            assert isinstance(error.cause, OSError)
            assert error.cause.errno in (errno.ECONNRESET, errno.EPIPE)
            assert error_message(error).endswith(("(ECONNRESET)", "(EPIPE)"))
            assert a.state is FlowState.CLOSED
            assert a.queued == 0
            assert await released(a)

    run(main)


def peer_sends_then_resets(peer: socket.socket, data: bytes, ours: int) -> None:
    """``peer`` sends ``data`` and, once all of it waits in the kernel for descriptor
    ``ours``, resets the connection; returns once the reset has arrived."""
    peer.setblocking(True)
    peer.sendall(data)
    deadline = time.monotonic() + 10
    while struct.unpack("i", fcntl.ioctl(ours, termios.FIONREAD, b"\0" * 4))[0] < len(data):
        assert time.monotonic() < deadline, "the data did not arrive"
        time.sleep(0.001)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    poller = select.poll()
    poller.register(ours, select.POLLERR)
    assert poller.poll(10_000), "the reset did not arrive"


def test_a_failed_send_keeps_what_the_kernel_holds_as_far_as_the_receive_limit() -> None:
    """The peer's last bytes, in the kernel when our send fails on its reset, are read before
    the send's error; the receive limit bounds how much the flow takes in."""
    async def main() -> None:
        ours, theirs = tcp_sockets()
        limit = 4096
        flow = await sf.wrap(ours, receive_limit=limit)
        data = payload(3 * limit)
        peer_sends_then_resets(theirs, data, flow.stream.socket.fileno())  # type: ignore[attr-defined]
        assert await flow.write(b"x") == Ok(None)  # queued, then its send fails at once
        assert flow.state is FlowState.CLOSED
        assert flow.error is not None
        assert flow.error.kind is ErrorKind.RESET
        failed = Error(flow.error)
        assert await released(flow)
        assert await read_all(flow) == (data[:limit], failed)

    run(main)


def test_a_failed_send_to_a_live_peer_takes_only_what_is_there() -> None:
    """A peer that shut down only its reading side fails our send (EPIPE) yet could go on
    sending: the flow takes what the kernel holds now, then fails with the send's error."""
    async def main() -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            flow = await sf.wrap(ours)
            theirs.shutdown(socket.SHUT_RD)
            theirs.sendall(b"last words")
            assert await flow.write(b"x") == Ok(None)  # queued, then its send fails at once
            assert flow.error is not None
            assert flow.error.kind is ErrorKind.BROKEN_PIPE
            failed = Error(flow.error)
            assert await released(flow)
            assert await read_all(flow) == (b"last words", failed)

    run(main)


@pytest.mark.parametrize("sync", [True, False], ids=["sync sends", "trio socket sends"])
def test_our_eof_failing_on_a_reset_connection_ends_the_flow(
        sync: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``shutdown(SHUT_WR)`` on a connection the peer reset fails and ends the flow, with
    the reset (not the ENOTCONN that shutdown answers). Where the flow reads the descriptor
    itself (sync sends), the peer's last bytes
    are read first; through the trio socket (no writev: Windows) they cannot be taken
    without waiting, and are lost with the socket."""
    if not sync:
        monkeypatch.setattr(trio_flow, "_HAVE_WRITEV", False)

    async def main() -> None:
        ours, theirs = tcp_sockets()
        flow = await sf.wrap(ours)
        peer_sends_then_resets(theirs, b"last words", flow.stream.socket.fileno())  # type: ignore[attr-defined]
        await flow.shutdown(Shutdown.WRITE)
        assert flow.state is FlowState.CLOSED
        assert flow.error is not None
        assert flow.error.kind is ErrorKind.RESET
        assert isinstance(flow.error.cause, ConnectionResetError)
        assert await released(flow)
        assert await read_all(flow) == (b"last words" if sync else b"", Error(flow.error))

    run(main)


def test_a_send_failing_while_a_receive_lets_others_run_loses_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A receive that read at once feeds the core before it lets other tasks run: a send
    failing meanwhile takes the rest from the kernel after it, so the stream has no gap."""
    async def main() -> None:
        ours, theirs = tcp_sockets()
        flow = await sf.wrap(ours)
        data = payload(80_000)  # more than one receive takes
        peer_sends_then_resets(theirs, data, flow.stream.socket.fileno())  # type: ignore[attr-defined]
        receiving = trio.Event()
        written: list[object] = []
        checkpoint = trio_flow._cancel_shielded_checkpoint

        async def others_run_here() -> None:
            """At the receive's checkpoint, the writer runs its whole write."""
            if flow._receiving and not receiving.is_set():
                receiving.set()
                await trio.testing.wait_all_tasks_blocked()
            await checkpoint()

        async def writer() -> None:
            await receiving.wait()
            written.append(await flow.write(b"x"))

        monkeypatch.setattr(trio_flow, "_cancel_shielded_checkpoint", others_run_here)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()  # the writer waits for the receive
            first = await flow.read()
        assert written == [Ok(None)]  # queued, then its send failed at once
        assert flow.error is not None
        assert flow.error.kind is ErrorKind.RESET
        assert isinstance(first, Ok)
        rest, end = await read_all(flow)
        assert (first.value + rest, end) == (data, Error(flow.error))

    run(main)


def test_memory_peer_closed_is_a_transport_error() -> None:
    async def main() -> None:
        async with flow_pair("memory") as (a, b):
            await b.abort()  # closes b's memory stream: a's sends now fail
            assert await a.write(b"to nobody") == Ok(None)  # queued; the sender fails
            await trio.testing.wait_all_tasks_blocked()
            result = await a.write(b"again")
            assert isinstance(result, Error)
            assert result.error.kind is ErrorKind.TRANSPORT
            assert isinstance(result.error.cause, trio.BrokenResourceError)
            assert a.state is FlowState.CLOSED
            assert await released(a)

    run(main)


# -- backpressure and limits --------------------------------------------------------------


def test_peer_never_reads_writer_waits_queue_bounded() -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=4096) as (a, b):
            chunk = 16 * 1024
            data = payload(2 * 1024 * 1024)
            written = 0
            peak = 0

            async def writer() -> None:
                nonlocal written, peak
                for start in range(0, len(data), chunk):
                    assert await a.write(data[start:start + chunk]) == Ok(None)
                    written += chunk
                    peak = max(peak, a.queued)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await trio.testing.wait_all_tasks_blocked()
                assert written < len(data)  # the writer waits for the peer
                # Writes returned once queued, until the queue was above low water.
                assert a.low_water < a.queued <= a.high_water + chunk
                assert await read_exactly(b, len(data)) == data
            assert written == len(data)
            assert a.low_water < peak <= a.high_water + chunk

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_flood_pauses_receiving_at_the_limit(kind: str) -> None:
    async def main() -> None:
        limit = 64 * 1024
        async with flow_pair(kind, receive_limit=limit) as (a, b):
            data = payload(1024 * 1024)
            peak = 0

            async def flood() -> None:
                assert await b.write(data) == Ok(None)
                await b.shutdown(Shutdown.WRITE)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                nursery.start_soon(a.close)  # receives while nobody reads
                await trio.testing.wait_all_tasks_blocked()
                assert a.buffered == limit
                assert a._core.reading_paused
                received = bytearray()
                while True:
                    peak = max(peak, a.buffered)
                    result = await a.read(10_000)
                    if not isinstance(result, Ok):
                        break
                    received += result.value
                assert result == Eof()
                assert bytes(received) == data
            assert peak == limit
            assert a.state is FlowState.CLOSED
            assert a.error is None
            await b.close()
            assert b.state is FlowState.CLOSED
            assert b.error is None

    run(main)


@needs_sync_sends
def test_tiny_socket_buffers_carry_4_mib_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=2048) as (a, b):
            sends = SendLog(monkeypatch, a)
            data = payload(4 * 1024 * 1024, seed=7)
            rng = random.Random(3)

            async def writer() -> None:
                view = memoryview(data)
                while view:
                    if rng.random() < 0.3:
                        parts: list[memoryview] = []
                        offset = 0
                        for _ in range(rng.randint(2, 9)):
                            size = rng.randint(1, 3000)
                            parts.append(view[offset:offset + size])
                            offset += size
                        assert await a.writev(parts) == Ok(None)
                        view = view[offset:]
                    else:
                        size = rng.randint(1, 100_000)
                        piece = view[:size]
                        chunk = bytearray(piece) if rng.random() < 0.5 else piece
                        assert await a.write(chunk) == Ok(None)
                        view = view[size:]
                await a.close()

            async def reader() -> None:
                received = bytearray()
                while True:
                    result = await b.read(rng.randint(1, 70_000))
                    if not isinstance(result, Ok):
                        break
                    received += result.value
                assert result == Eof()
                assert bytes(received) == data
                await b.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                nursery.start_soon(reader)
            assert a.state is b.state is FlowState.CLOSED
            assert a.error is None
            assert b.error is None
            partial = [s for s in sends.sends if s[3] < s[2]]
            assert partial, "the kernel never took a send in part"
            assert sum(s[3] for s in sends.sends) == len(data)
            assert any(s[0] == "writev" for s in sends.sends)

    run(main, timeout=60)


# -- coalescing ---------------------------------------------------------------------------


@needs_sync_sends
def test_a_burst_sends_its_first_write_at_once_and_the_rest_together(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with flow_pair("tcp") as (a, b):
            sends = SendLog(monkeypatch, a)
            parts: list[bytes | memoryview] = [b"a" * 10, b"b" * 20, memoryview(b"c" * 30),
                                               b"d" * 40]
            assert await a.writev(parts) == Ok(None)
            assert sends.sends == [("writev", 4, 100, 100)]  # the burst's first: at once
            for _ in range(3):
                assert await a.write(b"small") == Ok(None)
            assert sends.sends[1:] == []  # queued until the sender runs
            assert a.queued == 15
            await trio.testing.wait_all_tasks_blocked()
            # whatever is queued when the sender runs goes out in one call
            assert sends.sends[1:] == [("writev", 3, 15, 15)]
            # The sender ran, so this task had let others run: a new burst.
            assert await a.write(b"alone") == Ok(None)
            assert sends.sends[2:] == [("write", 1, 5, 5)]
            assert await a.write(b"next") == Ok(None)
            assert sends.sends[3:] == []
            # A read lets others run too: what is queued goes before the read waits.
            assert await b.write(b"?") == Ok(None)
            assert await read_exactly(a, 1) == b"?"
            assert sends.sends[3:] == [("write", 1, 4, 4)]
            assert await a.write(b"after") == Ok(None)
            assert sends.sends[4:] == [("write", 1, 5, 5)]
            expected = b"".join(bytes(p) for p in parts) + b"small" * 3 + b"alonenextafter"
            assert await read_exactly(b, len(expected)) == expected

    run(main)


@needs_sync_sends
def test_many_small_writes_go_out_in_sends_of_at_most_iov_max_buffers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with flow_pair("tcp") as (a, b):
            sends = SendLog(monkeypatch, a)
            pieces = [payload(7, seed=i) for i in range(3001)]  # 21007 bytes: below high water
            for piece in pieces:
                assert await a.write(piece) == Ok(None)
            assert sends.sends == [("write", 1, 7, 7)]  # the first, then the rest queued
            assert a.queued == 21000
            await trio.testing.wait_all_tasks_blocked()
            assert sends.sends[1:] == [("writev", 1024, 7168, 7168)] * 2 + [
                ("writev", 952, 6664, 6664)]
            assert a.queued == 0
            assert await read_exactly(b, 21007) == b"".join(pieces)

    run(main)


@needs_sync_sends
def test_writes_queued_while_a_send_waits_go_out_with_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=4096, high_water=1024 * 1024,
                             low_water=512 * 1024) as (a, b):
            sends = SendLog(monkeypatch, a)
            first = payload(256 * 1024, seed=1)
            assert await a.write(first) == Ok(None)
            await trio.testing.wait_all_tasks_blocked()  # the sender waits: the kernel is full
            leftover = a.queued
            assert 0 < leftover < len(first)
            assert await a.write(b"tail") == Ok(None)
            assert a.queued == leftover + 4
            assert await read_exactly(b, len(first) + 4) == first + b"tail"
            await trio.testing.wait_all_tasks_blocked()
            assert a.queued == 0
            # Once the send waiting for the kernel was done, the rest went out with the tail.
            assert any(method == "writev" and buffers == 2
                       for method, buffers, _offered, _taken in sends.sends)
            assert sum(taken for *_, taken in sends.sends) == len(first) + 4

    run(main)


# -- the sender task ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sender_starts_with_data_left_queued_and_ends_with_the_send_direction(
        kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, b):
            await a.write(b"")
            await a.writev([])
            await trio.testing.wait_all_tasks_blocked()
            assert senders() == 0  # nothing was ever queued
            assert await a.write(b"to b") == Ok(None)
            # With sync sends (a socket, on POSIX) a burst's first write goes out at once,
            # without a sender; other streams are always sent to by the sender.
            assert senders() == (0 if cast(Any, a)._sync else 1)
            assert await a.write(b" and") == Ok(None)  # queued: the sender will send it
            assert senders() == 1
            assert await read_exactly(b, 8) == b"to b and"
            await trio.testing.wait_all_tasks_blocked()
            assert senders() == 1  # an idle sender sleeps until the next write
            assert a.queued == 0
            await a.shutdown(Shutdown.WRITE)  # the sender sees the EOF sent, and ends
            await trio.testing.wait_all_tasks_blocked()
            assert senders() == 0
            assert await read_all(b) == (b"to b and"[8:], Eof())
            await b.close()
            assert await read_all(a) == (b"", Eof())
            assert a.state is b.state is FlowState.CLOSED
            assert senders() == 0

    run(main)


def test_a_read_only_flow_sends_its_eof_without_a_sender() -> None:
    async def main() -> None:
        async with flow_pair("tcp") as (a, b):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.close)
                await trio.testing.wait_all_tasks_blocked()
                assert senders() == 0
                assert a.send_state is SendState.EOF_SENT
                assert await b.read() == Eof()
                await b.close()
            assert a.state is FlowState.CLOSED
            assert a.error is None

    run(main)


@pytest.mark.parametrize("kind", ["tcp", "lockstep"])
def test_flows_still_sending_when_the_run_ends_are_aborted(kind: str) -> None:
    flows: list[sf.TrioFlow] = []
    peers: list[trio.abc.HalfCloseableStream] = []

    async def main() -> None:
        a_stream, b_stream = streams(kind, bufsize=4096)
        a = await sf.wrap(a_stream)
        flows.append(a)
        peers.append(b_stream)
        assert await a.write(payload(1024 * 1024)) == Ok(None)  # nobody reads it
        await trio.testing.wait_all_tasks_blocked()
        assert senders() == 1
        # The main task returns with a's sender waiting to send: trio cancels the sender.

    trio.run(main)
    [a] = flows
    assert a.state is FlowState.CLOSED
    assert a.error == FlowError(ErrorKind.ABORTED)
    assert a.queued == 0

    async def after() -> None:
        assert await released(a)
        [peer] = peers
        await trio.aclose_forcefully(peer)

    trio.run(after)


def test_a_reset_while_close_flushes_ends_the_close() -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=4096) as (a, b):
            assert await a.write(payload(1024 * 1024)) == Ok(None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.close)
                await trio.testing.wait_all_tasks_blocked()
                assert a.send_state is SendState.EOF_QUEUED  # the queue cannot drain
                assert await read_exactly(b, 1000)  # then b goes away
                await b.abort()
            error = a.error
            assert error is not None
            assert error.kind in (ErrorKind.RESET, ErrorKind.BROKEN_PIPE)
            assert isinstance(error.cause, OSError)
            assert a.state is FlowState.CLOSED
            assert await released(a)
            await trio.testing.wait_all_tasks_blocked()
            assert senders() == 0

    run(main)


class FailingSend(trio.abc.HalfCloseableStream):
    """A stream whose ``send_all`` fails with something that is not a transport error."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError("the stream is broken in an unexpected way")

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_an_unexpected_exception_from_the_stream_ends_the_flow_not_the_run() -> None:
    async def main() -> None:
        left, right = trio.testing.memory_stream_pair()
        a, b = await sf.wrap(FailingSend(left)), await sf.wrap(right)
        results: list[ReadResult] = []

        async def reader() -> None:
            results.append(await a.read())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert await a.write(b"never sent") == Ok(None)
        error = a.error
        assert error is not None
        assert error.kind is ErrorKind.TRANSPORT
        assert isinstance(error.cause, ValueError)
        assert "ValueError" in error_message(error)
        assert results == [Error(error)]
        assert await a.write(b"x") == Error(error)
        with pytest.raises(trio.ClosedResourceError):  # released: aclose_forcefully
            await left.receive_some(1)
        assert senders() == 0
        await b.abort()

    run(main)


# -- busy and cancellation ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_second_reader_is_busy(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, b):
            got: list[ReadResult] = []

            async def reader() -> None:
                got.append(await a.read())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(BusyError):
                    await a.read()
                assert await b.write(b"for the first") == Ok(None)
            assert got == [Ok(b"for the first")]
            assert await a.write(b"x") == Ok(None)  # a reader does not make a writer busy

    run(main)


def test_second_writer_is_busy() -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=4096) as (a, b):
            data = payload(1024 * 1024)

            async def writer() -> None:
                assert await a.write(data[:512 * 1024]) == Ok(None)  # queued at once
                assert await a.write(data[512 * 1024:]) == Ok(None)  # waits for room

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await trio.testing.wait_all_tasks_blocked()
                queued = a.queued
                with pytest.raises(BusyError):
                    await a.write(b"second")
                with pytest.raises(BusyError):
                    await a.writev([b"second"])
                assert a.queued == queued
                assert await read_exactly(b, len(data)) == data

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_cancelled_read_loses_nothing(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind) as (a, b):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.read)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            assert scope.cancelled_caught
            assert await b.write(b"after the cancel") == Ok(None)
            with trio.CancelScope() as scope:
                scope.cancel()
                await a.read()  # cancelled before it takes anything
            assert await read_exactly(a, 16) == b"after the cancel"
            assert a.state is FlowState.OPEN

    run(main)


def test_cancelled_write_queues_all_or_nothing() -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=4096, high_water=64 * 1024,
                             low_water=16 * 1024) as (a, b):
            first = payload(256 * 1024, seed=1)
            second = payload(128 * 1024, seed=2)

            # Queued at once (the queue was empty): cancelling afterwards changes nothing.
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.write, first)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            leftover = a.queued
            assert leftover > a.low_water

            # Cancelled while waiting for room: nothing of it is queued.
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.write, second)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            assert a.queued == leftover

            # Cancelled before it starts: nothing either.
            with trio.CancelScope() as scope:
                scope.cancel()
                await a.write(second)
            assert a.queued == leftover

            # With the peer reading, a write held back by the leftover goes out after it.
            third = [payload(100_000, seed=3), payload(50_000, seed=4)]

            async def finish() -> None:
                assert await a.write(third[0]) == Ok(None)
                assert await a.writev(third[1:]) == Ok(None)
                await a.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(finish)
                received, end = await read_all(b)
                await b.close()
            assert end == Eof()
            assert received == first + b"".join(third)
            assert a.state is FlowState.CLOSED
            assert a.error is None

    run(main)


@pytest.mark.parametrize("kind", ["tcp", "lockstep"])  # transports where a send can wait
def test_cancelled_shutdown_leaves_the_eof_queued(kind: str) -> None:
    async def main() -> None:
        async with flow_pair(kind, bufsize=4096) as (a, b):
            data = payload(300_000) if kind == "tcp" else b"queued before the EOF"
            assert await a.writev([data[:10], data[10:]]) == Ok(None)
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.shutdown, Shutdown.WRITE)
                    await trio.testing.wait_all_tasks_blocked()  # b does not read: it waits
                    scope.cancel()
            assert scope.cancelled_caught
            # Only the wait ended: the data and then the EOF still go out.
            assert a.state is FlowState.HALF_CLOSED_LOCAL
            assert a.send_state is SendState.EOF_QUEUED
            assert await read_all(b) == (data, Eof())
            await trio.testing.wait_all_tasks_blocked()
            assert send_state_of(a) is SendState.EOF_SENT
            assert a.error is None

    run(main)


def test_bad_input_raises_and_changes_nothing() -> None:
    async def main() -> None:
        async with flow_pair("memory") as (a, b):
            for bad in ("text", None, 42, [b"list"]):
                with pytest.raises(TypeError):
                    await a.write(bad)  # type: ignore[arg-type]
            for bad_iterable in (b"bytes", "text", 5, None):
                with pytest.raises(TypeError):
                    await a.writev(bad_iterable)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await a.writev([b"ok", "text"])  # type: ignore[list-item]
            for size in (0, -1):
                with pytest.raises(ValueError, match="max_bytes"):
                    await a.read(size)
            for not_int in (1.5, "1", True):
                with pytest.raises(TypeError, match="max_bytes"):
                    await a.read(not_int)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="Shutdown"):
                await a.shutdown("write")  # type: ignore[arg-type]
            assert a.state is FlowState.OPEN
            assert a.queued == 0
            assert await a.write(b"fine") == Ok(None)
            assert await read_exactly(b, 4) == b"fine"

    run(main)


def test_bad_construction() -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="trio stream"):
            await sf.wrap(object())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="TrioFlow"):
            sf.FlowStream(object())  # type: ignore[arg-type]
        left, right = trio.testing.memory_stream_pair()
        with pytest.raises(ValueError, match="high_water"):
            await sf.wrap(left, high_water=0)
        with pytest.raises(ValueError, match="low_water"):
            await sf.wrap(left, high_water=10, low_water=100)
        await left.aclose()
        await right.aclose()
        # Options are checked before connecting: nothing listens on this port.
        with socket.socket() as unused:
            unused.bind((HOST, 0))
            port = unused.getsockname()[1]
        with pytest.raises(ValueError, match="receive_limit"):
            await sf.connect(HOST, port, receive_limit=0)
        with pytest.raises(ValueError, match="high_water"):
            sf.serve(echo_handler, HOST, 0, high_water=-1)

    run(main)


# -- serve, connect, many flows -----------------------------------------------------------


async def echo_handler(flow: sf.TrioFlow) -> None:
    while isinstance(result := await flow.read(), Ok):
        if not isinstance(await flow.write(result.value), Ok):
            return


async def echo_client(port: int, data: bytes) -> sf.TrioFlow:
    flow = await sf.connect(HOST, port)
    assert await flow.write(data) == Ok(None)
    await flow.shutdown(Shutdown.WRITE)
    assert await read_all(flow) == (data, Eof())
    await flow.close()
    assert flow.state is FlowState.CLOSED
    assert flow.error is None
    return flow


def test_serve_closes_what_the_handler_leaves_open() -> None:
    async def main() -> None:
        server_flows: list[sf.TrioFlow] = []

        async def handler(flow: sf.TrioFlow) -> None:
            server_flows.append(flow)
            assert await flow.write(b"hello") == Ok(None)

        async with trio.open_nursery() as nursery:
            port = await nursery.start(sf.serve, handler, HOST, 0)
            assert isinstance(port, int)
            client = await sf.connect(HOST, port)
            assert await read_all(client) == (b"hello", Eof())
            await client.close()
            assert client.state is FlowState.CLOSED
            assert client.error is None
            await trio.testing.wait_all_tasks_blocked()
            [server_flow] = server_flows
            assert server_flow.state is FlowState.CLOSED
            assert server_flow.error is None
            assert await released(server_flow)
            nursery.cancel_scope.cancel()

    run(main)


@pytest.mark.expect_log("sansflow", "handler raised")
def test_a_handler_that_raises_is_logged_its_flow_aborted_and_the_server_keeps_serving() -> None:
    async def main() -> None:
        server_flows: list[sf.TrioFlow] = []

        async def handler(flow: sf.TrioFlow) -> None:
            server_flows.append(flow)
            if len(server_flows) == 1:
                assert await flow.read() == Ok(b"boom?")
                raise LookupError("handler failed")
            await echo_handler(flow)

        async with trio.open_nursery() as nursery:
            port = await nursery.start(sf.serve, handler, HOST, 0)
            client = await sf.connect(HOST, port)
            assert await client.write(b"boom?") == Ok(None)
            result = await client.read()
            assert isinstance(result, Error)
            assert result.error.kind is ErrorKind.RESET
            await client.close()
            await echo_client(port, b"still serving")
            nursery.cancel_scope.cancel()
        assert server_flows[0].error == FlowError(ErrorKind.ABORTED)
        assert await released(server_flows[0])

    run(main)


def test_serve_as_an_async_context_manager() -> None:
    async def main() -> None:
        ended: list[str] = []

        async def serve_forever(server: sf.Server) -> None:
            await server.serve_forever()
            ended.append("serve_forever returned")

        async with trio.open_nursery() as nursery, sf.serve(echo_handler, HOST, 0) as server:
            assert server.path is None
            nursery.start_soon(serve_forever, server)
            port = server.port
            await echo_client(port, b"served")
            await trio.testing.wait_all_tasks_blocked()
            assert ended == []
        assert ended == ["serve_forever returned"]
        assert server.port == port  # where it listened, also once stopped
        with pytest.raises(ConnectionRefusedError):  # leaving the block stopped listening
            await sf.connect(HOST, port)

    run(main)


def test_an_exception_leaving_the_server_block_comes_out_as_it_is() -> None:
    async def main() -> None:
        server_flows: list[sf.TrioFlow] = []

        async def handler(flow: sf.TrioFlow) -> None:
            server_flows.append(flow)
            await flow.read()  # until the server stops

        clients: list[sf.TrioFlow] = []

        async def fail_in_the_block() -> None:
            async with sf.serve(handler, HOST, 0, grace=0) as server:
                clients.append(await sf.connect(HOST, server.port))
                while not server_flows:
                    await trio.sleep(0.001)
                raise LookupError("the block failed")

        with pytest.raises(LookupError, match="the block failed"):  # not in an exception group
            await fail_in_the_block()
        [client] = clients
        [server_flow] = server_flows
        assert server_flow.error == FlowError(ErrorKind.ABORTED)
        assert await released(server_flow)
        result = await client.read()
        assert isinstance(result, Error)
        assert result.error.kind is ErrorKind.RESET

    run(main)


def test_a_server_runs_once_and_answers_only_while_listening() -> None:
    async def main() -> None:
        server = sf.serve(echo_handler, HOST, 0)
        with pytest.raises(RuntimeError, match="not listening"):
            _ = server.port
        with pytest.raises(RuntimeError, match="not listening"):
            await server.serve_forever()
        async with server:
            pass
        with pytest.raises(RuntimeError, match="once"):
            async with server:
                pass

    run(main)


def test_serve_with_host_none_listens_on_every_interface_on_one_port() -> None:
    async def main() -> None:
        async with sf.serve(echo_handler, None, 0) as server:
            ports = {listener.socket.getsockname()[1] for listener in server.listeners}
            assert ports == {server.port}
            await echo_client(server.port, b"any interface")
            if has_ipv6_loopback():
                assert len(server.listeners) == 2
                flow = await sf.connect("::1", server.port)
                await flow.close()

    run(main)


def test_bad_addresses_are_refused_before_any_io() -> None:
    async def main() -> None:
        with socket.socket() as unused:
            unused.bind((HOST, 0))
            port = unused.getsockname()[1]
            with pytest.raises(TypeError, match="port"):
                await sf.connect(HOST, str(port))  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="host"):
                await sf.connect(HOST.encode(), port)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="timeout"):
                await sf.connect(HOST, port, timeout=-1)
            with pytest.raises(TypeError, match="port"):
                sf.serve(echo_handler, HOST, str(port))  # type: ignore[call-overload]
            with pytest.raises(TypeError, match="path"):
                await sf.connect_unix(3)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="path"):
                sf.serve_unix(echo_handler, 3)  # type: ignore[call-overload]

    run(main)


# -- failed connects: the same exceptions as on every adapter -----------------------------


def test_a_refused_connect_is_connection_refused_naming_host_and_port() -> None:
    async def main() -> None:
        with socket.socket() as bound:  # bound, not listening: the connect is refused
            bound.bind((HOST, 0))
            port = bound.getsockname()[1]
            with pytest.raises(ConnectionRefusedError, match=f"{HOST}:{port}") as caught:
                await sf.connect(HOST, port)
        assert caught.value.errno == errno.ECONNREFUSED
        assert isinstance(caught.value.__cause__, ConnectionRefusedError)

    run(main)


def test_a_name_that_does_not_resolve_is_gaierror() -> None:
    async def main() -> None:
        with pytest.raises(socket.gaierror, match=r"nowhere\.invalid:80"):
            await sf.connect("nowhere.invalid", 80)

    run(main)


def test_a_connect_that_outlasts_its_timeout_is_timeout_error() -> None:
    async def main() -> None:
        with full_backlog_port() as port, \
                pytest.raises(TimeoutError, match=f"{HOST}:{port} timed out after 0.1 s"):
            await sf.connect(HOST, port, timeout=0.1)

    run(main)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6() -> None:
    async def main() -> None:
        async with sf.serve(echo_handler, "::1", 0) as server:
            flow = await sf.connect("::1", server.port)
            assert flow.peername[:2] == ("::1", server.port)
            assert flow.sockname[0] == "::1"
            assert await flow.write(b"over IPv6") == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"over IPv6", Eof())
            await flow.close()
        with socket.socket(socket.AF_INET6) as bound:
            bound.bind(("::1", 0))
            port = bound.getsockname()[1]
            with pytest.raises(ConnectionRefusedError, match=rf"\[::1\]:{port}"):
                await sf.connect("::1", port)

    run(main)


# -- the addresses of a flow ----------------------------------------------------------------


def test_peername_and_sockname_are_the_sockets_and_outlive_the_flow() -> None:
    async def main() -> None:
        seen: list[tuple[Any, Any]] = []

        async def tell(flow: sf.TrioFlow) -> None:
            seen.append((flow.peername, flow.sockname))

        async with sf.serve(tell, HOST, 0) as server:
            flow = await sf.connect(HOST, server.port)
            stream = flow.stream
            assert isinstance(stream, trio.SocketStream)
            names = (stream.socket.getpeername(), stream.socket.getsockname())
            assert names[0] == (HOST, server.port)
            assert await read_all(flow) == (b"", Eof())
            await flow.close()
            assert await released(flow)
        assert (flow.peername, flow.sockname) == names
        assert seen == [(names[1], names[0])]
        async with flow_pair("memory") as (a, _):
            assert (a.peername, a.sockname) == (None, None)

    run(main)


# -- wrap ---------------------------------------------------------------------------------


def test_a_cancelled_wrap_leaves_the_socket_to_its_owner() -> None:
    async def main() -> None:
        ours, theirs = tcp_sockets()
        with ours, theirs:
            ours.setblocking(True)
            with trio.CancelScope() as scope:
                scope.cancel()
                await sf.wrap(ours)
            assert scope.cancelled_caught
            assert ours.fileno() != -1
            assert ours.getblocking()
            flow = await sf.wrap(ours.dup())
            await flow.abort()

    run(main)


def test_a_trio_flow_is_an_async_adapter_flow() -> None:
    async def main() -> None:
        async with flow_pair("tcp") as (a, b):
            assert isinstance(a, AsyncAdapterFlow)
            async with a:
                assert await b.write(b"iterated") == Ok(None)
                await b.shutdown(Shutdown.WRITE)
                assert b"".join([data async for data in a]) == b"iterated"
            assert a.state is FlowState.CLOSED
            assert a.error is None

    run(main)


# -- AF_UNIX --------------------------------------------------------------------------------

needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX sockets")


@needs_unix
def test_serve_unix_and_connect_unix(tmp_path: Path) -> None:
    path = str(tmp_path / "flow.sock")

    async def main() -> None:
        async with sf.serve_unix(echo_handler, path) as server:
            assert server.path == path
            with pytest.raises(RuntimeError, match="path, not a port"):
                _ = server.port
            flow = await sf.connect_unix(path)
            assert flow.peername == path
            assert await flow.writev([b"over ", b"AF_UNIX"]) == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"over AF_UNIX", Eof())
            await flow.close()
            assert flow.error is None
        assert not os.path.exists(path)  # the socket file went with the server

    run(main)


@needs_unix
def test_serve_unix_under_nursery_start_returns_the_path_and_replaces_a_stale_socket(
        tmp_path: Path) -> None:
    path = tmp_path / "flow.sock"
    with socket.socket(socket.AF_UNIX) as stale:  # bound, never listening, left behind
        stale.bind(str(path))

    async def main() -> None:
        with pytest.raises(ConnectionRefusedError, match=str(path)):
            await sf.connect_unix(path)
        async with trio.open_nursery() as nursery:
            assert await nursery.start(sf.serve_unix, echo_handler, path) == path
            flow = await sf.connect_unix(path)
            await flow.close()
            assert flow.error is None
            nursery.cancel_scope.cancel()

    run(main)


@needs_unix
def test_connect_unix_to_a_missing_path_is_file_not_found(tmp_path: Path) -> None:
    path = str(tmp_path / "nothing.sock")

    async def main() -> None:
        with pytest.raises(FileNotFoundError, match=path):
            await sf.connect_unix(path)

    run(main)


def test_server_run_serves_under_nursery_start_with_named_options(tmp_path: Path) -> None:
    """``nursery.start(serve(..., option=...).run)``: trio's way, typed, with any option;
    the port (the path for serve_unix) is what ``start`` returns, and cancelling stops it."""
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port: int = await nursery.start(sf.serve(echo_handler, HOST, 0, backlog=8,
                                                     high_water=1024, low_water=256).run)
            path = await nursery.start(sf.serve_unix(echo_handler, tmp_path / "s.sock").run)
            assert path == tmp_path / "s.sock"
            await echo_client(port, b"over tcp")  # asserts the echo and a clean close
            flow = await sf.connect_unix(path)
            assert await flow.write(b"over unix") == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"over unix", Eof())
            await flow.close()
            nursery.cancel_scope.cancel()
        with pytest.raises(ConnectionRefusedError):  # cancelled: no longer listening
            await sf.connect(HOST, port)

    run(main)


def test_200_concurrent_echo_flows_over_tcp() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(sf.serve, echo_handler, HOST, 0)
            async with trio.open_nursery() as clients:
                for i in range(200):
                    clients.start_soon(echo_client, port, payload(8 * 1024 + i, seed=i))
            nursery.cancel_scope.cancel()

    run(main, timeout=60)


def test_200_concurrent_echo_flows_over_memory_streams() -> None:
    async def main() -> None:
        async def one(i: int) -> None:
            data = payload(8 * 1024 + i, seed=i)
            async def serve_one(flow: sf.TrioFlow) -> None:
                await echo_handler(flow)
                await flow.close()  # what serve() does after the handler

            async with flow_pair("memory") as (client, server):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve_one, server)
                    assert await client.write(data) == Ok(None)
                    await client.shutdown(Shutdown.WRITE)
                    assert await read_all(client) == (data, Eof())
                    await client.close()
                assert client.state is server.state is FlowState.CLOSED
                assert client.error is None
                assert server.error is None

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)

    run(main, timeout=60)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_no_file_descriptor_leaks() -> None:
    async def main() -> None:
        async def aborting(flow: sf.TrioFlow) -> None:
            await flow.abort()

        async with trio.open_nursery() as nursery:
            port = await nursery.start(sf.serve, echo_handler, HOST, 0)
            async with trio.open_nursery() as clients:
                for i in range(20):
                    clients.start_soon(echo_client, port, payload(1000, seed=i))
            aborted_port = await nursery.start(sf.serve, aborting, HOST, 0)
            for _ in range(5):
                flow = await sf.connect(HOST, aborted_port)
                await read_all(flow)
                await flow.close()
            for _ in range(5):
                flow = await sf.connect(HOST, port)
                await flow.close(timeout=0)  # the echo server has not answered yet
            nursery.cancel_scope.cancel()
        for kind in ("tcp", "memory"):
            async with flow_pair(kind) as (a, b):
                await a.abort()
                await b.close(timeout=0.01)

    before = len(os.listdir("/proc/self/fd"))
    run(main, timeout=60)
    assert len(os.listdir("/proc/self/fd")) == before


# -- streams that cannot half-close -------------------------------------------------------


class NoHalfClose(trio.abc.Stream):
    """A stream without ``send_eof``, like ``trio.SSLStream``."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_without_send_eof_closing_after_the_peer_is_clean() -> None:
    async def main() -> None:
        left, right = trio.testing.memory_stream_pair()
        a, b = await sf.wrap(NoHalfClose(left)), await sf.wrap(right)
        assert await b.write(b"last words") == Ok(None)
        await b.shutdown(Shutdown.WRITE)
        assert await read_all(a) == (b"last words", Eof())
        assert await a.write(b"reply") == Ok(None)
        await a.close()
        assert a.state is FlowState.CLOSED
        assert a.error is None
        assert await read_all(b) == (b"reply", Eof())
        assert b.state is FlowState.CLOSED
        assert b.error is None

    run(main)


def test_without_send_eof_our_eof_closes_both_directions() -> None:
    async def main() -> None:
        left, right = trio.testing.memory_stream_pair()
        a, b = await sf.wrap(NoHalfClose(left)), await sf.wrap(right)
        assert await a.write(b"bye") == Ok(None)
        await a.shutdown(Shutdown.WRITE)
        assert a.state is FlowState.CLOSED
        assert a.error is not None
        assert a.error.kind is ErrorKind.TRANSPORT
        assert "cannot half-close" in error_message(a.error)
        assert await a.read() == Error(a.error)
        assert await read_all(b) == (b"bye", Eof())
        await b.abort()

    run(main)


# -- FlowStream: trio's own conformance suite ---------------------------------------------


async def memory_flow_streams() -> tuple[sf.FlowStream, sf.FlowStream]:
    left, right = trio.testing.memory_stream_pair()
    return sf.FlowStream(await sf.wrap(left)), sf.FlowStream(await sf.wrap(right))


async def tcp_flow_streams() -> tuple[sf.FlowStream, sf.FlowStream]:
    client, server = tcp_sockets()
    return (sf.FlowStream(await sf.wrap(socket_stream(client))),
            sf.FlowStream(await sf.wrap(socket_stream(server))))


async def clogged(left: trio.abc.Stream, right: trio.abc.Stream
                  ) -> tuple[sf.FlowStream, sf.FlowStream]:
    """FlowStreams whose flows hold one queued byte that the transport does not take until
    the peer receives. With water marks of 1 and 0, any further send waits for room, and
    ``wait_send_all_might_not_block`` for the queue to drain: what trio calls clogged."""
    flows = (await sf.wrap(left, high_water=1, low_water=0),
             await sf.wrap(right, high_water=1, low_water=0))
    for flow in flows:
        assert await flow.write(b"x") == Ok(None)
    await trio.testing.wait_all_tasks_blocked()
    assert all(flow.queued == 1 for flow in flows)
    return sf.FlowStream(flows[0]), sf.FlowStream(flows[1])


async def clogged_lockstep_flow_streams() -> tuple[sf.FlowStream, sf.FlowStream]:
    return await clogged(*trio.testing.lockstep_stream_pair())


async def clogged_socket_flow_streams() -> tuple[sf.FlowStream, sf.FlowStream]:
    """Both directions full. A Unix socket pair, because a full TCP connection does not stay
    full: the kernel reopens the window a little later, and a small send gets through."""
    left, right = socket.socketpair()
    for sock in (left, right):
        sock.setblocking(False)
        for size in (65536, 1024, 1):
            try:
                while True:
                    sock.send(b"x" * size)
            except BlockingIOError:
                pass
    return await clogged(socket_stream(left), socket_stream(right))


def test_flow_stream_is_a_half_closeable_stream_over_memory() -> None:
    async def main() -> None:
        await trio.testing.check_half_closeable_stream(memory_flow_streams,
                                                       clogged_lockstep_flow_streams)

    run(main, timeout=60)


def test_flow_stream_is_a_half_closeable_stream_over_tcp() -> None:
    async def main() -> None:
        await trio.testing.check_half_closeable_stream(tcp_flow_streams,
                                                       clogged_socket_flow_streams)

    run(main, timeout=60)


def test_flow_stream_maps_flow_errors() -> None:
    async def main() -> None:
        client, server = tcp_sockets()
        a = sf.FlowStream(await sf.wrap(socket_stream(client)))
        b = await sf.wrap(socket_stream(server))
        assert a.flow.state is FlowState.OPEN
        await b.abort()
        with pytest.raises(trio.BrokenResourceError) as info:
            await a.receive_some()
        assert isinstance(info.value.__cause__, ConnectionResetError)
        assert "ECONNRESET" in str(info.value)
        with pytest.raises(trio.BrokenResourceError):
            await a.send_all(b"x")
        with pytest.raises(trio.BrokenResourceError):
            await a.send_eof()
        await a.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await a.receive_some()

    run(main)


def test_flow_stream_wait_send_after_eof_returns_at_once() -> None:
    async def main() -> None:
        left, right = await memory_flow_streams()
        await left.send_eof()
        await left.wait_send_all_might_not_block()  # a send would fail, not block
        with pytest.raises(trio.ClosedResourceError):
            await left.send_all(b"late")
        assert await right.receive_some() == b""
        await left.aclose()
        await right.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await left.wait_send_all_might_not_block()

    run(main)


def test_flow_stream_aclose_flushes_what_send_all_queued() -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=4096) as (a, b):
            stream = sf.FlowStream(a)
            data = payload(256 * 1024)
            await stream.send_all(data)
            assert a.queued > 0  # send_all returned once its data was queued
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.aclose)
                await trio.testing.wait_all_tasks_blocked()
                assert not await released(a)  # still flushing: b has not read
                assert await read_all(b) == (data, Eof())
            assert await released(a)
            assert a.state is FlowState.CLOSED

    run(main)


@pytest.mark.parametrize("sync", [True, False], ids=["sync sends", "trio socket sends"])
def test_flow_stream_aclose_with_input_unread_still_delivers_what_it_sent(
        sync: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket closed with unread input sends a reset, which drops what the kernel had not
    sent yet: aclose() drops the unread input first, so the peer reads our data and a FIN.
    (A TLS 1.3 client always has some: the server's session tickets.) Through the trio
    socket the input cannot be taken without waiting: the reset stays."""
    if not sync:
        monkeypatch.setattr(trio_flow, "_HAVE_WRITEV", False)

    async def main() -> None:
        ours, theirs = tcp_sockets()
        flow = await sf.wrap(ours)
        stream = sf.FlowStream(flow)
        theirs.setblocking(True)
        theirs.sendall(b"never read")
        data = payload(4 * 1024 * 1024)  # far more than the kernel's buffers hold

        async with trio.open_nursery() as nursery:
            got: list[bytes | OSError] = []

            async def peer() -> None:
                got.append(await trio.to_thread.run_sync(read_to_end, theirs))

            nursery.start_soon(peer)
            await stream.send_all(data)
            await stream.aclose()
        theirs.close()
        if sync:
            assert got == [data]
        else:
            assert isinstance(got[0], ConnectionResetError)

    run(main)


def test_flow_stream_cancelled_aclose_resets_when_data_would_be_lost() -> None:
    async def main() -> None:
        async with flow_pair("tcp", bufsize=4096) as (a, b):
            stream = sf.FlowStream(a)
            await stream.send_all(payload(256 * 1024))
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream.aclose)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            assert await released(a)
            assert a.error == FlowError(ErrorKind.ABORTED)
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_all(b"x")
            _, end = await read_all(b)
            assert isinstance(end, Error)
            assert end.error.kind is ErrorKind.RESET  # not a clean EOF: data is missing

    run(main)


# -- sockets without sync sends (Windows, fake sockets) -----------------------------------


@pytest.mark.usefixtures("without_sync_sends")
def test_without_sync_sends_the_flows_keep_the_contract() -> None:
    async def make_pair() -> tuple[AsyncFlowLike, AsyncFlowLike]:
        client, server = tcp_sockets()
        a, b = await sf.wrap(socket_stream(client)), await sf.wrap(socket_stream(server))
        assert not cast(Any, a)._sync
        return a, b

    anyio.run(partial(check_flow_pair, make_pair, timeout=20), backend="trio")


@pytest.mark.usefixtures("without_sync_sends")
def test_without_sync_sends_flow_stream_is_a_half_closeable_stream() -> None:
    async def main() -> None:
        await trio.testing.check_half_closeable_stream(tcp_flow_streams,
                                                       clogged_socket_flow_streams)

    run(main, timeout=60)


@pytest.mark.usefixtures("without_sync_sends")
def test_without_sync_sends_writes_still_coalesce() -> None:
    async def main() -> None:
        async with flow_pair("tcp") as (a, b):
            pieces = [payload(7, seed=i) for i in range(3000)]
            for piece in pieces:
                assert await a.write(piece) == Ok(None)
            assert a.queued == 21000  # the sender sends once this task lets it run
            assert await read_exactly(b, 21000) == b"".join(pieces)
            await trio.testing.wait_all_tasks_blocked()
            assert a.queued == 0
            await a.shutdown(Shutdown.WRITE)
            assert await read_all(b) == (b"", Eof())

    run(main)


# -- the examples -------------------------------------------------------------------------


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_echo_examples() -> None:
    server = load_example("trio_echo_server")
    client = load_example("trio_echo_client")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.main, HOST, 0)
            assert await client.main(HOST, port) == b"hello from trio"
            big = payload(300_000)
            assert await client.main(HOST, port, big) == big
            nursery.cancel_scope.cancel()

    run(main)
