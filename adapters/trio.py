"""The trio adapter: a ``sansflow.Flow`` carried over any trio stream.

Usage, an echo server and a client that half-closes (the program runs as it is)::

    import trio

    from sansflow import AsyncFlow, Eof, Error, Ok, Shutdown, error_message
    from sansflow.adapters import trio as sf


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


    trio.run(main)

``connect``, ``connect_unix``, ``wrap``, ``serve`` and ``serve_unix`` take the same arguments and
raise the same exceptions as on the other adapters; ``serve`` also runs under
``await nursery.start(sf.serve, handler, host, port)``, trio's way, which returns the port.

How a flow moves its bytes is told in ``sansflow.adapters._trio_flow``.
"""

from __future__ import annotations

import math
import os as _os
import socket as _stdlib_socket
import ssl as ssl_
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import TracebackType
from typing import Any, NoReturn, overload

import trio

from sansflow import (
    HIGH_WATER,
    LOW_WATER,
    RECEIVE_LIMIT,
    Eof,
    Error,
    ErrorKind,
    Flow,
    Ok,
    SendState,
    Shutdown,
    error_message,
)
from sansflow._adapter import check_timeout

from ._common import (
    check_connected,
    receive_ended,
)
from ._connect import (
    BACKLOG,
    UnixPath,
    check_address,
    check_path,
    connect_failed,
    connect_timed_out,
    remove_stale_socket_file,
    where,
)
from ._copy import copy_trio as copy
from ._copy import proxy_trio as proxy
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
from ._trio_flow import TrioFlow, _is_fake

__all__ = [
    "FlowStream", "Server", "TrioFlow", "connect", "connect_unix", "copy", "proxy", "serve",
    "serve_unix", "wrap", "wrap_tls",
]


# The flows' module name is the one users import them from.
TrioFlow.__module__ = __name__

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint


# -- opening flows ---------------------------------------------------------------------------


async def wrap(sock: _stdlib_socket.socket | trio.abc.Stream, *, high_water: int = HIGH_WATER,
               low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT) -> TrioFlow:
    """A flow over ``sock``, which the flow now owns (it closes it when the flow ends).

    ``sock`` is a connected ``socket.socket`` (TCP, or AF_UNIX such as one end of a
    ``socket.socketpair()``), carried by a ``trio.SocketStream``, or any trio stream: a
    ``trio.abc.HalfCloseableStream`` works as it is (a ``SocketStream`` gets exact partial
    sends and vectored ``sendmsg``); a plain ``trio.abc.Stream`` (``SSLStream``) works too, but
    cannot half-close: see the module documentation.

    A socket (also the one under a ``SocketStream``) that is not a connected stream socket
    raises ``ValueError`` and stays as it was; one whose connection already ended gives a
    flow that reads what the peer sent, then how it ended. Cancelled, it leaves ``sock`` to
    its owner as it was.
    """
    if not isinstance(sock, (trio.abc.Stream, _stdlib_socket.socket)):
        raise TypeError(
            f"wrap() takes a socket.socket or a trio stream, not {type(sock).__name__}")
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    await _checkpoint_if_cancelled()  # before anything is taken from the socket
    stream = sock
    if isinstance(stream, _stdlib_socket.socket):
        ended = check_connected(stream)  # before trio makes the socket non-blocking
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(stream))
    elif isinstance(stream, trio.SocketStream) and not _is_fake(stream.socket):
        ended = check_connected(stream.socket)
    else:
        ended = False  # another kind of stream: nothing underneath to look at
    flow = TrioFlow(stream, core)
    if ended:
        assert isinstance(stream, trio.SocketStream)
        receive_ended(stream.socket, core)
        flow._close_socket()  # the connection is over: the flow needs the socket no more
    return flow


async def connect(host: str, port: int, *, timeout: float | None = None,
                  ssl: ssl_.SSLContext | bool | None = None, server_hostname: str | None = None,
                  high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
                  receive_limit: int = RECEIVE_LIMIT) -> TrioFlow:
    """Open a TCP connection to ``host`` (a name, an IPv4 or an IPv6 address) and return its
    flow.

    Every address the name resolves to is tried in turn, the next one as soon as the last
    failed or 0.25 s after it started (``trio.open_tcp_stream``'s happy eyeballs); the first
    to connect wins. A connect that fails raises ``ConnectionRefusedError`` when every address
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
    started = trio.current_time()
    stream = await _opened(partial(trio.open_tcp_stream, host, port), where(host, port), timeout)
    return await _connected(stream, core, context, server_hostname or host, where(host, port),
                            timeout, started)


async def _connected(stream: trio.SocketStream, core: Flow, context: ssl_.SSLContext | None,
                     server_hostname: str | None, where: str, timeout: float | None,
                     started: float) -> TrioFlow:
    """The flow over the stream a connect opened, with TLS once its handshake is done when
    there is a ``context``, within what is left of ``timeout`` since ``started``."""
    flow = TrioFlow(stream, core)
    if context is not None:
        flow._add_layer(new_layer(core, context, server_hostname=server_hostname))
        left = None if timeout is None else timeout - (trio.current_time() - started)
        await handshaken(flow, where, left, trio.move_on_after, stated=timeout)
    return flow


async def wrap_tls(flow: TrioFlow, ssl_context: ssl_.SSLContext, *, server_side: bool = False,
                   server_hostname: str | None = None, require_close_notify: bool = True,
                   handshake_timeout: float | None = None) -> TrioFlow:
    """Start TLS on ``flow`` (after a plaintext exchange: STARTTLS; or inside a TLS flow, for
    a session in a tunnel) and return it once the handshake is done: the same flow, which
    reads and writes plaintext over TLS from then on (``flow.tls`` tells the session).

    ``require_close_notify=False`` reads a peer's end without TLS close_notify as ``Eof()``
    instead of ``Error(TRUNCATED)``: for protocols that frame their own data (HTTP/1.1). A
    handshake that fails or takes more than ``handshake_timeout`` seconds raises, as
    ``connect`` does.
    """
    check_wrap_tls(flow, TrioFlow, ssl_context, handshake_timeout)
    flow._add_layer(new_layer(flow._core, ssl_context, server_side=server_side,
                              server_hostname=server_hostname,
                              require_close_notify=require_close_notify))  # checks the rest
    await handshaken(flow, peer_of(flow), handshake_timeout, trio.move_on_after)
    return flow


async def connect_unix(path: UnixPath, *, timeout: float | None = None,
                       ssl: ssl_.SSLContext | bool | None = None,
                       server_hostname: str | None = None, high_water: int = HIGH_WATER,
                       low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT
                       ) -> TrioFlow:
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
    started = trio.current_time()
    stream = await _opened(partial(trio.open_unix_socket, path), _os.fsdecode(path), timeout)
    return await _connected(stream, core, context, server_hostname, _os.fsdecode(path),
                            timeout, started)


async def _opened(opening: Callable[[], Awaitable[trio.SocketStream]], where: str,
                  timeout: float | None) -> trio.SocketStream:
    """The stream ``opening`` connects within ``timeout``, or the exception that says why not
    (``connect_failed``, ``connect_timed_out``), the same as on every adapter."""
    try:
        with trio.move_on_after(math.inf if timeout is None else timeout):
            return await opening()
    except OSError as exc:
        # trio.open_tcp_stream raises one OSError for all its attempts, caused by the group
        # of each address's own error; anything else is the one attempt's error. No `from`:
        # connect_failed makes the error it reports from the cause.
        attempts = getattr(exc.__cause__, "exceptions", None)
        raise connect_failed(where, list(attempts) if attempts else [exc])  # noqa: B904
    assert timeout is not None
    raise connect_timed_out(where, timeout)


# -- serving ---------------------------------------------------------------------------------

Handler = Callable[[TrioFlow], Awaitable[object]]


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

    __slots__ = ("_accepting", "_all_done", "_handshake_timeout", "_listen", "_listeners",
                 "_nursery", "_nursery_manager", "_running", "_tls")

    _RUNS_ONCE = "a server runs once"

    def __init__(self, handler: Handler,
                 listen: Callable[[], Awaitable[list[trio.SocketListener]]], *,
                 options: dict[str, int], grace: float, tls: ssl_.SSLContext | None = None,
                 handshake_timeout: float | None = None, path: UnixPath | None = None) -> None:
        super().__init__(handler, options, path, grace=grace)
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._listen = listen
        self._listeners: list[trio.SocketListener] = []
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._accepting = trio.CancelScope()  # around the accept loop alone
        self._running = 0  # handlers running
        self._all_done: trio.Event | None = None  # set when the last one ends, once stopping

    @property
    def listeners(self) -> tuple[trio.SocketListener, ...]:
        """The listeners, while the server listens."""
        return tuple(self._listeners)

    async def __aenter__(self) -> Server:
        self._enter_once(trio.Event())
        self._listeners = await self._listen()
        self._bound(self._listeners[0].socket)
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        # The listeners already listen: connections wait in the kernel until it accepts.
        self._nursery.start_soon(self._accept)
        return self

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                  ) -> NoReturn:
        """Listen, report the port (the path for ``serve_unix``) and serve until cancelled:
        ``port = await nursery.start(serve(handler, host, 0, backlog=8).run)``, trio's way
        with every option named and typed."""
        async with self:
            task_status.started(self.port if self.path is None else self.path)
            await trio.sleep_forever()

    async def _accept(self) -> None:
        assert self._nursery is not None
        with self._accepting:
            await trio.serve_listeners(self._run, self._listeners, handler_nursery=self._nursery)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._nursery is not None
        assert self._nursery_manager is not None
        assert self._stopped is not None
        self._stopped.set()
        self._accepting.cancel()
        if self._running and self._grace > 0:
            # Handlers still running get ``grace`` seconds to finish on their own, even when
            # the block is left by a cancellation.
            done = self._all_done = trio.Event()
            with trio.CancelScope(shield=True, deadline=trio.current_time() + self._grace):
                await done.wait()
        self._nursery.cancel_scope.cancel()
        # Only a Cancelled goes into the nursery (it may be the nursery's own, which it takes
        # back); any other exception leaves the block as it is, where the nursery would wrap
        # it in an exception group.
        cancelled = exc if isinstance(exc, trio.Cancelled) else None
        try:
            await self._nursery_manager.__aexit__(
                type(cancelled) if cancelled else None, cancelled, tb if cancelled else None)
        finally:
            for listener in self._listeners:  # in case accepting never started
                listener.socket.close()
            self._listeners = []
            self._unbound()

    async def _run(self, stream: trio.SocketStream) -> None:
        self._running += 1
        try:
            flow = TrioFlow(stream, self._new_core())
            if self._tls is not None:
                flow._add_layer(new_layer(flow._core, self._tls, server_side=True))
                try:
                    await handshaken(flow, peer_of(flow), self._handshake_timeout,
                                     trio.move_on_after)
                except OSError as exc:
                    log_failed_handshake(exc)
                    return
            # Cancelled (the server stops): abort() aborts the flow even so.
            await run_async_handler(self._handler, flow, TrioFlow.abort)
        finally:
            self._running -= 1
            if not self._running and self._all_done is not None:
                self._all_done.set()


@overload
def serve(handler: Handler, host: str | None, port: int, *, task_status: None = None,
          backlog: int = BACKLOG, grace: float = GRACE, ssl: ssl_.SSLContext | None = None,
          handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
          low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT) -> Server: ...
@overload
def serve(handler: Handler, host: str | None, port: int, *, task_status: trio.TaskStatus[int],
          backlog: int = BACKLOG, grace: float = GRACE, ssl: ssl_.SSLContext | None = None,
          handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
          low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT
          ) -> Coroutine[Any, Any, NoReturn]: ...
def serve(handler: Handler, host: str | None, port: int, *,
          task_status: trio.TaskStatus[int] | None = None, backlog: int = BACKLOG,
          grace: float = GRACE, ssl: ssl_.SSLContext | None = None,
          handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
          low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT
          ) -> Server | Coroutine[Any, Any, NoReturn]:
    """A ``Server`` that gives each accepted TCP connection's flow to ``handler``.

    Use it as ``async with serve(handler, host, port) as server:``; ``server.port`` is the
    bound port. Or trio's way, ``port = await nursery.start(serve, handler, host, port)``:
    given ``task_status``, ``serve`` is a coroutine that listens, reports the bound port and
    serves until cancelled. ``host`` ``None`` listens on every interface; a name listens on
    each of its addresses, all on one port (with port 0, the one picked for the first). The
    address and the flow options (``high_water``, ``low_water``, ``receive_limit``), which
    apply to every accepted flow, are checked here. ``grace`` is how many seconds stopping
    the server lets running handlers finish before they are cancelled (``math.inf``: as long
    as they take).

    With ``ssl`` (an ``ssl.SSLContext`` with the server's certificate) every flow carries
    TLS, and the handler gets it once the handshake is done. A connection whose handshake
    fails, or takes more than ``handshake_timeout`` seconds, is logged at WARNING on the
    ``"sansflow"`` logger and closed; the handler never sees it.
    """
    check_address(host, port, server=True)
    options = server_options(handler, high_water, low_water, receive_limit, grace)
    context = tls_context(ssl, server=True)
    check_timeout(handshake_timeout)
    server = Server(handler, partial(_listen_tcp, host, port, backlog), options=options,
                    grace=grace, tls=context, handshake_timeout=handshake_timeout)
    return server if task_status is None else _serve_until_cancelled(server, task_status)


@overload
def serve_unix(handler: Handler, path: UnixPath, *, task_status: None = None,
               backlog: int = BACKLOG, grace: float = GRACE, ssl: ssl_.SSLContext | None = None,
               handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
               low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT) -> Server: ...
@overload
def serve_unix(handler: Handler, path: UnixPath, *, task_status: trio.TaskStatus[UnixPath],
               backlog: int = BACKLOG, grace: float = GRACE, ssl: ssl_.SSLContext | None = None,
               handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
               low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT
          ) -> Coroutine[Any, Any, NoReturn]: ...
def serve_unix(handler: Handler, path: UnixPath, *,
               task_status: trio.TaskStatus[UnixPath] | None = None, backlog: int = BACKLOG,
               grace: float = GRACE, ssl: ssl_.SSLContext | None = None,
               handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
               low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT
               ) -> Server | Coroutine[Any, Any, NoReturn]:
    """``serve`` on an AF_UNIX stream socket at ``path`` (``server.path``; what
    ``nursery.start`` returns), with TLS as ``serve`` has it. A stale socket file there is
    replaced; the one made is removed when the server stops."""
    check_path(path)
    options = server_options(handler, high_water, low_water, receive_limit, grace)
    context = tls_context(ssl, server=True)
    check_timeout(handshake_timeout)
    server = Server(handler, partial(_listen_unix, path, backlog), options=options,
                    grace=grace, tls=context, handshake_timeout=handshake_timeout, path=path)
    return server if task_status is None else _serve_until_cancelled(server, task_status)


async def _serve_until_cancelled(server: Server, task_status: trio.TaskStatus[Any]) -> NoReturn:
    """``serve`` run by ``nursery.start``."""
    await server.run(task_status=task_status)


async def _listen_tcp(host: str | None, port: int, backlog: int) -> list[trio.SocketListener]:
    """Listeners on each of ``host``'s addresses, all on the same port."""
    listeners: list[trio.SocketListener] = []
    try:
        addresses = await trio.socket.getaddrinfo(host, port, type=_stdlib_socket.SOCK_STREAM,
                                                  flags=_stdlib_socket.AI_PASSIVE)
        for address in dict.fromkeys(str(info[4][0]) for info in addresses):
            bound = port if not listeners else listeners[0].socket.getsockname()[1]
            listeners += await trio.open_tcp_listeners(bound, host=address, backlog=backlog)
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


async def _listen_unix(path: UnixPath, backlog: int) -> list[trio.SocketListener]:
    sock = trio.socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
    try:
        remove_stale_socket_file(path)
        await sock.bind(_os.fspath(path))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return [trio.SocketListener(sock)]




class FlowStream(trio.abc.HalfCloseableStream):
    """A ``trio.abc.HalfCloseableStream`` over a ``TrioFlow``, following trio's contract.

    ``receive_some`` returns ``b""`` at EOF; ``send_eof`` is ``flow.shutdown(WRITE)`` and is
    idempotent; ``send_all`` after ``send_eof`` or ``aclose`` raises
    ``trio.ClosedResourceError``; a flow error raises ``trio.BrokenResourceError`` from its
    cause; a second concurrent call on the same side raises ``trio.BusyResourceError``.
    ``send_all`` returns once its data is queued in the flow (like trio's memory streams);
    ``wait_send_all_might_not_block`` waits until the queue is flushed and the transport
    would take more. ``aclose`` lets the flow flush what is queued, then releases it without
    waiting for the peer's EOF (trio's meaning, not the seed's ``close``), and wakes a blocked
    ``receive_some`` with ``trio.ClosedResourceError``; if it is cancelled while flushing, the
    connection is reset instead (so the peer cannot take the end for a clean one). Every
    method is a checkpoint.
    """

    __slots__ = ("_closed", "_flow", "_receiving", "_sending")

    def __init__(self, flow: TrioFlow) -> None:
        if not isinstance(flow, TrioFlow):
            raise TypeError(f"FlowStream() takes a TrioFlow, not {type(flow).__name__}")
        self._flow = flow
        self._closed = False
        self._sending = False  # send_all, send_eof, wait_send_all_might_not_block
        self._receiving = False

    @property
    def flow(self) -> TrioFlow:
        return self._flow

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._claim_send()
        try:
            await self._check_open()
            result = await self._flow.write(data)
            if not isinstance(result, Ok):
                self._raise(result)
            # trio's streams let other tasks run in every call; the flow's write does not
            # when it queues at once. Shielded: the data is queued, so send_all succeeded.
            await _cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._claim_send()
        try:
            await self._check_open()
            await self._flow._wait_send_might_not_block()
            if self._closed:
                raise trio.ClosedResourceError("this FlowStream was closed")
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        self._claim_send()
        try:
            await self._check_open()
            await self._flow.shutdown(Shutdown.WRITE)
            error = self._flow.error
            if self._flow.send_state is SendState.FAILED and error is not None:
                self._raise(Error(error))
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await self._check_open()
            result = await self._flow.read(max_bytes)
            if self._closed:  # aclose() while we waited: trio says ClosedResourceError
                raise trio.ClosedResourceError("this FlowStream was closed")
            if isinstance(result, Ok):
                return result.value
            if isinstance(result, Eof):
                return b""
            self._raise(result)
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        self._closed = True
        await self._flow._detach()
        await trio.lowlevel.checkpoint()

    def _claim_send(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already using this stream's send side")
        self._sending = True

    async def _check_open(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("this FlowStream was closed")

    def _raise(self, result: Eof | Error) -> NoReturn:
        """trio's exception for a result that is not ``Ok``."""
        if isinstance(result, Eof):
            raise trio.ClosedResourceError("can't send data after sending EOF")
        error = result.error
        if self._closed or (error.kind is ErrorKind.ABORTED and error.cause is None):
            # We closed it (here, or with flow.abort()): trio calls that "closed", not "broken".
            raise trio.ClosedResourceError(f"the flow was closed: {error_message(error)}")
        raise trio.BrokenResourceError(error_message(error)) from error.cause
