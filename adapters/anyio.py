"""The anyio adapter: a ``sansflow.Flow`` carried over an anyio byte stream, on anyio's asyncio
and trio backends alike.

Usage, an echo server and a client that half-closes (the program runs as it is, and
with ``backend="trio"`` too)::

    import anyio

    from sansflow import AsyncFlow, Eof, Error, Ok, Shutdown, error_message
    from sansflow.adapters import anyio as sf


    async def echo(flow: AsyncFlow) -> None:
        async for data in flow:  # until the client's EOF
            await flow.write(data)


    async def main() -> None:
        async with sf.serve(echo, "127.0.0.1", 0) as server, \
                await sf.connect("127.0.0.1", server.port) as flow:  # closed at the end
            await flow.write(b"hello")
            await flow.shutdown(Shutdown.WRITE)  # our EOF; the echo still comes
            match await flow.read():
                case Ok(data): print(data)
                case Eof(): print("the server sent nothing")
                case Error(error): print(error_message(error))


    anyio.run(main, backend="asyncio")

``connect``, ``connect_unix``, ``wrap``, ``serve``, ``serve_unix``, ``wrap_tls``, ``copy`` and
``proxy`` take the same arguments and raise the same exceptions as on the other adapters;
``wrap`` also takes any ``anyio.abc.ByteStream``. ``Server.run`` serves under anyio's
``await task_group.start(server.run)``, which returns the port. ``FlowByteStream(flow)`` is
the other way round: an ``anyio.abc.ByteStream`` over a flow, for code written against
anyio's streams.

How a flow moves its bytes is told in ``sansflow.adapters._anyio_flow``.
"""

from __future__ import annotations

import math
import os as _os
import socket as _stdlib_socket
import ssl as ssl_
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream, TaskGroup, TaskStatus
from anyio.lowlevel import checkpoint_if_cancelled

from sansflow import (
    HIGH_WATER,
    LOW_WATER,
    RECEIVE_LIMIT,
    CopyStats,
    Flow,
    ProxyResult,
)
from sansflow._adapter import check_timeout

from ._anyio_flow import AnyioFlow
from ._anyio_stream import FlowByteStream
from ._common import check_connected, receive_ended
from ._connect import (
    BACKLOG,
    UnixPath,
    check_address,
    check_path,
    connect_failed,
    connect_timed_out,
    where,
)
from ._copy import ANYIO, AsyncEnd, _copy, _proxy
from ._handshake import (
    HANDSHAKE_TIMEOUT,
    check_wrap_tls,
    handshaken,
    log_failed_handshake,
    new_layer,
    peer_of,
    tls_context,
    unix_tls_context,
)
from ._server import GRACE, AsyncServerBase, run_async_handler, server_options

__all__ = [
    "AnyioFlow", "FlowByteStream", "Server", "connect", "connect_unix", "copy", "proxy", "serve",
    "serve_unix", "wrap", "wrap_tls",
]


# The flows' module name is the one users import them from.
AnyioFlow.__module__ = __name__


# -- opening flows ---------------------------------------------------------------------------


async def wrap(sock: _stdlib_socket.socket | ByteStream, *, high_water: int = HIGH_WATER,
               low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT) -> AnyioFlow:
    """A flow over ``sock``, which the flow now owns (it closes it when the flow ends).

    ``sock`` is a connected ``socket.socket`` (TCP, or AF_UNIX such as one end of a
    ``socket.socketpair()``), or any ``anyio.abc.ByteStream``: an anyio socket stream (whose
    socket is checked as a ``socket.socket`` is), a memory stream, another library's stream.
    A stream that cannot half-close makes our EOF a full close: see ``_anyio_flow``.

    A socket (also the one under a socket stream) that is not a connected stream socket
    raises ``ValueError`` and stays as it was; one whose connection already ended gives a
    flow that reads what the peer sent, then how it ended. Cancelled, it leaves ``sock`` to
    its owner as it was.
    """
    if not isinstance(sock, (ByteStream, _stdlib_socket.socket)):
        raise TypeError(
            f"wrap() takes a socket.socket or an anyio ByteStream, not {type(sock).__name__}")
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    await checkpoint_if_cancelled()  # before anything is taken from the socket
    if isinstance(sock, _stdlib_socket.socket):
        # anyio makes streams of connected sockets only: a connection that ended with an
        # error waiting is read here, as one whose error was taken already.
        if check_connected(sock) or not _has_peer(sock):
            receive_ended(sock, core)
            flow = AnyioFlow(_ENDED, core, sock=sock)
            flow._released = True  # the connection is over: the flow needs no stream
            sock.close()
            return flow
        return AnyioFlow(_reading_on_demand(await SocketStream.from_socket(sock)), core)
    raw = sock.extra(SocketAttribute.raw_socket, None)
    flow = AnyioFlow(sock, core)
    if raw is not None and check_connected(raw):
        receive_ended(raw, core)
        await flow._release(graceful=True)
    return flow


async def connect(host: str, port: int, *, timeout: float | None = None,
                  ssl: ssl_.SSLContext | bool | None = None, server_hostname: str | None = None,
                  high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
                  receive_limit: int = RECEIVE_LIMIT) -> AnyioFlow:
    """Open a TCP connection to ``host`` (a name, an IPv4 or an IPv6 address) and return its
    flow.

    Every address the name resolves to is tried in turn, the next one as soon as the last
    failed or 0.25 s after it started (``anyio.connect_tcp``'s happy eyeballs); the first to
    connect wins. A connect that fails raises ``ConnectionRefusedError`` when every address
    refused, ``socket.gaierror`` when the name does not resolve, ``TimeoutError`` when
    ``timeout`` seconds pass first (for the whole connect), else the ``OSError`` of the first
    address that failed otherwise; each names host and port. After that, I/O failures are
    ``Error`` results.

    With ``ssl`` (an ``ssl.SSLContext``, or ``True`` for ``ssl.create_default_context()``)
    the flow carries TLS, and ``connect`` returns once the handshake is done (``timeout``
    covers it too). ``server_hostname`` (default: ``host``) is what the certificate must
    name, and what SNI sends. A handshake that fails raises the ssl module's exception for
    it (``ssl.SSLCertVerificationError`` for a certificate), whose text is the failure's
    ``error_message``; the alert still reaches the server.
    """
    check_address(host, port)
    check_timeout(timeout)
    context = tls_context(ssl, server_hostname)
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    started = anyio.current_time()
    stream = await _opened(lambda: anyio.connect_tcp(host, port), where(host, port), timeout)
    return await _connected(stream, core, context, server_hostname or host, where(host, port),
                            timeout, started)


async def connect_unix(path: UnixPath, *, timeout: float | None = None,
                       ssl: ssl_.SSLContext | bool | None = None,
                       server_hostname: str | None = None, high_water: int = HIGH_WATER,
                       low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT
                       ) -> AnyioFlow:
    """``connect`` for an AF_UNIX stream socket at ``path``: the same flow and failures (a
    path where nothing listens is ``ConnectionRefusedError``, a missing one
    ``FileNotFoundError``). ``abort()`` cannot send a reset over AF_UNIX: the peer sees the
    connection end, as it would after ``close``.

    ``ssl`` and ``server_hostname`` are ``connect``'s, except that a path names no host:
    with a context that checks the server's name (``True``'s does), ``server_hostname`` is
    required (``ValueError`` without it)."""
    check_path(path)
    check_timeout(timeout)
    context = unix_tls_context(ssl, server_hostname)
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    started = anyio.current_time()
    stream = await _opened(partial(anyio.connect_unix, path), _os.fsdecode(path), timeout)
    return await _connected(stream, core, context, server_hostname, _os.fsdecode(path),
                            timeout, started)


async def _connected(stream: SocketStream, core: Flow, context: ssl_.SSLContext | None,
                     server_hostname: str | None, where: str, timeout: float | None,
                     started: float) -> AnyioFlow:
    """The flow over the stream a connect opened, with TLS once its handshake is done when
    there is a ``context``, within what is left of ``timeout`` since ``started``."""
    flow = AnyioFlow(stream, core)
    if context is not None:
        flow._add_layer(new_layer(core, context, server_hostname=server_hostname))
        left = None if timeout is None else timeout - (anyio.current_time() - started)
        await handshaken(flow, where, left, anyio.move_on_after, stated=timeout)
    return flow


async def _opened(opening: Callable[[], Awaitable[SocketStream]], where: str,
                  timeout: float | None) -> SocketStream:
    """The stream ``opening`` connects within ``timeout``, or the exception that says why not
    (``connect_failed``, ``connect_timed_out``), the same as on every adapter."""
    try:
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            return await opening()
    except OSError as exc:
        # anyio.connect_tcp raises one OSError for all its attempts, caused by the one
        # attempt's error or a group of each one's; anything else is the attempt's own.
        # No `from`: connect_failed makes the error it reports from the cause.
        cause = exc.__cause__
        attempts = getattr(cause, "exceptions", None)
        errors = list(attempts) if attempts else [cause if isinstance(cause, OSError) else exc]
        raise connect_failed(where, errors)  # noqa: B904
    assert timeout is not None
    raise connect_timed_out(where, timeout)


async def wrap_tls(flow: AnyioFlow, ssl_context: ssl_.SSLContext, *, server_side: bool = False,
                   server_hostname: str | None = None, require_close_notify: bool = True,
                   handshake_timeout: float | None = None) -> AnyioFlow:
    """Start TLS on ``flow`` (after a plaintext exchange: STARTTLS; or inside a TLS flow, for
    a session in a tunnel) and return it once the handshake is done: the same flow, which
    reads and writes plaintext over TLS from then on (``flow.tls`` tells the session).

    ``require_close_notify=False`` reads a peer's end without TLS close_notify as ``Eof()``
    instead of ``Error(TRUNCATED)``: for protocols that frame their own data (HTTP/1.1). A
    handshake that fails or takes more than ``handshake_timeout`` seconds raises, as
    ``connect`` does.
    """
    check_wrap_tls(flow, AnyioFlow, ssl_context, handshake_timeout)
    flow._add_layer(new_layer(flow._core, ssl_context, server_side=server_side,
                              server_hostname=server_hostname,
                              require_close_notify=require_close_notify))  # checks the rest
    await handshaken(flow, peer_of(flow), handshake_timeout, anyio.move_on_after)
    return flow


def _has_peer(sock: _stdlib_socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _reading_on_demand(stream: SocketStream) -> SocketStream:
    """``stream``, reading from its socket only while the flow receives.

    anyio's asyncio backend leaves the transport of an accepted or wrapped TCP stream
    reading (``connect_tcp`` pauses it), and its ``receive`` pauses it again only after a
    wait: the transport would queue whatever the peer sends, past the receive limit. Its
    ``receive`` resumes the transport whenever it has to wait, so pausing it once is enough.
    """
    transport = getattr(stream, "_transport", None)  # the asyncio backend's streams only
    if transport is not None:
        transport.pause_reading()
    return stream


class _Ended(ByteStream):
    """The stream of a flow whose connection ended before ``wrap()``. The flow is released
    from the start, so none of these is ever called."""

    async def receive(self, max_bytes: int = 65536) -> bytes:  # pragma: no cover
        raise anyio.ClosedResourceError

    async def send(self, item: bytes) -> None:  # pragma: no cover
        raise anyio.ClosedResourceError

    async def send_eof(self) -> None:  # pragma: no cover
        raise anyio.ClosedResourceError

    async def aclose(self) -> None:  # pragma: no cover
        raise anyio.ClosedResourceError


_ENDED = _Ended()


# -- copy and proxy --------------------------------------------------------------------------


async def copy(src: AsyncEnd, dst: AsyncEnd) -> CopyStats:
    """Copy src to dst until src ends, then pass its end on: src's EOF becomes dst's
    ``shutdown(WRITE)``, a failure of src ``dst.abort()``. Returns the direction's stats."""
    return await _copy(ANYIO, src, dst)


async def proxy(a: AsyncEnd, b: AsyncEnd, *, idle_timeout: float | None = None) -> ProxyResult:
    """Copy a to b and b to a at once until both ended (``sansflow.adapters._copy``)."""
    return await _proxy(ANYIO, a, b, idle_timeout)


# -- serving ---------------------------------------------------------------------------------

Handler = Callable[[AnyioFlow], Awaitable[object]]


class Server(AsyncServerBase[Handler]):
    """A listening server that runs a handler per accepted flow; an async context manager.

    ``async with serve(handler, "127.0.0.1", 0) as server:`` listens on entry; ``server.port``
    is the bound port (``server.path`` for ``serve_unix``), ``await server.serve_forever()``
    waits until the server stops. Each handler runs in its own task with its own flow; when it
    returns, the flow is closed (``close(timeout=10)``) unless already CLOSED; if it raises,
    the exception is logged on the ``"sansflow"`` logger, the flow is aborted and the server
    keeps serving. Leaving the block stops accepting, gives the handlers still running
    ``grace`` seconds to finish, then cancels the rest (their flows are aborted) and waits for
    them: no task and no socket outlives the block.
    An exception leaving the block comes out as it is, not in an exception group.
    """

    __slots__ = ("_accepting", "_all_done", "_handshake_timeout", "_listen", "_listener",
                 "_running", "_tasks", "_tasks_manager", "_tls")

    _RUNS_ONCE = "a server runs once"

    def __init__(self, handler: Handler,
                 listen: Callable[[], Awaitable[anyio.abc.Listener[SocketStream]]], *,
                 options: dict[str, int], grace: float, tls: ssl_.SSLContext | None = None,
                 handshake_timeout: float | None = None, path: UnixPath | None = None) -> None:
        super().__init__(handler, options, path, grace=grace)
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._listen = listen
        self._listener: anyio.abc.Listener[SocketStream] | None = None
        self._tasks_manager: AbstractAsyncContextManager[TaskGroup] | None = None
        self._tasks: TaskGroup | None = None
        self._accepting = anyio.CancelScope()  # around the accept loop alone
        self._running = 0  # handlers running
        self._all_done: anyio.Event | None = None  # set when the last one ends, once stopping

    async def __aenter__(self) -> Server:
        self._enter_once(anyio.Event())
        self._listener = listener = await self._listen()
        self._bound(listener.extra(SocketAttribute.raw_socket))
        self._tasks_manager = anyio.create_task_group()
        self._tasks = await self._tasks_manager.__aenter__()
        # The listener already listens: connections wait in the kernel until it accepts.
        self._tasks.start_soon(self._accept)
        return self

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the port (the path for ``serve_unix``) and serve until cancelled:
        ``port = await task_group.start(serve(handler, host, 0).run)``."""
        async with self:
            task_status.started(self.port if self.path is None else self.path)
            await anyio.sleep_forever()

    async def _accept(self) -> None:
        assert self._listener is not None
        with self._accepting:
            await self._listener.serve(self._run, task_group=self._tasks)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._tasks is not None
        assert self._tasks_manager is not None
        assert self._stopped is not None
        assert self._listener is not None
        self._stopped.set()
        self._accepting.cancel()
        if self._running and self._grace > 0:
            # Handlers still running get ``grace`` seconds to finish on their own, even when
            # the block is left by a cancellation.
            done = self._all_done = anyio.Event()
            with anyio.CancelScope(shield=True) as waiting:
                waiting.deadline = anyio.current_time() + self._grace
                await done.wait()
        self._tasks.cancel_scope.cancel()
        # Only a cancellation goes into the task group (it may be the group's own, which it
        # takes back); any other exception leaves the block as it is, where the group would
        # wrap it in an exception group.
        cancelled = exc if isinstance(exc, anyio.get_cancelled_exc_class()) else None
        try:
            await self._tasks_manager.__aexit__(
                type(cancelled) if cancelled else None, cancelled, tb if cancelled else None)
        finally:
            with anyio.CancelScope(shield=True):
                await self._listener.aclose()
            self._unbound()

    async def _run(self, stream: SocketStream) -> None:
        self._running += 1
        try:
            flow = AnyioFlow(_reading_on_demand(stream), self._new_core())
            if self._tls is not None:
                flow._add_layer(new_layer(flow._core, self._tls, server_side=True))
                try:
                    await handshaken(flow, peer_of(flow), self._handshake_timeout,
                                     anyio.move_on_after)
                except OSError as exc:
                    log_failed_handshake(exc)
                    return
            # Cancelled (the server stops): abort() aborts the flow even so.
            await run_async_handler(self._handler, flow, AnyioFlow.abort)
        finally:
            self._running -= 1
            if not self._running and self._all_done is not None:
                self._all_done.set()


def serve(handler: Handler, host: str | None, port: int, *, backlog: int = BACKLOG,
          grace: float = GRACE, ssl: ssl_.SSLContext | None = None,
          handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
          low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT) -> Server:
    """A ``Server`` that gives each accepted TCP connection's flow to ``handler``.

    Use it as ``async with serve(handler, host, port) as server:``; ``server.port`` is the
    bound port. ``host`` ``None`` listens on every interface; a name listens on each of its
    addresses, all on one port (with port 0, the one picked for the first). The address and
    the flow options (``high_water``, ``low_water``, ``receive_limit``), which apply to every
    accepted flow, are checked here. ``grace`` is how many seconds stopping the server lets
    running handlers finish before they are cancelled (``math.inf``: as long as they take).

    With ``ssl`` (an ``ssl.SSLContext`` with the server's certificate) every flow carries
    TLS, and the handler gets it once the handshake is done. A connection whose handshake
    fails, or takes more than ``handshake_timeout`` seconds, is logged at WARNING on the
    ``"sansflow"`` logger and closed; the handler never sees it.
    """
    check_address(host, port, server=True)
    options = server_options(handler, high_water, low_water, receive_limit, grace)
    context = tls_context(ssl, server=True)
    check_timeout(handshake_timeout)
    listen = partial(anyio.create_tcp_listener, local_host=host, local_port=port,
                     backlog=backlog)
    return Server(handler, listen, options=options, grace=grace, tls=context,
                  handshake_timeout=handshake_timeout)


def serve_unix(handler: Handler, path: UnixPath, *, backlog: int = BACKLOG,
               grace: float = GRACE, ssl: ssl_.SSLContext | None = None,
               handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
               low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT) -> Server:
    """``serve`` on an AF_UNIX stream socket at ``path`` (``server.path``), with TLS as
    ``serve`` has it. A stale socket file there is replaced; the one made is removed when
    the server stops."""
    check_path(path)
    options = server_options(handler, high_water, low_water, receive_limit, grace)
    context = tls_context(ssl, server=True)
    check_timeout(handshake_timeout)
    listen = partial(anyio.create_unix_listener, path, backlog=backlog)
    return Server(handler, listen, options=options, grace=grace, tls=context,
                  handshake_timeout=handshake_timeout, path=path)
