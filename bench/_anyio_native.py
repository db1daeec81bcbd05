"""The anyio peers, on its asyncio and trio backends: ``connect_tcp`` and
``create_tcp_listener`` streams."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from time import perf_counter, perf_counter_ns

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

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

__all__ = ["asyncio_stack", "trio_stack"]

Handler = Callable[[SocketStream], Awaitable[None]]


async def _serve(group: TaskGroup, handler: Handler) -> int:
    listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0, backlog=BACKLOG)

    async def serve() -> None:
        # ``serve`` accepts forever and leaves the listener open: closing it is ours to do.
        async with listener:
            await listener.serve(handler)

    port = int(listener.extra(SocketAttribute.local_port))
    group.start_soon(serve)
    return port


async def _receive(stream: SocketStream) -> bytes:
    try:
        return await stream.receive(READ_SIZE)
    except anyio.EndOfStream:
        return b""


async def _drain_to_eof(stream: SocketStream) -> int:
    received = 0
    while data := await _receive(stream):
        received += len(data)
    return received


def _sink(tally: list[int]) -> Handler:
    async def handler(stream: SocketStream) -> None:
        async with stream:
            tally.append(await _drain_to_eof(stream))

    return handler


def _echo(tally: list[int]) -> Handler:
    async def handler(stream: SocketStream) -> None:
        async with stream:
            received = 0
            while data := await _receive(stream):
                received += len(data)
                await stream.send(data)
            tally.append(received)

    return handler


def _run(
    backend: str, main: Callable[[Params], Awaitable[Measurement]], p: Params
) -> Measurement:
    async def bounded() -> Measurement:
        with anyio.fail_after(p.timeout):
            return await main(p)

    result: Measurement = anyio.run(bounded, backend=backend)
    return result


async def _stream(chunk: bytes, count: int) -> tuple[float, int]:
    tally: list[int] = []
    async with anyio.create_task_group() as group:
        port = await _serve(group, _sink(tally))
        async with await anyio.connect_tcp(HOST, port) as stream:
            start = perf_counter()
            for _ in range(count):
                await stream.send(chunk)
            await stream.send_eof()
            extra = await _drain_to_eof(stream)
            elapsed = perf_counter() - start
        group.cancel_scope.cancel()
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
    async with anyio.create_task_group() as group:
        port = await _serve(group, _echo(tally))
        async with await anyio.connect_tcp(HOST, port) as stream:
            start = perf_counter()
            for i in range(p.pingpong_trips):
                t0 = perf_counter_ns()
                await stream.send(message)
                echo = await _receive(stream)
                while len(echo) < len(message):
                    more = await _receive(stream)
                    check(bool(more), "EOF mid round trip")
                    echo += more
                samples[i] = perf_counter_ns() - t0
                check(echo == message, "echo differs from what was sent")
                received += len(echo)
            elapsed = perf_counter() - start
            await stream.send_eof()
            received += await _drain_to_eof(stream)
        group.cancel_scope.cancel()
    check(len(tally) == 1, "the server did not see EOF")
    return pingpong_result(p, elapsed, samples, tally[0], received)


async def _connections(p: Params) -> Measurement:
    tally: list[int] = []
    data = payload(p.connection_bytes)
    received: list[int] = []

    async def one(port: int) -> None:
        async with await anyio.connect_tcp(HOST, port) as stream:
            await stream.send(data)
            await stream.send_eof()
            received.append(await _drain_to_eof(stream))

    async with anyio.create_task_group() as group:
        port = await _serve(group, _echo(tally))
        start = perf_counter()
        async with anyio.create_task_group() as clients:
            for _ in range(p.connections):
                clients.start_soon(one, port)
        elapsed = perf_counter() - start
        group.cancel_scope.cancel()
    check(len(tally) == p.connections, "a server connection did not see EOF")
    check(len(received) == p.connections, "a client did not finish")
    check(all(r == p.connection_bytes for r in received), "an echo came back short")
    return connections_result(p, elapsed, sum(tally), sum(received))


async def _scale(p: Params) -> ScaleMeasurement:
    run = ScaleRun(p)
    served: list[int] = []
    echo = _echo(served)
    streams: list[SocketStream] = []
    echoed: list[int] = []

    async def handler(stream: SocketStream) -> None:
        run.accepted()
        await echo(stream)

    async def open_one(port: int) -> None:
        streams.append(await anyio.connect_tcp(HOST, port))

    async def open_wave(wave: int) -> None:
        async with anyio.create_task_group() as clients:
            for _ in range(wave):
                clients.start_soon(open_one, port)

    async def exchange(stream: SocketStream) -> None:
        async with stream:
            await stream.send(run.data)
            await stream.send_eof()
            got = 0
            while data := await _receive(stream):
                got = run.echoed(got, data)
            echoed.append(got)

    async with anyio.create_task_group() as group:
        port = await _serve(group, handler)
        try:
            await run.open_all(open_wave, anyio.Event)
            async with anyio.create_task_group() as clients:
                for stream in streams:
                    clients.start_soon(exchange, stream)
            measurement = run.finished(served, echoed)
        finally:
            with anyio.CancelScope(shield=True):
                for stream in streams:  # those a failed run left open
                    await stream.aclose()
        group.cancel_scope.cancel()
    return measurement


def _stack(backend: str) -> Stack:
    return {
        "bulk": partial(_run, backend, _bulk),
        "pingpong": partial(_run, backend, _pingpong),
        "small_writes": partial(_run, backend, _small),
        "connections": partial(_run, backend, _connections),
        SCALE: partial(_run, backend, _scale),
    }


def asyncio_stack() -> Stack:
    return _stack("asyncio")


def trio_stack() -> Stack:
    return _stack("trio")
