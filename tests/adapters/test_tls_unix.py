"""TLS over AF_UNIX on every adapter: ``connect_unix(ssl=...)`` and ``serve_unix(ssl=...)``,
their arguments, and how a TLS flow ends against a peer written with Python's own
``ssl.SSLSocket``, which acts on our close_notify only when its program says so."""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import socket
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from sansflow import Eof, Ok, Shutdown
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio
from sansflow.testing.conformance import AsyncFlowLike, threaded

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX")

NAME = "localhost"  # what the test certificate names
WAIT = 10.0  # the bound on any wait; generous, as a slow machine is not a bug
# adapter: (module, the anyio backend its tests run on)
ADAPTERS: dict[str, tuple[Any, str]] = {
    "asyncio": (sf_asyncio, "asyncio"),
    "trio": (sf_trio, "trio"),
    "socket": (sf_socket, "asyncio"),  # its blocking calls run in worker threads
}
with contextlib.suppress(ImportError):  # the anyio adapter needs the anyio extra
    from sansflow.adapters import anyio as sf_anyio

    ADAPTERS["anyio"] = (sf_anyio, "trio")


@pytest.fixture(params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def path() -> Iterator[str]:
    """A path for an AF_UNIX socket, short enough for sun_path."""
    with tempfile.TemporaryDirectory() as directory:
        yield str(Path(directory) / "tls.sock")


def run(adapter: str, main: Callable[[Any], Awaitable[None]]) -> None:
    """``main(sf)`` for ``adapter``'s module, bounded by ``WAIT`` seconds."""
    sf, backend = ADAPTERS[adapter]

    async def bounded() -> None:
        with anyio.fail_after(WAIT):
            await main(sf)

    anyio.run(bounded, backend=backend)


async def connect_unix(sf: Any, path: str, **options: Any) -> AsyncFlowLike:
    """``sf.connect_unix``, whose blocking flow (the socket adapter's) runs in threads."""
    if sf is sf_socket:
        return threaded(await anyio.to_thread.run_sync(partial(sf.connect_unix, path,
                                                               **options)))
    flow: AsyncFlowLike = await sf.connect_unix(path, **options)
    return flow


def tls_of(flow: AsyncFlowLike) -> Any:
    """The flow's ``tls``, also through ``threaded``."""
    adapter_flow: Any = getattr(flow, "flow", flow)
    return adapter_flow.tls


async def read_all(flow: AsyncFlowLike) -> tuple[bytes, object]:
    chunks = []
    while type(result := await flow.read()) is Ok:
        chunks.append(result.value)
    return b"".join(chunks), result


# -- serve_unix and connect_unix with TLS ------------------------------------------------------


async def answer_after_eof(flow: Any) -> None:
    """Read the whole request, then answer: after the client's close_notify."""
    assert flow.tls is not None
    request, end = await read_all(flow)
    assert end == Eof()
    await flow.write(b"got %d bytes" % len(request))


def blocking_answer_after_eof(flow: Any) -> None:
    assert flow.tls is not None
    size = 0
    while type(result := flow.read()) is Ok:
        size += len(result.value)
    assert result == Eof()
    flow.write(b"got %d bytes" % size)


@contextlib.asynccontextmanager
async def tls_server(sf: Any, path: str, server_ctx: ssl.SSLContext) -> Any:
    if sf is sf_socket:
        with sf.serve_unix(blocking_answer_after_eof, path, ssl=server_ctx) as server:
            yield server
    else:
        async with sf.serve_unix(answer_after_eof, path, ssl=server_ctx) as server:
            yield server


def test_a_tls_echo_with_half_close_over_a_unix_socket(adapter: str, path: str,
                                                       server_ctx: ssl.SSLContext,
                                                       client_ctx: ssl.SSLContext) -> None:
    """The client's shutdown(WRITE) is its close_notify: the server reads the request, then
    Eof(), and its answer still reaches the client, which reads Eof() at the server's
    close_notify. Both ends close cleanly."""
    async def main(sf: Any) -> None:
        async with tls_server(sf, path, server_ctx):
            flow = await connect_unix(sf, path, ssl=client_ctx, server_hostname=NAME)
            assert tls_of(flow).server_hostname == NAME
            assert await flow.write(b"x" * 300_000) == Ok(None)
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"got 300000 bytes", Eof())
            await flow.close(timeout=WAIT)
            assert flow.error is None

    run(adapter, main)


def test_a_context_without_hostname_checks_needs_no_server_hostname(
        adapter: str, path: str, server_ctx: ssl.SSLContext,
        client_ctx: ssl.SSLContext) -> None:
    client_ctx.check_hostname = False  # the certificate is still verified against the CA

    async def main(sf: Any) -> None:
        async with tls_server(sf, path, server_ctx):
            flow = await connect_unix(sf, path, ssl=client_ctx)
            assert tls_of(flow).server_hostname is None
            await flow.shutdown(Shutdown.WRITE)
            assert await read_all(flow) == (b"got 0 bytes", Eof())
            await flow.close(timeout=WAIT)
            assert flow.error is None

    run(adapter, main)


def test_a_wrong_name_fails_the_handshake_and_names_the_path(
        adapter: str, path: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
        caplog: pytest.LogCaptureFixture) -> None:
    async def main(sf: Any) -> None:
        async with tls_server(sf, path, server_ctx):
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                await connect_unix(sf, path, ssl=client_ctx, server_hostname="wrong.test")
            assert str(caught.value).startswith(f"{path}: TLS certificate verification failed")
            for _ in range(500):  # the server's side of it ends on its own task or thread
                if caplog.records:
                    break
                await anyio.sleep(0.01)

    with caplog.at_level(logging.WARNING, logger="sansflow"):
        run(adapter, main)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "BAD_CERTIFICATE" in caplog.records[0].getMessage()  # the alert, not a cut


# -- bad arguments: refused before any I/O -----------------------------------------------------


def bad_connects(sf: Any, path: str, client_ctx: ssl.SSLContext
                 ) -> list[tuple[type[Exception], str, Callable[[], Any]]]:
    """Connects to ``path``, where nothing listens, each with one bad argument."""
    return [
        (ValueError, "a socket path names no host",
         partial(sf.connect_unix, path, ssl=True)),
        (ValueError, "a socket path names no host",
         partial(sf.connect_unix, path, ssl=client_ctx)),
        (ValueError, "server_hostname is only for TLS",
         partial(sf.connect_unix, path, server_hostname=NAME)),
        (TypeError, "ssl must be an ssl.SSLContext or True",
         partial(sf.connect_unix, path, ssl="yes")),
        (TypeError, "server_hostname must be a str or None",
         partial(sf.connect_unix, path, ssl=client_ctx, server_hostname=b"localhost")),
    ]


def bad_serves(sf: Any, path: str, server_ctx: ssl.SSLContext
               ) -> list[tuple[type[Exception], str, Callable[[], Any]]]:
    return [
        (TypeError, "ssl must be an ssl.SSLContext, not True",
         partial(sf.serve_unix, print, path, ssl=True)),
        (ValueError, "timeout must be at least 0 seconds",
         partial(sf.serve_unix, print, path, ssl=server_ctx, handshake_timeout=-1)),
        (TypeError, "timeout must be a number of seconds or None",
         partial(sf.serve_unix, print, path, ssl=server_ctx, handshake_timeout="1")),
    ]


async def attempt(call: Callable[[], Any]) -> None:
    """``call()``, awaited where it is a coroutine (the async adapters' connects)."""
    result = call()
    if inspect.isawaitable(result):
        await result


def test_bad_tls_arguments_are_refused_before_any_io(
        adapter: str, path: str, server_ctx: ssl.SSLContext,
        client_ctx: ssl.SSLContext) -> None:
    """Nothing listens at ``path``: a connect that got as far as I/O would raise
    ``FileNotFoundError``. A server is refused when it is made, before it listens."""
    async def main(sf: Any) -> None:
        for kind, text, call in bad_connects(sf, path, client_ctx):
            with pytest.raises(kind, match=text):
                await attempt(call)
        for kind, text, call in bad_serves(sf, path, server_ctx):
            with pytest.raises(kind, match=text):
                call()
        assert not Path(path).exists()

    run(adapter, main)


def test_the_missing_server_hostname_error_says_what_to_pass(path: str) -> None:
    text = ("ssl checks the server's name (check_hostname) but a socket path names no host to "
            "default to: pass server_hostname (the name the certificate must show), or a "
            "context with check_hostname=False")
    with pytest.raises(ValueError, match=f"^{re.escape(text)}$"):
        sf_socket.connect_unix(path, ssl=True)


# -- against ssl.SSLSocket ---------------------------------------------------------------------


@contextlib.contextmanager
def ssl_peer(path: str, server_ctx: ssl.SSLContext, script: Callable[[ssl.SSLSocket], None]
             ) -> Iterator[list[BaseException]]:
    """A TLS server at ``path`` on a thread, written with ``ssl.SSLSocket``: it accepts one
    connection, runs ``script`` on it, then keeps the socket open until the block ends.
    Yields the list its failure goes to."""
    failures: list[BaseException] = []
    done = threading.Event()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(WAIT)

    def serve() -> None:
        try:
            sock, _ = listener.accept()
            sock.settimeout(WAIT)
            with server_ctx.wrap_socket(sock, server_side=True) as tls:
                script(tls)
                done.wait(WAIT)
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)

    thread = threading.Thread(target=serve, name="test-ssl-peer", daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        done.set()
        thread.join(WAIT)
        listener.close()


@pytest.mark.parametrize("size", [10, 1024 * 1024], ids=["short", "past-the-receive-limit"])
def test_close_ends_once_both_close_notifys_are_through(adapter: str, path: str, size: int,
                                                        server_ctx: ssl.SSLContext,
                                                        client_ctx: ssl.SSLContext) -> None:
    """The peer sends its last words and ends TLS with ``unwrap()`` (its close_notify, then
    ours), keeping the socket open, as a program that goes on in plaintext does. The reader
    gets the words, then Eof(), also when they came past the receive limit (the close_notify
    then waits below until the reader makes room); our close() is done once our FIN is out,
    and waits for no FIN of the peer's, which never comes: the same end as without TLS, once
    the peer's EOF has arrived."""
    words = bytes(range(256)) * (size // 256) or b"last words"
    unwrapped: list[socket.socket] = []

    def send_then_unwrap(tls: ssl.SSLSocket) -> None:
        tls.sendall(words)
        unwrapped.append(tls.unwrap())  # returns once our close_notify is in

    async def main(sf: Any) -> None:
        with ssl_peer(path, server_ctx, send_then_unwrap) as failures:
            flow = await connect_unix(sf, path, ssl=client_ctx, server_hostname=NAME,
                                      receive_limit=4096)
            assert await read_all(flow) == (words, Eof())
            await flow.close()  # waiting for the peer's FIN would run into the test's bound
            assert flow.error is None
            while not (unwrapped or failures):
                await anyio.sleep(0.01)
            assert failures == []
            assert unwrapped[0].recv(1) == b""  # our FIN, after our close_notify

    run(adapter, main)


def test_a_reader_gets_what_arrived_past_its_receive_limit(adapter: str, path: str,
                                                          server_ctx: ssl.SSLContext,
                                                          client_ctx: ssl.SSLContext) -> None:
    """The peer sends far more than the flow's receive limit, then nothing more (its socket
    stays open): the records the flow received but did not decrypt yet, past the limit,
    reach the reader without another byte from the peer."""
    data = bytes(range(256)) * 4096  # 1 MiB

    async def main(sf: Any) -> None:
        with ssl_peer(path, server_ctx, lambda tls: tls.sendall(data)) as failures:
            flow = await connect_unix(sf, path, ssl=client_ctx, server_hostname=NAME,
                                      receive_limit=4096)
            got = bytearray()
            while len(got) < len(data):
                result = await flow.read()
                assert type(result) is Ok, (len(got), result)
                got += result.value
            assert got == data
            assert failures == []
            await flow.abort()

    run(adapter, main)
