"""The trio peer: ``trio.SocketStream`` at both ends (``open_tcp_stream`` and ``serve_tcp``)."""

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

__all__ = ["stack"]

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def _serve(nursery: trio.Nursery, handler: Handler) -> int:
    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio.serve_tcp, handler, 0, host=HOST, backlog=BACKLOG)
    )
    return int(listeners[0].socket.getsockname()[1])


async def _drain_to_eof(stream: trio.SocketStream) -> int:
    received = 0
    while data := await stream.receive_some(READ_SIZE):
        received += len(data)
    return received


def _sink(tally: list[int]) -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            tally.append(await _drain_to_eof(stream))

    return handler


def _echo(tally: list[int]) -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            received = 0
            while data := await stream.receive_some(READ_SIZE):
                received += len(data)
                await stream.send_all(data)
            tally.append(received)

    return handler


def _run(main: Callable[[Params], Awaitable[Measurement]], p: Params) -> Measurement:
    async def bounded() -> Measurement:
        with trio.fail_after(p.timeout):
            return await main(p)

    return trio.run(bounded)


async def _stream(chunk: bytes, count: int) -> tuple[float, int]:
    tally: list[int] = []
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, _sink(tally))
        async with await trio.open_tcp_stream(HOST, port) as stream:
            start = perf_counter()
            for _ in range(count):
                await stream.send_all(chunk)
            await stream.send_eof()
            extra = await _drain_to_eof(stream)
            elapsed = perf_counter() - start
        nursery.cancel_scope.cancel()
    check(extra == 0, "the sink server sent data")
    check(len(tally) == 1, "the server did not see EOF")
    return elapsed, tally[0]


async def _bulk(p: Params) -> Measurement:
    elapsed, received = await _stream(payload(p.bulk_write), p.bulk_bytes // p.bulk_write)
    return bulk_result(p, elapsed, received)


async def _small(p: Params) -> Measurement:
    elapsed, received = await _stream(payload(p.small_size), p.small_writes)
    return small_writes_result(p, elapsed, received)


async def _pingpong(p: Params) -> Measurement:
    tally: list[int] = []
    message = payload(p.pingpong_size)
    samples = [0] * p.pingpong_trips
    received = 0
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, _echo(tally))
        async with await trio.open_tcp_stream(HOST, port) as stream:
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
            await stream.send_eof()
            received += await _drain_to_eof(stream)
        nursery.cancel_scope.cancel()
    check(len(tally) == 1, "the server did not see EOF")
    return pingpong_result(p, elapsed, samples, tally[0], received)


async def _connections(p: Params) -> Measurement:
    tally: list[int] = []
    data = payload(p.connection_bytes)
    received: list[int] = []

    async def one(port: int) -> None:
        async with await trio.open_tcp_stream(HOST, port) as stream:
            await stream.send_all(data)
            await stream.send_eof()
            received.append(await _drain_to_eof(stream))

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, _echo(tally))
        start = perf_counter()
        async with trio.open_nursery() as clients:
            for _ in range(p.connections):
                clients.start_soon(one, port)
        elapsed = perf_counter() - start
        nursery.cancel_scope.cancel()
    check(len(tally) == p.connections, "a server connection did not see EOF")
    check(len(received) == p.connections, "a client did not finish")
    check(all(r == p.connection_bytes for r in received), "an echo came back short")
    return connections_result(p, elapsed, sum(tally), sum(received))


def stack() -> Stack:
    return {
        "bulk": partial(_run, _bulk),
        "pingpong": partial(_run, _pingpong),
        "small_writes": partial(_run, _small),
        "connections": partial(_run, _connections),
    }
