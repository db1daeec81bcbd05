"""The sansflow stacks: each adapter at both ends, and the core alone in memory.

An adapter that cannot be imported makes its stack ``Unavailable``, which fails the suite
(the natives still run, so that the report says what did work).
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from time import perf_counter, perf_counter_ns
from types import ModuleType
from typing import Any, Protocol, TypeVar

from ._blocking_native import Watchdog
from ._common import (
    BACKLOG,
    HOST,
    READ_SIZE,
    Measurement,
    Params,
    ScenarioFn,
    Stack,
    bulk_result,
    check,
    connections_result,
    payload,
    pingpong_result,
    small_writes_result,
)
from ._registry import Unavailable
from ._scale import SCALE, ScaleMeasurement, ScaleRun
from ._tls import client_options, server_options

__all__ = ["anyio_asyncio_stack", "anyio_trio_stack", "asyncio_stack", "asyncio_uvloop_stack",
           "core_stack", "socket_stack", "trio_stack"]

T = TypeVar("T")


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise Unavailable(f"{type(exc).__name__}: {exc}") from exc


# -- the core alone ---------------------------------------------------------------------------
#
# Both flows of a ``sansflow.testing.FlowPair``, driven by hand: ``transmit`` and ``deliver``
# stand in for the kernel (each copies, as a socket would), and reads take at most READ_SIZE.
# No event loop, no syscall: an upper bound on what any adapter can reach.


class _Core:
    def __init__(self) -> None:
        sansflow = _import("sansflow")
        testing = _import("sansflow.testing")
        try:
            self.Ok: type[Any] = sansflow.Ok
            self.Eof: type[Any] = sansflow.Eof
            self.WOULD_WAIT: object = sansflow.WOULD_WAIT
            self.FlowPair: Any = testing.FlowPair
        except AttributeError as exc:
            raise Unavailable(f"sansflow has no {exc.name}") from exc

    def move(self, pair: Any, sender: Any, receiver: Any, sink: list[bytes] | None) -> int:
        """Everything ``sender`` queued (and its EOF, if due) into ``receiver``, read out.

        Returns the bytes read; keeps them in ``sink`` if given.
        """
        ok, received = self.Ok, 0
        pair.transmit(sender)
        wire = pair.wire_from(sender)
        while wire.data or (wire.eof and not wire.eof_delivered):
            pair.deliver(receiver, READ_SIZE)
            while isinstance(result := receiver.read(READ_SIZE), ok):
                received += len(result.value)
                if sink is not None:
                    sink.append(result.value)
        return received

    def write_all(self, pair: Any, sender: Any, receiver: Any, data: bytes) -> int:
        """``write`` until accepted, moving the queue across each time the flow says wait."""
        received = 0
        while (result := sender.write(data)) is self.WOULD_WAIT:
            received += self.move(pair, sender, receiver, None)
        if not isinstance(result, self.Ok):
            raise ConnectionError(f"write failed: {result!r}")
        return received

    def finish(self, pair: Any, client: Any, server: Any) -> tuple[int, int]:
        """Client half-closes, server reads to EOF and closes, client reads to EOF."""
        client.close()
        to_server = self.move(pair, client, server, None)
        check(isinstance(server.read(READ_SIZE), self.Eof), "the server did not see EOF")
        server.close()
        to_client = self.move(pair, server, client, None)
        check(isinstance(client.read(READ_SIZE), self.Eof), "the client did not see EOF")
        return to_server, to_client

    def stream(self, chunk: bytes, count: int) -> tuple[float, int]:
        pair = self.FlowPair()
        client, server = pair.a, pair.b
        write, ok, would_wait = client.write, self.Ok, self.WOULD_WAIT
        received = 0
        start = perf_counter()
        for _ in range(count):
            result = write(chunk)
            if result is would_wait:
                received += self.write_all(pair, client, server, chunk)
            elif not isinstance(result, ok):
                raise ConnectionError(f"write failed: {result!r}")
        rest, extra = self.finish(pair, client, server)
        elapsed = perf_counter() - start
        check(extra == 0, "the sink server sent data")
        return elapsed, received + rest

    def bulk(self, p: Params) -> Measurement:
        elapsed, received = self.stream(payload(p.bulk_write), p.bulk_bytes // p.bulk_write)
        return bulk_result(p, elapsed, received)

    def small_writes(self, p: Params) -> Measurement:
        elapsed, received = self.stream(payload(p.small_size), p.small_writes)
        return small_writes_result(p, elapsed, received)

    def pingpong(self, p: Params) -> Measurement:
        pair = self.FlowPair()
        client, server = pair.a, pair.b
        message = payload(p.pingpong_size)
        samples = [0] * p.pingpong_trips
        at_server = at_client = 0
        start = perf_counter()
        for i in range(p.pingpong_trips):
            t0 = perf_counter_ns()
            self.write_all(pair, client, server, message)
            got: list[bytes] = []
            at_server += self.move(pair, client, server, got)
            for data in got:
                self.write_all(pair, server, client, data)
            echo: list[bytes] = []
            at_client += self.move(pair, server, client, echo)
            samples[i] = perf_counter_ns() - t0
            check(b"".join(echo) == message, "echo differs from what was sent")
        elapsed = perf_counter() - start
        self.finish(pair, client, server)
        return pingpong_result(p, elapsed, samples, at_server, at_client)

    def connections(self, p: Params) -> Measurement:
        # One after another, but every pair stays alive to the end, as if all were open.
        data = payload(p.connection_bytes)
        pairs = []
        at_server = at_client = 0
        start = perf_counter()
        for _ in range(p.connections):
            pair = self.FlowPair()
            pairs.append(pair)
            client, server = pair.a, pair.b
            self.write_all(pair, client, server, data)
            client.close()
            got: list[bytes] = []
            this_server = self.move(pair, client, server, got)
            check(isinstance(server.read(READ_SIZE), self.Eof), "the server did not see EOF")
            for piece in got:
                self.write_all(pair, server, client, piece)
            server.close()
            this_client = self.move(pair, server, client, None)
            check(isinstance(client.read(READ_SIZE), self.Eof), "the client did not see EOF")
            check(this_client == p.connection_bytes, "an echo came back short")
            at_server += this_server
            at_client += this_client
        elapsed = perf_counter() - start
        return connections_result(p, elapsed, at_server, at_client)


def core_stack() -> Stack:
    core = _Core()
    return {
        "bulk": core.bulk,
        "pingpong": core.pingpong,
        "small_writes": core.small_writes,
        "connections": core.connections,
    }


# -- the adapters -----------------------------------------------------------------------------
#
# The same scenarios for every adapter, written once against the shared flow API (read,
# write, shutdown, close, abort). What differs between event loops (how to serve, how to run
# many clients at once, how to wait for an event, how to bound a run) is an ``_AsyncLoop``.


Handler = Callable[[Any], Awaitable[None]]


class _Event(Protocol):
    def set(self) -> None: ...

    async def wait(self) -> Any: ...


class FlowFailed(ConnectionError):
    """A flow answered ``Error``, or ``Eof`` where data was due."""


class _Results:
    def __init__(self) -> None:
        sansflow = _import("sansflow")
        self.Ok: type[Any] = sansflow.Ok
        self.Eof: type[Any] = sansflow.Eof
        self.WRITE: Any = sansflow.Shutdown.WRITE


class _AsyncLoop:
    """How one event loop serves, runs clients side by side, and bounds a run."""

    def __init__(self, sf: ModuleType) -> None:
        self.sf = sf

    @asynccontextmanager
    async def serving(self, handler: Handler, tls: bool) -> AsyncIterator[int]:
        # The adapters whose ``serve`` is an async context manager; trio's is a task.
        async with self.sf.serve(handler, HOST, 0, backlog=BACKLOG,
                                 **server_options(tls)) as server:
            yield int(server.port)

    async def gather(self, fns: list[Callable[[], Awaitable[T]]]) -> list[T]:
        raise NotImplementedError

    def event(self) -> _Event:
        raise NotImplementedError

    def run(self, main: Callable[[], Awaitable[Measurement]], timeout: float) -> Measurement:
        raise NotImplementedError


class _AsyncioLoop(_AsyncLoop):
    def __init__(self, sf: ModuleType, factory: Callable[[], Any]) -> None:
        super().__init__(sf)
        self.factory = factory

    async def gather(self, fns: list[Callable[[], Awaitable[T]]]) -> list[T]:
        import asyncio

        return list(await asyncio.gather(*(fn() for fn in fns)))

    def event(self) -> _Event:
        import asyncio

        return asyncio.Event()

    def run(self, main: Callable[[], Awaitable[Measurement]], timeout: float) -> Measurement:
        from ._asyncio_native import run_in_loop

        async def coro() -> Measurement:
            return await main()

        return run_in_loop(self.factory, coro, timeout)


class _TrioLoop(_AsyncLoop):
    @asynccontextmanager
    async def serving(self, handler: Handler, tls: bool) -> AsyncIterator[int]:
        import trio

        async with trio.open_nursery() as nursery:
            port = await nursery.start(self._serve, handler, tls)
            yield int(port)
            nursery.cancel_scope.cancel()

    async def _serve(self, handler: Handler, tls: bool, *, task_status: Any) -> None:
        await self.sf.serve(handler, HOST, 0, backlog=BACKLOG, task_status=task_status,
                            **server_options(tls))

    async def gather(self, fns: list[Callable[[], Awaitable[T]]]) -> list[T]:
        import trio

        results: list[T] = []

        async def one(fn: Callable[[], Awaitable[T]]) -> None:
            results.append(await fn())

        async with trio.open_nursery() as nursery:
            for fn in fns:
                nursery.start_soon(one, fn)
        return results

    def event(self) -> _Event:
        import trio

        return trio.Event()

    def run(self, main: Callable[[], Awaitable[Measurement]], timeout: float) -> Measurement:
        import trio

        async def bounded() -> Measurement:
            with trio.fail_after(timeout):
                return await main()

        return trio.run(bounded)


class _AnyioLoop(_AsyncLoop):
    """anyio's task groups, on the backend named."""

    def __init__(self, sf: ModuleType, backend: str) -> None:
        super().__init__(sf)
        self.backend = backend

    async def gather(self, fns: list[Callable[[], Awaitable[T]]]) -> list[T]:
        import anyio

        results: list[T] = []

        async def one(fn: Callable[[], Awaitable[T]]) -> None:
            results.append(await fn())

        async with anyio.create_task_group() as group:
            for fn in fns:
                group.start_soon(one, fn)
        return results

    def event(self) -> _Event:
        import anyio

        return anyio.Event()

    def run(self, main: Callable[[], Awaitable[Measurement]], timeout: float) -> Measurement:
        import anyio

        async def bounded() -> Measurement:
            with anyio.fail_after(timeout):
                return await main()

        result: Measurement = anyio.run(bounded, backend=self.backend)
        return result


async def _maybe(value: Any) -> None:
    # ``shutdown`` may be a coroutine in one adapter and a plain call in another.
    if inspect.isawaitable(value):
        await value


class _AsyncFlows(_Results):
    """The four scenarios over an async adapter."""

    def __init__(self, loop: _AsyncLoop) -> None:
        super().__init__()
        self.loop = loop
        self.sf = loop.sf
        self.tls = False

    async def read_to_eof(self, flow: Any) -> int:
        ok, eof, received = self.Ok, self.Eof, 0
        read = flow.read
        while True:
            result = await read(READ_SIZE)
            if isinstance(result, ok):
                received += len(result.value)
            elif isinstance(result, eof):
                return received
            else:
                raise FlowFailed(f"read: {result!r}")

    @asynccontextmanager
    async def connected(self, port: int) -> AsyncIterator[Any]:
        flow = await self.sf.connect(HOST, port, **client_options(self.tls))
        try:
            yield flow
        except BaseException:
            await _maybe(flow.abort())
            raise
        await flow.close()

    def sink(self, tally: list[int]) -> Handler:
        async def handler(flow: Any) -> None:
            tally.append(await self.read_to_eof(flow))
            await flow.close()

        return handler

    def echo(self, tally: list[int]) -> Handler:
        ok, eof = self.Ok, self.Eof

        async def handler(flow: Any) -> None:
            read, write = flow.read, flow.write
            received = 0
            while True:
                result = await read(READ_SIZE)
                if isinstance(result, ok):
                    received += len(result.value)
                    written = await write(result.value)
                    if not isinstance(written, ok):
                        raise FlowFailed(f"echo write: {written!r}")
                elif isinstance(result, eof):
                    break
                else:
                    raise FlowFailed(f"echo read: {result!r}")
            tally.append(received)
            await flow.close()

        return handler

    async def stream(self, chunk: bytes, count: int) -> tuple[float, int]:
        ok = self.Ok
        tally: list[int] = []
        async with (
            self.loop.serving(self.sink(tally), self.tls) as port,
            self.connected(port) as flow,
        ):
            write = flow.write
            start = perf_counter()
            for _ in range(count):
                result = await write(chunk)
                if not isinstance(result, ok):
                    raise FlowFailed(f"write: {result!r}")
            await _maybe(flow.shutdown(self.WRITE))
            extra = await self.read_to_eof(flow)
            elapsed = perf_counter() - start
        check(extra == 0, "the sink server sent data")
        check(len(tally) == 1, "the server did not see EOF")
        return elapsed, tally[0]

    async def bulk(self, p: Params) -> Measurement:
        elapsed, received = await self.stream(payload(p.bulk_write), p.bulk_bytes // p.bulk_write)
        return bulk_result(p, elapsed, received)

    async def small_writes(self, p: Params) -> Measurement:
        elapsed, received = await self.stream(payload(p.small_size), p.small_writes)
        return small_writes_result(p, elapsed, received)

    async def pingpong(self, p: Params) -> Measurement:
        ok = self.Ok
        tally: list[int] = []
        message = payload(p.pingpong_size)
        samples = [0] * p.pingpong_trips
        received = 0
        async with (
            self.loop.serving(self.echo(tally), self.tls) as port,
            self.connected(port) as flow,
        ):
            read, write = flow.read, flow.write
            start = perf_counter()
            for i in range(p.pingpong_trips):
                t0 = perf_counter_ns()
                result = await write(message)
                if not isinstance(result, ok):
                    raise FlowFailed(f"write: {result!r}")
                echo = b""
                while len(echo) < len(message):
                    result = await read(READ_SIZE)
                    if not isinstance(result, ok):
                        raise FlowFailed(f"read mid round trip: {result!r}")
                    echo += result.value
                samples[i] = perf_counter_ns() - t0
                check(echo == message, "echo differs from what was sent")
                received += len(echo)
            elapsed = perf_counter() - start
            await _maybe(flow.shutdown(self.WRITE))
            received += await self.read_to_eof(flow)
        check(len(tally) == 1, "the server did not see EOF")
        return pingpong_result(p, elapsed, samples, tally[0], received)

    async def connections(self, p: Params) -> Measurement:
        tally: list[int] = []
        data = payload(p.connection_bytes)

        async def one() -> int:
            async with self.connected(port) as flow:
                result = await flow.write(data)
                if not isinstance(result, self.Ok):
                    raise FlowFailed(f"write: {result!r}")
                await _maybe(flow.shutdown(self.WRITE))
                return await self.read_to_eof(flow)

        async with self.loop.serving(self.echo(tally), self.tls) as port:
            start = perf_counter()
            received = await self.loop.gather([one] * p.connections)
            elapsed = perf_counter() - start
        check(len(tally) == p.connections, "a server connection did not see EOF")
        check(len(received) == p.connections, "a client did not finish")
        check(all(r == p.connection_bytes for r in received), "an echo came back short")
        return connections_result(p, elapsed, sum(tally), sum(received))

    async def scale(self, p: Params) -> ScaleMeasurement:
        run = ScaleRun(p)
        served: list[int] = []
        echo = self.echo(served)
        flows: list[Any] = []

        async def handler(flow: Any) -> None:
            run.accepted()
            await echo(flow)

        async def open_one(port: int) -> None:
            flows.append(await self.sf.connect(HOST, port))

        async def exchange(flow: Any) -> int:
            result = await flow.write(run.data)
            if not isinstance(result, self.Ok):
                raise FlowFailed(f"write: {result!r}")
            await _maybe(flow.shutdown(self.WRITE))
            got = 0
            while isinstance(result := await flow.read(READ_SIZE), self.Ok):
                got = run.echoed(got, result.value)
            if not isinstance(result, self.Eof):
                raise FlowFailed(f"read: {result!r}")
            await flow.close()
            return got

        async with self.loop.serving(handler, False) as port:
            try:
                await run.open_all(lambda wave: self.loop.gather([partial(open_one, port)] * wave),
                                   self.loop.event)
                echoed = await self.loop.gather([partial(exchange, flow) for flow in flows])
                return run.finished(served, echoed)
            except BaseException:
                for flow in flows:
                    await _maybe(flow.abort())
                raise

    def stack(self) -> Stack:
        def bind(scenario: Callable[[Params], Awaitable[Measurement]]) -> ScenarioFn:
            def run(p: Params) -> Measurement:
                self.tls = p.tls
                return self.loop.run(lambda: scenario(p), p.timeout)

            return run

        return {
            "bulk": bind(self.bulk),
            "pingpong": bind(self.pingpong),
            "small_writes": bind(self.small_writes),
            "connections": bind(self.connections),
            SCALE: bind(self.scale),
        }


def asyncio_stack() -> Stack:
    import asyncio

    sf = _import("sansflow.adapters.asyncio")
    return _AsyncFlows(_AsyncioLoop(sf, asyncio.new_event_loop)).stack()


def asyncio_uvloop_stack() -> Stack:
    from ._asyncio_native import uvloop_factory

    sf = _import("sansflow.adapters.asyncio")
    return _AsyncFlows(_AsyncioLoop(sf, uvloop_factory())).stack()


def trio_stack() -> Stack:
    sf = _import("sansflow.adapters.trio")
    return _AsyncFlows(_TrioLoop(sf)).stack()


def anyio_asyncio_stack() -> Stack:
    sf = _import("sansflow.adapters.anyio")
    return _AsyncFlows(_AnyioLoop(sf, "asyncio")).stack()


def anyio_trio_stack() -> Stack:
    sf = _import("sansflow.adapters.anyio")
    return _AsyncFlows(_AnyioLoop(sf, "trio")).stack()


class _SocketFlows(_Results):
    """The four scenarios over the blocking-socket adapter: a thread per end, as the peers.

    A watchdog aborts every flow at the deadline; ``abort`` wakes any thread blocked in it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sf = _import("sansflow.adapters.socket")
        self.tls = False

    def read_to_eof(self, flow: Any) -> int:
        ok, eof, received = self.Ok, self.Eof, 0
        read = flow.read
        while True:
            result = read(READ_SIZE)
            if isinstance(result, ok):
                received += len(result.value)
            elif isinstance(result, eof):
                return received
            else:
                raise FlowFailed(f"read: {result!r}")

    @contextmanager
    def serving(self, handler: Callable[[Any], None], dog: Watchdog) -> Iterator[int]:
        def watched(flow: Any) -> None:
            dog.add_waker(flow.abort)
            handler(flow)

        with self.sf.serve(watched, HOST, 0, backlog=BACKLOG,
                           **server_options(self.tls)) as server:
            yield int(server.port)

    @contextmanager
    def connected(self, port: int, dog: Watchdog) -> Iterator[Any]:
        flow = self.sf.connect(HOST, port, **client_options(self.tls))
        dog.add_waker(flow.abort)
        try:
            yield flow
        except BaseException:
            flow.abort()
            raise
        flow.close()

    def sink(self, tally: list[int]) -> Callable[[Any], None]:
        def handler(flow: Any) -> None:
            tally.append(self.read_to_eof(flow))
            flow.close()

        return handler

    def echo(self, tally: list[int]) -> Callable[[Any], None]:
        ok, eof = self.Ok, self.Eof

        def handler(flow: Any) -> None:
            read, write = flow.read, flow.write
            received = 0
            while True:
                result = read(READ_SIZE)
                if isinstance(result, ok):
                    received += len(result.value)
                    written = write(result.value)
                    if not isinstance(written, ok):
                        raise FlowFailed(f"echo write: {written!r}")
                elif isinstance(result, eof):
                    break
                else:
                    raise FlowFailed(f"echo read: {result!r}")
            tally.append(received)
            flow.close()

        return handler

    def stream(self, p: Params, chunk: bytes, count: int) -> tuple[float, int]:
        ok = self.Ok
        tally: list[int] = []
        with (
            Watchdog(p.timeout) as dog,
            self.serving(self.sink(tally), dog) as port,
            self.connected(port, dog) as flow,
        ):
            write = flow.write
            start = perf_counter()
            for _ in range(count):
                result = write(chunk)
                if not isinstance(result, ok):
                    raise FlowFailed(f"write: {result!r}")
            flow.shutdown(self.WRITE)
            extra = self.read_to_eof(flow)
            elapsed = perf_counter() - start
        check(extra == 0, "the sink server sent data")
        check(len(tally) == 1, "the server did not see EOF")
        return elapsed, tally[0]

    def bulk(self, p: Params) -> Measurement:
        elapsed, received = self.stream(p, payload(p.bulk_write), p.bulk_bytes // p.bulk_write)
        return bulk_result(p, elapsed, received)

    def small_writes(self, p: Params) -> Measurement:
        elapsed, received = self.stream(p, payload(p.small_size), p.small_writes)
        return small_writes_result(p, elapsed, received)

    def pingpong(self, p: Params) -> Measurement:
        ok = self.Ok
        tally: list[int] = []
        message = payload(p.pingpong_size)
        samples = [0] * p.pingpong_trips
        received = 0
        with (
            Watchdog(p.timeout) as dog,
            self.serving(self.echo(tally), dog) as port,
            self.connected(port, dog) as flow,
        ):
            read, write = flow.read, flow.write
            start = perf_counter()
            for i in range(p.pingpong_trips):
                t0 = perf_counter_ns()
                result = write(message)
                if not isinstance(result, ok):
                    raise FlowFailed(f"write: {result!r}")
                echo = b""
                while len(echo) < len(message):
                    result = read(READ_SIZE)
                    if not isinstance(result, ok):
                        raise FlowFailed(f"read mid round trip: {result!r}")
                    echo += result.value
                samples[i] = perf_counter_ns() - t0
                check(echo == message, "echo differs from what was sent")
                received += len(echo)
            elapsed = perf_counter() - start
            flow.shutdown(self.WRITE)
            received += self.read_to_eof(flow)
        check(len(tally) == 1, "the server did not see EOF")
        return pingpong_result(p, elapsed, samples, tally[0], received)

    def connections(self, p: Params) -> Measurement:
        tally: list[int] = []
        received: list[int] = []
        errors: list[BaseException] = []
        data = payload(p.connection_bytes)

        with Watchdog(p.timeout) as dog, self.serving(self.echo(tally), dog) as port:

            def one() -> None:
                try:
                    with self.connected(port, dog) as flow:
                        result = flow.write(data)
                        if not isinstance(result, self.Ok):
                            raise FlowFailed(f"write: {result!r}")
                        flow.shutdown(self.WRITE)
                        received.append(self.read_to_eof(flow))
                except BaseException as exc:
                    errors.append(exc)

            clients = [threading.Thread(target=one, daemon=True) for _ in range(p.connections)]
            start = perf_counter()
            for thread in clients:
                thread.start()
            dog.join(clients)
            elapsed = perf_counter() - start
        if errors:
            raise errors[0]
        check(len(tally) == p.connections, "a server connection did not see EOF")
        check(len(received) == p.connections, "a client did not finish")
        check(all(r == p.connection_bytes for r in received), "an echo came back short")
        return connections_result(p, elapsed, sum(tally), sum(received))

    def stack(self) -> Stack:
        def bind(scenario: ScenarioFn) -> ScenarioFn:
            def run(p: Params) -> Measurement:
                self.tls = p.tls
                return scenario(p)

            return run

        return {
            "bulk": bind(self.bulk),
            "pingpong": bind(self.pingpong),
            "small_writes": bind(self.small_writes),
            "connections": bind(self.connections),
        }


def socket_stack() -> Stack:
    return _SocketFlows().stack()
