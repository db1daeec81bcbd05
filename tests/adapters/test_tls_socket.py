"""TLS on the blocking socket adapter: the program of test_tls_adapters.py without ``await``,
against the adapter itself, ``openssl s_server``, ``curl`` and Python's own ``ssl.SSLSocket``."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from loopback import needs_curl, needs_openssl

from sansflow import BlockingFlow, Eof, Error, ErrorKind, Ok, Shutdown
from sansflow.adapters import socket as sf

HOST = "127.0.0.1"


def read_all(flow: BlockingFlow) -> tuple[bytes, object]:
    chunks = []
    while type(result := flow.read()) is Ok:
        chunks.append(result.value)
    return b"".join(chunks), result


def echo(flow: BlockingFlow) -> None:
    for data in flow:
        flow.write(data)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_reply_after_the_clients_close_notify_arrives(
        server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, version: ssl.TLSVersion) -> None:
    client_ctx.maximum_version = version
    ended: list[object] = []

    def answer_after_eof(flow: BlockingFlow) -> None:
        request, end = read_all(flow)
        ended.append(end)
        flow.write(b"got %d bytes" % len(request))

    with sf.serve(answer_after_eof, HOST, 0, ssl=server_ctx) as server:
        with sf.connect(HOST, server.port, ssl=client_ctx, server_hostname="localhost",
                        timeout=10) as flow:
            assert flow.tls is not None
            assert flow.tls.version == version.name.replace("v1_", "v1.")
            assert flow.write(b"x" * 300_000) == Ok(None)
            flow.shutdown(Shutdown.WRITE)
            assert read_all(flow) == (b"got 300000 bytes", Eof())
        assert flow.error is None
    assert ended == [Eof()]


def test_a_large_echo_keeps_every_byte(server_ctx: ssl.SSLContext,
                                       client_ctx: ssl.SSLContext) -> None:
    data = bytes(range(256)) * 16_384  # 4 MiB
    with sf.serve(echo, HOST, 0, ssl=server_ctx) as server, \
            sf.connect(HOST, server.port, ssl=client_ctx) as flow:
        received: list[tuple[bytes, object]] = []
        reader = threading.Thread(target=lambda: received.append(read_all(flow)))
        reader.start()
        for at in range(0, len(data), 100_000):
            assert flow.write(data[at:at + 100_000]) == Ok(None)
        flow.shutdown(Shutdown.WRITE)
        reader.join(30)
        assert received == [(data, Eof())]
    assert flow.error is None


def test_a_wrong_hostname_raises_and_the_server_sees_the_alert(
        server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
        caplog: pytest.LogCaptureFixture) -> None:
    handled: list[object] = []
    with caplog.at_level(logging.WARNING, logger="sansflow"), \
            sf.serve(handled.append, HOST, 0, ssl=server_ctx) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            sf.connect(HOST, server.port, ssl=client_ctx, server_hostname="wrong.test")
        assert str(caught.value).startswith(
            f"{HOST}:{server.port}: TLS certificate verification failed: Hostname mismatch")
    assert handled == []
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "BAD_CERTIFICATE" in caplog.records[0].getMessage()  # the alert, not a reset


def test_starttls_after_a_plaintext_exchange(server_ctx: ssl.SSLContext,
                                             client_ctx: ssl.SSLContext) -> None:
    def starttls_echo(flow: BlockingFlow) -> None:
        assert flow.read(9) == Ok(b"STARTTLS\n")
        assert flow.write(b"GO\n") == Ok(None)
        echo(sf.wrap_tls(flow, server_ctx, server_side=True))  # type: ignore[arg-type]

    with sf.serve(starttls_echo, HOST, 0) as server, sf.connect(HOST, server.port) as plain:
        assert plain.write(b"STARTTLS\n") == Ok(None)
        assert plain.read() == Ok(b"GO\n")
        assert plain.tls is None
        flow = sf.wrap_tls(plain, client_ctx, server_hostname="localhost")
        assert flow is plain
        assert flow.tls is not None
        assert flow.write(b"secret") == Ok(None)
        flow.shutdown(Shutdown.WRITE)
        assert read_all(flow) == (b"secret", Eof())
    assert flow.error is None


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
                tls.recv(1)

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    thread.join(10)
    listener.close()


def test_a_fin_without_close_notify_is_truncated(client_ctx: ssl.SSLContext,
                                                 truncating_server: int) -> None:
    flow = sf.connect(HOST, truncating_server, ssl=client_ctx)
    data, end = read_all(flow)
    assert data == b"partial"
    assert isinstance(end, Error)
    assert end.error.kind is ErrorKind.TRUNCATED
    flow.abort()


@needs_openssl
def test_against_openssl_s_server(server_cert: trustme.LeafCert, client_ctx: ssl.SSLContext,
                                  tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    server_cert.cert_chain_pems[0].write_to_path(str(cert))
    server_cert.private_key_pem.write_to_path(str(key))
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"{HOST}:0", "-cert", str(cert), "-key", str(key),
         "-rev", "-naccept", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert server.stdout is not None
    try:
        port = 0
        for line in server.stdout:
            if match := re.match(r"ACCEPT .*:(\d+)", line):
                port = int(match.group(1))
                break
        with sf.connect(HOST, port, ssl=client_ctx, server_hostname="localhost") as flow:
            assert flow.write(b"hello sansflow\n") == Ok(None)
            got = b""
            while not got.endswith(b"\n"):
                result = flow.read()
                assert type(result) is Ok
                got += result.value
            assert got == b"wolfsnas olleh\n"
            flow.shutdown(Shutdown.WRITE)  # close_notify
            assert read_all(flow) == (b"", Eof())
        assert flow.error is None
        assert server.wait(10) == 0
        assert "CONNECTION CLOSED" in server.stdout.read()
    finally:
        server.kill()
        server.wait()
        server.stdout.close()


@needs_curl
def test_curl_gets_a_page_from_a_tls_server(server_ctx: ssl.SSLContext, ca: trustme.CA,
                                           tmp_path: Path) -> None:
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    body = b"hello over TLS\n" * 1000
    ends: list[object] = []

    def respond(flow: BlockingFlow) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            result = flow.read()
            assert type(result) is Ok
            request += result.value
        flow.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                   % len(body) + body)
        flow.shutdown(Shutdown.WRITE)
        ends.append(read_all(flow)[1])  # curl's close_notify

    with sf.serve(respond, HOST, 0, ssl=server_ctx) as server:
        curl = subprocess.run(
            ["curl", "--silent", "--show-error", "--cacert", str(cafile),
             f"https://localhost:{server.port}/page",
             "--resolve", f"localhost:{server.port}:{HOST}"],
            capture_output=True, timeout=30, check=False)
        assert (curl.returncode, curl.stderr) == (0, b"")
        assert curl.stdout == body
    assert ends == [Eof()]


def test_a_silent_server_times_the_handshake_out(client_ctx: ssl.SSLContext) -> None:
    with socket.create_server((HOST, 0)) as listener:  # accepts, never answers
        port = listener.getsockname()[1]
        expected = rf"^{HOST}:{port}: TLS handshake timed out after 0\.2 s$"
        with pytest.raises(TimeoutError, match=expected):
            sf.connect(HOST, port, ssl=client_ctx, timeout=0.2)


def test_a_silent_client_is_dropped_after_the_handshake_timeout(
        server_ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture) -> None:
    handled: list[object] = []
    with caplog.at_level(logging.WARNING, logger="sansflow"), \
            sf.serve(handled.append, HOST, 0, ssl=server_ctx, handshake_timeout=0.1) as server, \
            sf.connect(HOST, server.port) as silent:  # plain TCP: never says hello
        result = silent.read()
        assert isinstance(result, Error)
        assert result.error.kind is ErrorKind.RESET
    assert handled == []
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].getMessage() == (
        f"sansflow: TLS handshake failed: 127.0.0.1:{silent.sockname[1]}: "
        "TLS handshake timed out after 0.1 s")


def test_bad_tls_arguments(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    with pytest.raises(TypeError, match="ssl must be"):
        sf.connect(HOST, 1, ssl="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="server_hostname"):
        sf.connect(HOST, 1, server_hostname="x")
    with pytest.raises(TypeError, match=r"ssl must be an ssl\.SSLContext"):
        sf.serve(echo, HOST, 0, ssl=True)  # type: ignore[arg-type]
    with sf.serve(echo, HOST, 0) as server, sf.connect(HOST, server.port) as flow:
        with pytest.raises(TypeError, match="SSLContext"):
            sf.wrap_tls(flow, "context")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="SocketFlow"):
            sf.wrap_tls(object(), client_ctx)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="server_hostname"):
            sf.wrap_tls(flow, server_ctx, server_side=True, server_hostname="x")
        assert flow.write(b"plain") == Ok(None)  # nothing changed
        flow.shutdown(Shutdown.WRITE)
        assert read_all(flow) == (b"plain", Eof())


@needs_openssl
def test_openssl_s_client_ends_cleanly_or_is_truncated(
        server_ctx: ssl.SSLContext, ca: trustme.CA, tmp_path: Path) -> None:
    """``openssl s_client`` sends close_notify then its FIN at the end of its input: the
    server reads the data, then ``Eof()``. Killed, it sends no close_notify: the data, then
    ``Error(TRUNCATED)`` (or ``RESET``)."""
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    seen: list[tuple[bytes, object]] = []
    arrived = threading.Event()
    ended = threading.Event()

    def handler(flow: BlockingFlow) -> None:
        first = flow.read()
        arrived.set()
        data, end = read_all(flow)
        seen.append(((first.value if type(first) is Ok else b"") + data, end))
        ended.set()

    with sf.serve(handler, HOST, 0, ssl=server_ctx) as server:
        command = ["openssl", "s_client", "-connect", f"{HOST}:{server.port}", "-CAfile",
                   str(cafile), "-servername", "localhost", "-brief"]
        done = subprocess.run(command, input=b"hello\n", capture_output=True, timeout=30,
                              check=False)
        assert done.returncode == 0, done.stderr
        assert ended.wait(10)
        assert seen.pop() == (b"hello\n", Eof())

        ended.clear()
        arrived.clear()
        killed = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            assert killed.stdin is not None
            killed.stdin.write(b"partial\n")
            killed.stdin.flush()
            assert arrived.wait(10)
            killed.kill()
            assert ended.wait(10)
        finally:
            killed.kill()
            killed.wait()
            killed.stdin.close()  # type: ignore[union-attr]
    data, end = seen.pop()
    assert data == b"partial\n"
    assert isinstance(end, Error)
    # A FIN without close_notify; or a reset, when the killed process had not read all that
    # reached it (the session tickets sent after the handshake). Never a clean end.
    assert end.error.kind in (ErrorKind.TRUNCATED, ErrorKind.RESET)
