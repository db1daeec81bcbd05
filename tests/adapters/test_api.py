"""The flow API every adapter shares: ``async with`` / ``with``, iteration, ``BrokenFlowError``,
and the ``AsyncFlow`` / ``BlockingFlow`` protocols."""

from __future__ import annotations

import errno
import pickle
import socket
from collections.abc import Awaitable, Callable

import anyio
import pytest

from sansflow import (
    AsyncFlow,
    BlockingAdapterFlow,
    BlockingFlow,
    BrokenFlowError,
    Eof,
    Error,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    FlowView,
    Ok,
    ReadResult,
    error_message,
)
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio
from sansflow.testing._memory import memory_flow_pair

PairFactory = Callable[[], Awaitable[tuple[AsyncFlow, AsyncFlow]]]


async def _asyncio_pair() -> tuple[AsyncFlow, AsyncFlow]:
    # TCP, not a socketpair: an abort must reach the peer as a reset.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        left = socket.create_connection(listener.getsockname())
        right, _ = listener.accept()
    return await sf_asyncio.wrap(left), await sf_asyncio.wrap(right)


async def _memory_pair() -> tuple[AsyncFlow, AsyncFlow]:
    return await memory_flow_pair()


# (pair factory, anyio backend): the memory pair on both backends, the asyncio adapter on its own.
PAIRS = [
    pytest.param(_memory_pair, "asyncio", id="memory-asyncio"),
    pytest.param(_memory_pair, "trio", id="memory-trio"),
    pytest.param(_asyncio_pair, "asyncio", id="asyncio-adapter"),
]


def _run(make_pair: PairFactory, backend: str,
         body: Callable[[AsyncFlow, AsyncFlow], Awaitable[None]]) -> None:
    async def main() -> None:
        a, b = await make_pair()
        try:
            with anyio.fail_after(10):
                await body(a, b)
        finally:
            await a.abort()
            await b.abort()

    anyio.run(main, backend=backend)


async def _read_all(flow: AsyncFlow) -> bytes:
    return b"".join([data async for data in flow])


@pytest.mark.parametrize(("make_pair", "backend"), PAIRS)
def test_flows_are_async_flows(make_pair: PairFactory, backend: str) -> None:
    async def body(a: AsyncFlow, b: AsyncFlow) -> None:
        assert isinstance(a, AsyncFlow)
        assert not isinstance(a, BlockingFlow)
        if make_pair is _memory_pair:  # no socket underneath
            assert (a.peername, a.sockname) == (None, None)
        else:  # each end's peer is the other end
            assert a.peername == b.sockname
            assert a.sockname == b.peername
            assert a.peername[0] == "127.0.0.1"

    _run(make_pair, backend, body)


@pytest.mark.parametrize(("make_pair", "backend"), PAIRS)
def test_async_with_closes_on_a_normal_exit(make_pair: PairFactory, backend: str) -> None:
    async def body(a: AsyncFlow, b: AsyncFlow) -> None:
        async with anyio.create_task_group() as group:
            async def peer() -> None:
                assert await _read_all(b) == b"hello"
                await b.close()  # lets a's close() end

            group.start_soon(peer)
            async with a as entered:
                assert entered is a
                assert await a.write(b"hello") == Ok(None)
        assert a.state is FlowState.CLOSED
        assert a.error is None

    _run(make_pair, backend, body)


@pytest.mark.parametrize(("make_pair", "backend"), PAIRS)
def test_async_with_aborts_when_the_block_raises(make_pair: PairFactory, backend: str) -> None:
    async def body(a: AsyncFlow, b: AsyncFlow) -> None:
        async def fail_inside() -> None:
            async with a:
                await a.write(b"never mind")
                raise LookupError

        with pytest.raises(LookupError):
            await fail_inside()
        assert a.state is FlowState.CLOSED
        assert a.error is not None
        assert a.error.kind is ErrorKind.ABORTED
        result: ReadResult = Ok(b"")
        while type(result) is Ok:  # whatever arrived first, then the reset
            result = await b.read()
        assert isinstance(result, Error)
        assert result.error.kind is ErrorKind.RESET

    _run(make_pair, backend, body)


@pytest.mark.parametrize(("make_pair", "backend"), PAIRS)
def test_async_for_yields_every_byte_until_eof(make_pair: PairFactory, backend: str) -> None:
    async def body(a: AsyncFlow, b: AsyncFlow) -> None:
        sent = bytes(range(256)) * 1000
        async with anyio.create_task_group() as group:
            async def writer() -> None:
                for start in range(0, len(sent), 7000):
                    assert await a.write(sent[start:start + 7000]) == Ok(None)
                await a.close()

            group.start_soon(writer)
            assert await _read_all(b) == sent
            assert await b.read() == Eof()  # iteration consumed nothing past the end
            await b.close()

    _run(make_pair, backend, body)


@pytest.mark.parametrize(("make_pair", "backend"), PAIRS)
def test_async_for_raises_broken_flow_error_after_the_data(make_pair: PairFactory,
                                                            backend: str) -> None:
    async def body(a: AsyncFlow, b: AsyncFlow) -> None:
        assert await a.write(b"last words") == Ok(None)
        received = b""

        async def read_until_broken() -> None:
            nonlocal received
            async for data in b:
                received += data
                if received == b"last words":
                    await a.abort()

        with pytest.raises(BrokenFlowError) as raised:
            await read_until_broken()
        assert received == b"last words"
        assert isinstance(raised.value, ConnectionError)
        assert raised.value.error == b.error
        assert raised.value.error.kind is ErrorKind.RESET
        assert str(raised.value) == error_message(raised.value.error)

    _run(make_pair, backend, body)


def test_broken_flow_error_text_pickling_and_bad_input() -> None:
    error = FlowError.from_exception(ConnectionResetError(errno.ECONNRESET, "reset"))
    broken = BrokenFlowError(error)
    assert str(broken) == "connection reset by peer (ECONNRESET)"
    copy = pickle.loads(pickle.dumps(broken))
    assert type(copy) is BrokenFlowError
    assert copy.error.kind is ErrorKind.RESET
    assert str(copy) == str(broken)
    with pytest.raises(TypeError, match="takes a FlowError, not str"):
        BrokenFlowError("reset")  # type: ignore[arg-type]


class _ScriptedFlow(BlockingAdapterFlow):
    """A blocking flow whose reads follow a script: enough to drive the blocking mixin."""

    __slots__ = ("calls", "results")

    def __init__(self, results: list[ReadResult]) -> None:
        super().__init__(Flow())
        self.results = results
        self.calls: list[str] = []

    def read(self, max_bytes: int | None = None) -> ReadResult:
        self.calls.append("read")
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]

    def close(self, timeout: float | None = None) -> None:
        self.calls.append("close")

    def abort(self) -> None:
        self.calls.append("abort")


def test_blocking_with_closes_on_a_normal_exit_and_aborts_on_an_exception() -> None:
    flow = _ScriptedFlow([Eof()])
    with flow as entered:
        assert entered is flow
    assert flow.calls == ["close"]
    flow = _ScriptedFlow([Eof()])
    with pytest.raises(KeyError), flow:
        raise KeyError
    assert flow.calls == ["abort"]


def test_blocking_iteration_yields_data_until_eof_or_raises_at_an_error() -> None:
    flow = _ScriptedFlow([Ok(b"a"), Ok(b"b"), Eof()])
    assert list(flow) == [b"a", b"b"]
    error = FlowError(ErrorKind.ABORTED)
    flow = _ScriptedFlow([Ok(b"a"), Error(error)])
    assert next(flow) == b"a"
    with pytest.raises(BrokenFlowError) as raised:
        next(flow)
    assert raised.value.error is error



def _shows_no_core(flow: AsyncFlow | BlockingFlow) -> None:
    """Writing to the sans-IO core would bypass the adapter's flushing: a flow shows what it
    counts (``queued``, ``buffered``), never the core, and takes no new attribute."""
    assert not hasattr(flow, "core")
    with pytest.raises(AttributeError):
        flow.core = Flow()  # type: ignore[union-attr]
    assert (flow.queued, flow.buffered) == (0, 0)


@pytest.mark.parametrize(("adapter", "backend"),
                         [("asyncio", "asyncio"), ("trio", "trio"), ("memory", "trio")])
def test_async_flows_show_no_core(adapter: str, backend: str) -> None:
    async def main() -> None:
        left, right = socket.socketpair()
        with left, right:
            flow: AsyncFlow
            if adapter == "asyncio":
                flow = await sf_asyncio.wrap(left)
            elif adapter == "trio":
                flow = await sf_trio.wrap(left)
            else:
                flow = (await memory_flow_pair())[0]
            try:
                _shows_no_core(flow)
            finally:
                await flow.abort()

    anyio.run(main, backend=backend)


def test_socket_flows_show_no_core() -> None:
    left, right = socket.socketpair()
    with left, right:
        flow = sf_socket.wrap(left)
        try:
            _shows_no_core(flow)
        finally:
            flow.abort()


def test_queued_and_buffered_count_bytes_and_are_read_only() -> None:
    async def main() -> None:
        a, b = await memory_flow_pair(receive_limit=10, capacity=20)
        try:
            assert (a.queued, b.buffered) == (0, 0)
            assert await a.write(b"x" * 100) == Ok(None)
            # b took one wire's worth (20, past its receive limit of 10) and stopped reading;
            # 20 more are on the wire, the rest wait in a's queue.
            assert (a.queued, b.buffered) == (60, 20)
            assert await b.read(3) == Ok(b"xxx")
            assert (a.queued, b.buffered) == (60, 17)
            for flow, name in [(a, "queued"), (b, "buffered")]:
                with pytest.raises(AttributeError):
                    setattr(flow, name, 0)
            assert (a.queued, b.buffered) == (60, 17)
            assert await b.read() == Ok(b"x" * 17)  # room again: the wire moves on
            assert (a.queued, b.buffered) == (40, 20)
        finally:
            await a.abort()
            await b.abort()

    anyio.run(main, backend="trio")


def test_the_core_and_every_flow_show_one_flow_view() -> None:
    # One list of state properties serves the core, the adapters' flows and the kit's wrappers.
    assert isinstance(Flow(), FlowView)
    assert not isinstance(Flow(), AsyncFlow)  # the core has no I/O calls and no addresses
