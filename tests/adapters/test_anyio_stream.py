"""``FlowByteStream`` (anyio's ``ByteStream`` over any async flow) and the checker it passes,
``sansflow.testing.check_anyio_byte_stream``.

The checker is shown to pass on streams known to be right (anyio's own socket streams, a
``ByteStream`` over anyio's memory object streams) and to fail, naming the fault, on
deliberately broken ones; then it runs on the facade over every async adapter's flows, over
TLS, and over the memory pair, on the backend each belongs to.
"""

from __future__ import annotations

import math
import socket
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from loopback import HOST

import sansflow.testing
from sansflow import Ok
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import trio as sf_trio
from sansflow.adapters._anyio_stream import FlowByteStream
from sansflow.testing._memory import memory_flow_pair
from sansflow.testing.conformance._anyio_stream import StreamMaker, check_anyio_byte_stream

Pair = tuple[anyio.abc.ByteStream, anyio.abc.ByteStream]
FlowPair = tuple[FlowByteStream, FlowByteStream]
BACKENDS = ["asyncio", "trio"]


def run(main: Callable[[], Awaitable[None]], backend: str) -> None:
    async def bounded() -> None:
        with anyio.fail_after(60):  # a hang fails the test instead of stalling the run
            await main()

    anyio.run(bounded, backend=backend)


def tcp_sockets(host: str = HOST) -> tuple[socket.socket, socket.socket]:
    with socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host
                              else socket.AF_INET) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    return client, server


def fill(sock: socket.socket) -> None:
    """Send on ``sock`` until the kernel takes no more."""
    sock.setblocking(False)
    for size in (65536, 1024, 1):
        try:
            while True:
                sock.send(b"x" * size)
        except BlockingIOError:
            pass


WRAP: dict[str, Callable[..., Awaitable[Any]]] = {
    "asyncio": sf_asyncio.wrap, "trio": sf_trio.wrap,
}
WRAP_TLS: dict[str, Callable[..., Awaitable[Any]]] = {
    "asyncio": sf_asyncio.wrap_tls, "trio": sf_trio.wrap_tls,
}


async def tcp_flow_streams(adapter: str) -> FlowPair:
    client, server = tcp_sockets()
    return (FlowByteStream(await WRAP[adapter](client)),
            FlowByteStream(await WRAP[adapter](server)))


async def clogged_flow_streams(adapter: str) -> FlowPair:
    """Streams whose flows hold a byte that the full socket does not take until the peer
    receives: with water marks of 1 and 0, any further send waits. A Unix socket pair, full
    both ways (a full TCP connection does not stay full: the kernel reopens the window a
    little later)."""
    socks = socket.socketpair()
    for sock in socks:
        fill(sock)
    flows = [await WRAP[adapter](sock, high_water=1, low_water=0, receive_limit=1)
             for sock in socks]
    if adapter == "asyncio":
        # Its transport reads until the receive limit, which makes room for the peer's
        # sends: once both have stopped reading, the sockets are filled again.
        while not all(flow.buffered for flow in flows):
            await anyio.sleep(0.001)
        for sock in socks:
            fill(sock)
    for flow in flows:
        assert await flow.write(b"x") == Ok(None)
    await anyio.wait_all_tasks_blocked()
    assert all(flow.queued == 1 for flow in flows)
    return FlowByteStream(flows[0]), FlowByteStream(flows[1])


async def memory_flow_streams() -> FlowPair:
    a, b = await memory_flow_pair()
    return FlowByteStream(a), FlowByteStream(b)


async def clogged_memory_flow_streams() -> FlowPair:
    """The memory pair with a wire and receive buffers of one byte, full both ways."""
    a, b = await memory_flow_pair(high_water=1, low_water=0, receive_limit=1, capacity=1)
    for flow in (a, b):
        assert await flow.write(b"xyz") == Ok(None)
        assert flow.queued == 1
    return FlowByteStream(a), FlowByteStream(b)


async def wrap_tls(adapter: str, flow: Any, context: ssl.SSLContext, server_side: bool) -> None:
    await WRAP_TLS[adapter](flow, context, server_side=server_side,
                            server_hostname=None if server_side else "localhost")


async def tls_flow_streams(adapter: str, client_ctx: ssl.SSLContext,
                           server_ctx: ssl.SSLContext) -> FlowPair:
    client, server = tcp_sockets()
    a, b = await WRAP[adapter](client), await WRAP[adapter](server)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wrap_tls, adapter, a, client_ctx, False)
        tasks.start_soon(wrap_tls, adapter, b, server_ctx, True)
    return FlowByteStream(a), FlowByteStream(b)


async def anyio_socket_streams() -> Pair:
    """anyio's own TCP streams, a connect_tcp and what its listener accepted."""
    async with await anyio.create_tcp_listener(local_host=HOST) as listeners:
        listener = listeners.listeners[0]
        assert isinstance(listener, anyio.abc.SocketListener)
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio.connect_tcp(HOST, port)
        return client, await listener.accept()


# -- a ByteStream known to be right, and broken ones -----------------------------------------


class ObjectByteStream(anyio.abc.ByteStream):
    """A ``ByteStream`` over a pair of anyio memory object streams, written to the contract:
    the reference the checker must pass, and the base of the broken streams below."""

    def __init__(self, outgoing: MemoryObjectSendStream[bytes],
                 incoming: MemoryObjectReceiveStream[bytes]) -> None:
        self._outgoing = outgoing
        self._incoming = incoming
        self._left = b""  # received and not yet returned
        self._receiving = False
        self._sending = False
        self._closed = False
        self._waits: set[anyio.CancelScope] = set()

    def _claim_receive(self) -> None:
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        self._receiving = True

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._claim_receive()
        try:
            await anyio.lowlevel.checkpoint()
            if not self._left:
                self._left = await self._wait(self._incoming.receive)
            data, self._left = self._left[:max_bytes], self._left[max_bytes:]
            return data
        finally:
            self._receiving = False

    async def send(self, item: bytes) -> None:
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        self._sending = True
        try:
            data = bytes(item)
            await anyio.lowlevel.checkpoint()
            if data:
                await self._wait(self._outgoing.send, data)
            elif self._closed:
                raise anyio.ClosedResourceError
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        self._outgoing.close()
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._closed = True
        for scope in self._waits:
            scope.cancel()
        self._outgoing.close()
        self._incoming.close()
        await anyio.lowlevel.checkpoint()

    async def _wait(self, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        if not self._closed:
            with anyio.CancelScope() as scope:
                self._waits.add(scope)
                try:
                    return await call(*args)
                finally:
                    self._waits.discard(scope)
        raise anyio.ClosedResourceError


class SwallowsEof(ObjectByteStream):
    async def send_eof(self) -> None:
        await anyio.lowlevel.checkpoint()


class NeverBusy(ObjectByteStream):
    def _claim_receive(self) -> None:
        pass


class EmptyAtTheEnd(ObjectByteStream):
    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            return await super().receive(max_bytes)
        except anyio.EndOfStream:
            return b""


class ClosesOnce(ObjectByteStream):
    async def aclose(self) -> None:
        if self._closed:
            raise RuntimeError("already closed")
        await super().aclose()


def object_streams(kind: type[ObjectByteStream] = ObjectByteStream, buffer: float = math.inf
                   ) -> StreamMaker:
    async def make() -> Pair:
        a_out, b_in = anyio.create_memory_object_stream[bytes](buffer)
        b_out, a_in = anyio.create_memory_object_stream[bytes](buffer)
        return kind(a_out, a_in), kind(b_out, b_in)

    return make


# -- the checker: right streams pass, broken ones fail -------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_checker_passes_on_anyio_socket_streams(backend: str) -> None:
    run(partial(check_anyio_byte_stream, anyio_socket_streams), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_checker_passes_on_a_stream_over_memory_object_streams(backend: str) -> None:
    run(partial(check_anyio_byte_stream, object_streams(), object_streams(buffer=0)), backend)


@pytest.mark.parametrize(("kind", "message"), [
    (SwallowsEof, r"^\[send eof\] receive\(\) after the peer's send_eof\(\) hung"),
    (NeverBusy, r"^\[busy receive\] a second concurrent receive did not raise "
                r"BusyResourceError \(it waited\)"),
    (EmptyAtTheEnd, r"^\[send then close\] receive\(\) returned b'': anyio streams raise "
                    r"EndOfStream"),
    (ClosesOnce, r"^\[send then close\] aclose\(\) raised RuntimeError\('already closed'\)"),
])
def test_the_checker_names_what_a_broken_stream_gets_wrong(kind: type[ObjectByteStream],
                                                           message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        run(partial(check_anyio_byte_stream, object_streams(kind), wait_limit=0.2),
            "asyncio")


def test_the_checker_finds_a_send_that_does_not_wait_when_clogged() -> None:
    """A clogged maker whose sends return at once is not what it says."""
    with pytest.raises(AssertionError, match=r"^\[busy send\] send\(\) on a clogged stream "
                                             r"did not wait: it ended with None"):
        run(partial(check_anyio_byte_stream, object_streams(), object_streams()), "asyncio")


def test_check_anyio_byte_stream_is_a_lazy_export_of_sansflow_testing() -> None:
    assert sansflow.testing.check_anyio_byte_stream is check_anyio_byte_stream
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        sansflow.testing.no_such_name  # noqa: B018
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, sansflow.testing; print('anyio' in sys.modules)"],
        capture_output=True, text=True, check=True, timeout=60)
    assert imported.stdout == "False\n"


# -- the checker on the facade -------------------------------------------------------------


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_flow_byte_stream_over_tcp_flows(adapter: str) -> None:
    run(partial(check_anyio_byte_stream, partial(tcp_flow_streams, adapter),
                partial(clogged_flow_streams, adapter)), adapter)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flow_byte_stream_over_the_memory_pair(backend: str) -> None:
    run(partial(check_anyio_byte_stream, memory_flow_streams, clogged_memory_flow_streams),
        backend)


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_flow_byte_stream_over_tls_flows(adapter: str, client_ctx: ssl.SSLContext,
                                         server_ctx: ssl.SSLContext) -> None:
    run(partial(check_anyio_byte_stream,
                partial(tls_flow_streams, adapter, client_ctx, server_ctx)), adapter)
