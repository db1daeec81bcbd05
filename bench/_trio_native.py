"""The trio peer: ``trio.SocketStream`` at both ends (``open_tcp_stream`` and ``serve_tcp``).

Over TLS, ``trio.SSLStream`` over those (``serve_ssl_over_tcp`` on the server's side). It cannot
half-close: where the plain run half-closes, the TLS run closes (close_notify), and a client
that wants an echo reads it first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from time import perf_counter, perf_counter_ns

import trio

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
from ._scale import SCALE, ScaleMeasurement, ScaleRun
from ._tls import SERVER_NAME, contexts

__all__ = ["stack"]

Handler = Callable[[trio.abc.Stream], Awaitable[None]]


class _Tally:
    """What each server connection received, and an event for when all have reported.

    A TLS client closes before its server has counted: the run waits for the count.
    """

    def __init__(self, expected: int) -> None:
        self.counts: list[int] = []
        self.expected = expected
        self.complete = trio.Event()

    def add(self, received: int) -> None:
        self.counts.append(received)
        if len(self.counts) == self.expected:
            self.complete.set()


async def _serve(nursery: trio.Nursery, handler: Handler, tls: bool) -> int:
    if tls:
        ssl_listeners: list[trio.SSLListener[trio.SocketStream]] = await nursery.start(
            partial(trio.serve_ssl_over_tcp, handler, 0, contexts()[1], host=HOST,
                    backlog=BACKLOG)
        )
        listener = ssl_listeners[0].transport_listener
    else:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, handler, 0, host=HOST, backlog=BACKLOG)
        )
        listener = listeners[0]
    assert isinstance(listener, trio.SocketListener)
    return int(listener.socket.getsockname()[1])


async def _open(port: int, tls: bool) -> trio.abc.Stream:
    stream = await trio.open_tcp_stream(HOST, port)
    if tls:
        return trio.SSLStream(stream, contexts()[0], server_hostname=SERVER_NAME)
    return stream


async def _end_sending(stream: trio.abc.Stream) -> int:
    """Half-close and read to EOF (returns the bytes read); an ``SSLStream`` closes instead."""
    if isinstance(stream, trio.SocketStream):
        await stream.send_eof()
        return await _drain_to_eof(stream)
    await stream.aclose()
    return 0


async def _drain_to_eof(stream: trio.abc.Stream) -> int:
    received = 0
    while data := await stream.receive_some(READ_SIZE):
        received += len(data)
    return received


async def _read_exactly(stream: trio.abc.Stream, nbytes: int) -> int:
    received = 0
    while received < nbytes:
        data = await stream.receive_some(READ_SIZE)
        check(bool(data), "EOF mid echo")
        received += len(data)
    return received


def _sink(tally: _Tally) -> Handler:
    async def handler(stream: trio.abc.Stream) -> None:
        async with stream:
            tally.add(await _drain_to_eof(stream))

    return handler


def _echo(tally: _Tally) -> Handler:
    async def handler(stream: trio.abc.Stream) -> None:
        async with stream:
            received = 0
            while data := await stream.receive_some(READ_SIZE):
                received += len(data)
                await stream.send_all(data)
            tally.add(received)

    return handler


def _run(main: Callable[[Params], Awaitable[Measurement]], p: Params) -> Measurement:
    async def bounded() -> Measurement:
        with trio.fail_after(p.timeout):
            return await main(p)

    return trio.run(bounded)


async def _stream(chunk: bytes, count: int, tls: bool) -> tuple[float, int]:
    tally = _Tally(1)
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, _sink(tally), tls)
        async with await _open(port, tls) as stream:
            start = perf_counter()
            for _ in range(count):
                await stream.send_all(chunk)
            extra = await _end_sending(stream)
            await tally.complete.wait()
            elapsed = perf_counter() - start
        nursery.cancel_scope.cancel()
    check(extra == 0, "the sink server sent data")
    check(len(tally.counts) == 1, "the server did not see EOF")
    return elapsed, tally.counts[0]


async def _bulk(p: Params) -> Measurement:
    elapsed, received = await _stream(
        payload(p.bulk_write), p.bulk_bytes // p.bulk_write, p.tls
    )
    return bulk_result(p, elapsed, received)


async def _small(p: Params) -> Measurement:
    elapsed, received = await _stream(payload(p.small_size), p.small_writes, p.tls)
    return small_writes_result(p, elapsed, received)


async def _pingpong(p: Params) -> Measurement:
    tally = _Tally(1)
    message = payload(p.pingpong_size)
    samples = [0] * p.pingpong_trips
    received = 0
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, _echo(tally), p.tls)
        async with await _open(port, p.tls) as stream:
            start = perf_counter()
            for i in range(p.pingpong_trips):
                t0 = perf_counter_ns()
                await stream.send_all(message)
                echo = await stream.receive_some(READ_SIZE)
                while len(echo) < len(message):
                    more = await stream.receive_some(READ_SIZE)
                    check(bool(more), "EOF mid round trip")
                    echo += more
                samples[i] = perf_counter_ns() - t0
                check(echo == message, "echo differs from what was sent")
                received += len(echo)
            elapsed = perf_counter() - start
            received += await _end_sending(stream)
            await tally.complete.wait()
        nursery.cancel_scope.cancel()
    check(len(tally.counts) == 1, "the server did not see EOF")
    return pingpong_result(p, elapsed, samples, tally.counts[0], received)


async def _connections(p: Params) -> Measurement:
    tally = _Tally(p.connections)
    data = payload(p.connection_bytes)
    received: list[int] = []

    async def one(port: int) -> None:
        async with await _open(port, p.tls) as stream:
            await stream.send_all(data)
            echo = 0 if isinstance(stream, trio.SocketStream) else await _read_exactly(
                stream, len(data))
            received.append(echo + await _end_sending(stream))

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, _echo(tally), p.tls)
        start = perf_counter()
        async with trio.open_nursery() as clients:
            for _ in range(p.connections):
                clients.start_soon(one, port)
        await tally.complete.wait()
        elapsed = perf_counter() - start
        nursery.cancel_scope.cancel()
    check(len(tally.counts) == p.connections, "a server connection did not see EOF")
    check(len(received) == p.connections, "a client did not finish")
    check(all(r == p.connection_bytes for r in received), "an echo came back short")
    return connections_result(p, elapsed, sum(tally.counts), sum(received))


async def _scale(p: Params) -> ScaleMeasurement:
    run = ScaleRun(p)
    tally = _Tally(run.connections)
    echo = _echo(tally)
    streams: list[trio.SocketStream] = []
    echoed: list[int] = []

    async def handler(stream: trio.abc.Stream) -> None:
        run.accepted()
        await echo(stream)

    async def open_one(port: int) -> None:
        streams.append(await trio.open_tcp_stream(HOST, port))

    async def open_wave(wave: int) -> None:
        async with trio.open_nursery() as clients:
            for _ in range(wave):
                clients.start_soon(open_one, port)

    async def exchange(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(run.data)
            await stream.send_eof()
            got = 0
            while data := await stream.receive_some(READ_SIZE):
                got = run.echoed(got, data)
            echoed.append(got)

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, handler, False)
        try:
            await run.open_all(open_wave, trio.Event)
            async with trio.open_nursery() as clients:
                for stream in streams:
                    clients.start_soon(exchange, stream)
            await tally.complete.wait()
            measurement = run.finished(tally.counts, echoed)
        finally:
            for stream in streams:  # those a failed run left open
                stream.socket.close()
        nursery.cancel_scope.cancel()
    return measurement


def stack() -> Stack:
    return {
        "bulk": partial(_run, _bulk),
        "pingpong": partial(_run, _pingpong),
        "small_writes": partial(_run, _small),
        "connections": partial(_run, _connections),
        SCALE: partial(_run, _scale),
    }
