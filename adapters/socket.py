"""The blocking-socket adapter: a ``sansflow.Flow`` over a plain ``socket.socket``, no event loop.

Every method is an ordinary blocking call with the names the async adapters use. An echo
server and a client that half-closes (the program runs as it is)::

    from sansflow import Eof, Error, Ok, Shutdown, error_message
    from sansflow.adapters import socket as sf


    def echo(flow: sf.SocketFlow) -> None:  # on a thread of its own
        for data in flow:  # until the client's EOF
            flow.write(data)


    with sf.serve(echo, "127.0.0.1", 0) as server, \
            sf.connect("127.0.0.1", server.port, timeout=5) as flow:  # closed on exit
        flow.write(b"hello")
        flow.shutdown(Shutdown.WRITE)  # our EOF; the echo still comes
        match flow.read():
            case Ok(data): print(data)
            case Eof(): print("the server sent nothing")
            case Error(error): print(error_message(error))

``for data in flow:`` reads until ``Eof`` (``BrokenFlowError`` at an ``Error``). ``connect``,
``connect_unix``, ``wrap``, ``serve`` and ``serve_unix`` take the arguments of the async
adapters' functions, and fail with the same exceptions.

One reading thread and one writing thread may use a flow at once (a second concurrent reader or
writer gets ``sansflow.BusyError``); ``close``, ``shutdown``, ``abort`` and ``flush`` may be
called from any thread. A ``threading.Lock`` guards the core, which is not thread-safe.

How a flow moves its bytes (the calling threads do the I/O, and one flusher thread sends
what writes left queued) is told in ``sansflow.adapters._socket_flow``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import select
import socket
import ssl as ssl_
import sys
import threading
from collections.abc import Callable
from functools import partial
from time import monotonic
from types import TracebackType
from typing import Any

from sansflow import (
    HIGH_WATER,
    LOW_WATER,
    RECEIVE_LIMIT,
    Flow,
    TlsLayer,
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
from ._copy import copy_blocking as copy
from ._copy import proxy_blocking as proxy
from ._handshake import (
    ALERT_TIMEOUT,
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
from ._server import GRACE, ServerBase, run_blocking_handler, server_options
from ._socket_flow import (
    _POLL_SLICE,
    FLUSH_DELAY,
    SocketFlow,
    _deadline,
    _left,
    _passed,
    _poll,
    _remaining,
)

__all__ = [
    "FLUSH_DELAY", "Server", "SocketFlow", "connect", "connect_unix", "copy", "proxy", "serve",
    "serve_unix", "wrap", "wrap_tls",
]

# The flows' module name is the one users import them from.
SocketFlow.__module__ = __name__

_log = logging.getLogger("sansflow")


# -- making flows ----------------------------------------------------------------------------


def connect(host: str, port: int, *, timeout: float | None = None,
            ssl: ssl_.SSLContext | bool | None = None, server_hostname: str | None = None,
            high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
            receive_limit: int = RECEIVE_LIMIT) -> SocketFlow:
    """Open a TCP connection to ``host`` (a name, an IPv4 or an IPv6 address) and return its
    flow.

    The addresses the name resolves to are tried in turn, each with the time left, until one
    connects. ``timeout`` bounds the whole connect (every address; the name lookup itself
    cannot be cut short, the deadline is checked after it). A connect that fails raises
    ``ConnectionRefusedError`` when every address refused, ``socket.gaierror`` when the name
    does not resolve, ``TimeoutError`` when ``timeout`` seconds passed first, else the
    ``OSError`` of the first address that failed otherwise; each names host and port. The
    arguments are checked before any I/O.

    With ``ssl`` (an ``ssl.SSLContext``, or ``True`` for ``ssl.create_default_context()``)
    the flow carries TLS, and ``connect`` returns once the handshake is done (``timeout``
    covers it too). ``server_hostname`` (default: ``host``) is what the certificate must
    name, and what SNI sends. A handshake that fails raises the ssl module's exception for
    it (``ssl.SSLCertVerificationError`` for a certificate), whose text is the failure's
    ``error_message``; the alert still reaches the server.
    """
    check_address(host, port)
    context = tls_context(ssl, server_hostname)
    deadline = _deadline(timeout)
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    place = where(host, port)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise connect_failed(place, [exc]) from None
    errors: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        sock = _attempt(family, kind, proto, address, deadline, errors)
        if sock is not None:
            flow = _adopt(sock, core)
            if context is not None:
                layer = new_layer(core, context, server_hostname=server_hostname or host)
                _handshaken(flow, layer, place, _remaining(deadline), stated=timeout)
            return flow
        if _passed(deadline):
            break
    if not errors or _passed(deadline):
        assert timeout is not None  # only a deadline ends the attempts without an error
        raise connect_timed_out(place, timeout)
    raise connect_failed(place, errors)


def connect_unix(path: UnixPath, *, timeout: float | None = None,
                 ssl: ssl_.SSLContext | bool | None = None, server_hostname: str | None = None,
                 high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
                 receive_limit: int = RECEIVE_LIMIT) -> SocketFlow:
    """``connect`` for an AF_UNIX stream socket at ``path``: the same flow and failures (a
    path where nothing listens is ``ConnectionRefusedError``, a missing one
    ``FileNotFoundError``; a listener whose backlog is full is waited for, up to
    ``timeout``). ``abort()`` cannot send a reset over AF_UNIX: the peer sees the connection
    end, as it would after ``close``.

    ``ssl`` and ``server_hostname`` are ``connect``'s, except that a path names no host:
    with a context that checks the server's name (``True``'s does), ``server_hostname`` is
    required (``ValueError`` without it)."""
    check_path(path)
    context = unix_tls_context(ssl, server_hostname)
    deadline = _deadline(timeout)
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    errors: list[OSError] = []
    sock = _attempt(socket.AF_UNIX, socket.SOCK_STREAM, 0, os.fspath(path), deadline, errors)
    if sock is None:
        if errors:
            raise connect_failed(os.fsdecode(path), errors)
        assert timeout is not None  # only a deadline ends an attempt without an error
        raise connect_timed_out(os.fsdecode(path), timeout)
    flow = _adopt(sock, core)
    if context is not None:
        layer = new_layer(core, context, server_hostname=server_hostname)
        _handshaken(flow, layer, os.fsdecode(path), _remaining(deadline), stated=timeout)
    return flow


def _attempt(family: int, kind: int, proto: int, address: Any, deadline: float | None,
             errors: list[OSError]) -> socket.socket | None:
    """A new socket connected to ``address`` before ``deadline``; else ``None``, with the
    attempt's error added to ``errors`` (none when the deadline passed first).

    With a deadline, the connect runs non-blocking and waits in ``poll``, so that the
    deadline is ours alone: a kernel's ``ETIMEDOUT`` is an error of this address."""
    if _passed(deadline):
        return None
    sock = socket.socket(family, kind, proto)
    try:
        if deadline is None:
            sock.connect(address)
            return sock
        sock.setblocking(False)
        error = sock.connect_ex(address)
        pause = 0.001
        while error == errno.EAGAIN:  # an AF_UNIX listener's backlog is full: try again
            if _passed(deadline):
                sock.close()
                return None
            threading.Event().wait(min(pause, max(_left(deadline), 0.0)))
            pause = min(pause * 2, _POLL_SLICE)
            error = sock.connect_ex(address)
        if error == errno.EINPROGRESS:
            while not _poll(sock.fileno(), select.POLLOUT, _left(deadline)):
                if _passed(deadline):
                    sock.close()
                    return None
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))  # of the class errno names
        sock.setblocking(True)
    except OSError as exc:
        sock.close()
        errors.append(exc)
        return None
    except BaseException:
        sock.close()
        raise
    return sock


def wrap(sock: socket.socket, *, high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
         receive_limit: int = RECEIVE_LIMIT) -> SocketFlow:
    """The flow over ``sock``, a connected stream socket (TCP, or AF_UNIX such as one end of
    a ``socket.socketpair()``). The flow takes the socket over: it puts it in blocking mode,
    sets ``TCP_NODELAY`` (the flow coalesces small writes itself) and closes it once CLOSED.
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(f"wrap() takes a socket.socket, not {type(sock).__name__}")
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError(
            "wrap() cannot carry an ssl.SSLSocket: it sends with sendmsg and MSG_DONTWAIT, "
            "which TLS sockets do not offer; wrap the plain socket and run TLS above the flow"
        )
    core = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
    if check_connected(sock):
        receive_ended(sock, core)
    sock.setblocking(True)  # also where only the descriptor was left non-blocking
    flow = _adopt(sock, core)
    flow._release_if_closed()  # a connection that had ended needs its socket no more
    return flow


def wrap_tls(flow: SocketFlow, ssl_context: ssl_.SSLContext, *, server_side: bool = False,
             server_hostname: str | None = None, require_close_notify: bool = True,
             handshake_timeout: float | None = None) -> SocketFlow:
    """Start TLS on ``flow`` (after a plaintext exchange: STARTTLS; or inside a TLS flow, for
    a session in a tunnel) and return it once the handshake is done: the same flow, which
    reads and writes plaintext over TLS from then on (``flow.tls`` tells the session).

    ``require_close_notify=False`` reads a peer's end without TLS close_notify as ``Eof()``
    instead of ``Error(TRUNCATED)``: for protocols that frame their own data (HTTP/1.1). A
    handshake that fails or takes more than ``handshake_timeout`` seconds raises, as
    ``connect`` does. Another thread must not use the flow meanwhile.
    """
    check_wrap_tls(flow, SocketFlow, ssl_context, handshake_timeout)
    layer = new_layer(flow._core, ssl_context, server_side=server_side,
                      server_hostname=server_hostname,
                      require_close_notify=require_close_notify)  # checks the rest
    _handshaken(flow, layer, peer_of(flow), handshake_timeout)
    return flow


def _handshaken(flow: SocketFlow, layer: TlsLayer, where: str, timeout: float | None, *,
                stated: float | None = None) -> None:
    """Put ``layer`` on ``flow`` and return once its handshake is done, within ``timeout``;
    else end the connection (the alert goes out first) and raise what ``handshake_failed``
    says (a timeout as the caller ``stated`` it: connect's covers the connection too)."""
    with flow._lock:
        flow._add_layer(layer)
        done = flow._handshake(timeout)
        if done and layer.handshake_done:
            return
        error = flow.error if done else None
        if done:
            flow._send_until(flow._flushed, monotonic() + ALERT_TIMEOUT)  # the alert, our FIN
            flow._abort(None)  # what the peer sends no longer matters
        else:
            flow._abort(HANDSHAKE_DEADLINE)
    raise handshake_failed(error, where, timeout if stated is None else stated)




def _adopt(sock: socket.socket, core: Flow) -> SocketFlow:
    if sock.gettimeout() is not None:  # a default timeout: poll + call on every recv
        sock.setblocking(True)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return SocketFlow(sock, core)


# -- serving ---------------------------------------------------------------------------------


Handler = Callable[[SocketFlow], object]


class Server(ServerBase[Handler]):
    """Listening sockets and a thread per accepted connection, as a context manager.

    Made by ``serve`` or ``serve_unix``; the sockets are bound and listening from
    ``__enter__`` on. ``port`` is the port they got (``path`` the AF_UNIX path).
    ``serve_forever()`` blocks until the server is closed. ``close()`` (leaving the block
    calls it) stops accepting, closes the listening sockets, gives running handlers ``grace``
    seconds to finish, aborts the flows of those still running (which wakes them with an
    ``Error``), and waits for their threads.
    """

    _NOT_LISTENING = "the server is not listening; use it in a with statement"

    def __init__(self, handler: Handler, listen: Callable[[], list[socket.socket]], *,
                 grace: float, options: dict[str, int], tls: ssl_.SSLContext | None = None,
                 handshake_timeout: float | None = None, path: UnixPath | None = None) -> None:
        super().__init__(handler, options, path, grace=grace)
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._listen = listen
        self._listeners: list[socket.socket] = []
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._acceptor: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, SocketFlow | None] = {}
        self._stopping = False
        self._stopped = threading.Event()
        self._numbers = itertools.count(1)

    def serve_forever(self) -> None:
        """Block until the server is closed: ``close()`` from another thread (a handler, say),
        or a signal's exception (Ctrl-C's ``KeyboardInterrupt``), which propagates; leaving
        the ``with`` block then closes the server. Connections are served on their own
        threads either way: call this only to keep the calling thread waiting."""
        if self._acceptor is None:
            raise RuntimeError(self._NOT_LISTENING)
        self._stopped.wait()

    def __enter__(self) -> Server:
        if self._listeners or self._stopping:
            raise RuntimeError("a Server can be entered once")
        listeners = self._listen()
        try:
            for listener in listeners:
                # poll says when; a connection reset before accept is skipped
                listener.setblocking(False)
            self._wake = socket.socketpair()
        except BaseException:
            for listener in listeners:
                listener.close()
            raise
        self._listeners = listeners
        self._bound(listeners[0])
        name = self._port if self._path is None else os.fsdecode(self._path)
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"sansflow-socket-accept-{name}", daemon=True
        )
        self._acceptor.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, then end every connection as described above. Any thread may call
        it, a handler too (its own thread is not waited for); a later call waits for the
        handlers again, so leaving the block after a handler's ``close()`` still joins them."""
        with self._lock:
            first = not self._stopping
            self._stopping = True
        if first:
            if self._wake is not None:
                with contextlib.suppress(OSError):
                    self._wake[1].send(b"x")
            if self._acceptor is not None:
                self._acceptor.join()
            for sock in (*self._listeners, *(self._wake or ())):
                sock.close()
            self._unbound()
            self._stopped.set()  # serve_forever() returns: the server accepts no more
        elif self._acceptor is not None:
            self._acceptor.join()  # no handler starts after this
        deadline = monotonic() + self._grace
        for thread in self._threads():
            _join(thread, deadline)
        me = threading.current_thread()
        with self._lock:
            stragglers = [flow for thread, flow in self._connections.items()
                          if flow is not None and thread is not me]
        for flow in stragglers:
            flow.abort()
        deadline = monotonic() + max(self._grace, 1.0)
        for thread in self._threads():
            _join(thread, deadline)
        if alive := [thread.name for thread in self._threads()]:
            _log.warning("sansflow: handler threads still running after abort: %s", alive)

    def _threads(self) -> list[threading.Thread]:
        """The handler threads, but the caller's own."""
        me = threading.current_thread()
        with self._lock:
            return [thread for thread in self._connections if thread is not me]

    def _accept_loop(self) -> None:
        wake = self._wake
        assert wake is not None
        listeners = {listener.fileno(): listener for listener in self._listeners}
        poller = select.poll()
        for fd in (*listeners, wake[0].fileno()):
            poller.register(fd, select.POLLIN)
        while True:
            ready = poller.poll()
            if self._stopping:
                return
            for fd, _ in ready:
                listener = listeners.get(fd)
                if listener is None:
                    continue
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError:
                    # Out of file descriptors, say: the connection stays queued; try again
                    # later.
                    _log.exception("sansflow: accept() failed")
                    with self._lock:
                        if self._stopping:
                            return
                    threading.Event().wait(0.1)
                    continue
                self._start(conn)

    def _start(self, conn: socket.socket) -> None:
        thread = threading.Thread(target=self._serve_one, args=(conn,), daemon=True,
                                  name=f"sansflow-socket-handler-{next(self._numbers)}")
        with self._lock:
            self._connections[thread] = None
        thread.start()

    def _serve_one(self, conn: socket.socket) -> None:
        me = threading.current_thread()
        try:
            try:
                flow = _adopt(conn, self._new_core())
            except BaseException:
                conn.close()
                raise
            with self._lock:
                self._connections[me] = flow
                aborting = self._stopping
            if aborting:
                flow.abort()
            elif self._tls is not None:
                layer = new_layer(flow._core, self._tls, server_side=True)
                try:
                    _handshaken(flow, layer, peer_of(flow), self._handshake_timeout)
                except OSError as exc:
                    log_failed_handshake(exc)
                    return
            run_blocking_handler(self._handler, flow)
        finally:
            with self._lock:
                del self._connections[me]


def _join(thread: threading.Thread, deadline: float) -> None:
    """Wait until ``thread`` ends or ``deadline`` passes."""
    while thread.is_alive() and (left := _left(deadline)) > 0:
        thread.join(left)


def serve(handler: Handler, host: str | None, port: int, *, backlog: int = BACKLOG,
          grace: float = GRACE, ssl: ssl_.SSLContext | None = None,
          handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
          low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT) -> Server:
    """A server running ``handler(flow)`` on its own thread for each accepted TCP connection.
    To serve until the program is interrupted (a sketch: the module's text has a program)::

        with sf.serve(handler, "127.0.0.1", 0) as server:
            print(server.port)
            server.serve_forever()

    ``host`` ``None`` listens on every interface (IPv4 and IPv6); a name listens on each of
    its addresses, all on one port (with port 0, the one picked for the first). When the
    handler returns, the flow is closed (``close(timeout=10)``) unless it is CLOSED; if it
    raises, the exception is logged (``logging.getLogger("sansflow")``), the flow is aborted
    and the server keeps serving. ``high_water``, ``low_water`` and ``receive_limit`` apply
    to every accepted flow and are checked here, with the address. ``grace`` is how many
    seconds closing the server lets handlers finish before their flows are aborted
    (``math.inf``: as long as they take).

    With ``ssl`` (an ``ssl.SSLContext`` with the server's certificate) every flow carries
    TLS, and the handler gets it once the handshake is done. A connection whose handshake
    fails, or takes more than ``handshake_timeout`` seconds, is logged at WARNING on the
    ``"sansflow"`` logger and closed; the handler never sees it.
    """
    check_address(host, port, server=True)
    options = server_options(handler, high_water, low_water, receive_limit, grace, blocking=True)
    context = tls_context(ssl, server=True)
    check_timeout(handshake_timeout)
    return Server(handler, partial(_listen_tcp, host, port, backlog), grace=grace,
                  options=options, tls=context, handshake_timeout=handshake_timeout)


def serve_unix(handler: Handler, path: UnixPath, *, backlog: int = BACKLOG, grace: float = GRACE,
               ssl: ssl_.SSLContext | None = None,
               handshake_timeout: float | None = HANDSHAKE_TIMEOUT, high_water: int = HIGH_WATER,
               low_water: int = LOW_WATER, receive_limit: int = RECEIVE_LIMIT) -> Server:
    """``serve`` on an AF_UNIX stream socket at ``path`` (``server.path``), with TLS as
    ``serve`` has it. A stale socket file there is replaced; the one made is removed when
    the server closes."""
    check_path(path)
    options = server_options(handler, high_water, low_water, receive_limit, grace, blocking=True)
    context = tls_context(ssl, server=True)
    check_timeout(handshake_timeout)
    return Server(handler, partial(_listen_unix, path, backlog), grace=grace, options=options,
                  tls=context, handshake_timeout=handshake_timeout, path=path)


# These errors mean the system has no such family (no IPv6, say), not that something is wrong.
_FAMILY_MISSING = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)


def _listen_tcp(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """A listening socket on each of ``host``'s addresses, all on one port. For ``None``
    (every interface) an address family the system lacks is skipped."""
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    missing: list[OSError] = []
    bound = port
    try:
        for family, address in dict.fromkeys((info[0], info[4]) for info in addresses):
            try:
                listener = socket.create_server((address[0], bound, *address[2:]),
                                                family=family, backlog=backlog)
            except OSError as exc:
                if host is None and exc.errno in _FAMILY_MISSING:
                    missing.append(exc)
                    continue
                raise
            listeners.append(listener)
            bound = listener.getsockname()[1]
        if not listeners:
            raise missing[0]
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _listen_unix(path: UnixPath, backlog: int) -> list[socket.socket]:
    remove_stale_socket_file(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.fspath(path))
        listener.listen(backlog)
    except BaseException:
        listener.close()
        raise
    return [listener]


