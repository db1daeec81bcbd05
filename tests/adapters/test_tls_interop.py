"""TLS against ``openssl`` on every adapter (asyncio, uvloop, trio, socket): renegotiation
and key updates in the middle of a stream, ``openssl s_client`` against ``serve(ssl=...)``,
certificate failures with the message on our side and the alert on the peer's, and ALPN.

One program per test runs on every adapter: the blocking socket adapter is driven through
``Threaded``, which runs each of its calls on a worker thread."""

from __future__ import annotations

import logging
import re
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
import trustme
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from loopback import bounded_runner, needs_openssl

from sansflow import AsyncFlow, Eof, Error, ErrorKind, Ok, Shutdown
from sansflow.adapters import anyio as sf_anyio
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra where it builds
    uvloop = None

pytestmark = needs_openssl

HOST = "127.0.0.1"
TIMEOUT = 10  # seconds for anything that waits on a peer; never reached when all is well


# -- the socket adapter behind async calls -------------------------------------------------


class Threaded:
    """A blocking flow with the async flow's methods: each call runs on a worker thread (and
    is abandoned if the test times out, so that the test fails instead of hanging)."""

    def __init__(self, flow: Any) -> None:
        self._flow = flow

    def __getattr__(self, name: str) -> Any:  # tls, error, state...
        return getattr(self._flow, name)

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(method, *args), abandon_on_cancel=True)

    async def read(self, max_bytes: int | None = None) -> Any:
        return await self._call(self._flow.read, max_bytes)

    async def write(self, data: bytes) -> Any:
        return await self._call(self._flow.write, data)

    async def shutdown(self, how: Shutdown) -> None:
        await self._call(self._flow.shutdown, how)

    async def close(self, timeout: float | None = None) -> None:
        await self._call(self._flow.close, timeout)

    async def abort(self) -> None:
        await self._call(self._flow.abort)


class ThreadedSocketAdapter:
    """``connect`` and ``serve`` of the socket adapter, as the async adapters spell them: the
    handler is an async function, run in the test's event loop for each connection's thread."""

    @staticmethod
    async def connect(*args: Any, **kwargs: Any) -> Threaded:
        flow = await anyio.to_thread.run_sync(partial(sf_socket.connect, *args, **kwargs),
                                              abandon_on_cancel=True)
        return Threaded(flow)

    @staticmethod
    @asynccontextmanager
    async def serve(handler: Callable[[Any], Awaitable[None]], *args: Any,
                    **kwargs: Any) -> AsyncIterator[Any]:
        async with anyio.from_thread.BlockingPortal() as portal:
            def on_thread(flow: Any) -> None:
                portal.call(handler, Threaded(flow))

            server = sf_socket.serve(on_thread, *args, **kwargs)
            await anyio.to_thread.run_sync(server.__enter__)
            try:
                yield server
            finally:
                await anyio.to_thread.run_sync(server.__exit__, None, None, None)


ADAPTERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "asyncio": (sf_asyncio, {"backend": "asyncio"}),
    **({"uvloop": (sf_asyncio, {"backend": "asyncio",
                                "backend_options": {"loop_factory": uvloop.new_event_loop}})}
       if uvloop is not None else {}),
    "trio": (sf_trio, {"backend": "trio"}),
    "socket": (ThreadedSocketAdapter, {"backend": "asyncio"}),
}
# The anyio adapter on each backend, for the tests that name it: it receives only for a
# reader, as trio and the socket adapter do.
ANYIO = {f"anyio-{backend}": (sf_anyio, {"backend": backend}) for backend in ("asyncio", "trio")}
_ALL = {**ADAPTERS, **ANYIO}


@pytest.fixture(params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sf(adapter: str) -> Any:
    """The adapter under test, with the async adapters' ``connect`` and ``serve``."""
    return _ALL[adapter][0]


@pytest.fixture
def run(adapter: str) -> Callable[[Callable[[], Awaitable[None]]], None]:
    return bounded_runner(_ALL[adapter][1])


# -- openssl -----------------------------------------------------------------------------


class OpenSSL:
    """A running ``openssl s_server`` or ``s_client``: its input, and its output (stdout and
    stderr) read line by line, every line kept for the checks at the end."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.lines: list[str] = []

    @classmethod
    @asynccontextmanager
    async def run(cls, *args: str) -> AsyncIterator[OpenSSL]:
        """Start ``openssl *args``; killed on the way out if it has not ended by then."""
        process = await anyio.open_process(["openssl", *args], stderr=subprocess.STDOUT)
        try:
            yield cls(process)
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.aclose()

    async def expect(self, pattern: str) -> re.Match[str]:
        """Read lines until one matches ``pattern``."""
        with anyio.move_on_after(TIMEOUT), suppress(anyio.IncompleteRead):  # it ended first
            while True:
                line = (await self._stdout.receive_until(b"\n", 65536)).decode()
                self.lines.append(line)
                if match := re.search(pattern, line):
                    return match
        pytest.fail(f"openssl never wrote a line matching {pattern!r}:\n{self.output}")

    async def send(self, text: str) -> None:
        await self._stdin.send(text.encode())

    async def close_input(self) -> None:
        await self._stdin.aclose()

    async def end(self) -> str:
        """Wait for the program to exit with 0, and return all its output."""
        with anyio.fail_after(TIMEOUT):
            rest = b""
            with anyio.CancelScope() as scope:
                try:
                    while True:
                        rest += await self._stdout.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    scope.cancel()
            assert await self.process.wait() == 0, self.output + rest.decode()
        self.lines += rest.decode().splitlines()
        return self.output

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def pems(ca: trustme.CA, server_cert: trustme.LeafCert, tmp_path: Path) -> dict[str, str]:
    """The test CA's certificate and the server's, as files for openssl."""
    files = {"ca": ca.cert_pem, "cert": server_cert.cert_chain_pems[0],
             "key": server_cert.private_key_pem}
    for name, pem in files.items():
        pem.write_to_path(str(tmp_path / f"{name}.pem"))
    return {name: str(tmp_path / f"{name}.pem") for name in files}


def s_server(pems: dict[str, str], *options: str) -> Any:
    """``openssl s_server`` for one connection, its data and commands on its stdin; every
    message of the handshakes shown (``-msg``)."""
    return OpenSSL.run("s_server", "-accept", f"{HOST}:0", "-naccept", "1", "-msg",
                       "-cert", pems["cert"], "-key", pems["key"], *options)


async def read_line(flow: AsyncFlow) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        result = await flow.read()
        assert type(result) is Ok, result
        line += result.value
    return line


async def echo(flow: AsyncFlow) -> None:
    while type(result := await flow.read()) is Ok:
        await flow.write(result.value)


async def read_all(flow: AsyncFlow) -> tuple[bytes, object]:
    chunks = []
    while type(result := await flow.read()) is Ok:
        chunks.append(result.value)
    return b"".join(chunks), result


def handshake_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Why our server's handshakes failed, as it logged them (without the peer's address)."""
    return [record.getMessage().split(": ", 3)[-1] for record in caplog.records
            if record.name == "sansflow"]


# -- renegotiation and key updates ------------------------------------------------------


@pytest.mark.parametrize(("version", "commands", "sent", "answers"), [
    # r: renegotiate; R: renegotiate asking for a client certificate (we have none to give).
    # Each sends a HelloRequest, and our ClientHello answers it.
    ("-tls1_2", ["r", "R"], "HelloRequest", ["ClientHello"] * 3),
    # k: the server updates its keys; K: and asks us to update ours, which our KeyUpdate does.
    ("-tls1_3", ["k", "K"], "KeyUpdate", ["KeyUpdate"]),
], ids=["renegotiation", "key-update"])
@pytest.mark.parametrize("adapter", [*ADAPTERS, *ANYIO])
def test_openssl_s_server_renegotiates_or_updates_keys_mid_stream(
        run: Any, sf: Any, client_ctx: ssl.SSLContext, pems: dict[str, str], version: str,
        commands: list[str], sent: str, answers: list[str]) -> None:
    """Each command goes between lines of data both ways: our flow's reads take the server's
    handshake message and send what the session answers, and the data that follows arrives
    intact, both ways. The server's log (``-msg``) shows what it received.

    Where the flow receives only for a reader (trio, anyio, socket), the server's line comes with
    its HelloRequest, and our write that follows waits for the rest of the renegotiation:
    the flow receives it for the writer, although nobody reads."""
    async def main() -> None:
        async with s_server(pems, version) as server:
            port = int((await server.expect(r"^ACCEPT .*:(\d+)")).group(1))
            flow = await sf.connect(HOST, port, ssl=client_ctx, server_hostname="localhost")
            assert flow.tls.version == {"-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}[version]
            for step, command in enumerate(["", *commands]):
                if command:
                    await server.send(f"{command}\n")
                    # Sent: the next line is another read of s_server's input (a command and
                    # data in one read would lose the data).
                    await server.expect(f"^>>> .*, {sent}$")
                await server.send(f"server line {step}\n")
                assert await read_line(flow) == b"server line %d\n" % step
                assert await flow.write(b"client line %d\n" % step) == Ok(None)
                await server.expect(f"^client line {step}$")
            await flow.shutdown(Shutdown.WRITE)  # close_notify; s_server answers with its own
            assert await read_all(flow) == (b"", Eof())
            await flow.close(timeout=TIMEOUT)
            assert flow.error is None
            output = await server.end()
        received = re.findall(rf"^<<< .*, ({'|'.join(set(answers))})$", output, re.MULTILINE)
        assert received == answers, output

    run(main)


# -- openssl s_client against serve(ssl=...) ----------------------------------------------


def s_client(pems: dict[str, str], port: int, *options: str) -> Any:
    """``openssl s_client`` to ``serve(ssl=...)``, trusting the test CA; its input is sent."""
    return OpenSSL.run("s_client", "-connect", f"{HOST}:{port}", "-CAfile", pems["ca"],
                       "-servername", "localhost", *options)


@pytest.mark.parametrize("adapter", [a for a in ADAPTERS if a != "socket"])  # its own file has it
def test_openssl_s_client_ends_cleanly_or_is_truncated(
        run: Any, sf: Any, server_ctx: ssl.SSLContext, pems: dict[str, str]) -> None:
    """At the end of its input s_client sends close_notify, then its FIN: the handler reads
    the data, then ``Eof()``. Killed, it sends no close_notify: the data, then an error
    (``TRUNCATED``; or ``RESET`` when it had not read all that reached it), never ``Eof()``."""
    async def main() -> None:
        seen: list[tuple[bytes, object]] = []
        arrived, ended = anyio.Event(), anyio.Event()

        async def handler(flow: AsyncFlow) -> None:
            first = await flow.read()
            assert type(first) is Ok, first
            arrived.set()
            data, end = await read_all(flow)
            seen.append((first.value + data, end))
            ended.set()

        async with sf.serve(handler, HOST, 0, ssl=server_ctx) as server:
            async with s_client(pems, server.port, "-brief") as client:
                await client.send("hello\n")
                await client.close_input()
                await client.end()
            with anyio.fail_after(TIMEOUT):
                await ended.wait()
            assert seen.pop() == (b"hello\n", Eof())

            arrived, ended = anyio.Event(), anyio.Event()
            async with s_client(pems, server.port, "-brief") as client:
                await client.send("partial\n")
                with anyio.fail_after(TIMEOUT):
                    await arrived.wait()
                client.process.kill()
            with anyio.fail_after(TIMEOUT):
                await ended.wait()
        data, end = seen.pop()
        assert data == b"partial\n"
        assert isinstance(end, Error)
        assert end.error.kind in (ErrorKind.TRUNCATED, ErrorKind.RESET)

    run(main)


@pytest.mark.parametrize(("version", "command", "sent", "answer"), [
    ("-tls1_3", "k", "KeyUpdate", None),
    ("-tls1_3", "K", "KeyUpdate", "KeyUpdate"),  # our session answers with its own
], ids=["key-update", "key-update-requested"])
def test_openssl_s_client_updates_keys_mid_stream(
        run: Any, sf: Any, server_ctx: ssl.SSLContext, pems: dict[str, str], version: str,
        command: str, sent: str, answer: str | None) -> None:
    """s_client's key update between lines of an echo: our server's read takes it (and
    answers a request with its own), and the lines after it are echoed intact."""
    async def main() -> None:
        async with sf.serve(echo, HOST, 0, ssl=server_ctx) as server, \
                s_client(pems, server.port, version, "-msg") as client:
            await client.send("line 0\n")
            await client.expect("^line 0$")
            await client.send(f"{command}\n")
            await client.expect(f"^>>> .*, {sent}$")  # sent: the next line is another read
            await client.send("line 1\n")
            await client.expect("^line 1$")
            await client.close_input()
            output = await client.end()
        received = re.findall(rf"^<<< .*, ({sent})$", output, re.MULTILINE)
        assert received == ([] if answer is None else [answer]), output

    run(main)


# OpenSSL 3's SSL_OP_ALLOW_CLIENT_RENEGOTIATION, which the ssl module does not name.
ALLOW_CLIENT_RENEGOTIATION = getattr(ssl, "OP_ALLOW_CLIENT_RENEGOTIATION", 1 << 8)


@pytest.mark.skipif(ssl.OPENSSL_VERSION_INFO < (3,), reason="OpenSSL 3 refuses it by default")
@pytest.mark.parametrize("allowed", [False, True], ids=["refused", "allowed"])
def test_openssl_s_client_renegotiates(run: Any, sf: Any, server_ctx: ssl.SSLContext,
                                       pems: dict[str, str], allowed: bool) -> None:
    """s_client's ``R`` (TLS 1.2) starts a renegotiation from the client. A server on
    OpenSSL 3 refuses it unless its context allows it: ours answers no_renegotiation (a
    warning), which s_client takes as fatal, and our handler reads s_client's alert as
    ``Error(TLS)``. Allowed, it runs inside our server's reads and the echo goes on."""
    if allowed:
        server_ctx.options |= ALLOW_CLIENT_RENEGOTIATION
    ends: list[object] = []

    async def main() -> None:
        ended = anyio.Event()

        async def echo_then_end(flow: AsyncFlow) -> None:
            while type(result := await flow.read()) is Ok:
                await flow.write(result.value)
            ends.append(result)
            ended.set()

        async with sf.serve(echo_then_end, HOST, 0, ssl=server_ctx) as server:
            async with s_client(pems, server.port, "-tls1_2", "-msg") as client:
                await client.send("line 0\n")
                await client.expect("^line 0$")
                await client.send("R\n")
                await client.expect("^>>> .*, ClientHello$")  # sent: the next line is another read
                if allowed:
                    await client.send("line 1\n")
                    await client.expect("^line 1$")
                    await client.close_input()
                    output = await client.end()
                    assert len(re.findall(r"^<<< .*, ServerHello$", output, re.MULTILINE)) == 2
                else:
                    await client.expect("^<<< .*, warning no_renegotiation$")
                    await client.expect("^>>> .*, fatal handshake_failure$")
            with anyio.fail_after(TIMEOUT):
                await ended.wait()

    run(main)
    if allowed:
        assert ends == [Eof()]
    else:
        [end] = ends
        assert isinstance(end, Error)
        assert (end.error.kind, end.error.detail) == (
            ErrorKind.TLS, "peer sent alert handshake failure (SSLV3_ALERT_HANDSHAKE_FAILURE)")


# -- certificate failures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def expired_cert(ca: trustme.CA) -> trustme.LeafCert:
    """The server's names, signed by the test CA, expired yesterday."""
    now = datetime.now(timezone.utc)
    return ca.issue_cert("localhost", "127.0.0.1", not_before=now - timedelta(days=30),
                         not_after=now - timedelta(days=1))


@pytest.fixture(scope="module")
def stranger_cert() -> trustme.LeafCert:
    """The server's names, signed by a CA nobody here trusts."""
    return trustme.CA().issue_cert("localhost", "127.0.0.1")


@pytest.mark.parametrize(("which", "reason", "alert"), [
    ("expired", "certificate has expired", "alert certificate expired"),
    ("stranger", "unable to get local issuer certificate", "alert unknown ca"),
])
def test_our_client_rejects_openssl_s_servers_certificate(
        run: Any, sf: Any, client_ctx: ssl.SSLContext, pems: dict[str, str], tmp_path: Path,
        expired_cert: trustme.LeafCert, stranger_cert: trustme.LeafCert, which: str,
        reason: str, alert: str) -> None:
    """``connect`` raises ``ssl.SSLCertVerificationError`` with the reason, and s_server
    reports the alert our side sent."""
    leaf = {"expired": expired_cert, "stranger": stranger_cert}[which]
    cert, key = tmp_path / f"{which}.pem", tmp_path / f"{which}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))

    async def main() -> None:
        async with s_server({**pems, "cert": str(cert), "key": str(key)}) as server:
            port = int((await server.expect(r"^ACCEPT .*:(\d+)")).group(1))
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                await sf.connect(HOST, port, ssl=client_ctx, server_hostname="localhost")
            assert str(caught.value) == (f"{HOST}:{port}: TLS certificate verification "
                                         f"failed: {reason}")
            assert caught.value.verify_message == reason
            await server.expect(alert)

    run(main)


@pytest.fixture(scope="module")
def client_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("client.test")


@pytest.fixture
def mtls_server_ctx(server_ctx: ssl.SSLContext, ca: trustme.CA) -> ssl.SSLContext:
    """``server_ctx`` that requires a client certificate signed by the test CA."""
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_ctx)
    return server_ctx


def test_a_client_certificate_reaches_the_server(
        run: Any, sf: Any, mtls_server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
        client_cert: trustme.LeafCert) -> None:
    """mTLS: the server's flow has the client's certificate, the client's the server's."""
    client_cert.configure_cert(client_ctx)
    seen: list[bytes | None] = []

    async def handler(flow: AsyncFlow) -> None:
        seen.append(flow.tls.peer_certificate if flow.tls else None)
        await echo(flow)

    async def main() -> None:
        async with sf.serve(handler, HOST, 0, ssl=mtls_server_ctx) as server:
            flow = await sf.connect(HOST, server.port, ssl=client_ctx, server_hostname="localhost")
            assert await flow.write(b"who am I") == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"who am I", Eof())
            await flow.close(timeout=TIMEOUT)
            assert flow.error is None
            assert flow.tls.peer_certificate is not None

    run(main)
    assert seen == [ssl.PEM_cert_to_DER_cert(client_cert.cert_chain_pems[0].bytes().decode())]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_missing_client_certificate_is_the_servers_alert(
        run: Any, sf: Any, mtls_server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
        version: ssl.TLSVersion, caplog: pytest.LogCaptureFixture) -> None:
    """A server that requires a client certificate refuses a client without one. Over TLS
    1.2 the client's handshake fails with the alert. Over TLS 1.3 the client's handshake is
    over before the server has checked it: ``connect`` returns, and the first read answers
    ``Error(TLS)`` naming the alert (``flow.tls`` already tells the session). The server
    logs the reason; its handler never sees the connection."""
    client_ctx.maximum_version = version
    handled: list[object] = []
    alert = "peer sent alert certificate required (TLSV13_ALERT_CERTIFICATE_REQUIRED)"

    async def main() -> None:
        async with sf.serve(handled.append, HOST, 0, ssl=mtls_server_ctx) as server:
            if version is ssl.TLSVersion.TLSv1_2:
                with pytest.raises(ssl.SSLError) as caught:
                    await sf.connect(HOST, server.port, ssl=client_ctx)
                assert str(caught.value) == (f"{HOST}:{server.port}: TLS failure: peer sent "
                                             "alert handshake failure "
                                             "(SSLV3_ALERT_HANDSHAKE_FAILURE)")
                return
            flow = await sf.connect(HOST, server.port, ssl=client_ctx)
            assert flow.tls.version == "TLSv1.3"
            assert await flow.write(b"too late") == Ok(None)  # queued
            result = await flow.read()
            assert isinstance(result, Error)
            assert (result.error.kind, result.error.detail) == (ErrorKind.TLS, alert)
            assert await flow.write(b"more") == result  # sticky
            await flow.abort()

    with caplog.at_level(logging.WARNING, logger="sansflow"):
        run(main)
    assert handled == []
    assert handshake_failures(caplog) == [
        "TLS failure: peer did not return a certificate (PEER_DID_NOT_RETURN_A_CERTIFICATE)"]


@pytest.mark.parametrize(("version", "presented", "alert", "reason"), [
    ("-tls1_3", None, "alert certificate required",
     "TLS failure: peer did not return a certificate (PEER_DID_NOT_RETURN_A_CERTIFICATE)"),
    ("-tls1_2", None, "alert handshake failure",
     "TLS failure: peer did not return a certificate (PEER_DID_NOT_RETURN_A_CERTIFICATE)"),
    ("-tls1_3", "stranger", "alert unknown ca",
     "TLS certificate verification failed: unable to get local issuer certificate"),
])
def test_our_server_rejects_openssl_s_clients_certificate(
        run: Any, sf: Any, mtls_server_ctx: ssl.SSLContext, pems: dict[str, str],
        stranger_cert: trustme.LeafCert, tmp_path: Path, version: str, presented: str | None,
        alert: str, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    """s_client without a certificate, or with one nobody here trusts: our server logs why,
    and s_client reports the alert it sent."""
    options = [version]
    if presented:
        cert, key = tmp_path / "client.pem", tmp_path / "client.key"
        stranger_cert.cert_chain_pems[0].write_to_path(str(cert))
        stranger_cert.private_key_pem.write_to_path(str(key))
        options += ["-cert", str(cert), "-key", str(key)]
    handled: list[object] = []

    async def main() -> None:
        async with sf.serve(handled.append, HOST, 0, ssl=mtls_server_ctx) as server, \
                s_client(pems, server.port, *options) as client:
            await client.expect(alert)

    with caplog.at_level(logging.WARNING, logger="sansflow"):
        run(main)
    assert handled == []
    assert handshake_failures(caplog) == [reason]


# -- ALPN -------------------------------------------------------------------------------


def test_alpn_through_the_contexts(run: Any, sf: Any, server_ctx: ssl.SSLContext,
                                   client_ctx: ssl.SSLContext) -> None:
    """The protocol both contexts list, in the server's order of preference, is on both
    flows' ``tls``; with none in common, neither has one (and the session goes on)."""
    seen: list[str | None] = []

    async def handler(flow: AsyncFlow) -> None:
        seen.append(flow.tls.alpn_protocol if flow.tls else "no TLS")
        await echo(flow)

    async def session(server_protocols: list[str]) -> str | None:
        server_ctx.set_alpn_protocols(server_protocols)
        async with sf.serve(handler, HOST, 0, ssl=server_ctx) as server:
            flow = await sf.connect(HOST, server.port, ssl=client_ctx)
            assert await flow.write(b"ping") == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"ping", Eof())
            await flow.close(timeout=TIMEOUT)
            return flow.tls.alpn_protocol  # type: ignore[no-any-return]

    async def main() -> None:
        client_ctx.set_alpn_protocols(["h2", "http/1.1"])
        assert await session(["http/1.1", "h2"]) == "http/1.1"
        assert await session(["smtp"]) is None

    run(main)
    assert seen == ["http/1.1", None]


def test_alpn_against_openssl_s_server(run: Any, sf: Any, client_ctx: ssl.SSLContext,
                                       pems: dict[str, str]) -> None:
    async def main() -> None:
        client_ctx.set_alpn_protocols(["h2", "http/1.1"])
        async with s_server(pems, "-alpn", "http/1.1") as server:
            port = int((await server.expect(r"^ACCEPT .*:(\d+)")).group(1))
            flow = await sf.connect(HOST, port, ssl=client_ctx, server_hostname="localhost")
            assert flow.tls.alpn_protocol == "http/1.1"
            await server.expect("^ALPN protocols advertised by the client: h2, http/1.1$")
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"", Eof())
            await flow.close(timeout=TIMEOUT)
            assert flow.error is None
            await server.end()

    run(main)
