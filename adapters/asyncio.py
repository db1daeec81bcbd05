"""sansflow over asyncio (and uvloop): ``connect``, ``connect_unix``, ``wrap``, ``serve``,
``serve_unix``, and the flows they give, ``AsyncioFlow``.

Usage, an echo server and a client that half-closes (the program runs as it is)::

    import asyncio

    from sansflow import AsyncFlow, Eof, Error, Ok, Shutdown, error_message
    from sansflow.adapters import asyncio as sf


    async def echo(flow: AsyncFlow) -> None:
        async for data in flow:  # until the client's EOF
            await flow.write(data)


    async def main() -> None:
        async with sf.serve(echo, "127.0.0.1", 0) as server, \
                await sf.connect("127.0.0.1", server.port, timeout=10) as flow:
            await flow.write(b"hello")
            await flow.shutdown(Shutdown.WRITE)  # our EOF; the echo still comes
            match await flow.read():
                case Ok(data): print(data)
                case Eof(): print("the server sent nothing")
                case Error(error): print(error_message(error))


    asyncio.run(main())

How a flow moves its bytes (one protocol object on an asyncio transport) is told in
``sansflow.adapters._asyncio_flow``.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import ssl as ssl_
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from sansflow import (
    HIGH_WATER,
    LOW_WATER,
    RECEIVE_LIMIT,
    Flow,
)
from sansflow._adapter import check_timeout

from ._asyncio_flow import AsyncioFlow, _Driver, _new_driver
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
    where,
)
from ._copy import copy_asyncio as copy
from ._copy import proxy_asyncio as proxy
from ._handshake import (
    HANDSHAKE_DEADLINE,
    HANDSHAKE_TIMEOUT,
    check_wrap_tls,
    handshake_failed,
    log_failed_handshake,
    new_layer,
    peer_of,
    tls_context,
    unix_tls_context,
)
from ._server import (
    GRACE,
    AsyncServerBase,
    run_async_handler,
    server_options,
)

__all__ = [
    "ATTEMPT_DELAY", "BACKLOG", "AsyncioFlow", "Server", "connect", "connect_unix", "copy",
    "proxy", "serve", "serve_unix", "wrap", "wrap_tls",
]

# The flows' module name is the one users import them from.
AsyncioFlow.__module__ = __name__

Handler = Callable[[AsyncioFlow], Awaitable[object]]


# -- opening flows ---------------------------------------------------------------------------


async def connect(host: str, port: int, *, timeout: float | None = None,
                  ssl: ssl_.SSLContext | bool | None = None, server_hostname: str | None = None,
                  high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
                  receive_limit: int = RECEIVE_LIMIT) -> AsyncioFlow:
    """Open a TCP connection to ``host`` (a name, an IPv4 or an IPv6 address) and return its
    flow.

    Every address the name resolves to is tried in turn, the next one as soon as the last
    failed or ``ATTEMPT_DELAY`` seconds after it started (happy eyeballs); the first to connect
    wins. A connect that fails raises ``ConnectionRefusedError`` when every address refused,
    ``socket.gaierror`` when the name does not resolve, ``TimeoutError`` when ``timeout``
    seconds pass first (for the whole connect), else the ``OSError`` of the first address
    that failed otherwise; each names host and port. After that, I/O failures are ``Error``
    results.

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
    driver = _client_driver(core, context, server_hostname or host)
    return await _connected(_open_tcp(driver, host, port), where(host, port), timeout)


def _client_driver(core: Flow, context: ssl_.SSLContext | None,
                   server_hostname: str | None) -> _Driver:
    """The driver a connect opens its connection with: TLS from the first byte when there is
    a ``context``."""
    driver = _new_driver(core, asyncio.get_running_loop())
    if context is not None:
        driver._add_layer(new_layer(core, context, server_hostname=server_hostname))
    return driver


async def _connected(opening: Awaitable[AsyncioFlow | list[OSError]], where: str,
                     timeout: float | None) -> AsyncioFlow:
    """The flow ``opening`` connected within ``timeout``, once its TLS handshake (if it has a
    layer) is done within what is left of it; or the exception that says why not.

    ``opening`` answers its errors instead of raising them, so that a ``TimeoutError`` here is
    always the deadline (a kernel's ``ETIMEDOUT`` is also a ``TimeoutError``)."""
    started = asyncio.get_running_loop().time()
    try:
        opened = await asyncio.wait_for(opening, timeout)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        assert timeout is not None
        raise connect_timed_out(where, timeout) from None
    if isinstance(opened, list):
        raise connect_failed(where, opened)
    if opened._layers:
        left = None if timeout is None else timeout - (asyncio.get_running_loop().time()
                                                       - started)
        await _handshaken(opened, where, left, stated=timeout)
    return opened


async def wrap_tls(flow: AsyncioFlow, ssl_context: ssl_.SSLContext, *, server_side: bool = False,
                   server_hostname: str | None = None, require_close_notify: bool = True,
                   handshake_timeout: float | None = None) -> AsyncioFlow:
    """Start TLS on ``flow`` (after a plaintext exchange: STARTTLS; or inside a TLS flow, for
    a session in a tunnel) and return it once the handshake is done: the same flow, which
    reads and writes plaintext over TLS from then on (``flow.tls`` tells the session).

    ``require_close_notify=False`` reads a peer's end without TLS close_notify as ``Eof()``
    instead of ``Error(TRUNCATED)``: for protocols that frame their own data (HTTP/1.1). A
    handshake that fails or takes more than ``handshake_timeout`` seconds raises, as
    ``connect`` does.
    """
    check_wrap_tls(flow, AsyncioFlow, ssl_context, handshake_timeout)
    driver = flow._driver
    layer = new_layer(driver._app, ssl_context, server_side=server_side,
                      server_hostname=server_hostname,
                      require_close_notify=require_close_notify)  # checks the rest
    driver._add_layer(layer)  # the flow's list too
    flow._core = layer.outer
    driver._update()
    await _handshaken(flow, peer_of(flow), handshake_timeout)
    return flow


async def _handshaken(flow: AsyncioFlow, where: str, timeout: float | None, *,
                     stated: float | None = None) -> None:
    """Return once ``flow``'s handshake is done, within ``timeout``; else end the connection
    (the alert goes out first) and raise what ``handshake_failed`` says (a timeout as the
    caller ``stated`` it: connect's covers the connection too)."""
    driver = flow._driver
    done = await driver._wait_handshake(timeout)
    if done and driver._layers[-1].handshake_done:
        return
    error = None if not done else flow.error
    if not done:
        driver._abort_now(HANDSHAKE_DEADLINE)
    else:
        transport = driver._transport
        if transport is not None:
            transport.close()  # after what it holds: the alert
    await driver._wait_lost()
    raise handshake_failed(error, where, timeout if stated is None else stated)


async def connect_unix(path: UnixPath, *, timeout: float | None = None,
                       ssl: ssl_.SSLContext | bool | None = None,
                       server_hostname: str | None = None, high_water: int = HIGH_WATER,
                       low_water: int = LOW_WATER,
                       receive_limit: int = RECEIVE_LIMIT) -> AsyncioFlow:
    """``connect`` for an AF_UNIX stream socket at ``path``: the same flow and failures (a
    path where nothing listens is ``ConnectionRefusedError``, a missing one
    ``FileNotFoundError``). ``abort()`` cannot send a reset over AF_UNIX, which has none: the
    peer sees the connection end, usually as a plain EOF, as after ``close``.

    ``ssl`` and ``server_hostname`` are ``connect``'s, except that a path names no host:
    with a context that checks the server's name (``True``'s does), ``server_hostname`` is
    required (``ValueError`` without it)."""
    check_path(path)
    check_timeout(timeout)
    context = unix_tls_context(ssl, server_hostname)
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    driver = _client_driver(core, context, server_hostname)
    return await _connected(_open_unix(driver, path), os.fsdecode(path), timeout)


async def wrap(sock: socket.socket, *, high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
               receive_limit: int = RECEIVE_LIMIT) -> AsyncioFlow:
    """Adopt a connected stream socket (TCP, or AF_UNIX such as one end of a
    ``socket.socketpair()``). The flow owns it from now on: do not use or close it.

    A socket that is not a connected stream socket raises ``ValueError`` and stays as it
    was; one whose connection already ended gives a flow that reads what the peer sent,
    then how it ended."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"wrap() takes a connected socket.socket, not {type(sock).__name__}")
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    ended = check_connected(sock)
    if ended:
        receive_ended(sock, core)
    flow = await _adopt(sock, _new_driver(core, asyncio.get_running_loop()))
    if ended:
        flow._driver._update()  # the flow is CLOSED: let go of the transport now
    return flow


ATTEMPT_DELAY = 0.25
"""Seconds ``connect`` gives an address before it tries the next one as well (RFC 8305's
recommended delay, trio's default)."""


async def _adopt(sock: socket.socket, driver: _Driver) -> AsyncioFlow:
    """The flow ``driver`` carries over the connected ``sock``; its transport owns the socket
    from now on."""
    # Works for every stream family on asyncio's loop and on uvloop; asyncio's own TLS
    # (its ssl argument) is not used: TLS is the driver's layer.
    await asyncio.get_running_loop().connect_accepted_socket(lambda: driver, sock)
    return AsyncioFlow(driver._app, driver)


async def _resolve(host: str | None, port: int, flags: int = 0
                   ) -> list[tuple[Any, Any, int, str, Any]]:
    """``getaddrinfo`` for stream sockets; a numeric address without the resolver's thread."""
    try:
        # As bytes: a str host goes through the Python-level IDNA codec on every call, and
        # one that is not ASCII is no numeric address.
        numeric = host.encode("ascii") if host is not None else None
        return socket.getaddrinfo(numeric, port, type=socket.SOCK_STREAM,
                                  flags=flags | socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeEncodeError):
        loop = asyncio.get_running_loop()
        return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)


async def _open_tcp(driver: _Driver, host: str, port: int) -> AsyncioFlow | list[OSError]:
    """``driver``'s flow over a connection to the first of ``host``'s addresses that
    answers, or the error of each address in order (a ``gaierror`` alone if the name does not
    resolve).

    A single address is the loop's own connect, which on uvloop makes the transport without a
    Python step between. Several each get a task; the next starts when the last one failed or
    ``ATTEMPT_DELAY`` after it started, and the attempts still running when one connects are
    cancelled."""
    try:
        addresses = await _resolve(host, port)
    except socket.gaierror as exc:
        return [exc]
    loop = asyncio.get_running_loop()
    if len(addresses) == 1 and addresses[0][4][2:] in ((), (0, 0)):  # no IPv6 flow or scope
        family, _, proto, _, (address, port, *_) = addresses[0]
        try:
            await loop.create_connection(lambda: driver, address, port, family=family,
                                         proto=proto)
        except OSError as exc:
            return [exc]
        return AsyncioFlow(driver._app, driver)
    errors: list[OSError | None] = [None] * len(addresses)
    attempts: dict[asyncio.Task[socket.socket], int] = {}
    try:
        for index, (family, kind, proto, _, address) in enumerate(addresses):
            attempts[loop.create_task(_attempt(family, kind, proto, address))] = index
            more = index + 1 < len(addresses)
            while attempts:
                done, _ = await asyncio.wait(attempts, timeout=ATTEMPT_DELAY if more else None,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    tried = attempts.pop(task)
                    try:
                        sock = task.result()
                    except OSError as exc:
                        errors[tried] = exc
                    else:
                        return await _adopt(sock, driver)
                if more:
                    break  # failed, or took too long: the next address now
    finally:
        for task in attempts:
            task.cancel()
        if attempts:
            await asyncio.wait(attempts)
            for task in attempts:  # one that connected as well as the winner, or too late
                if not task.cancelled() and task.exception() is None:
                    task.result().close()
    return [error for error in errors if error is not None]


async def _open_unix(driver: _Driver, path: UnixPath) -> AsyncioFlow | list[OSError]:
    # Not the loop's create_unix_connection: uvloop's cuts an abstract name at its first NUL.
    try:
        sock = await _attempt(socket.AF_UNIX, socket.SOCK_STREAM, 0, path)
    except OSError as exc:
        return [exc]
    return await _adopt(sock, driver)


async def _attempt(family: int, kind: int, proto: int, address: Any) -> socket.socket:
    """A new socket connected to ``address``; closed again if that fails."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


# -- serving ---------------------------------------------------------------------------------


Listen = Callable[[asyncio.AbstractEventLoop, Callable[[], asyncio.BaseProtocol]],
                  Awaitable[list[asyncio.Server]]]


class Server(AsyncServerBase[Handler]):
    """A listening server that runs a handler per accepted flow; an async context manager.

    ``async with serve(handler, "127.0.0.1", 0) as server:`` listens on entry; ``server.port``
    is the bound port (``server.path`` for ``serve_unix``), ``await server.serve_forever()``
    waits until the server stops. Each handler gets its own flow; when it returns, the flow is
    closed (``close(timeout=10)``) unless already CLOSED; if it raises, the exception is logged
    on the ``"sansflow"`` logger, the flow is aborted and the server keeps serving. Leaving the
    block stops accepting, gives the handlers still running ``grace`` seconds to finish, then
    cancels the rest (their flows are aborted) and waits for them: no task and no socket
    outlives the block.
    """

    __slots__ = ("_drivers", "_handshake_timeout", "_listen", "_loop", "_servers", "_stopping",
                 "_tasks", "_tls")

    _RUNS_ONCE = "this server is already running"

    def __init__(self, handler: Handler, listen: Listen, *, options: dict[str, int],
                 grace: float, tls: ssl_.SSLContext | None = None,
                 handshake_timeout: float | None = None, path: UnixPath | None = None) -> None:
        super().__init__(handler, options, path, grace=grace)
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._listen = listen
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._drivers: set[_Driver] = set()
        self._stopping = False

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets (asyncio's socket wrappers)."""
        return tuple(sock for server in self._servers for sock in server.sockets)

    async def __aenter__(self) -> Server:
        self._enter_once(asyncio.Event())
        self._loop = asyncio.get_running_loop()
        self._servers = await self._listen(self._loop, self._new_driver)
        self._bound(self.sockets[0])
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._stopped is not None
        self._stopping = True
        self._stopped.set()
        for server in self._servers:
            server.close()
        # Let connections the server already accepted reach connection_made (which, now that
        # we are stopping, aborts them) before collecting what is left.
        await asyncio.sleep(0)
        try:
            if self._tasks and self._grace > 0:
                # Handlers still running get ``grace`` seconds to finish on their own.
                grace = None if self._grace == math.inf else self._grace
                await asyncio.wait(set(self._tasks), timeout=grace)
        finally:
            tasks = set(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
        for driver in list(self._drivers):
            driver._abort_now()
            if driver._transport is not None or driver._released:
                await driver._wait_lost()
            # else: not yet connected; connection_made will abort it (we are stopping).
        for server in self._servers:
            await server.wait_closed()
        self._unbound()

    def _new_driver(self) -> _Driver:
        assert self._loop is not None
        driver = _new_driver(self._new_core(), self._loop, self)
        if self._tls is not None:
            driver._add_layer(new_layer(driver._core, self._tls, server_side=True))
        self._drivers.add(driver)
        return driver

    def _connection_made(self, driver: _Driver) -> None:
        if self._stopping:
            driver._abort_now()
            return
        assert self._loop is not None
        task = self._loop.create_task(self._run(AsyncioFlow(driver._app, driver)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _connection_lost(self, driver: _Driver) -> None:
        self._drivers.discard(driver)

    async def _run(self, flow: AsyncioFlow) -> None:
        if self._tls is not None:
            try:
                await _handshaken(flow, peer_of(flow), self._handshake_timeout)
            except OSError as exc:
                log_failed_handshake(exc)
                return
        await run_async_handler(self._handler, flow, _abort_at_once)
        # A flow the handler ended itself (a failure, say) may still hold its transport.
        await flow._driver._wait_lost()


async def _abort_at_once(flow: AsyncioFlow) -> None:
    """End a cancelled handler's flow without waiting: the transport goes later."""
    flow._driver._abort_now()


def serve(handler: Handler, host: str | None, port: int, *, backlog: int = BACKLOG,
          grace: float = GRACE, ssl: ssl_.SSLContext | None = None,
          handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
          low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT) -> Server:
    """A ``Server`` that gives each accepted TCP connection's flow to ``handler``.

    Use it as ``async with serve(handler, host, port) as server:``; ``server.port`` is the
    bound port. ``host`` ``None`` listens on every interface; a name listens on each of its
    addresses, all on one port (with port 0, the one picked for the first). Flow options
    (``high_water``, ``low_water``, ``receive_limit``) apply to every accepted flow and are
    checked here, with the address. ``grace`` is how many seconds stopping the server lets
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

    async def listen(loop: asyncio.AbstractEventLoop,
                     factory: Callable[[], asyncio.BaseProtocol]) -> list[asyncio.Server]:
        bound = port
        servers: list[asyncio.Server] = []
        try:
            addresses = await _resolve(host, port, socket.AI_PASSIVE)
            for address in dict.fromkeys(info[4][0] for info in addresses):
                server = await loop.create_server(factory, address, bound, backlog=backlog)
                servers.append(server)
                bound = server.sockets[0].getsockname()[1]
        except BaseException:
            for server in servers:
                server.close()
            raise
        return servers

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

    async def listen(loop: asyncio.AbstractEventLoop,
                     factory: Callable[[], asyncio.BaseProtocol]) -> list[asyncio.Server]:
        return [await loop.create_unix_server(factory, os.fsdecode(path), backlog=backlog)]

    return Server(handler, listen, options=options, grace=grace, tls=context,
                  handshake_timeout=handshake_timeout, path=path)


