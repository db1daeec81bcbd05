"""Fault injection on every adapter: killed and resetting peers, peers that never read, flood or
trickle one byte at a time, cancellation at random points, aborts from elsewhere, bad
arguments to every factory and to flows in every state, and a thousand flows at once.

Each scenario is written once, as anyio code over the async flow API, and runs on each adapter
through a small ``Driver``: asyncio, asyncio on uvloop, trio, and the blocking-socket adapter
driven from worker threads (``threaded``). Peers that must die run in their own process
(``tests/adapters/fault_peers.py``); the others are plain sockets in the test. Deadlines only
protect against hangs; no test asserts how long anything takes. Every test ends with the file
descriptors, tasks and threads it started gone, and nothing logged at ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest
import trio
from fault_peers import GREETING, pattern
from loopback import reset

from sansflow import (
    AdapterFlow,
    Eof,
    Error,
    ErrorKind,
    Flow,
    FlowState,
    Ok,
    ReadResult,
    ReceiveState,
    SendState,
    Shutdown,
    WriteResult,
)
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio
from sansflow.adapters._common import READ_SIZE
from sansflow.testing.conformance import AsyncFlowLike, ThreadedFlow, threaded

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop does not exist on Windows
    uvloop = None

HOST = "127.0.0.1"
PEERS = Path(__file__).resolve().with_name("fault_peers.py")
TIMEOUT = 20.0  # hang protection for one wait; a slow machine is not a bug
OK = Ok(None)
FD_DIR = "/proc/self/fd"
BACKLOG = 2048
# A transport read on asyncio's loops takes up to 256 KiB (uvloop: 256,000 bytes); trio never
# reads past the receive limit; the socket adapter reads READ_SIZE at a time.
ASYNCIO_READ = 256 * 1024
pytestmark = pytest.mark.skipif(not os.path.isdir(FD_DIR), reason="needs /proc/self/fd")


# -- one adapter, seen through the async flow API ----------------------------------------------


class Driver:
    """How a scenario makes flows on one adapter, and how it runs there.

    Flows made here are remembered, so that a scenario that hangs can abort them all.
    """

    name = ""
    backend = "asyncio"
    # Input is taken from the kernel only by a read or a close() (trio, the socket adapter),
    # not as it arrives (asyncio).
    receives_on_demand = True
    read_overshoot = 0  # the most one transport read may carry the buffer past receive_limit

    def __init__(self) -> None:
        self.made: list[AsyncFlowLike] = []

    def backend_options(self) -> dict[str, Any]:
        return {}

    async def wrap(self, sock: socket.socket, **options: Any) -> AsyncFlowLike:
        raise NotImplementedError

    async def connect(self, host: str, port: int, **options: Any) -> AsyncFlowLike:
        raise NotImplementedError

    def serve(self, handler: Callable[[AsyncFlowLike], Awaitable[None]],
              **options: Any) -> AbstractAsyncContextManager[int]:
        """Serve on 127.0.0.1; the context manager gives the port."""
        raise NotImplementedError

    def inner(self, flow: AsyncFlowLike) -> AdapterFlow:
        """The adapter's own flow under ``flow`` (its busy flags say who waits)."""
        assert isinstance(flow, AdapterFlow)
        return flow

    def live_tasks(self) -> int:
        return len(asyncio.all_tasks())

    async def abort_all(self) -> None:
        with anyio.CancelScope(shield=True):
            for flow in self.made:
                await flow.abort()

    def _made(self, flow: AsyncFlowLike) -> AsyncFlowLike:
        self.made.append(flow)
        return flow

    def __repr__(self) -> str:
        return self.name


class AsyncioDriver(Driver):
    read_overshoot = ASYNCIO_READ
    receives_on_demand = False

    def __init__(self, use_uvloop: bool) -> None:
        super().__init__()
        self.use_uvloop = use_uvloop
        self.name = "uvloop" if use_uvloop else "asyncio"

    def backend_options(self) -> dict[str, Any]:
        if self.use_uvloop:
            assert uvloop is not None
            return {"loop_factory": uvloop.new_event_loop}
        return {}

    async def wrap(self, sock: socket.socket, **options: Any) -> AsyncFlowLike:
        return self._made(await sf_asyncio.wrap(sock, **options))

    async def connect(self, host: str, port: int, **options: Any) -> AsyncFlowLike:
        return self._made(await sf_asyncio.connect(host, port, **options))

    @asynccontextmanager
    async def serve(self, handler: Callable[[AsyncFlowLike], Awaitable[None]],
                    **options: Any) -> AsyncIterator[int]:
        async with sf_asyncio.serve(handler, HOST, 0, backlog=BACKLOG, **options) as server:
            yield server.port


class TrioDriver(Driver):
    name = "trio"
    backend = "trio"

    async def wrap(self, sock: socket.socket, **options: Any) -> AsyncFlowLike:
        return self._made(await sf_trio.wrap(sock, **options))

    async def connect(self, host: str, port: int, **options: Any) -> AsyncFlowLike:
        return self._made(await sf_trio.connect(host, port, **options))

    @asynccontextmanager
    async def serve(self, handler: Callable[[AsyncFlowLike], Awaitable[None]],
                    **options: Any) -> AsyncIterator[int]:
        async with sf_trio.serve(handler, HOST, 0, backlog=BACKLOG, **options) as server:
            yield server.port

    def live_tasks(self) -> int:
        return trio.lowlevel.current_statistics().tasks_living


class SocketDriver(Driver):
    """The blocking adapter: each call of a flow runs in a worker thread."""

    name = "socket"
    read_overshoot = READ_SIZE

    async def wrap(self, sock: socket.socket, **options: Any) -> AsyncFlowLike:
        return self._made(threaded(sf_socket.wrap(sock, **options)))

    async def connect(self, host: str, port: int, **options: Any) -> AsyncFlowLike:
        flow = await anyio.to_thread.run_sync(partial(sf_socket.connect, host, port, **options))
        return self._made(threaded(flow))

    @asynccontextmanager
    async def serve(self, handler: Callable[[AsyncFlowLike], Awaitable[None]],
                    **options: Any) -> AsyncIterator[int]:
        token = anyio.lowlevel.current_token()

        def run_handler(flow: sf_socket.SocketFlow) -> None:
            async def in_the_loop() -> None:
                await handler(threaded(flow))

            anyio.from_thread.run(in_the_loop, token=token)

        # Anything not callable goes to serve() as it is, for serve() to refuse.
        server = sf_socket.serve(run_handler if callable(handler) else handler, HOST, 0,
                                 **options)
        await anyio.to_thread.run_sync(server.__enter__)
        try:
            yield server.port
        finally:
            await anyio.to_thread.run_sync(server.close)

    def inner(self, flow: AsyncFlowLike) -> AdapterFlow:
        assert isinstance(flow, ThreadedFlow)
        inner = flow.flow
        assert isinstance(inner, AdapterFlow)
        return inner

    async def abort_all(self) -> None:
        # From this thread: the worker threads may all be stuck in the calls to end.
        for flow in self.made:
            self.inner(flow).abort()  # type: ignore[attr-defined]  # SocketFlow.abort is sync


def make_driver(name: str) -> Driver:
    if name in ("asyncio", "uvloop"):
        return AsyncioDriver(use_uvloop=name == "uvloop")
    return TrioDriver() if name == "trio" else SocketDriver()


ASYNC_ADAPTERS = ["asyncio", *(["uvloop"] if uvloop is not None else []), "trio"]
ADAPTERS = [*ASYNC_ADAPTERS, "socket"]


@pytest.fixture(params=ADAPTERS)
def driver(request: pytest.FixtureRequest) -> Driver:
    return make_driver(request.param)


@pytest.fixture(params=ASYNC_ADAPTERS)
def async_driver(request: pytest.FixtureRequest) -> Driver:
    return make_driver(request.param)


# -- leak checks and running a scenario ---------------------------------------------------------


def open_fds() -> int:
    """Open descriptors, less libuv's ``/dev/null`` (opened once per loop)."""
    count = 0
    for name in os.listdir(FD_DIR):
        with contextlib.suppress(OSError):
            count += os.readlink(os.path.join(FD_DIR, name)) != os.devnull
    return count


# Threads that idle for a while by design, then exit: anyio's and trio's pooled workers, and
# the socket adapter's process-wide flusher.
POOLED_THREADS = ("AnyIO worker thread", "Trio thread", "sansflow-socket-flusher")


def running_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate()
            if not thread.name.startswith(POOLED_THREADS)}


@pytest.fixture(autouse=True)
def nothing_logged_at_error(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    errors = [record for record in caplog.get_records("call")
              if record.levelno >= logging.ERROR
              and record.name.split(".")[0] in ("asyncio", "trio", "sansflow")]
    assert not errors, [record.getMessage() for record in errors]


def run(driver: Driver, scenario: Callable[[], Awaitable[None]],
        timeout: float = 30.0) -> None:
    """Run ``scenario`` on ``driver``'s event loop; then check that its file descriptors,
    tasks and threads are gone. A scenario still running after ``timeout`` seconds fails,
    with every flow the driver made aborted so that no thread stays stuck."""
    threads = running_threads()

    async def checked() -> None:
        if isinstance(driver, SocketDriver):
            # Blocking calls each hold a worker thread; many flows wait at once.
            anyio.to_thread.current_default_thread_limiter().total_tokens = 1000
        fds = open_fds()
        tasks = driver.live_tasks()
        token = anyio.lowlevel.current_token()
        hung = False
        with anyio.CancelScope() as scope:

            def watchdog() -> None:  # a thread: the loop's tasks may all be stuck
                nonlocal hung
                hung = True
                anyio.from_thread.run(driver.abort_all, token=token)
                anyio.from_thread.run_sync(scope.cancel, token=token)

            timer = threading.Timer(timeout, watchdog)
            timer.start()
            try:
                await scenario()
            finally:
                timer.cancel()
        assert not hung, f"the scenario did not finish within {timeout} s"
        await eventually(lambda: open_fds() <= fds, f"open file descriptors back to {fds}")
        await eventually(lambda: driver.live_tasks() <= tasks, "every task started has ended")
        assert open_fds() == fds

    anyio.run(checked, backend=driver.backend, backend_options=driver.backend_options())
    deadline = time.monotonic() + TIMEOUT
    while not running_threads() <= threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running_threads() <= threads, f"threads left: {running_threads() - threads}"


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition()`` holds; fail after ``TIMEOUT`` seconds."""
    with anyio.move_on_after(TIMEOUT):
        while not condition():
            await anyio.sleep(0.002)
    assert condition(), f"never happened: {what}"


def core_of(flow: AdapterFlow) -> Flow:
    """The sans-IO core an adapter's flow drives, for a white-box look (``reading_paused``)."""
    core = flow._core
    assert isinstance(core, Flow)
    return core


async def iterations(count: int) -> None:
    for _ in range(count):
        await anyio.sleep(0)


# -- sockets and peers ----------------------------------------------------------------------------


def tcp_sockets(bufsize: int | None = None) -> tuple[socket.socket, socket.socket]:
    """A connected loopback pair; ``bufsize`` shrinks both kernel buffers before connecting."""
    with socket.create_server((HOST, 0)) as listener:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if bufsize is not None:
            for sock in (listener, client):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        client.settimeout(TIMEOUT)
        client.connect(listener.getsockname())
        listener.settimeout(TIMEOUT)
        server, _ = listener.accept()
    client.settimeout(None)
    server.settimeout(None)
    return client, server


def recv_until_reset(sock: socket.socket) -> bytes:
    """What ``sock`` receives before the connection is reset (blocking; fails on a clean EOF)."""
    data = bytearray()
    sock.settimeout(TIMEOUT)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return bytes(data)
    raise AssertionError("the peer saw a clean EOF where an RST was due")


@asynccontextmanager
async def flow_pair(driver: Driver, bufsize: int | None = None, **options: Any
                    ) -> AsyncIterator[tuple[AsyncFlowLike, AsyncFlowLike]]:
    """Two connected flows over loopback TCP; both aborted on the way out."""
    left, right = tcp_sockets(bufsize)
    a = await driver.wrap(left, **options)
    b = await driver.wrap(right, **options)
    try:
        yield a, b
    finally:
        with anyio.CancelScope(shield=True):
            await a.abort()
            await b.abort()


@asynccontextmanager
async def flow_and_socket(driver: Driver, bufsize: int | None = None, **options: Any
                          ) -> AsyncIterator[tuple[AsyncFlowLike, socket.socket]]:
    """A flow and, as its peer, a plain blocking socket driven by the test."""
    left, right = tcp_sockets(bufsize)
    flow = await driver.wrap(left, **options)
    try:
        yield flow, right
    finally:
        with anyio.CancelScope(shield=True):
            await flow.abort()
        right.close()


class Peer:
    """A ``fault_peers.py`` process connected to one of our flows."""

    def __init__(self, role: str, port: int, size: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(PEERS), role, str(port), str(size)],
            stdout=subprocess.PIPE, bufsize=0)
        assert self.process.stdout is not None
        self._out = self.process.stdout.fileno()

    def _readline(self) -> str:
        line = bytearray()
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self._out], [], [], TIMEOUT)
            assert ready, "the peer said nothing"
            byte = os.read(self._out, 1)
            assert byte, f"the peer exited ({self.process.wait()}) after saying {bytes(line)!r}"
            line += byte
        return line.decode().strip()

    async def expect(self, word: str) -> str:
        """Wait for the peer's next line, which must start with ``word``."""
        line = await anyio.to_thread.run_sync(self._readline)
        assert line.split()[0] == word, f"the peer said {line!r}, expected {word!r}"
        return line

    def quiet(self) -> bool:
        """The peer has said nothing more since the last line read."""
        return not select.select([self._out], [], [], 0)[0]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def exit_code(self) -> int:
        return await anyio.to_thread.run_sync(partial(self.process.wait, TIMEOUT))

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()


@asynccontextmanager
async def peer_flow(driver: Driver, role: str, size: int = 0, **options: Any
                    ) -> AsyncIterator[tuple[AsyncFlowLike, Peer]]:
    """A flow whose peer is a ``fault_peers.py ROLE`` process; small kernel buffers."""
    with socket.create_server((HOST, 0)) as listener:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            listener.setsockopt(socket.SOL_SOCKET, option, 64 * 1024)
        listener.settimeout(TIMEOUT)
        peer = Peer(role, listener.getsockname()[1], size)
        try:
            sock, _ = await anyio.to_thread.run_sync(listener.accept)
            sock.settimeout(None)
            await peer.expect("connected")
            flow = await driver.wrap(sock, **options)
            try:
                yield flow, peer
            finally:
                with anyio.CancelScope(shield=True):
                    await flow.abort()
        finally:
            peer.end()


# -- reading and writing --------------------------------------------------------------------------


def cyclic(size: int) -> bytes:
    """What the ``source`` peer sends first: its 1 MiB pattern, repeated."""
    block = pattern(1024 * 1024)
    return (block * (size // len(block) + 1))[:size]


async def read_exactly(flow: AsyncFlowLike, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        result = await flow.read(size - len(data))
        assert isinstance(result, Ok), result
        data += result.value
    return bytes(data)


async def read_all(flow: AsyncFlowLike, max_bytes: int | None = None
                   ) -> tuple[bytes, Eof | Error]:
    data = bytearray()
    while True:
        result = await flow.read(max_bytes)
        if not isinstance(result, Ok):
            return bytes(data), result
        data += result.value


def is_reset(result: object) -> bool:
    """An ``Error`` the way the kernel reports a dead peer: RESET, or BROKEN_PIPE on a send."""
    return isinstance(result, Error) and result.error.kind in (
        ErrorKind.RESET, ErrorKind.BROKEN_PIPE)


async def ends_with(flow: AsyncFlowLike, end: Eof | Error) -> None:
    """``end`` is sticky: every later read answers it, writes answer it too after an error."""
    assert await flow.read() == end
    assert await flow.read(1) == end
    if isinstance(end, Error):
        assert await flow.write(b"late") == end
        assert await flow.writev([b"la", b"te"]) == end


class Writer:
    """Writes ``chunk`` again and again in the background until a write does not answer Ok,
    keeping the largest send queue seen after a write returned."""

    def __init__(self, flow: AsyncFlowLike, chunk: bytes) -> None:
        self.flow = flow
        self.chunk = chunk
        self.written = 0
        self.largest_queue = 0
        self.end: WriteResult | None = None

    async def run(self) -> None:
        while (result := await self.flow.write(self.chunk)) == OK:
            self.written += len(self.chunk)
            self.largest_queue = max(self.largest_queue, self.flow.queued)
        self.end = result


# -- peers that die -----------------------------------------------------------------------------

# A flow that receives only when asked (trio, and the socket adapter) leaves input in the kernel
# until a read or close() wants it; Linux keeps it readable after an RST, so when the flow's own
# send fails it takes that input in before it closes the socket.
@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("fault", ["kill", "reset"])
def test_peer_dies_while_reading_our_stream(adapter: str, fault: str) -> None:
    """We send a large stream; the peer (which greeted us first) stops reading, then is killed
    (the kernel closes its socket with our data unread: an RST) or resets itself. Our writer
    wakes with RESET or BROKEN_PIPE, whichever the kernel reports; the greeting, received
    before the error, is still read first; then the Error, sticky, on reads and writes."""
    driver = make_driver(adapter)

    async def scenario() -> None:
        async with peer_flow(driver, "sink", 200_000) as (flow, peer):
            writer = Writer(flow, pattern(32 * 1024, seed=1))
            async with anyio.create_task_group() as group:
                group.start_soon(writer.run)
                await peer.expect("stopped")
                await eventually(lambda: driver.inner(flow)._writing, "our writer waits")
                peer.signal(signal.SIGKILL if fault == "kill" else signal.SIGUSR1)
                await peer.exit_code()
            assert is_reset(writer.end), writer.end
            assert writer.largest_queue <= flow.high_water + len(writer.chunk)
            assert isinstance(writer.end, Error)
            assert await read_all(flow) == (GREETING, writer.end)
            await ends_with(flow, writer.end)
            await flow.close()
            assert (flow.state, flow.error) == (FlowState.CLOSED, writer.end.error)

    run(driver, scenario)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("fault", ["kill", "kill-with-input-unread", "reset"])
def test_peer_dies_while_sending_us_a_stream(adapter: str, fault: str) -> None:
    """The peer sends for ever and never reads; we stop reading until its send buffer is full,
    then it dies. What the contract demands follows from what its kernel sends:

    - killed with nothing unread: its socket is closed like any other (a FIN after the data
      its kernel still held), so we read a prefix of its stream, then ``Eof()``, and close
      cleanly;
    - killed with our bytes unread, or reset (``SO_LINGER`` 0): an RST, so we read a prefix
      (what had arrived) and then ``Error(RESET)``, sticky.
    """
    driver = make_driver(adapter)

    async def scenario() -> None:
        async with peer_flow(driver, "source") as (flow, peer):
            if fault == "kill-with-input-unread":
                # A read right after the write: every adapter hands the write to the kernel
                # before a read waits.
                assert await flow.write(b"the peer never reads this") == OK
            first = await read_exactly(flow, 100_000)
            await peer.expect("full")
            peer.signal(signal.SIGUSR1 if fault == "reset" else signal.SIGKILL)
            await peer.exit_code()
            rest, end = await read_all(flow, 50_000)
            data = first + rest
            assert data == cyclic(len(data)), "not a prefix of what the peer sent"
            if fault == "kill":
                assert end == Eof()
                assert len(rest) > 0, "the data the peer's kernel held never came"
            else:
                assert isinstance(end, Error)
                assert end.error.kind is ErrorKind.RESET, end
            await ends_with(flow, end)
            await flow.close(timeout=TIMEOUT)
            assert flow.state is FlowState.CLOSED
            assert flow.error == (end.error if isinstance(end, Error) else None)

    run(driver, scenario)


def test_reset_right_after_accept_before_any_byte(driver: Driver) -> None:
    """We connect; the other side accepts and at once resets. Reads and writes answer the
    RESET (a write may see EPIPE once the RST is in), sticky; close() returns quietly."""

    async def scenario() -> None:
        with socket.create_server((HOST, 0)) as listener:
            listener.settimeout(TIMEOUT)
            flow = await driver.connect(HOST, listener.getsockname()[1])
            accepted, _ = await anyio.to_thread.run_sync(listener.accept)
            reset(accepted)
            end = await flow.read()
            assert isinstance(end, Error)
            assert end.error.kind is ErrorKind.RESET, end
            assert isinstance(end.error.cause, ConnectionResetError)
            await ends_with(flow, end)
            await flow.close()
            assert (flow.state, flow.error) == (FlowState.CLOSED, end.error)

    run(driver, scenario)


def test_a_reset_that_beats_our_eof_is_the_reset_after_the_data_before_it(
        driver: Driver) -> None:
    """The peer sends, then resets, before our EOF goes out: on a connection a reset ended,
    Linux answers our shutdown(SHUT_WR) with ENOTCONN, which must neither hide the reset nor
    lose the bytes that came before it."""

    async def scenario() -> None:
        with socket.create_server((HOST, 0)) as listener:
            listener.settimeout(TIMEOUT)
            flow = await driver.connect(HOST, listener.getsockname()[1])
            accepted, _ = await anyio.to_thread.run_sync(listener.accept)
            accepted.sendall(b"8 bytes!")
            reset(accepted)
            time.sleep(0.2)  # the RST arrives while no flow runs: only our EOF can meet it
            await flow.shutdown(Shutdown.WRITE)
            assert await flow.read() == Ok(b"8 bytes!")
            end = await flow.read()
            assert isinstance(end, Error)
            assert end.error.kind is ErrorKind.RESET, end
            assert isinstance(end.error.cause, ConnectionResetError)
            await flow.close()

    run(driver, scenario)


def test_server_survives_clients_that_reset_before_any_byte(driver: Driver) -> None:
    """A client that resets as soon as its handler runs makes that handler's read answer
    RESET; one that resets before the server may even have accepted it does no harm (its
    handler, if it runs, reads RESET too); a well-behaved client after them is served; and
    nothing is logged at ERROR."""

    async def scenario() -> None:
        started = anyio.Event()
        results: list[ReadResult] = []

        async def handler(flow: AsyncFlowLike) -> None:
            started.set()
            while isinstance(result := await flow.read(), Ok):
                results.append(result)
                if await flow.write(result.value) != OK:
                    return
            results.append(result)

        async with driver.serve(handler) as port:
            served = socket.create_connection((HOST, port), timeout=TIMEOUT)
            await started.wait()
            reset(served)
            await eventually(lambda: len(results) == 1, "the handler reads the reset")
            reset(socket.create_connection((HOST, port), timeout=TIMEOUT))  # perhaps unaccepted
            client = await driver.connect(HOST, port)
            assert await client.write(b"still serving") == OK
            assert await read_exactly(client, 13) == b"still serving"
            await client.close(timeout=TIMEOUT)
            assert client.error is None
        ends = [result for result in results if not isinstance(result, Ok)]
        first = ends[0]
        assert isinstance(first, Error)
        assert first.error.kind is ErrorKind.RESET
        # The well-behaved client's EOF; the reset before accept, if its handler ran.
        assert ends.count(Eof()) == 1
        assert len(ends) in (2, 3), results
        assert all(is_reset(end) for end in ends if end != Eof()), ends

    run(driver, scenario)


# -- peers that do not keep up, or keep up too well ---------------------------------------------


def test_peer_that_never_reads_holds_the_writer_until_close_times_out(driver: Driver) -> None:
    """The peer never reads: our writer blocks with the send queue within high water plus
    one write, and stays blocked until ``close(timeout=...)``, whose deadline aborts the flow
    with TIMED_OUT; the peer sees an RST after a prefix of what we wrote."""

    async def scenario() -> None:
        async with flow_and_socket(driver, bufsize=4096, high_water=20_000,
                                   low_water=5_000) as (flow, peer):
            writer = Writer(flow, pattern(10_000, seed=2))
            largest = 0
            async with anyio.create_task_group() as group:
                group.start_soon(writer.run)
                await eventually(lambda: driver.inner(flow)._writing, "the writer waits")
                for _ in range(50):  # it stays blocked while the peer does not read
                    largest = max(largest, flow.queued)
                    await anyio.sleep(0.002)
                assert writer.end is None
                assert driver.inner(flow)._writing
                await flow.close(timeout=0.2)
            assert flow.state is FlowState.CLOSED
            assert flow.error is not None
            assert flow.error.kind is ErrorKind.TIMED_OUT
            # Woken by close() (our EOF queued: no more writes), or by the deadline's abort if
            # it looked again only after that (the socket adapter's writer polls in slices).
            assert writer.end in (Eof(), Error(flow.error)), writer.end
            assert max(largest, writer.largest_queue) <= flow.high_water + len(writer.chunk)
            assert flow.queued == 0
            data = await anyio.to_thread.run_sync(recv_until_reset, peer)
            assert data == (writer.chunk * (writer.written // len(writer.chunk)))[:len(data)]

    run(driver, scenario)


def test_flooding_peer_is_held_at_the_receive_limit(driver: Driver) -> None:
    """The peer sends 8 MiB as fast as it can; nobody reads while ``close()`` waits for its
    EOF (receiving meanwhile, as every adapter does). Receiving pauses at the receive limit
    (the buffer passes it by at most one transport read), the peer is held back, and reading
    then gives exactly the bytes sent, then ``Eof()``, and the close ends cleanly."""
    total = 8 * 1024 * 1024
    limit = 100_000

    async def scenario() -> None:
        async with peer_flow(driver, "flood", total, receive_limit=limit) as (flow, peer):
            async with anyio.create_task_group() as group:
                group.start_soon(flow.close)
                core = core_of(driver.inner(flow))
                await eventually(lambda: core.reading_paused, "the receive buffer fills")
                most = 0
                for _ in range(50):
                    most = max(most, flow.buffered)
                    await anyio.sleep(0.002)
                assert limit <= most <= limit + driver.read_overshoot
                assert peer.quiet(), "the peer sent everything although nobody read"
                assert flow.state is not FlowState.CLOSED
                data = bytearray()
                while isinstance(result := await flow.read(), Ok):
                    data += result.value
                    most = max(most, flow.buffered)
                assert result == Eof()
                assert data == pattern(total)
                assert most <= limit + driver.read_overshoot
            assert (flow.state, flow.error) == (FlowState.CLOSED, None)
            await peer.expect("sent")
            await peer.expect("done")
            assert await peer.exit_code() == 0

    run(driver, scenario)


def test_one_byte_at_a_time_peer_echoes_and_we_close_first(driver: Driver) -> None:
    """A peer that reads and writes one byte per system call (TCP_NODELAY) echoes a message
    sent in writes of assorted sizes byte for byte; our close() then ends cleanly once the
    peer answers our EOF with its own."""
    message = pattern(3000, seed=5)

    async def scenario() -> None:
        async with peer_flow(driver, "trickle-echo") as (flow, peer):

            async def send() -> None:
                sizes = random.Random(5)
                offset = 0
                while offset < len(message):
                    size = sizes.choice([1, 2, 7, 100, 999])
                    assert await flow.write(message[offset:offset + size]) == OK
                    offset += size

            async with anyio.create_task_group() as group:
                group.start_soon(send)
                echoed = await read_exactly(flow, len(message))
            assert echoed == message
            await flow.close(timeout=TIMEOUT)
            assert (flow.state, flow.error) == (FlowState.CLOSED, None)
            assert await peer.expect("done") == f"done {len(message)}"
            assert await peer.exit_code() == 0

    run(driver, scenario)


def test_one_byte_at_a_time_peer_sends_and_closes_first(driver: Driver) -> None:
    """A peer sends one byte per system call, then its EOF; we read one byte at a time to the
    ``Eof()``, answer, and close cleanly; the peer, reading one byte per call, got our answer
    exactly."""
    size = 3000
    answer = pattern(2000, seed=6)

    async def scenario() -> None:
        async with peer_flow(driver, "trickle-send", size) as (flow, peer):
            assert await read_all(flow, 1) == (pattern(size), Eof())
            assert await flow.write(answer) == OK
            await flow.close(timeout=TIMEOUT)
            assert (flow.state, flow.error) == (FlowState.CLOSED, None)
            digest = hashlib.sha256(answer).hexdigest()
            assert await peer.expect("done") == f"done {len(answer)} {digest}"
            assert await peer.exit_code() == 0

    run(driver, scenario)


# -- cancellation at random points (async adapters) --------------------------------------------


def frame(index: int, size: int) -> bytes:
    """A self-describing piece of a stream: its index, its size, then bytes of its own."""
    return struct.pack(">II", index, size) + random.Random(index).randbytes(size)


def frame_ids(stream: bytes, *, cut: bool = False) -> list[int]:
    """The indexes of the whole frames ``stream`` is made of; ``cut`` allows a last frame cut
    short (a reset stream). A frame partly present, or corrupt, fails."""
    ids: list[int] = []
    offset = 0
    while offset < len(stream):
        if cut and len(stream) - offset < 8:
            break
        index, size = struct.unpack_from(">II", stream, offset)
        end = offset + 8 + size
        if cut and end > len(stream):
            assert stream[offset:] == frame(index, size)[:len(stream) - offset]
            break
        assert stream[offset:end] == frame(index, size), f"frame {index} is not whole"
        ids.append(index)
        offset = end
    return ids


async def cancel_after(count: int | None, operation: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Start ``operation()``; unless ``count`` is None, cancel it ``count`` loop iterations
    after it started. The list holds what it returned, if it returned."""
    returned: list[Any] = []
    started = anyio.Event()

    async def call() -> None:
        started.set()
        returned.append(await operation())

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        if count is not None:
            await started.wait()
            await iterations(count)
            group.cancel_scope.cancel()
    return returned


class Valve:
    """Holds a background reader or writer still while shut, so that the operation under
    test has to wait for it."""

    def __init__(self) -> None:
        self._open = anyio.Event()
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def set(self, is_open: bool) -> None:
        if is_open:
            self._open.set()
        elif self._open.is_set():
            self._open = anyio.Event()

    async def wait(self) -> None:
        await self._open.wait()


class Drain:
    """Reads a flow to its end in the background, in reads of random sizes with pauses,
    while its valve is open."""

    def __init__(self, flow: AsyncFlowLike, rng: random.Random) -> None:
        self.flow = flow
        self.rng = rng
        self.valve = Valve()
        self.data = bytearray()
        self.end: Eof | Error | None = None

    async def run(self) -> None:
        while True:
            await self.valve.wait()
            result = await self.flow.read(self.rng.choice([None, 1000, 65536]))
            if not isinstance(result, Ok):
                self.end = result
                return
            self.data += result.value
            await iterations(self.rng.randrange(3))


def cancel_point(rng: random.Random, must_cancel: bool) -> int | None:
    """After how many loop iterations to cancel; ``None`` (let it finish) only when the
    operation cannot be stuck."""
    if must_cancel or rng.random() < 0.8:
        return rng.randrange(10)
    return None


async def cancelled_writes(driver: Driver, rng: random.Random) -> int:
    """Writes and writevs cancelled at random points, often while waiting for room: each is
    queued whole or not at all, the flow stays usable, and a cancelled ``shutdown(WRITE)``
    still sends its EOF after the data. Returns how many cancellations took effect."""
    async with flow_pair(driver, bufsize=8192, high_water=32_768, low_water=8192,
                         receive_limit=16_384) as (a, b):
        drain = Drain(b, random.Random(rng.random()))
        returned: list[int] = []
        cancelled: list[int] = []
        async with anyio.create_task_group() as group:
            group.start_soon(drain.run)
            for index in range(16):
                drain.valve.set(rng.random() < 0.6)
                data = frame(index, rng.choice([1, 500, 20_000, 70_000]))

                async def write(data: bytes = data, vectored: bool = rng.random() < 0.3
                                ) -> WriteResult:
                    if vectored:  # a writable buffer too: it is copied
                        return await a.writev([data[:8], bytearray(data[8:])])
                    return await a.write(data)

                result = await cancel_after(cancel_point(rng, not drain.valve.is_open), write)
                assert result in ([], [OK]), result
                (returned if result else cancelled).append(index)
                assert not driver.inner(a)._writing
            drain.valve.set(rng.random() < 0.5)
            shut = await cancel_after(rng.randrange(10), partial(a.shutdown, Shutdown.WRITE))
            assert a.send_state is not SendState.OPEN  # cancelled or not, the EOF stays due
            assert await a.write(b"after shutdown") == Eof()
            drain.valve.set(True)
        assert drain.end == Eof()
        ids = frame_ids(bytes(drain.data))
        assert ids == sorted(ids)
        assert set(returned) <= set(ids) <= set(returned) | set(cancelled)
        async with anyio.create_task_group() as group:
            group.start_soon(b.close)
            await a.close()
        assert (a.error, b.error) == (None, None)
    return len(cancelled) + (not shut)


async def cancelled_reads(driver: Driver, rng: random.Random) -> int:
    """Reads cancelled at random points, often while waiting for input, lose nothing: every
    byte sent is read once, in order, whatever the receive limit. Returns how many
    cancellations took effect."""
    limit = rng.choice([1000, 50_000, 256 * 1024])
    async with flow_pair(driver, receive_limit=limit) as (a, b):
        frames = [frame(index, rng.choice([1, 300, 9000, 40_000])) for index in range(12)]
        valve = Valve()
        pauses = random.Random(rng.random())
        got = bytearray()
        cancelled = 0
        async with anyio.create_task_group() as group:

            async def send() -> None:
                for data in frames:
                    await valve.wait()
                    assert await b.write(data) == OK
                    await iterations(pauses.randrange(3))
                await b.shutdown(Shutdown.WRITE)

            group.start_soon(send)
            while True:
                valve.set(rng.random() < 0.6)
                result = await cancel_after(cancel_point(rng, not valve.is_open),
                                            partial(a.read, rng.choice([None, 100, 5000])))
                assert not driver.inner(a)._reading
                if not result:
                    cancelled += 1
                elif isinstance(result[0], Ok):
                    got += result[0].value
                else:
                    assert result[0] == Eof()
                    break
        assert got == b"".join(frames)
    return cancelled


async def cancelled_closes(driver: Driver, rng: random.Random) -> int:
    """A close() cancelled at a random point (data still queued or not, the peer closing too
    or not) either ended cleanly first or aborted the flow: never anything in between. The
    peer then reads whole frames and a clean EOF, or a prefix cut by an RST. Returns how many
    cancellations aborted the flow."""
    # Room for every write, so that only close() waits.
    async with flow_pair(driver, bufsize=8192, high_water=1024 * 1024) as (a, b):
        drain = Drain(b, random.Random(rng.random()))
        count = rng.randrange(4)
        async with anyio.create_task_group() as group:
            group.start_soon(drain.run)
            drain.valve.set(rng.random() < 0.5)
            for index in range(count):
                assert await a.write(frame(index, rng.choice([10, 40_000, 100_000]))) == OK
            if rng.random() < 0.5:
                group.start_soon(b.close)
            result = await cancel_after(rng.randrange(40), a.close)
            drain.valve.set(True)
            assert a.state is FlowState.CLOSED
            # Cancelled, it aborted the flow, unless the flow had just ended cleanly: the
            # first end of a flow stands.
            assert a.error is None or (not result and a.error.kind is ErrorKind.ABORTED)
        received = bytes(drain.data)
        if a.error is None:
            assert drain.end == Eof()
            assert frame_ids(received) == list(range(count))
            return 0
        assert drain.end == Eof() or is_reset(drain.end), drain.end
        ids = frame_ids(received, cut=True)
        assert ids == list(range(len(ids)))
        return 1


@pytest.mark.parametrize("operation", ["write", "read", "close"])
def test_cancellation_at_random_points(async_driver: Driver, operation: str) -> None:
    """Seeded trials, each on a fresh pair of flows; the runner then checks that no task and
    no descriptor is left. Some cancellations must have taken effect, or the trials would
    prove nothing."""
    trial = {"write": cancelled_writes, "read": cancelled_reads,
             "close": cancelled_closes}[operation]

    async def scenario() -> None:
        took_effect = 0
        for seed in range(12):
            took_effect += await trial(async_driver, random.Random(seed))
        assert took_effect > 0

    run(async_driver, scenario)


# -- abort from elsewhere -----------------------------------------------------------------------


def test_abort_from_elsewhere_wakes_a_waiting_reader_and_writer(driver: Driver) -> None:
    """A reader waits for input and a writer for room; ``abort()`` comes from another task
    (the socket adapter: another thread, while both block in theirs). Both wake with
    ``Error(ABORTED)``, the queue is dropped, and the peer sees an RST after a prefix."""

    async def scenario() -> None:
        async with flow_and_socket(driver, bufsize=4096) as (flow, peer):
            writer = Writer(flow, pattern(32 * 1024, seed=8))
            reads: list[ReadResult] = []
            inner = driver.inner(flow)

            async def read() -> None:
                reads.append(await flow.read())

            async with anyio.create_task_group() as group:
                group.start_soon(read)
                group.start_soon(writer.run)
                await eventually(lambda: inner._reading and inner._writing,
                                 "the reader and the writer wait")
                await flow.abort()
            assert flow.error is not None
            aborted = Error(flow.error)
            assert flow.error.kind is ErrorKind.ABORTED
            assert (reads, writer.end) == ([aborted], aborted)
            assert (flow.state, flow.queued) == (FlowState.CLOSED, 0)
            await ends_with(flow, aborted)
            data = await anyio.to_thread.run_sync(recv_until_reset, peer)
            assert data == (writer.chunk * (writer.written // len(writer.chunk) + 1))[:len(data)]

    run(driver, scenario)


# -- bad arguments: factories, and flows in every state -----------------------------------------

# Each: the options, the exception, and the word its message must contain.
BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    *[({"high_water": value}, TypeError, "high_water") for value in ("64", 1.5, None, True)],
    *[({"high_water": value}, ValueError, "high_water") for value in (0, -1)],
    *[({"low_water": value}, TypeError, "low_water") for value in ("1", 2.0, None, False)],
    ({"low_water": -1}, ValueError, "low_water"),
    *[({"receive_limit": value}, TypeError, "receive_limit")
      for value in ("1", 1.0, None, True)],
    *[({"receive_limit": value}, ValueError, "receive_limit") for value in (0, -5)],
    ({"high_water": 10, "low_water": 11}, ValueError, "low_water"),
    ({"hi_water": 10}, TypeError, "hi_water"),
]


async def refused(expected: type[Exception], word: str,
                  call: Callable[[], Awaitable[object]]) -> None:
    """``call()`` must raise ``expected`` with ``word`` in its message."""
    with pytest.raises(expected, match=re.escape(word)):
        await call()


async def idle_handler(flow: AsyncFlowLike) -> None:
    pass


async def serve_briefly(driver: Driver, handler: Any, **options: Any) -> None:
    async with driver.serve(handler, **options):
        pass


def test_bad_options_are_refused_by_every_factory_and_change_nothing(driver: Driver) -> None:
    """connect, wrap and serve refuse each bad option with a precise exception, before they
    touch anything: connect makes no connection, wrap leaves the socket as it was (it can
    still be wrapped and used), serve listens nowhere; no descriptor or task is left."""

    async def scenario() -> None:
        with socket.create_server((HOST, 0)) as listener:
            listener.setblocking(False)
            port = listener.getsockname()[1]
            for options, expected, word in BAD_OPTIONS:
                fds, tasks = open_fds(), driver.live_tasks()
                await refused(expected, word, partial(driver.connect, HOST, port, **options))
                with pytest.raises(BlockingIOError):
                    listener.accept()  # nobody connected
                await refused(expected, word, partial(serve_briefly, driver, idle_handler,
                                                      **options))
                assert (open_fds(), driver.live_tasks()) == (fds, tasks), options
        ours, theirs = tcp_sockets()
        with theirs:
            for options, expected, word in BAD_OPTIONS:
                fds = open_fds()
                await refused(expected, word, partial(driver.wrap, ours, **options))
                assert open_fds() == fds, options
            assert ours.fileno() >= 0
            flow = await driver.wrap(ours)
            assert await flow.write(b"still usable") == OK
            assert await anyio.to_thread.run_sync(theirs.recv, 100) == b"still usable"
            theirs.sendall(b"both ways")
            assert await read_exactly(flow, 9) == b"both ways"
            await flow.abort()

    run(driver, scenario)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_serve_refuses_a_handler_that_is_not_callable(adapter: str) -> None:
    driver = make_driver(adapter)

    async def scenario() -> None:
        for handler in ("handler", None, 42):
            fds = open_fds()
            await refused(TypeError, "handler", partial(serve_briefly, driver, handler))
            assert open_fds() == fds

    run(driver, scenario)


@pytest.mark.parametrize(("grace", "expected"), [
    pytest.param(-1, ValueError, id="negative"),
    pytest.param(math.nan, ValueError, id="nan"),
    pytest.param(-math.inf, ValueError, id="minus-infinity"),
    *[pytest.param(grace, TypeError, id=repr(grace)) for grace in ("5", True, None)],
])
def test_socket_serve_refuses_a_bad_grace(grace: object, expected: type[Exception]) -> None:
    fds = open_fds()
    with pytest.raises(expected, match="grace"):
        sf_socket.serve(lambda flow: None, HOST, 0, grace=grace)  # type: ignore[arg-type]
    assert open_fds() == fds


QUEUED = 4  # snapshot()'s flow.queued


def snapshot(driver: Driver, flow: AsyncFlowLike) -> tuple[Any, ...]:
    inner = driver.inner(flow)
    return (flow.state, flow.send_state, flow.receive_state, flow.error, flow.queued,
            flow.buffered, inner._reading, inner._writing)


# What the conformance kit's bad_arguments check does not try: bools and infinities for a
# timeout, a float that is a whole number, a Shutdown that is not a member. Every state below
# gets every call: argument checks come before the state is looked at.
READ_CALLS: list[tuple[str, Callable[[AsyncFlowLike], Awaitable[object]], type[Exception]]] = [
    ("read(0)", lambda f: f.read(0), ValueError),
    ("read(-1)", lambda f: f.read(-1), ValueError),
    ("read(2.0)", lambda f: f.read(2.0), TypeError),  # type: ignore[arg-type]
    ("read(False)", lambda f: f.read(False), TypeError),
    ("read(True)", lambda f: f.read(True), TypeError),
    ("read('1')", lambda f: f.read("1"), TypeError),  # type: ignore[arg-type]
]
WRITE_CALLS: list[tuple[str, Callable[[AsyncFlowLike], Awaitable[object]], type[Exception]]] = [
    ("write('text')", lambda f: f.write("text"), TypeError),  # type: ignore[arg-type]
    ("write(None)", lambda f: f.write(None), TypeError),  # type: ignore[arg-type]
    ("write([b'a'])", lambda f: f.write([b"a"]), TypeError),  # type: ignore[arg-type]
    ("writev(b'a')", lambda f: f.writev(b"a"), TypeError),  # type: ignore[arg-type]
    ("writev(None)", lambda f: f.writev(None), TypeError),  # type: ignore[arg-type]
    ("writev([b'a', 1])", lambda f: f.writev([b"a", 1]), TypeError),  # type: ignore[list-item]
]
END_CALLS: list[tuple[str, Callable[[AsyncFlowLike], Awaitable[object]], type[Exception]]] = [
    ("close(timeout=True)", lambda f: f.close(timeout=True), TypeError),
    ("close(timeout=False)", lambda f: f.close(timeout=False), TypeError),
    ("close(timeout='1')", lambda f: f.close(timeout="1"), TypeError),  # type: ignore[arg-type]
    ("close(timeout=-1)", lambda f: f.close(timeout=-1), ValueError),
    ("close(timeout=-inf)", lambda f: f.close(timeout=-math.inf), ValueError),
    ("close(timeout=nan)", lambda f: f.close(timeout=math.nan), ValueError),
    ("shutdown(Shutdown)", lambda f: f.shutdown(Shutdown), TypeError),  # type: ignore[arg-type]
    ("shutdown(1)", lambda f: f.shutdown(1), TypeError),  # type: ignore[arg-type]
    ("shutdown('write')", lambda f: f.shutdown("write"), TypeError),  # type: ignore[arg-type]
]
ALL_CALLS = READ_CALLS + WRITE_CALLS + END_CALLS


async def bad_calls_change_nothing(driver: Driver, flow: AsyncFlowLike, state: str,
                                   calls: list[tuple[str, Callable[[AsyncFlowLike],
                                                                   Awaitable[object]],
                                                     type[Exception]]]) -> None:
    # The transport may take more of the queue meanwhile (the socket adapter's flusher runs
    # on its own thread, and the kernel makes room as the bytes in flight arrive): a bad call
    # may not add to the queue, nor change anything else.
    before = snapshot(driver, flow)
    for what, call, expected in calls:
        with pytest.raises(expected):
            await call(flow)
        after = snapshot(driver, flow)
        assert after[QUEUED] <= before[QUEUED], f"{what} queued more on a flow that was {state}"
        assert after[:QUEUED] + after[QUEUED + 1:] == before[:QUEUED] + before[QUEUED + 1:], (
            f"{what} changed a flow that was {state}")
        before = after


def test_bad_arguments_in_every_state_change_nothing(driver: Driver) -> None:
    """Bad arguments raise and change nothing whatever the flow is doing: a reader or a
    writer waiting, half-closed with data buffered, closed after its EOF, or aborted.
    Afterwards each flow answers as it would have."""

    async def scenario() -> None:
        # A reader waits; the bad calls come from another task. (A bad read would be a
        # second reader, which may be told BusyError first: the contract names no order.)
        reads: list[ReadResult] = []
        async with flow_pair(driver) as (a, b), anyio.create_task_group() as group:

            async def read() -> None:
                reads.append(await a.read())

            group.start_soon(read)
            await eventually(lambda: driver.inner(a)._reading, "the reader waits")
            await bad_calls_change_nothing(driver, a, "being read", WRITE_CALLS + END_CALLS)
            assert await b.write(b"for the reader") == OK
        assert reads == [Ok(b"for the reader")]

        # A writer waits for room; the bad calls include reads.
        async with flow_and_socket(driver, bufsize=4096) as (flow, _), \
                anyio.create_task_group() as group:
            writer = Writer(flow, pattern(32 * 1024, seed=9))
            group.start_soon(writer.run)
            await eventually(lambda: driver.inner(flow)._writing, "the writer waits")
            await bad_calls_change_nothing(driver, flow, "being written",
                                           READ_CALLS + END_CALLS)
            await flow.close(timeout=0)
        assert flow.error is not None
        assert writer.end in (Eof(), Error(flow.error)), writer.end  # woken before the abort?

        # Half-closed both ways round, with data buffered.
        async with flow_pair(driver) as (a, b):
            await a.shutdown(Shutdown.WRITE)
            assert await b.write(b"buffered and more") == OK
            await b.shutdown(Shutdown.WRITE)
            assert await read_exactly(a, 9) == b"buffered "
            await eventually(lambda: a.buffered == 8 and (
                driver.receives_on_demand or a.receive_state is ReceiveState.EOF_RECEIVED),
                "the rest and b's EOF")
            await bad_calls_change_nothing(driver, a, "half-closed", ALL_CALLS)
            assert await read_all(a) == (b"and more", Eof())
            assert a.state is FlowState.CLOSED
            await bad_calls_change_nothing(driver, a, "at its EOF", ALL_CALLS)
            assert (await a.read(), await a.write(b"x")) == (Eof(), Eof())

        # Aborted.
        async with flow_pair(driver) as (a, b):
            await a.abort()
            await bad_calls_change_nothing(driver, a, "aborted", ALL_CALLS)
            assert a.error is not None
            await ends_with(a, Error(a.error))

    run(driver, scenario)


# -- many flows at once -------------------------------------------------------------------------


@contextlib.contextmanager
def descriptors_for(count: int) -> Iterator[None]:
    """Raise the soft limit on open files towards the hard one, for the test's duration."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
    if wanted < count:
        pytest.skip(f"needs {count} file descriptors, the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def echo(flow: AsyncFlowLike) -> None:
    while isinstance(result := await flow.read(), Ok):
        if await flow.write(result.value) != OK:
            return


@pytest.mark.slow
def test_many_concurrent_echo_flows_close_cleanly_and_leave_nothing(driver: Driver) -> None:
    """1,000 flows open at once (200 on the socket adapter, a thread per blocking call), each
    echoing a few KiB through ``serve`` and closing cleanly; then every descriptor, task and
    thread is gone (the runner checks)."""
    count = 200 if isinstance(driver, SocketDriver) else 1000

    async def scenario() -> None:
        connected = 0
        all_connected = anyio.Event()

        async with driver.serve(echo) as port:

            async def client(index: int) -> None:
                nonlocal connected
                flow = await driver.connect(HOST, port)
                connected += 1
                if connected == count:
                    all_connected.set()
                await all_connected.wait()  # every flow open at once
                message = pattern(2048 + index % 2048, seed=index)
                assert await flow.write(message) == OK
                assert await read_exactly(flow, len(message)) == message
                await flow.close(timeout=TIMEOUT)
                assert (flow.state, flow.error) == (FlowState.CLOSED, None)

            async with anyio.create_task_group() as group:
                for index in range(count):
                    group.start_soon(client, index)

    with descriptors_for(4 * count + 256):
        run(driver, scenario, timeout=60)
