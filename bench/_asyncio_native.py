"""The asyncio peers: ``Protocol``, ``BufferedProtocol`` and Streams, on asyncio's loop or uvloop.

Both ends of every connection use the API under test, each written the way that API is meant to
be used: protocols honour ``pause_writing``/``resume_writing``, streams ``await drain()``.

Read size: ``BufferedProtocol`` hands the transport a 64 KiB buffer and Streams call
``read(65536)``, like every other stack. A plain ``Protocol`` has no read size in its API: the
transport picks it (256 KiB per ``recv`` on asyncio's selector loop, uvloop's own buffer), and
it is left at that default rather than patched through a private attribute.

Over TLS (``ssl=`` on both ends, the contexts of ``_tls``) the transports cannot half-close
(``can_write_eof()`` is false): where the plain run half-closes, the TLS run closes, which sends
close_notify and waits for the peer's; a client that wants an echo reads it before it closes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from time import perf_counter, perf_counter_ns
from typing import Any, TypeVar, cast

from ._common import (
    BACKLOG,
    HOST,
    READ_SIZE,
    Measurement,
    Params,
    Stack,
    VerificationError,
    bulk_result,
    check,
    connections_result,
    payload,
    pingpong_result,
    small_writes_result,
)
from ._scale import SCALE, ScaleMeasurement, ScaleRun
from ._tls import client_options, server_options

__all__ = [
    "buffered_stack",
    "protocol_stack",
    "run_in_loop",
    "streams_stack",
    "uvloop_protocol_stack",
    "uvloop_streams_stack",
]

T = TypeVar("T")
_CLEANUP_TIMEOUT = 10.0
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
AsyncScenario = Callable[[Params], Coroutine[Any, Any, Measurement]]


if sys.version_info >= (3, 11):

    def run_in_loop(
        factory: LoopFactory, main: Callable[[], Coroutine[Any, Any, T]], timeout: float
    ) -> T:
        """``asyncio.run`` with a loop factory and a deadline.

        The deadline is ``asyncio.timeout`` inside the run: ``wait_for`` would run the whole
        scenario as a second task, and every stack would pay for the hop (5-15 %).
        """

        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await main()

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(bounded())

else:

    def run_in_loop(
        factory: LoopFactory, main: Callable[[], Coroutine[Any, Any, T]], timeout: float
    ) -> T:
        """Python 3.10 has neither ``asyncio.Runner`` nor ``asyncio.timeout``: ``wait_for``."""
        loop = factory()
        try:
            return loop.run_until_complete(asyncio.wait_for(main(), timeout))
        finally:
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.wait(tasks, timeout=_CLEANUP_TIMEOUT))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()


def _stack(factory: LoopFactory, scenarios: dict[str, AsyncScenario]) -> Stack:
    def bind(scenario: AsyncScenario) -> Callable[[Params], Measurement]:
        return lambda p: run_in_loop(factory, lambda: scenario(p), p.timeout)

    return {name: bind(fn) for name, fn in scenarios.items()}


def _port(server: asyncio.AbstractServer) -> int:
    sockets = cast(asyncio.Server, server).sockets
    return int(sockets[0].getsockname()[1])


# -- Protocol and BufferedProtocol ------------------------------------------------------------


class _Endpoint(asyncio.BaseProtocol):
    """What every protocol below shares: write flow control and the end of the connection."""

    def __init__(self, registry: list[_Endpoint]) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.received = 0
        self.resume: asyncio.Future[None] | None = None
        # Kept so that a failed run can abort what it left open instead of leaking sockets.
        registry.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def pause_writing(self) -> None:
        self.resume = self.loop.create_future()

    def resume_writing(self) -> None:
        resume, self.resume = self.resume, None
        if resume is not None and not resume.done():
            resume.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        # A writer parked on a full buffer must wake up to notice the connection is gone.
        self.resume_writing()
        if not self.lost.done():
            if exc is None:
                self.lost.set_result(None)
            else:
                self.lost.set_exception(exc)

    def eof_received(self) -> bool | None:
        # Falsy: the transport closes itself once our own queued data is flushed.
        return False


def _abort_all(registry: list[_Endpoint]) -> None:
    for endpoint in registry:
        if endpoint.transport is not None and not endpoint.transport.is_closing():
            endpoint.transport.abort()
        if endpoint.lost.done() and not endpoint.lost.cancelled():
            endpoint.lost.exception()  # mark retrieved: the run already failed or succeeded


class _Sink(_Endpoint):
    def __init__(self, registry: list[_Endpoint], tally: list[int]) -> None:
        super().__init__(registry)
        self.tally = tally
        self.ended = False

    def eof_received(self) -> bool | None:
        self._end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # Python 3.10's TLS transport ends at the peer's close_notify without eof_received.
        if exc is None:
            self._end()
        super().connection_lost(exc)

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.tally.append(self.received)


class _SinkPlain(_Sink, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self.received += len(data)


class _SinkBuffered(_Sink, asyncio.BufferedProtocol):
    def __init__(self, registry: list[_Endpoint], tally: list[int]) -> None:
        super().__init__(registry, tally)
        self.buffer = memoryview(bytearray(READ_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes


class _Echo(_Sink):
    # An echo server that cannot send stops reading: the peer then feels the backpressure.
    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        # Also called by connection_lost, when a closed transport has nothing to resume
        # (Python 3.10's TLS transport raises for it).
        if not self.transport.is_closing():
            self.transport.resume_reading()


class _EchoPlain(_Echo, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        assert self.transport is not None
        self.transport.write(data)


class _EchoBuffered(_Echo, asyncio.BufferedProtocol):
    def __init__(self, registry: list[_Endpoint], tally: list[int]) -> None:
        super().__init__(registry, tally)
        self.buffer = memoryview(bytearray(READ_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        assert self.transport is not None
        # A copy: the transport may keep what it could not send, and the buffer is reused.
        self.transport.write(bytes(self.buffer[:nbytes]))


class _Client(_Endpoint):
    """A client that can wait for so many bytes (an echo over TLS, which cannot half-close)."""

    def __init__(self, registry: list[_Endpoint]) -> None:
        super().__init__(registry)
        self.want = 0
        self.enough: asyncio.Future[None] | None = None

    def expect(self, nbytes: int) -> asyncio.Future[None]:
        self.want = nbytes
        self.enough = self.loop.create_future()
        self._count(0)
        return self.enough

    def _count(self, nbytes: int) -> None:
        self.received += nbytes
        if self.enough is not None and self.received >= self.want and not self.enough.done():
            self.enough.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.enough is not None and not self.enough.done():
            self.enough.set_exception(exc or ConnectionError("connection lost mid echo"))


class _ClientPlain(_Client, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self._count(len(data))


class _ClientBuffered(_Client, asyncio.BufferedProtocol):
    def __init__(self, registry: list[_Endpoint]) -> None:
        super().__init__(registry)
        self.buffer = memoryview(bytearray(READ_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._count(nbytes)


class _Ping(_Endpoint):
    """The ping-pong client: the callback that completes an echo sends the next ping itself.

    No task wakes up between round trips, which is what makes callbacks the limit.
    """

    def __init__(self, registry: list[_Endpoint], message: bytes, trips: int) -> None:
        super().__init__(registry)
        self.message = message
        self.samples = [0] * trips
        self.trip = 0
        self.t0 = 0
        self.acc = bytearray()
        self.done: asyncio.Future[None] = self.loop.create_future()

    def start(self) -> None:
        assert self.transport is not None
        self.t0 = perf_counter_ns()
        self.transport.write(self.message)

    def _arrived(self) -> None:
        if len(self.acc) < len(self.message) or self.done.done():
            return
        now = perf_counter_ns()
        if self.acc != self.message:
            self.done.set_exception(VerificationError("echo differs from what was sent"))
            return
        self.acc.clear()
        self.samples[self.trip] = now - self.t0
        self.trip += 1
        if self.trip == len(self.samples):
            self.done.set_result(None)
        else:
            self.start()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("connection lost mid round trip"))


class _Echoed(_Endpoint, asyncio.Protocol):
    """A scale client: checks its echo as it arrives (``ScaleRun.echoed``)."""

    def __init__(self, registry: list[_Endpoint], run: ScaleRun) -> None:
        super().__init__(registry)
        self.run = run

    def data_received(self, data: bytes) -> None:
        self.received = self.run.echoed(self.received, data)


class _PingPlain(_Ping, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.acc += data
        self._arrived()


class _PingBuffered(_Ping, asyncio.BufferedProtocol):
    def __init__(self, registry: list[_Endpoint], message: bytes, trips: int) -> None:
        super().__init__(registry, message, trips)
        self.buffer = memoryview(bytearray(READ_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        self.acc += self.buffer[:nbytes]
        self._arrived()


@dataclass(frozen=True)
class _Kinds:
    sink: type[_Sink]
    echo: type[_Echo]
    client: type[_Client]
    ping: type[_Ping]


_PLAIN = _Kinds(_SinkPlain, _EchoPlain, _ClientPlain, _PingPlain)
_BUFFERED = _Kinds(_SinkBuffered, _EchoBuffered, _ClientBuffered, _PingBuffered)


E = TypeVar("E", bound=_Endpoint)


async def _connect(
    factory: Callable[[], E], port: int, tls: bool
) -> tuple[asyncio.Transport, E]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        factory, HOST, port, **client_options(tls)
    )
    return transport, protocol


async def _server(factory: Callable[[], _Endpoint], tls: bool) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, HOST, 0, backlog=BACKLOG, **server_options(tls))


def _end_sending(transport: asyncio.Transport, tls: bool) -> None:
    # Half-close; over TLS, close: close_notify, then the transport waits for the peer's.
    if tls:
        transport.close()
    else:
        transport.write_eof()


async def _close_server(server: asyncio.AbstractServer) -> None:
    server.close()
    await server.wait_closed()


async def _proto_stream(
    kinds: _Kinds, chunk: bytes, count: int, tls: bool
) -> tuple[float, int]:
    """Send ``count`` writes of ``chunk``, half-close, wait for the server's close."""
    registry: list[_Endpoint] = []
    tally: list[int] = []
    server = await _server(lambda: kinds.sink(registry, tally), tls)
    try:
        transport, client = await _connect(lambda: kinds.client(registry), _port(server), tls)
        write = transport.write
        start = perf_counter()
        for _ in range(count):
            write(chunk)
            if client.resume is not None:
                await client.resume
        _end_sending(transport, tls)
        await client.lost
        elapsed = perf_counter() - start
        check(client.received == 0, "the sink server sent data")
        check(len(tally) == 1, "the server did not see EOF")
        return elapsed, tally[0]
    finally:
        await _close_server(server)
        _abort_all(registry)


async def _proto_bulk(kinds: _Kinds, p: Params) -> Measurement:
    elapsed, received = await _proto_stream(
        kinds, payload(p.bulk_write), p.bulk_bytes // p.bulk_write, p.tls
    )
    return bulk_result(p, elapsed, received)


async def _proto_small(kinds: _Kinds, p: Params) -> Measurement:
    elapsed, received = await _proto_stream(kinds, payload(p.small_size), p.small_writes, p.tls)
    return small_writes_result(p, elapsed, received)


async def _proto_pingpong(kinds: _Kinds, p: Params) -> Measurement:
    registry: list[_Endpoint] = []
    tally: list[int] = []
    server = await _server(lambda: kinds.echo(registry, tally), p.tls)
    message = payload(p.pingpong_size)
    try:
        transport, client = await _connect(
            lambda: kinds.ping(registry, message, p.pingpong_trips), _port(server), p.tls
        )
        start = perf_counter()
        client.start()
        await client.done
        elapsed = perf_counter() - start
        _end_sending(transport, p.tls)
        await client.lost
        check(len(tally) == 1, "the server did not see EOF")
        return pingpong_result(p, elapsed, client.samples, tally[0], client.received)
    finally:
        await _close_server(server)
        _abort_all(registry)


async def _proto_connections(kinds: _Kinds, p: Params) -> Measurement:
    registry: list[_Endpoint] = []
    tally: list[int] = []
    server = await _server(lambda: kinds.echo(registry, tally), p.tls)
    data = payload(p.connection_bytes)
    port = _port(server)

    async def one() -> int:
        transport, client = await _connect(lambda: kinds.client(registry), port, p.tls)
        transport.write(data)
        if client.resume is not None:
            await client.resume
        if p.tls:
            await client.expect(len(data))
        _end_sending(transport, p.tls)
        await client.lost
        return client.received

    try:
        start = perf_counter()
        received = await asyncio.gather(*(one() for _ in range(p.connections)))
        elapsed = perf_counter() - start
        check(len(tally) == p.connections, "a server connection did not see EOF")
        check(all(r == p.connection_bytes for r in received), "an echo came back short")
        return connections_result(p, elapsed, sum(tally), sum(received))
    finally:
        await _close_server(server)
        _abort_all(registry)


async def _proto_scale(p: Params) -> ScaleMeasurement:
    run = ScaleRun(p)
    registry: list[_Endpoint] = []
    served: list[int] = []

    def accept() -> _Endpoint:
        run.accepted()
        return _EchoPlain(registry, served)

    server = await _server(accept, False)
    port = _port(server)
    clients: list[tuple[asyncio.Transport, _Echoed]] = []

    async def open_one() -> None:
        clients.append(await _connect(lambda: _Echoed(registry, run), port, False))

    try:
        await run.open_all(lambda wave: asyncio.gather(*(open_one() for _ in range(wave))),
                           asyncio.Event)
        # Callbacks all the way: no task per connection. 4 KiB never fills a transport's
        # buffer, and write_eof sends the FIN once it has left.
        for transport, _client in clients:
            transport.write(run.data)
            transport.write_eof()
        await asyncio.gather(*(client.lost for _transport, client in clients))
        return run.finished(served, [client.received for _transport, client in clients])
    finally:
        await _close_server(server)
        _abort_all(registry)


def _bind(kinds: _Kinds) -> dict[str, AsyncScenario]:
    def with_kinds(
        fn: Callable[[_Kinds, Params], Awaitable[Measurement]],
    ) -> AsyncScenario:
        async def scenario(p: Params) -> Measurement:
            return await fn(kinds, p)

        return scenario

    return {
        "bulk": with_kinds(_proto_bulk),
        "pingpong": with_kinds(_proto_pingpong),
        "small_writes": with_kinds(_proto_small),
        "connections": with_kinds(_proto_connections),
    }


# -- Streams ----------------------------------------------------------------------------------

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Writers:
    """Every ``StreamWriter`` of a run, so that a failed run closes what it opened."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []

    def add(self, writer: asyncio.StreamWriter) -> asyncio.StreamWriter:
        self.writers.append(writer)
        return writer

    def abort(self) -> None:
        for writer in self.writers:
            if not writer.transport.is_closing():
                writer.transport.abort()


async def _drain_to_eof(reader: asyncio.StreamReader) -> int:
    received = 0
    while data := await reader.read(READ_SIZE):
        received += len(data)
    return received


async def _finish(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def _sink_handler(tally: list[int], writers: _Writers) -> StreamHandler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        tally.append(await _drain_to_eof(reader))
        await _finish(writer)

    return handler


def _echo_handler(tally: list[int], writers: _Writers) -> StreamHandler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        received = 0
        while data := await reader.read(READ_SIZE):
            received += len(data)
            writer.write(data)
            await writer.drain()
        tally.append(received)
        await _finish(writer)

    return handler


async def _start(handler: StreamHandler, tls: bool) -> asyncio.AbstractServer:
    return await asyncio.start_server(handler, HOST, 0, backlog=BACKLOG, **server_options(tls))


async def _open(port: int, tls: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port, **client_options(tls))


async def _end_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool
) -> int:
    """Half-close, read to EOF, close; over TLS close at once. Returns the bytes read."""
    received = 0
    if not tls:
        writer.write_eof()
        received = await _drain_to_eof(reader)
    await _finish(writer)
    return received


async def _streams_stream(chunk: bytes, count: int, tls: bool) -> tuple[float, int]:
    writers = _Writers()
    tally: list[int] = []
    server = await _start(_sink_handler(tally, writers), tls)
    try:
        reader, writer = await _open(_port(server), tls)
        writers.add(writer)
        start = perf_counter()
        for _ in range(count):
            writer.write(chunk)
            await writer.drain()
        extra = await _end_stream(reader, writer, tls)
        elapsed = perf_counter() - start
        check(extra == 0, "the sink server sent data")
        check(len(tally) == 1, "the server did not see EOF")
        return elapsed, tally[0]
    finally:
        await _close_server(server)
        writers.abort()


async def _streams_bulk(p: Params) -> Measurement:
    elapsed, received = await _streams_stream(
        payload(p.bulk_write), p.bulk_bytes // p.bulk_write, p.tls
    )
    return bulk_result(p, elapsed, received)


async def _streams_small(p: Params) -> Measurement:
    elapsed, received = await _streams_stream(payload(p.small_size), p.small_writes, p.tls)
    return small_writes_result(p, elapsed, received)


async def _streams_pingpong(p: Params) -> Measurement:
    writers = _Writers()
    tally: list[int] = []
    server = await _start(_echo_handler(tally, writers), p.tls)
    try:
        reader, writer = await _open(_port(server), p.tls)
        writers.add(writer)
        message = payload(p.pingpong_size)
        samples = [0] * p.pingpong_trips
        received = 0
        start = perf_counter()
        for i in range(p.pingpong_trips):
            t0 = perf_counter_ns()
            writer.write(message)
            await writer.drain()
            echo = await reader.read(READ_SIZE)
            while len(echo) < len(message):
                more = await reader.read(READ_SIZE)
                check(bool(more), "EOF mid round trip")
                echo += more
            samples[i] = perf_counter_ns() - t0
            check(echo == message, "echo differs from what was sent")
            received += len(echo)
        elapsed = perf_counter() - start
        received += await _end_stream(reader, writer, p.tls)
        check(len(tally) == 1, "the server did not see EOF")
        return pingpong_result(p, elapsed, samples, tally[0], received)
    finally:
        await _close_server(server)
        writers.abort()


async def _streams_connections(p: Params) -> Measurement:
    writers = _Writers()
    tally: list[int] = []
    server = await _start(_echo_handler(tally, writers), p.tls)
    data = payload(p.connection_bytes)
    port = _port(server)

    async def one() -> int:
        reader, writer = await _open(port, p.tls)
        writers.add(writer)
        writer.write(data)
        await writer.drain()
        echo = len(await reader.readexactly(len(data))) if p.tls else 0
        return echo + await _end_stream(reader, writer, p.tls)

    try:
        start = perf_counter()
        received = await asyncio.gather(*(one() for _ in range(p.connections)))
        elapsed = perf_counter() - start
        check(len(tally) == p.connections, "a server connection did not see EOF")
        check(all(r == p.connection_bytes for r in received), "an echo came back short")
        return connections_result(p, elapsed, sum(tally), sum(received))
    finally:
        await _close_server(server)
        writers.abort()


async def _streams_scale(p: Params) -> ScaleMeasurement:
    run = ScaleRun(p)
    writers = _Writers()
    served: list[int] = []
    echo = _echo_handler(served, writers)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        run.accepted()
        await echo(reader, writer)

    server = await _start(handler, False)
    port = _port(server)
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open_one() -> None:
        reader, writer = await _open(port, False)
        opened.append((reader, writers.add(writer)))

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(run.data)
        await writer.drain()
        writer.write_eof()
        got = 0
        while data := await reader.read(READ_SIZE):
            got = run.echoed(got, data)
        await _finish(writer)
        return got

    try:
        await run.open_all(lambda wave: asyncio.gather(*(open_one() for _ in range(wave))),
                           asyncio.Event)
        echoed = await asyncio.gather(*(exchange(reader, writer) for reader, writer in opened))
        return run.finished(served, echoed)
    finally:
        await _close_server(server)
        writers.abort()


_STREAMS: dict[str, AsyncScenario] = {
    "bulk": _streams_bulk,
    "pingpong": _streams_pingpong,
    "small_writes": _streams_small,
    "connections": _streams_connections,
    SCALE: _streams_scale,
}


# -- the stacks -------------------------------------------------------------------------------


def uvloop_factory() -> LoopFactory:
    import uvloop

    return cast(LoopFactory, uvloop.new_event_loop)


def protocol_stack() -> Stack:
    return _stack(asyncio.new_event_loop, {**_bind(_PLAIN), SCALE: _proto_scale})


def buffered_stack() -> Stack:
    return _stack(asyncio.new_event_loop, _bind(_BUFFERED))


def streams_stack() -> Stack:
    return _stack(asyncio.new_event_loop, _STREAMS)


def uvloop_protocol_stack() -> Stack:
    return _stack(uvloop_factory(), {**_bind(_PLAIN), SCALE: _proto_scale})


def uvloop_streams_stack() -> Stack:
    return _stack(uvloop_factory(), _STREAMS)
