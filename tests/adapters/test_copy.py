"""copy and proxy on every adapter (asyncio, uvloop, trio, socket over loopback TCP, and the
memory pair under asyncio and trio): a reply after a half-close gets through with no timer, a
reset is passed on as a reset, an idle timeout only when asked, exact stats, bounded memory."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sansflow import (
    BlockingFlow,
    CopyStats,
    Eof,
    Error,
    ErrorKind,
    FlowError,
    FlowState,
    Ok,
    ProxyResult,
    ReadResult,
    Shutdown,
    WriteResult,
)
from sansflow.adapters import anyio as sf_anyio
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio
from sansflow.testing import conformance as kit
from sansflow.testing._memory import memory_flow_pair

Flow = Any  # the proxy's own ends: an adapter's flow, async or blocking
Pair = tuple[kit.AsyncFlowLike, Flow]  # a test's end, and the proxy's end of a connection


def tcp_sockets() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


async def asyncio_pair() -> Pair:
    from sansflow.adapters import asyncio as sf

    one, two = tcp_sockets()
    return await sf.wrap(one), await sf.wrap(two)


async def trio_pair() -> Pair:
    from sansflow.adapters import trio as sf

    one, two = tcp_sockets()
    return await sf.wrap(one), await sf.wrap(two)


async def socket_pair() -> Pair:
    from sansflow.adapters import socket as sf

    one, two = tcp_sockets()
    return kit.threaded(sf.wrap(one)), sf.wrap(two)


async def in_thread_proxy(a: Flow, b: Flow, idle_timeout: float | None = None) -> ProxyResult:
    return await anyio.to_thread.run_sync(
        partial(sf_socket.proxy, a, b, idle_timeout=idle_timeout))


async def in_thread_copy(src: Flow, dst: Flow) -> CopyStats:
    return await anyio.to_thread.run_sync(sf_socket.copy, src, dst)


@dataclass(frozen=True)
class Setup:
    name: str
    backend: str
    make_pair: Callable[[], Awaitable[Pair]]
    proxy: Callable[..., Awaitable[ProxyResult]]
    copy: Callable[[Flow, Flow], Awaitable[CopyStats]]
    options: dict[str, Any] = field(default_factory=dict)
    reset: ErrorKind = ErrorKind.RESET  # what a peer's abort looks like from here

    def run(self, scenario: Callable[[Setup], Awaitable[None]]) -> None:
        anyio.run(scenario, self, backend=self.backend, backend_options=self.options)


SETUPS = [
    Setup("asyncio", "asyncio", asyncio_pair, sf_asyncio.proxy, sf_asyncio.copy),
    Setup("uvloop", "asyncio", asyncio_pair, sf_asyncio.proxy, sf_asyncio.copy,
          {"use_uvloop": True}),
    Setup("trio", "trio", trio_pair, sf_trio.proxy, sf_trio.copy),
    Setup("socket", "asyncio", socket_pair, in_thread_proxy, in_thread_copy),
    Setup("memory-asyncio", "asyncio", memory_flow_pair, sf_asyncio.proxy,
          sf_asyncio.copy),
    Setup("memory-trio", "trio", memory_flow_pair, sf_trio.proxy, sf_trio.copy),
]


@pytest.fixture(params=SETUPS, ids=[s.name for s in SETUPS])
def setup(request: pytest.FixtureRequest) -> Setup:
    return request.param  # type: ignore[no-any-return]


async def read_all(flow: kit.AsyncFlowLike) -> tuple[bytes, ReadResult]:
    """Everything ``flow`` reads, and the Eof or Error that ended it."""
    data = bytearray()
    while True:
        match await flow.read():
            case Ok(chunk):
                data += chunk
            case end:
                return bytes(data), end


async def end_all(*flows: kit.AsyncFlowLike | Flow) -> None:
    """Release what a test leaves open (nothing happens to a CLOSED flow)."""
    for flow in flows:
        if isinstance(flow, BlockingFlow):
            flow.abort()
        else:
            await flow.abort()


class Proxied:
    """client <-> (a  proxy  b) <-> server, the proxy running in a task."""

    def __init__(self, setup: Setup, client: kit.AsyncFlowLike, a: Flow, b: Flow,
                 server: kit.AsyncFlowLike) -> None:
        self.setup, self.client, self.a, self.b, self.server = setup, client, a, b, server
        self.result: ProxyResult | None = None

    async def run(self, idle_timeout: float | None = None) -> None:
        self.result = await self.setup.proxy(self.a, self.b, idle_timeout=idle_timeout)


async def proxied(setup: Setup) -> Proxied:
    client, a = await setup.make_pair()
    server, b = await setup.make_pair()
    return Proxied(setup, client, a, b, server)


def kind(result: ReadResult) -> ErrorKind | None:
    return result.error.kind if isinstance(result, Error) else None


# -- the rules on every adapter --------------------------------------------------------------


def test_a_reply_after_the_clients_eof_gets_through(setup: Setup) -> None:
    async def scenario(setup: Setup) -> None:
        p = await proxied(setup)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(p.run)
            assert await p.client.write(b"request") == Ok(None)
            await p.client.shutdown(Shutdown.WRITE)
            assert await read_all(p.server) == (b"request", Eof())
            await anyio.sleep(0.6)  # longer than socat's 0.5 s: no timer closes anything
            assert await p.server.write(b"reply after your EOF") == Ok(None)
            await p.server.close(timeout=10)
            assert await read_all(p.client) == (b"reply after your EOF", Eof())
        assert p.result is not None
        assert p.result.error is None
        a_to_b, b_to_a = p.result.a_to_b, p.result.b_to_a
        assert (a_to_b.read_bytes, a_to_b.write_bytes, a_to_b.end) == (7, 7, Eof())
        assert (b_to_a.read_bytes, b_to_a.write_bytes, b_to_a.end) == (20, 20, Eof())
        assert a_to_b.ended is not None
        assert b_to_a.ended is not None
        assert b_to_a.ended >= a_to_b.ended  # the reply came after the client's EOF
        for flow in (p.client, p.a, p.b, p.server):
            assert flow.state is FlowState.CLOSED
            assert flow.error is None

    setup.run(scenario)


def test_an_upstream_reset_reaches_the_client_as_a_reset(setup: Setup) -> None:
    async def scenario(setup: Setup) -> None:
        p = await proxied(setup)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(p.run)
            assert await p.server.write(b"partial-") == Ok(None)
            assert await p.client.read() == Ok(b"partial-")
            await p.server.abort()
            data, end = await read_all(p.client)
            assert (data, kind(end)) == (b"", setup.reset)  # a reset, never a clean Eof
        assert p.result is not None
        assert p.result.error is not None
        assert p.result.error.kind is ErrorKind.RESET
        assert p.result.b_to_a.end == Error(p.result.error)
        assert p.result.b_to_a.write_bytes == 8
        await end_all(p.client)

    setup.run(scenario)


def test_a_client_reset_reaches_the_server_as_a_reset(setup: Setup) -> None:
    async def scenario(setup: Setup) -> None:
        p = await proxied(setup)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(p.run)
            assert await p.client.write(b"half a request") == Ok(None)
            assert await p.server.read() == Ok(b"half a request")
            await p.client.abort()
            data, end = await read_all(p.server)
            assert (data, kind(end)) == (b"", setup.reset)  # a reset, never a clean Eof
        assert p.result is not None
        assert p.result.error is not None
        assert p.result.error.kind is ErrorKind.RESET
        await end_all(p.server)

    setup.run(scenario)


def test_an_idle_timeout_aborts_both_sides_and_is_reported(setup: Setup) -> None:
    async def scenario(setup: Setup) -> None:
        p = await proxied(setup)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(p.run, idle_timeout=0.2))
            assert await p.client.write(b"ping") == Ok(None)
            assert await p.server.read() == Ok(b"ping")
            client_end, server_end = (await read_all(p.client))[1], (await read_all(p.server))[1]
        assert kind(client_end) is setup.reset
        assert kind(server_end) is setup.reset
        assert p.result is not None
        assert p.result.error is not None
        assert p.result.error.kind is ErrorKind.TIMED_OUT
        assert p.result.a_to_b.end == p.result.b_to_a.end == Error(p.result.error)

    setup.run(scenario)


def test_copy_passes_the_eof_on(setup: Setup) -> None:
    async def scenario(setup: Setup) -> None:
        client, a = await setup.make_pair()
        server, b = await setup.make_pair()
        stats: list[CopyStats] = []

        async def copy() -> None:
            stats.append(await setup.copy(a, b))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(copy)
            for chunk in (b"one ", b"two ", b"three"):
                assert await client.write(chunk) == Ok(None)
            await client.shutdown(Shutdown.WRITE)
            assert await read_all(server) == (b"one two three", Eof())
        assert stats[0].read_bytes == stats[0].write_bytes == 13
        assert stats[0].read_ops == stats[0].write_ops
        assert stats[0].end == Eof()
        await end_all(client, a, b, server)

    setup.run(scenario)


# -- the rules with ends that fail on cue ------------------------------------------------------


@dataclass
class ScriptedEnd:
    """An end whose reads and writes answer from a script, and which records its calls."""

    reads: list[ReadResult] = field(default_factory=list)
    writes: list[WriteResult] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    high_water: int = 1000

    def read(self, max_bytes: int | None = None) -> ReadResult:
        self.calls.append(f"read {max_bytes}")
        return self.reads.pop(0)

    def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        self.calls.append(f"write {bytes(data)!r}")
        return self.writes.pop(0)

    def shutdown(self, how: Shutdown) -> None:
        self.calls.append(f"shutdown {how.name}")

    def abort(self) -> None:
        self.calls.append("abort")


class AsyncScriptedEnd(ScriptedEnd):
    async def read(self, max_bytes: int | None = None) -> ReadResult:  # type: ignore[override]
        return ScriptedEnd.read(self, max_bytes)

    async def write(self, data: bytes | bytearray | memoryview  # type: ignore[override]
                    ) -> WriteResult:
        return ScriptedEnd.write(self, data)

    async def shutdown(self, how: Shutdown) -> None:  # type: ignore[override]
        ScriptedEnd.shutdown(self, how)

    async def abort(self) -> None:  # type: ignore[override]
        ScriptedEnd.abort(self)


PIPE = FlowError(ErrorKind.BROKEN_PIPE)
CASES = [
    # (source reads, destination writes, source's calls, destination's calls, end)
    ([Ok(b"x"), Eof()], [Ok(None)], ["read 1000"] * 2, ["write b'x'", "shutdown WRITE"], Eof()),
    ([Ok(b"x"), Error(PIPE)], [Ok(None)], ["read 1000"] * 2, ["write b'x'", "abort"],
     Error(PIPE)),
    ([Ok(b"x")], [Error(PIPE)], ["read 1000", "abort"], ["write b'x'"], Error(PIPE)),
    ([Ok(b"x")], [Eof()], ["read 1000", "shutdown READ"], ["write b'x'"], Eof()),
]


@pytest.mark.parametrize(("reads", "writes", "src_calls", "dst_calls", "end"), CASES)
@pytest.mark.parametrize("flavour", ["blocking", "asyncio", "trio"])
def test_each_end_is_passed_on(flavour: str, reads: list[ReadResult], writes: list[WriteResult],
                               src_calls: list[str], dst_calls: list[str], end: object) -> None:
    if flavour == "blocking":
        src, dst = ScriptedEnd(reads=list(reads)), ScriptedEnd(writes=list(writes))
        stats = sf_socket.copy(src, dst)
    else:
        src, dst = AsyncScriptedEnd(reads=list(reads)), AsyncScriptedEnd(writes=list(writes))
        copy = sf_asyncio.copy if flavour == "asyncio" else sf_trio.copy
        stats = anyio.run(copy, src, dst, backend=flavour)
    assert (src.calls, dst.calls, stats.end) == (src_calls, dst_calls, end)


def test_a_blocking_proxy_raises_what_a_direction_raised() -> None:
    a, b = ScriptedEnd(reads=[Ok(b"x")]), ScriptedEnd(reads=[])  # b's read finds no script
    with pytest.raises(IndexError):
        sf_socket.proxy(a, b)
    assert "abort" in a.calls
    assert "abort" in b.calls


@pytest.mark.parametrize(("adapter", "backend"), [
    ("asyncio", "asyncio"), ("trio", "trio"), ("anyio", "asyncio"), ("anyio", "trio")])
def test_an_async_proxy_raises_what_a_direction_raised_and_cancels_the_other(
        adapter: str, backend: str) -> None:
    """Bare, as the blocking proxy raises it: never in an exception group on one adapter
    and bare on another."""
    cancelled: list[bool] = []

    class Stuck(AsyncScriptedEnd):
        async def read(self, max_bytes: int | None = None  # type: ignore[override]
                       ) -> ReadResult:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(True)
                raise
            raise AssertionError("unreachable")

    proxy = {"asyncio": sf_asyncio, "trio": sf_trio, "anyio": sf_anyio}[adapter].proxy
    with pytest.raises(IndexError):  # the one direction's read finds no script
        anyio.run(proxy, Stuck(), AsyncScriptedEnd(), backend=backend)
    assert cancelled == [True]


# -- exact stats under any chunking, and bounded memory ---------------------------------------


@settings(max_examples=25)
@given(
    st.lists(st.binary(min_size=1, max_size=3000), max_size=8),
    st.lists(st.binary(min_size=1, max_size=3000), max_size=8),
    st.integers(1, 4000), st.integers(100, 5000), st.sampled_from(["asyncio", "trio"]),
)
def test_stats_are_exact_under_any_chunking(requests: list[bytes], replies: list[bytes],
                                            capacity: int, high_water: int,
                                            backend: str) -> None:
    make_pair = partial(memory_flow_pair, capacity=capacity, high_water=high_water,
                        low_water=high_water // 4, receive_limit=max(capacity // 2, 1))
    proxy = sf_asyncio.proxy if backend == "asyncio" else sf_trio.proxy
    setup = Setup(backend, backend, make_pair, proxy, sf_asyncio.copy)
    sent, answered = b"".join(requests), b"".join(replies)

    async def scenario(setup: Setup) -> None:
        p = await proxied(setup)

        async def client() -> None:
            for chunk in requests:
                assert await p.client.write(chunk) == Ok(None)
            await p.client.shutdown(Shutdown.WRITE)
            assert await read_all(p.client) == (answered, Eof())

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(p.run)
            tasks.start_soon(client)
            assert await read_all(p.server) == (sent, Eof())
            for chunk in replies:
                assert await p.server.write(chunk) == Ok(None)
            await p.server.close()
        assert p.result is not None
        for stats, total in ((p.result.a_to_b, len(sent)), (p.result.b_to_a, len(answered))):
            assert stats.read_bytes == stats.write_bytes == total
            assert stats.read_ops == stats.write_ops
            assert total / high_water <= stats.read_ops <= total  # reads of at most high water
            assert stats.end == Eof()
        assert p.result.error is None

    setup.run(scenario)


class Counting:
    """The proxy's end toward the client, counting what the proxy holds for that direction:
    the data read from the server and not yet written here, plus this flow's send queue."""

    def __init__(self, flow: Flow, source: Any) -> None:
        self.flow, self.source, self.written, self.most = flow, source, 0, 0

    @property
    def high_water(self) -> int:
        return int(self.flow.high_water)

    def held(self) -> int:
        return int(self.source.read_bytes - self.written + self.flow.queued)

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        return await self.flow.read(max_bytes)  # type: ignore[no-any-return]

    async def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        self.most = max(self.most, self.held())
        result: WriteResult = await self.flow.write(data)
        self.written += len(data)
        self.most = max(self.most, self.held())
        return result

    async def shutdown(self, how: Shutdown) -> None:
        await self.flow.shutdown(how)

    async def abort(self) -> None:
        await self.flow.abort()


class CountingSource:
    """The proxy's end toward the server, counting the bytes the proxy read from it."""

    def __init__(self, flow: Flow) -> None:
        self.flow, self.read_bytes = flow, 0
        self.high_water = flow.high_water

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        result: ReadResult = await self.flow.read(max_bytes)
        if isinstance(result, Ok):
            self.read_bytes += len(result.value)
        return result

    async def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        return await self.flow.write(data)  # type: ignore[no-any-return]

    async def shutdown(self, how: Shutdown) -> None:
        await self.flow.shutdown(how)

    async def abort(self) -> None:
        await self.flow.abort()


MOST_HELD: dict[str, int] = {}


@pytest.mark.parametrize("setup", [s for s in SETUPS if s.name != "socket"],
                         ids=[s.name for s in SETUPS if s.name != "socket"])
def test_a_slow_reader_holds_the_proxy_to_two_high_water_marks(setup: Setup) -> None:
    size = 4 * 1024 * 1024

    async def scenario(setup: Setup) -> None:
        p = await proxied(setup)
        source = CountingSource(p.b)
        counting = Counting(p.a, source)
        p.a, p.b = counting, source
        received = 0

        async def fast_sender() -> None:
            block = bytes(64 * 1024)
            for _ in range(size // len(block)):
                assert await p.server.write(block) == Ok(None)
            await p.server.close()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(p.run)
            tasks.start_soon(fast_sender)
            await p.client.shutdown(Shutdown.WRITE)
            while True:
                result = await p.client.read(4096)  # a slow reader: small reads, and naps
                if not isinstance(result, Ok):
                    break
                received += len(result.value)
                if received % (64 * 1024) == 0:
                    await anyio.sleep(0.001)
        assert received == size
        MOST_HELD[setup.name] = counting.most
        # One read of at most high water in hand, plus a queue that accepts a write while it
        # is at or below low water: high water + low water + one read.
        assert counting.most <= 2 * p.a.high_water + p.a.flow.low_water
        assert counting.most >= p.a.high_water  # the writer did wait: the bound was reached

    setup.run(scenario)
