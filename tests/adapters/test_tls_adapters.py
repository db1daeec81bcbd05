"""TLS on the adapters: ``connect(ssl=...)``, ``serve(ssl=...)`` and ``wrap_tls``, against
each other and against programs nobody here wrote (``openssl s_server``, ``curl``, Python's own
``ssl.SSLSocket``)."""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from loopback import bounded_runner, needs_curl, needs_openssl

from sansflow import AdapterFlow, AsyncFlow, Eof, Error, ErrorKind, Flow, FlowError, Ok, Shutdown
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import trio as sf_trio
from sansflow.adapters._handshake import handshake_failed, peer_of

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra where it builds
    uvloop = None

HOST = "127.0.0.1"
# adapter: (module, how anyio runs the test there)
ADAPTERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "asyncio": (sf_asyncio, {"backend": "asyncio"}),
    **({"uvloop": (sf_asyncio, {"backend": "asyncio",
                                "backend_options": {"loop_factory": uvloop.new_event_loop}})}
       if uvloop is not None else {}),
    "trio": (sf_trio, {"backend": "trio"}),
}


@pytest.fixture(params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sf(adapter: str) -> Any:
    """The adapter module under test."""
    return ADAPTERS[adapter][0]


@pytest.fixture
def run(adapter: str) -> Callable[[Callable[[], Awaitable[None]]], None]:
    return bounded_runner(ADAPTERS[adapter][1])


async def read_all(flow: AsyncFlow) -> tuple[bytes, object]:
    chunks = []
    while type(result := await flow.read()) is Ok:
        chunks.append(result.value)
    return b"".join(chunks), result


async def echo(flow: AsyncFlow) -> None:
    async for data in flow:
        await flow.write(data)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_reply_after_the_clients_close_notify_arrives(
        run: Any, sf: Any, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
        version: ssl.TLSVersion) -> None:
    """Half-close over TLS: the client's shutdown(WRITE) sends close_notify, the server reads
    the request then Eof(), and its reply (sent after that) still reaches the client, which
    then reads Eof() at the server's close_notify. Both end cleanly."""
    client_ctx.maximum_version = version
    ended: list[object] = []

    async def answer_after_eof(flow: AsyncFlow) -> None:
        request, end = await read_all(flow)
        ended.append(end)
        await flow.write(b"got %d bytes" % len(request))

    async def main() -> None:
        async with sf.serve(answer_after_eof, HOST, 0, ssl=server_ctx) as server:
            flow = await sf.connect(HOST, server.port, ssl=client_ctx, server_hostname="localhost")
            assert flow.tls is not None
            assert flow.tls.version == version.name.replace("v1_", "v1.")
            assert await flow.write(b"x" * 300_000) == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"got 300000 bytes", Eof())
            await flow.close(timeout=10)
            assert flow.error is None
        assert ended == [Eof()]

    run(main)


def test_a_large_echo_keeps_every_byte(run: Any, sf: Any, server_ctx: ssl.SSLContext,
                                       client_ctx: ssl.SSLContext) -> None:
    data = bytes(range(256)) * 16_384  # 4 MiB

    async def main() -> None:
        async with sf.serve(echo, HOST, 0, ssl=server_ctx) as server:
            flow = await sf.connect(HOST, server.port, ssl=client_ctx)

            async def send() -> None:
                for at in range(0, len(data), 100_000):
                    assert await flow.write(data[at:at + 100_000]) == Ok(None)
                await flow.shutdown(Shutdown.WRITE)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send)
                assert await read_all(flow) == (data, Eof())
            await flow.close(timeout=10)
            assert flow.error is None

    run(main)


def test_a_wrong_hostname_raises_and_the_server_sees_the_alert(
        run: Any, sf: Any, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
        caplog: pytest.LogCaptureFixture) -> None:
    handled: list[object] = []

    async def main() -> None:
        async with sf.serve(handled.append, HOST, 0, ssl=server_ctx) as server:
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                await sf.connect(HOST, server.port, ssl=client_ctx, server_hostname="wrong.test")
            text = str(caught.value)
            assert text.startswith(f"{HOST}:{server.port}: TLS certificate verification failed")
            assert "Hostname mismatch" in text
            assert caught.value.verify_message.startswith("Hostname mismatch")
            for _ in range(100):  # the server's side of it ends on its own task
                if caplog.records:
                    break
                await anyio.sleep(0.01)

    with caplog.at_level(logging.WARNING, logger="sansflow"):
        run(main)
    assert handled == []  # the handler never saw the connection
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "BAD_CERTIFICATE" in caplog.records[0].getMessage()  # the alert, not a reset


def test_an_untrusted_certificate_raises(run: Any, sf: Any, server_ctx: ssl.SSLContext,
                                         caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with sf.serve(echo, HOST, 0, ssl=server_ctx) as server:
            with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
                await sf.connect(HOST, server.port, ssl=True)  # the system's CAs only

    with caplog.at_level(logging.WARNING, logger="sansflow"):
        run(main)


def test_starttls_after_a_plaintext_exchange(run: Any, sf: Any, server_ctx: ssl.SSLContext,
                                             client_ctx: ssl.SSLContext) -> None:
    """``wrap_tls`` over a flow that has already talked in plaintext: the same flow carries
    the rest over TLS."""
    async def starttls_echo(flow: AsyncFlow) -> None:
        assert await flow.read(9) == Ok(b"STARTTLS\n")
        assert await flow.write(b"GO\n") == Ok(None)
        tls = await sf.wrap_tls(flow, server_ctx, server_side=True)
        await echo(tls)

    async def main() -> None:
        async with sf.serve(starttls_echo, HOST, 0) as server:
            plain = await sf.connect(HOST, server.port)
            assert await plain.write(b"STARTTLS\n") == Ok(None)
            assert await plain.read() == Ok(b"GO\n")
            assert plain.tls is None
            flow = await sf.wrap_tls(plain, client_ctx, server_hostname="localhost")
            assert flow is plain
            assert flow.tls is not None
            assert flow.tls.server_hostname == "localhost"
            assert await flow.write(b"secret") == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"secret", Eof())
            await flow.close(timeout=10)
            assert flow.error is None

    run(main)


@pytest.fixture
def truncating_server(server_ctx: ssl.SSLContext) -> Iterator[int]:
    """A Python ``ssl`` server that sends ``partial`` and then a FIN without close_notify."""
    listener = socket.create_server((HOST, 0))

    def serve_one() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"partial")
            socket.socket.shutdown(tls, socket.SHUT_WR)  # the FIN, bypassing TLS
            with contextlib.suppress(OSError):  # the client's alert about the cut, or its reset
                tls.recv(1)  # until the client goes

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    thread.join(10)
    listener.close()


def test_a_fin_without_close_notify_is_truncated(run: Any, sf: Any, client_ctx: ssl.SSLContext,
                                                 truncating_server: int) -> None:
    async def main() -> None:
        flow = await sf.connect(HOST, truncating_server, ssl=client_ctx)
        data, end = await read_all(flow)
        assert data == b"partial"
        assert isinstance(end, Error)
        assert end.error.kind is ErrorKind.TRUNCATED
        await flow.abort()

    run(main)


@needs_openssl
def test_against_openssl_s_server(run: Any, sf: Any, server_cert: trustme.LeafCert,
                                  client_ctx: ssl.SSLContext, tmp_path: Path) -> None:
    """``openssl s_server -rev`` answers each line reversed; our close_notify ends its
    connection cleanly, and it answers with its own (our read ends with Eof())."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    server_cert.cert_chain_pems[0].write_to_path(str(cert))
    server_cert.private_key_pem.write_to_path(str(key))
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"{HOST}:0", "-cert", str(cert), "-key", str(key),
         "-rev", "-naccept", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        port = 0
        for line in server.stdout:
            if match := re.match(r"ACCEPT .*:(\d+)", line):
                port = int(match.group(1))
                break

        async def main() -> None:
            flow = await sf.connect(HOST, port, ssl=client_ctx, server_hostname="localhost")
            assert await flow.write(b"hello sansflow\n") == Ok(None)
            got = b""
            while not got.endswith(b"\n"):
                result = await flow.read()
                assert type(result) is Ok
                got += result.value
            assert got == b"wolfsnas olleh\n"
            await flow.shutdown(Shutdown.WRITE)  # close_notify
            assert await read_all(flow) == (b"", Eof())
            await flow.close(timeout=10)
            assert flow.error is None

        run(main)
        assert server.wait(10) == 0
        assert "CONNECTION CLOSED" in server.stdout.read()
    finally:
        server.kill()
        server.wait()
        server.stdout.close()  # type: ignore[union-attr]


@needs_curl
def test_curl_gets_a_page_from_a_tls_server(run: Any, sf: Any, server_ctx: ssl.SSLContext,
                                           ca: trustme.CA, tmp_path: Path) -> None:
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    body = b"hello over TLS\n" * 1000
    ends: list[object] = []

    async def respond(flow: AsyncFlow) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            result = await flow.read()
            assert type(result) is Ok
            request += result.value
        assert request.startswith(b"GET /page HTTP/1.1\r\n")
        await flow.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % len(body) + body)
        await flow.shutdown(Shutdown.WRITE)
        ends.append((await read_all(flow))[1])  # curl's close_notify

    async def main() -> None:
        async with sf.serve(respond, HOST, 0, ssl=server_ctx) as server:
            curl = await anyio.run_process(
                ["curl", "--silent", "--show-error", "--cacert", str(cafile),
                 f"https://localhost:{server.port}/page",
                 "--resolve", f"localhost:{server.port}:{HOST}"], check=False)
            assert (curl.returncode, curl.stderr) == (0, b"")
            assert curl.stdout == body

    run(main)
    assert ends == [Eof()]


def test_tls_inside_tls(run: Any, sf: Any, server_ctx: ssl.SSLContext,
                        client_ctx: ssl.SSLContext) -> None:
    """``wrap_tls`` over a TLS flow: a second session inside the first (a tunnel's)."""
    async def inner_echo(flow: AsyncFlow) -> None:
        tunnel = await sf.wrap_tls(flow, server_ctx, server_side=True)
        await echo(tunnel)

    async def main() -> None:
        async with sf.serve(inner_echo, HOST, 0, ssl=server_ctx) as server:
            flow = await sf.connect(HOST, server.port, ssl=client_ctx)
            outer_session = flow.tls
            assert await sf.wrap_tls(flow, client_ctx, server_hostname="localhost") is flow
            assert flow.tls is not None
            assert flow.tls is not outer_session  # the inner session's
            assert await flow.write(b"nested " * 50_000) == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"nested " * 50_000, Eof())
            await flow.close(timeout=10)
            assert flow.error is None

    run(main)


def test_a_silent_server_times_the_handshake_out(run: Any, sf: Any,
                                                client_ctx: ssl.SSLContext) -> None:
    async def main() -> None:
        with socket.create_server((HOST, 0)) as listener:  # accepts, never answers
            port = listener.getsockname()[1]
            expected = rf"^{HOST}:{port}: TLS handshake timed out after 0\.2 s$"
            with pytest.raises(TimeoutError, match=expected):
                await sf.connect(HOST, port, ssl=client_ctx, timeout=0.2)

    run(main)


def test_a_silent_client_is_dropped_after_the_handshake_timeout(
        run: Any, sf: Any, server_ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture) -> None:
    handled: list[object] = []

    async def main() -> None:
        async with sf.serve(handled.append, HOST, 0, ssl=server_ctx,
                            handshake_timeout=0.1) as server:
            silent = await sf.connect(HOST, server.port)  # plain TCP: never says hello
            clients.append(silent.sockname[1])
            result = await silent.read()
            assert isinstance(result, Error)
            assert result.error.kind is ErrorKind.RESET
            await silent.close()

    clients: list[int] = []
    with caplog.at_level(logging.WARNING, logger="sansflow"):
        run(main)
    assert handled == []
    assert [r.getMessage() for r in caplog.records] == [
        f"sansflow: TLS handshake failed: 127.0.0.1:{clients[0]}: "
        "TLS handshake timed out after 0.1 s"]
    assert [r.levelname for r in caplog.records] == ["WARNING"]


@pytest.mark.parametrize(("call", "expected"), [
    (lambda sf, ctx: sf.connect(HOST, 1, ssl="yes"), TypeError),
    (lambda sf, ctx: sf.connect(HOST, 1, server_hostname="x"), ValueError),
    (lambda sf, ctx: sf.connect(HOST, 1, ssl=ctx, server_hostname=b"x"), TypeError),
])
def test_bad_tls_arguments_to_connect_raise_before_connecting(
        run: Any, sf: Any, client_ctx: ssl.SSLContext, call: Any,
        expected: type[Exception]) -> None:
    async def main() -> None:
        with pytest.raises(expected):
            await call(sf, client_ctx)

    run(main)


def test_bad_tls_arguments_to_serve_and_wrap_tls(run: Any, sf: Any, server_ctx: ssl.SSLContext,
                                                 client_ctx: ssl.SSLContext) -> None:
    with pytest.raises(TypeError, match=r"ssl must be an ssl\.SSLContext"):
        sf.serve(echo, HOST, 0, ssl=True)  # a server needs its cert
    with pytest.raises(ValueError, match="timeout"):
        sf.serve(echo, HOST, 0, ssl=server_ctx, handshake_timeout=-1)

    async def main() -> None:
        async with sf.serve(echo, HOST, 0) as server:
            flow = await sf.connect(HOST, server.port)
            with pytest.raises(TypeError, match="SSLContext"):
                await sf.wrap_tls(flow, "context")
            with pytest.raises(TypeError, match=r"wrap_tls\(\) takes an? \w+Flow, not object"):
                await sf.wrap_tls(object(), client_ctx)
            with pytest.raises(ValueError, match="server_hostname"):
                await sf.wrap_tls(flow, server_ctx, server_side=True, server_hostname="x")
            # Nothing changed: the flow still talks in plaintext.
            assert await flow.write(b"plain") == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"plain", Eof())
            await flow.close()

    run(main)


def test_a_failed_handshake_raises_the_class_of_its_cause_with_its_message() -> None:
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] ...")
    cause.verify_message = "Hostname mismatch, certificate is not valid for 'x'."
    cause.verify_code = 62
    exc = handshake_failed(FlowError(ErrorKind.CERTIFICATE, cause, cause.verify_message), "h:1")
    assert type(exc) is ssl.SSLCertVerificationError
    assert str(exc) == ("h:1: TLS certificate verification failed: Hostname mismatch, "
                        "certificate is not valid for 'x'.")
    assert (exc.errno, exc.verify_code, exc.__cause__) == (1, 62, cause)

    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    exc = handshake_failed(FlowError.from_exception(reset), "h:1")
    assert type(exc) is ConnectionResetError
    assert (str(exc), exc.errno) == ("h:1: connection reset by peer (ECONNRESET)", errno.ECONNRESET)

    exc = handshake_failed(FlowError(ErrorKind.ABORTED), "h:1")
    assert (type(exc), str(exc)) == (ConnectionError, "h:1: connection aborted locally")
    exc = handshake_failed(None, "h:1", 2.5)
    assert (type(exc), str(exc)) == (TimeoutError, "h:1: TLS handshake timed out after 2.5 s")
    exc = handshake_failed(None, "h:1", 0.1 + 0.2)  # the timeout as a person would write it
    assert str(exc) == "h:1: TLS handshake timed out after 0.3 s"


class _Named(AdapterFlow):
    def __init__(self, peername: object) -> None:
        super().__init__(Flow(), peername=peername)


@pytest.mark.parametrize(("peername", "expected"), [
    (("10.0.0.1", 443), "10.0.0.1:443"),
    (("::1", 443, 0, 0), "[::1]:443"),
    ("/run/app.sock", "/run/app.sock"),
    (None, "the peer"),
])
def test_a_handshake_names_its_peer(peername: object, expected: str) -> None:
    assert peer_of(_Named(peername)) == expected


def test_flow_stream_over_tls_is_a_half_closeable_stream(
        server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """trio's own stream checks over TLS flows: ``send_eof`` is our close_notify, and
    ``aclose`` ends with one too. trio's ``SSLStream`` has no ``send_eof`` at all."""
    import trio.testing

    async def tls_flow_streams() -> tuple[sf_trio.FlowStream, sf_trio.FlowStream]:
        with socket.create_server((HOST, 0)) as listener:
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
        a, b = await sf_trio.wrap(client), await sf_trio.wrap(server)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(sf_trio.wrap_tls, a, client_ctx, server_hostname="localhost"))
            tasks.start_soon(partial(sf_trio.wrap_tls, b, server_ctx, server_side=True))
        return sf_trio.FlowStream(a), sf_trio.FlowStream(b)

    async def main() -> None:
        await trio.testing.check_half_closeable_stream(tls_flow_streams, None)

    anyio.run(main, backend="trio")
