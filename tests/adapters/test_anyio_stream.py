"""``FlowByteStream`` (anyio's ``ByteStream`` over any async flow) and the checker it passes,
``sansflow.testing.check_anyio_byte_stream``.

The checker is shown to pass on streams known to be right (anyio's own socket streams, a
``ByteStream`` over anyio's memory object streams) and to fail, naming the fault, on
deliberately broken ones; then it runs on the facade over every async adapter's flows, over
TLS, and over the memory pair, on the backend each belongs to.
"""

from __future__ import annotations

import importlib.util
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
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from anyio.streams.text import TextStream
from anyio.streams.tls import TLSAttribute
from loopback import HOST, has_ipv6_loopback, reset

import sansflow.testing
from sansflow import BrokenFlowError, ErrorKind, FlowState, Ok, SendState
from sansflow.adapters import _anyio_stream
from sansflow.adapters import anyio as sf_anyio
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import trio as sf_trio
from sansflow.adapters._anyio_stream import FlowByteStream
from sansflow.testing._memory import memory_flow_pair
from sansflow.testing.conformance._anyio_stream import StreamMaker, check_anyio_byte_stream

Pair = tuple[anyio.abc.ByteStream, anyio.abc.ByteStream]
FlowPair = tuple[FlowByteStream, FlowByteStream]
BACKENDS = ["asyncio", "trio"]
NEEDS_UVLOOP = pytest.mark.skipif(importlib.util.find_spec("uvloop") is None,
                                  reason="needs uvloop")


def run(main: Callable[[], Awaitable[None]], backend: str) -> None:
    """``main`` on ``backend``: "asyncio", "trio", or "uvloop" (asyncio on uvloop)."""
    async def bounded() -> None:
        with anyio.fail_after(60):  # a hang fails the test instead of stalling the run
            await main()

    if backend == "uvloop":
        anyio.run(bounded, backend="asyncio", backend_options={"use_uvloop": True})
    else:
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
    "asyncio": sf_asyncio.wrap, "trio": sf_trio.wrap, "anyio": sf_anyio.wrap,
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
                           server_ctx: ssl.SSLContext,
                           socks: tuple[socket.socket, socket.socket] | None = None,
                           **client_options: int) -> FlowPair:
    client, server = tcp_sockets() if socks is None else socks
    a, b = await WRAP[adapter](client, **client_options), await WRAP[adapter](server)
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


@pytest.mark.parametrize("loop", ["asyncio", "trio", pytest.param("uvloop", marks=NEEDS_UVLOOP)])
def test_flow_byte_stream_over_tcp_flows(loop: str) -> None:
    adapter = "asyncio" if loop == "uvloop" else loop
    run(partial(check_anyio_byte_stream, partial(tcp_flow_streams, adapter),
                partial(clogged_flow_streams, adapter)), loop)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flow_byte_stream_over_anyio_adapter_flows(backend: str) -> None:
    run(partial(check_anyio_byte_stream, partial(tcp_flow_streams, "anyio")), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flow_byte_stream_over_the_memory_pair(backend: str) -> None:
    run(partial(check_anyio_byte_stream, memory_flow_streams, clogged_memory_flow_streams),
        backend)


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_flow_byte_stream_over_tls_flows(adapter: str, client_ctx: ssl.SSLContext,
                                         server_ctx: ssl.SSLContext) -> None:
    run(partial(check_anyio_byte_stream,
                partial(tls_flow_streams, adapter, client_ctx, server_ctx)), adapter)


# -- the facade itself -------------------------------------------------------------------


def test_flow_byte_stream_takes_an_async_flow() -> None:
    with socket.socket() as sock, pytest.raises(
            TypeError, match=r"takes an async sansflow flow, not socket"):
        FlowByteStream(sock)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [1.5, True, "1"])
def test_receive_refuses_a_size_that_is_not_an_int(size: Any) -> None:
    async def main() -> None:
        a, b = await memory_flow_streams()
        await a.send(b"kept")
        with pytest.raises(TypeError, match="max_bytes must be an int"):
            await b.receive(size)
        with pytest.raises(ValueError, match="max_bytes must be at least 1, not 0"):
            await b.receive(0)
        assert await b.receive() == b"kept"  # refusing it changed nothing

    run(main, "asyncio")


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_broken_flow_raises_broken_resource_error_with_the_flow_error(adapter: str) -> None:
    async def main() -> None:
        client, server = tcp_sockets()
        a = FlowByteStream(await WRAP[adapter](client))
        peer = await WRAP[adapter](server)
        await peer.abort()  # an RST
        with pytest.raises(anyio.BrokenResourceError,
                           match=r"^connection reset by peer \(ECONNRESET\)$") as info:
            await a.receive()
        cause = info.value.__cause__
        assert isinstance(cause, BrokenFlowError)
        assert cause.error is a.flow.error
        assert cause.error.kind is ErrorKind.RESET
        assert isinstance(cause.__cause__, ConnectionResetError)
        with pytest.raises(anyio.BrokenResourceError, match="ECONNRESET"):
            await a.send(b"x")
        with pytest.raises(anyio.BrokenResourceError, match="ECONNRESET"):
            await a.send_eof()
        await a.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await a.send_eof()

    run(main, adapter)


def test_after_send_eof_or_the_flows_abort_calls_raise_closed_resource_error() -> None:
    async def main() -> None:
        a, b = await memory_flow_streams()
        await a.send_eof()
        assert a.flow.send_state is SendState.EOF_SENT
        with pytest.raises(anyio.ClosedResourceError, match=r"cannot send after send_eof\(\)"):
            await a.send(b"x")
        a, b = await memory_flow_streams()
        await b.flow.abort()  # the flow's own abort: closed by us, not broken
        with pytest.raises(anyio.ClosedResourceError, match="aborted"):
            await b.receive()
        with pytest.raises(anyio.ClosedResourceError, match="aborted"):
            await b.send(b"x")

    run(main, "trio")


@pytest.mark.parametrize("backend", BACKENDS)
def test_send_eof_while_a_send_waits_is_busy(backend: str) -> None:
    async def main() -> None:
        a, b = await clogged_memory_flow_streams()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(a.send, b"waits")
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError, match="already writing to"):
                await a.send_eof()
            tasks.cancel_scope.cancel()
        assert a.flow.send_state is SendState.OPEN  # refused: nothing changed
        for stream in (a, b):
            await anyio.aclose_forcefully(stream)

    run(main, backend)


async def receive_to_the_end(stream: anyio.abc.ByteStream, max_bytes: int = 65536
                             ) -> tuple[bytes, Exception]:
    """What ``stream`` receives, ``max_bytes`` at a time, and the exception that ends it."""
    received = bytearray()
    try:
        while True:
            received += await stream.receive(max_bytes)
    except Exception as exc:
        return bytes(received), exc


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_cancelled_aclose_resets_the_connection(adapter: str) -> None:
    """The peer reads an error, never a clean end, even when all was sent."""
    async def main() -> None:
        a, b = await tcp_flow_streams(adapter)
        await a.send(b"sent")
        await anyio.aclose_forcefully(a)
        received, end = await receive_to_the_end(b)
        assert received in (b"", b"sent")  # (sent before the reset, or not)
        assert isinstance(end, anyio.BrokenResourceError)
        assert "ECONNRESET" in str(end)
        await b.aclose()

    run(main, adapter)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_aclose_sends_what_is_queued_then_a_clean_end_without_waiting_for_the_peer(
        adapter: str, tls: bool, client_ctx: ssl.SSLContext,
        server_ctx: ssl.SSLContext) -> None:
    """Over TLS the end is our close_notify, which may still wait behind the data when the
    transport is full: the peer reads a clean end, not a truncation. There the server
    sends: a TLS 1.3 client has the server's session tickets unread, and the kernel answers
    the close of a socket with unread input with a reset, which drops what it had not sent
    yet (the trio adapter's flow reads only when asked)."""
    async def main() -> None:
        if tls:
            client, server = await tls_flow_streams(adapter, client_ctx, server_ctx)
            a, b = server, client
        else:
            a, b = await tcp_flow_streams(adapter)
        data = bytes(range(256)) * 4096 * 4  # 4 MiB: more than the socket takes at once
        received: list[object] = []

        async def receive_all() -> None:
            """Read to the end, then (only then) close: aclose() must not wait for that."""
            received.extend(await receive_to_the_end(b))
            await b.aclose()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive_all)
            await a.send(data)
            await a.aclose()
            assert b.flow.state is not FlowState.CLOSED  # the peer's end had not come yet
        assert received[0] == data
        assert isinstance(received[1], anyio.EndOfStream)

    run(main, adapter)


def test_aclose_over_tls_waits_for_the_close_notify_behind_a_full_transport(
        client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> None:
    """With small water marks and a slow reader, our close_notify is still inside the TLS
    layer, behind a paused transport, when the flow's EOF counts as sent: aclose() waits
    for the transport to take it before it closes the transport."""
    async def main() -> None:
        a, b = await tls_flow_streams("asyncio", client_ctx, server_ctx, socket.socketpair(),
                                      high_water=4096, low_water=1024)
        data = bytes(range(256)) * 4096

        async def receive_slowly() -> None:
            received, end = await receive_to_the_end(b, 1024)
            assert received == data
            assert isinstance(end, anyio.EndOfStream)
            await b.aclose()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive_slowly)
            await a.send(data)
            await a.aclose()

    run(main, "asyncio")


@pytest.mark.parametrize("backend", BACKENDS)
def test_anyios_buffered_and_text_streams_work_on_top(backend: str) -> None:
    async def main() -> None:
        a, b = await memory_flow_streams()
        await a.send(b"HELO there\r\nDATA 5\r\nhello")
        buffered = BufferedByteReceiveStream(b)
        assert await buffered.receive_until(b"\r\n", 100) == b"HELO there"
        assert await buffered.receive_until(b"\r\n", 100) == b"DATA 5"
        assert await buffered.receive_exactly(5) == b"hello"
        text_a, text_b = TextStream(a), TextStream(b)
        await text_b.send("réponse ✓")
        await b.send_eof()
        assert await text_a.receive() == "réponse ✓"
        with pytest.raises(anyio.EndOfStream):
            await text_a.receive()
        await text_a.aclose()
        await text_b.aclose()

    run(main, backend)


def socket_attributes(stream: anyio.abc.ByteStream) -> dict[str, Any]:
    return {name: stream.extra(getattr(SocketAttribute, name), None) for name in (
        "family", "local_address", "local_port", "remote_address", "remote_port")}


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_socket_attributes_of_a_tcp_flow(adapter: str) -> None:
    async def main() -> None:
        client, server = tcp_sockets()
        local, remote = client.getsockname(), client.getpeername()
        a = FlowByteStream(await WRAP[adapter](client))
        b = FlowByteStream(await WRAP[adapter](server))
        assert socket_attributes(a) == {
            "family": socket.AF_INET, "local_address": local, "local_port": local[1],
            "remote_address": remote, "remote_port": remote[1]}
        raw = a.extra(SocketAttribute.raw_socket, None)
        if adapter == "asyncio":  # the transport's socket, as anyio's own streams give
            assert raw is not None
            assert raw.getsockname() == local
        else:  # a trio flow shows only trio's socket, which has no public stdlib socket
            assert raw is None
        for stream in (a, b):
            await stream.aclose()
        # Addresses were taken when the flow was made: they still answer.
        assert a.extra(SocketAttribute.remote_port) == remote[1]
        with pytest.raises(anyio.TypedAttributeLookupError):
            a.extra(TLSAttribute.tls_version)

    run(main, adapter)


def test_no_remote_address_for_a_connection_that_ended_before_its_flow() -> None:
    async def main() -> None:
        client, server = tcp_sockets()
        local = client.getsockname()
        reset(server)
        a = FlowByteStream(await sf_asyncio.wrap(client))
        assert socket_attributes(a) == {
            "family": socket.AF_INET, "local_address": local, "local_port": local[1],
            "remote_address": None, "remote_port": None}
        with pytest.raises(anyio.BrokenResourceError, match="ECONNRESET"):
            await a.receive()
        await a.aclose()
        assert a.extra(SocketAttribute.raw_socket, None) is None  # the transport is gone

    run(main, "asyncio")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="needs IPv6 loopback")
def test_socket_attributes_of_an_ipv6_flow() -> None:
    async def main() -> None:
        client, server = tcp_sockets("::1")
        port = client.getsockname()[1]
        a = FlowByteStream(await sf_asyncio.wrap(client))
        assert socket_attributes(a) == {
            "family": socket.AF_INET6, "local_address": ("::1", port), "local_port": port,
            "remote_address": ("::1", server.getsockname()[1]),
            "remote_port": server.getsockname()[1]}
        await a.aclose()
        server.close()

    run(main, "asyncio")


def test_an_ipv6_scope_shows_in_the_host_as_anyio_writes_it() -> None:
    assert _anyio_stream._address(("fe80::1", 80, 0, 3)) == ("fe80::1%3", 80)
    assert _anyio_stream._address(("::1", 80, 0, 0)) == ("::1", 80)


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_socket_attributes_of_a_unix_flow_and_none_for_the_memory_pair(adapter: str) -> None:
    async def main() -> None:
        left, right = socket.socketpair()
        a = FlowByteStream(await WRAP[adapter](left))
        b = FlowByteStream(await WRAP[adapter](right))
        assert socket_attributes(a) == {
            "family": socket.AF_UNIX, "local_address": "", "local_port": None,
            "remote_address": "", "remote_port": None}
        for stream in (a, b):
            await stream.aclose()
        memory, _ = await memory_flow_streams()
        assert memory.extra_attributes == {}

    run(main, adapter)


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_tls_attributes(adapter: str, client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext,
                        server_cert: Any) -> None:
    for context in (client_ctx, server_ctx):
        context.set_alpn_protocols(["h2", "http/1.1"])

    async def main() -> None:
        a, b = await tls_flow_streams(adapter, client_ctx, server_ctx)
        ssl_object = a.extra(TLSAttribute.ssl_object)
        assert isinstance(ssl_object, ssl.SSLObject)
        assert b.extra(TLSAttribute.ssl_object) is not ssl_object
        assert a.extra(TLSAttribute.tls_version) == ssl_object.version() == "TLSv1.3"
        assert a.extra(TLSAttribute.cipher) == ssl_object.cipher()
        assert a.extra(TLSAttribute.alpn_protocol) == "h2"
        assert (a.extra(TLSAttribute.server_side), b.extra(TLSAttribute.server_side)) == (
            False, True)
        der = server_cert.cert_chain_pems[0].bytes()
        assert a.extra(TLSAttribute.peer_certificate_binary) == ssl.PEM_cert_to_DER_cert(
            der.decode())
        certificate: Any = a.extra(TLSAttribute.peer_certificate)
        assert ("DNS", "localhost") in certificate["subjectAltName"]
        assert b.extra(TLSAttribute.peer_certificate) is None  # the client sent none
        assert a.extra(TLSAttribute.shared_ciphers) is None  # a client's is unknown
        assert b.extra(TLSAttribute.shared_ciphers)
        assert a.extra(TLSAttribute.channel_binding_tls_unique) == (
            ssl_object.get_channel_binding("tls-unique"))
        assert a.extra(TLSAttribute.standard_compatible) is False
        assert a.extra(SocketAttribute.family) == socket.AF_INET
        for stream in (a, b):
            await stream.aclose()

    run(main, adapter)
