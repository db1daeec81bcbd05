"""httpx and httpcore over sansflow: ``FlowBackend``, an ``httpcore.AsyncNetworkBackend`` whose
connections are flows of the anyio adapter, and ``FlowTransport``, the httpx transport that
uses it. Both run on anyio's asyncio and trio backends, as httpx does.

Usage (``pip install "sansflow[anyio,httpx]"``; a sketch, which needs a server on port
8000: docs/adapters.md has a program that runs as it is)::

    import httpx
    from sansflow.adapters.httpcore import FlowTransport

    async with httpx.AsyncClient(transport=FlowTransport()) as client:
        response = await client.get("http://127.0.0.1:8000/")

httpx's own ``AsyncHTTPTransport`` builds its connection pool itself and takes no network
backend; the way httpx offers for anything else is a transport of one's own
(``httpx.AsyncBaseTransport``). ``FlowTransport(**pool_options)`` is that transport around
``httpcore.AsyncConnectionPool(network_backend=FlowBackend(), **pool_options)``: the options
are the pool's (``ssl_context``, ``max_connections``, ``http2``, ``retries``, ``uds``...), and
it raises httpx's own exceptions (``httpx.ReadError`` for a connection reset mid-body,
``httpx.ConnectError``, the timeouts), as httpx's transport does. With httpcore alone, give
the backend to a pool: ``httpcore.AsyncConnectionPool(network_backend=FlowBackend())``.

What the flows change: HTTPS is the core's ``TlsLayer``; a connection that httpcore lets go
of is released without waiting for the server's end (our FIN, or close_notify then FIN, after
whatever is queued), and reset if that takes more than ``CLOSE_TIMEOUT`` seconds.
"""

from __future__ import annotations

import select
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import anyio
import httpcore
import httpx
from anyio.abc import SocketAttribute
from httpcore import AsyncNetworkBackend, AsyncNetworkStream

from sansflow import Eof, Flow, Ok, ReadResult, ReceiveState, WriteResult, error_message

from . import anyio as sf
from ._anyio_flow import AnyioFlow
from ._connect import where

__all__ = ["CLOSE_TIMEOUT", "FlowBackend", "FlowNetworkStream", "FlowTransport"]

CLOSE_TIMEOUT = 5.0
"""Seconds ``FlowNetworkStream.aclose`` lets what is queued leave before it resets."""

_SocketOption = (tuple[int, int, int] | tuple[int, int, bytes | bytearray]
                 | tuple[int, int, None, int])


class FlowNetworkStream(AsyncNetworkStream):
    """An ``httpcore.AsyncNetworkStream`` over an ``AnyioFlow``: what httpcore's own backends
    answer, with their exceptions (``ReadError``, ``WriteError``, their timeouts)."""

    def __init__(self, flow: AnyioFlow) -> None:
        self._flow = flow

    @property
    def flow(self) -> AnyioFlow:
        return self._flow

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` at the server's end. A read that times out loses
        nothing: the data comes with the next read."""
        with anyio.move_on_after(_seconds(timeout)) as waited:
            result = await self._flow.read(max_bytes)
        if waited.cancelled_caught:
            raise httpcore.ReadTimeout(f"no data from {self._where()} within {timeout} s")
        if type(result) is Ok:
            return result.value
        if type(result) is Eof:
            return b""
        _raise(result, httpcore.ReadError)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Queue ``buffer``; waits only while the flow's send queue is full (the server does
        not read). A write that times out has queued nothing."""
        if not buffer:
            return
        with anyio.move_on_after(_seconds(timeout)) as waited:
            result = await self._flow.write(buffer)
        if waited.cancelled_caught:
            raise httpcore.WriteTimeout(f"{self._where()} took no data within {timeout} s")
        if type(result) is not Ok:
            _raise(result, httpcore.WriteError)

    async def aclose(self) -> None:
        with anyio.move_on_after(CLOSE_TIMEOUT):
            await self._flow._detach()  # resets the connection if cancelled

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> AsyncNetworkStream:
        """TLS over this stream's flow (``wrap_tls``). As with httpcore's own backends, a
        server's end without close_notify reads as the end: HTTP frames its own data."""
        try:
            await sf.wrap_tls(self._flow, ssl_context, server_hostname=server_hostname,
                              require_close_notify=False, handshake_timeout=timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        """``"ssl_object"`` (the TLS session's ``ssl.SSLObject``), ``"client_addr"``,
        ``"server_addr"``, ``"socket"``, and ``"is_readable"``: whether the server sent
        anything (data, its end, a reset) that no read took yet."""
        flow = self._flow
        if info == "ssl_object":  # the outermost TLS layer's session
            return flow._layers[-1].ssl_object if flow._layers else None
        if info == "client_addr":
            return flow.sockname
        if info == "server_addr":
            return flow.peername
        if info == "socket":
            return flow.stream.extra(SocketAttribute.raw_socket, None)
        if info == "is_readable":
            sock = flow.stream.extra(SocketAttribute.raw_socket, None)
            return (flow.buffered > 0 or flow.receive_state is not ReceiveState.OPEN
                    or (sock is not None and bool(select.select([sock], [], [], 0)[0])))
        return None

    def _where(self) -> str:
        peer = self._flow.peername
        return where(str(peer[0]), peer[1]) if isinstance(peer, tuple) else str(peer)


class FlowBackend(AsyncNetworkBackend):
    """An ``httpcore.AsyncNetworkBackend`` whose streams are flows of the anyio adapter. A
    connect that fails raises ``httpcore.ConnectError`` (``ConnectTimeout`` after
    ``timeout`` seconds), from the adapter's exception, which names the address."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[_SocketOption] | None = None
                          ) -> AsyncNetworkStream:
        with _connect_errors():
            stream = await sf._opened(
                lambda: anyio.connect_tcp(host, port, local_host=local_address),
                where(host, port), timeout)
        return _configured(AnyioFlow(stream, Flow()), socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[_SocketOption] | None = None
                                  ) -> AsyncNetworkStream:
        with _connect_errors():
            flow = await sf.connect_unix(path, timeout=timeout)
        return _configured(flow, socket_options)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class FlowTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose connections are sansflow flows (see the module's text)."""

    def __init__(self, **pool_options: Any) -> None:
        self._pool = httpcore.AsyncConnectionPool(network_backend=FlowBackend(), **pool_options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_ResponseStream(response.stream),
                              extensions=response.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()


class _ResponseStream(httpx.AsyncByteStream):
    """A response body from httpcore, whose failures are httpx's exceptions."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        with _httpx_errors():
            await self._stream.aclose()


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as httpx's classes of the same names (``httpcore.ReadError`` as
    ``httpx.ReadError``...), the way httpx's own transport reports them."""
    try:
        yield
    except Exception as exc:
        for cls in type(exc).__mro__:
            if cls.__module__.startswith("httpcore"):
                twin = getattr(httpx, cls.__name__, None)
                if isinstance(twin, type) and issubclass(twin, httpx.TransportError):
                    raise twin(str(exc)) from exc
        raise


@contextmanager
def _connect_errors() -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(str(exc)) from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc


def _configured(flow: AnyioFlow, socket_options: Iterable[_SocketOption] | None
                ) -> FlowNetworkStream:
    """``flow``'s stream for httpcore, with ``socket_options`` set on its socket."""
    sock = flow.stream.extra(SocketAttribute.raw_socket)
    for option in socket_options or ():
        sock.setsockopt(*option)
    return FlowNetworkStream(flow)


def _raise(result: ReadResult | WriteResult, error: type[httpcore.NetworkError]) -> NoReturn:
    """``error`` for a result that is not ``Ok``: the flow's error, or its closed side."""
    if type(result) is Eof:
        raise error("the connection's sending side is closed")
    failure = result.error  # type: ignore[union-attr]  # neither Ok nor Eof: an Error
    raise error(error_message(failure)) from failure.cause


def _seconds(timeout: float | None) -> float:
    return float("inf") if timeout is None else timeout
