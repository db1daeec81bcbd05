"""httpx over sansflow: ``FlowTransport`` (an httpx transport around an httpcore pool whose
network backend is ``FlowBackend``) against Python's own ``http.server`` on loopback, run in a
thread, on both of anyio's backends: keep-alive, a large download, a reset mid-body, HTTPS,
and the failures httpx reports as its own exceptions.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpcore
import httpx
import pytest
from loopback import full_backlog_port, refusing_port, reset

import sansflow.adapters.httpcore
from sansflow import ErrorKind, FlowState, Shutdown
from sansflow.adapters import anyio as sf
from sansflow.adapters.httpcore import FlowBackend, FlowNetworkStream, FlowTransport

HOST = "127.0.0.1"
BACKENDS = ["asyncio", "trio"]
BIG = 20 * 2**20  # the large download, in bytes
pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def run(backend: str, main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(20):
            await main()

    anyio.run(bounded, backend=backend)


def body_of(size: int) -> bytes:
    """``size`` bytes that no shift or repeat of a chunk would reproduce."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


class Handler(BaseHTTPRequestHandler):
    """``GET /size/N``: N bytes; ``GET /reset/N``: the headers of a larger body, N bytes of
    it, then an RST; ``POST``: the request body's length."""

    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        _, kind, size = self.path.split("/")
        body = body_of(int(size))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) * (2 if kind == "reset" else 1)))
        self.end_headers()
        self.wfile.write(body)
        if kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

    def do_POST(self) -> None:
        received = self.rfile.read(int(self.headers["Content-Length"]))
        answer = str(len(received)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    accepted = 0

    def get_request(self) -> tuple[socket.socket, Any]:
        request = super().get_request()
        self.accepted += 1
        return request

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the reset's handler ends in a broken pipe, on purpose


@contextmanager
def http_server(context: ssl.SSLContext | None = None) -> Iterator[CountingServer]:
    server = CountingServer((HOST, 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def url(server: CountingServer, path: str, scheme: str = "http") -> str:
    host = "localhost" if scheme == "https" else HOST
    return f"{scheme}://{host}:{server.server_address[1]}{path}"


def test_keep_alive_sends_both_requests_over_one_connection(backend: str) -> None:
    async def main() -> None:
        with http_server() as server:
            async with httpx.AsyncClient(transport=FlowTransport()) as client:
                first = await client.get(url(server, "/size/1000"))
                assert (first.status_code, first.content) == (200, body_of(1000))
                second = await client.post(url(server, "/"), content=b"x" * 300_000)
                assert second.content == b"300000"
                stream = second.extensions["network_stream"]
                assert stream.get_extra_info("server_addr") == (HOST, server.server_address[1])
                assert stream.get_extra_info("client_addr")[0] == HOST
                assert stream.get_extra_info("socket").fileno() >= 0
                assert stream.get_extra_info("ssl_object") is None
                assert stream.get_extra_info("is_readable") is False
                assert stream.get_extra_info("unknown") is None
            assert server.accepted == 1

    run(backend, main)


def test_a_large_download_arrives_byte_exact(backend: str) -> None:
    async def main() -> None:
        with http_server() as server:
            digest = hashlib.sha256()
            size = 0
            async with httpx.AsyncClient(transport=FlowTransport()) as client, \
                    client.stream("GET", url(server, f"/size/{BIG}")) as response:
                async for chunk in response.aiter_raw():
                    digest.update(chunk)
                    size += len(chunk)
            assert size == BIG
            assert digest.digest() == hashlib.sha256(body_of(BIG)).digest()

    run(backend, main)


def test_a_reset_mid_body_is_httpxs_read_error(backend: str) -> None:
    async def main() -> None:
        with http_server() as server:
            async with httpx.AsyncClient(transport=FlowTransport()) as client:
                with pytest.raises(httpx.ReadError) as caught:
                    await client.get(url(server, "/reset/100000"))
                assert type(caught.value) is httpx.ReadError
                assert isinstance(caught.value.__cause__, httpcore.ReadError)
                assert str(caught.value) == "connection reset by peer (ECONNRESET)"
                # The pool goes on with a new connection.
                again = await client.get(url(server, "/size/10"))
                assert again.content == body_of(10)

    run(backend, main)


def test_https_with_the_test_ca(backend: str, server_ctx: ssl.SSLContext,
                                client_ctx: ssl.SSLContext) -> None:
    async def main() -> None:
        with http_server(server_ctx) as server:
            transport = FlowTransport(ssl_context=client_ctx)
            async with httpx.AsyncClient(transport=transport) as client:
                response = await client.get(url(server, "/size/200000", "https"))
                assert response.content == body_of(200_000)
                ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
                assert isinstance(ssl_object, ssl.SSLObject)
                assert ssl_object.version() is not None
                again = await client.get(url(server, "/size/10", "https"))
                assert again.content == body_of(10)
            assert server.accepted == 1
            async with httpx.AsyncClient(transport=FlowTransport(ssl_context=client_ctx)) as other:
                with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
                    await other.get(url(server, "/size/1", "https"),
                                    extensions={"sni_hostname": "wrong.test"})

    run(backend, main)


def test_failures_to_connect_and_to_answer_are_httpxs_exceptions(backend: str) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(transport=FlowTransport(), timeout=0.2) as client:
            with refusing_port() as port, pytest.raises(httpx.ConnectError,
                                                        match="connection refused"):
                await client.get(f"http://{HOST}:{port}/")
            with full_backlog_port() as port, pytest.raises(httpx.ConnectTimeout):
                await client.get(f"http://{HOST}:{port}/")
            with socket.create_server((HOST, 0)) as silent, pytest.raises(httpx.ReadTimeout):
                await client.get(f"http://{HOST}:{silent.getsockname()[1]}/")  # never answered

    run(backend, main)


def test_an_exception_from_the_request_body_comes_out_as_it_is(backend: str) -> None:
    class Refused(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"first part"
        raise Refused

    async def main() -> None:
        with http_server() as server:
            async with httpx.AsyncClient(transport=FlowTransport()) as client:
                with pytest.raises(Refused):
                    await client.post(url(server, "/"), content=body())

    run(backend, main)


def received(peer: socket.socket) -> str:
    """How many bytes a plain ``peer`` receives, then how its stream ended."""
    peer.settimeout(10)
    size = 0
    try:
        while chunk := peer.recv(2**20):
            size += len(chunk)
    except OSError as exc:
        return f"{size} bytes then {type(exc).__name__}"
    return f"{size} bytes then EOF"


async def write_until_it_waits(stream: FlowNetworkStream) -> None:
    """Writes until one times out (the peer does not read): raises ``WriteTimeout``."""
    while True:
        await stream.write(b"x" * 65536, timeout=0.05)


def test_unix_sockets_and_socket_options(backend: str) -> None:
    """``uds=`` reaches ``connect_unix_socket``; ``socket_options`` are set on the socket."""
    async def answer(flow: sf.AnyioFlow) -> None:
        """One answer per request head (a request without a body), until the client's end."""
        async for data in flow:
            for _ in range(data.count(b"\r\n\r\n")):
                await flow.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]

    async def main() -> None:
        with tempfile.TemporaryDirectory() as directory:
            path = str(Path(directory) / "http.sock")
            async with sf.serve_unix(answer, path):
                transport = FlowTransport(uds=path, socket_options=options)
                async with httpx.AsyncClient(transport=transport) as client:
                    response = await client.get("http://localhost/")
                    assert response.content == b"ok"
                    sock = response.extensions["network_stream"].get_extra_info("socket")
                    assert sock.family == socket.AF_UNIX
                    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            with pytest.raises(httpcore.ConnectError, match=r"http\.sock"):
                await FlowBackend().connect_unix_socket(path)

    run(backend, main)


def test_the_network_stream_alone(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What httpx does not reach: a read and a write that time out, a write after the
    connection's end, a close whose queue cannot leave, ``sleep``."""
    monkeypatch.setattr(sansflow.adapters.httpcore, "CLOSE_TIMEOUT", 0.05)

    async def main() -> None:
        with socket.create_server((HOST, 0)) as listener:
            backend_ = FlowBackend()
            stream = await backend_.connect_tcp(HOST, listener.getsockname()[1], timeout=5)
            assert isinstance(stream, FlowNetworkStream)
            peer, _ = listener.accept()
            with peer:
                with pytest.raises(httpcore.ReadTimeout, match=r"no data from 127\.0\.0\.1"):
                    await stream.read(100, timeout=0.01)
                await stream.write(b"")  # nothing to do
                await stream.flow.shutdown(Shutdown.WRITE)
                with pytest.raises(httpcore.WriteError, match="sending side is closed"):
                    await stream.write(b"late")
                await stream.aclose()
                assert stream.flow.state is FlowState.CLOSED

            stream = await backend_.connect_tcp(HOST, listener.getsockname()[1])
            assert isinstance(stream, FlowNetworkStream)
            peer, _ = listener.accept()
            with peer:
                with pytest.raises(httpcore.WriteTimeout, match="took no data"):
                    await write_until_it_waits(stream)
                await stream.aclose()  # the queue cannot leave: reset after CLOSE_TIMEOUT
                assert stream.flow.error is not None
                assert stream.flow.error.kind is ErrorKind.ABORTED
                assert (await anyio.to_thread.run_sync(received, peer)).endswith(
                    "then ConnectionResetError")

            # The server's end: a read answers b"", and the stream tells it is readable.
            stream = await backend_.connect_tcp(HOST, listener.getsockname()[1])
            peer, _ = listener.accept()
            peer.shutdown(socket.SHUT_WR)
            with peer:
                with anyio.fail_after(5):
                    while not stream.get_extra_info("is_readable"):  # the FIN, not read yet
                        await anyio.sleep(0.001)
                assert await stream.read(100) == b""
                await stream.aclose()

            # A handshake with a server that never answers.
            stream = await backend_.connect_tcp(HOST, listener.getsockname()[1])
            with pytest.raises(httpcore.ConnectTimeout, match="TLS handshake timed out"):
                await stream.start_tls(ssl.create_default_context(), "localhost", timeout=0.05)
            listener.accept()[0].close()

            # A reset: the read's httpcore.ReadError comes from the OSError (which httpcore's
            # pool then drops: it raises "from None").
            stream = await backend_.connect_tcp(HOST, listener.getsockname()[1])
            peer, _ = listener.accept()
            reset(peer)
            with pytest.raises(httpcore.ReadError) as caught:
                await stream.read(100)
            assert isinstance(caught.value.__cause__, ConnectionResetError)
            await stream.aclose()
            await backend_.sleep(0)

    run(backend, main)
