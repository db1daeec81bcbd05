"""What the socket-based adapters share: socket helpers, sizes, and the ``AdapterFlow`` base."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, overload

from sansflow import AdapterFlow, Buffer, ErrorKind, Flow, FlowError, ReceiveState

__all__ = [
    "IOV_MAX", "READ_SIZE", "RECEIVING", "AdapterFlow", "addresses", "check_connected",
    "receive_ended", "receive_kept", "send_queued", "set_linger_zero",
]

# sendmsg refuses more buffers than this (EMSGSIZE); 1024 on Linux.
IOV_MAX: int = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
# The receive states in which input from the transport is still taken in.
RECEIVING = (ReceiveState.OPEN, ReceiveState.DISCARDING)
# One receive call takes at most this much; 64 KiB matches the kernel's usual socket buffer.
READ_SIZE = 64 * 1024
_DISCARD_READS = 16  # of READ_SIZE: the most discard_input drops


def addresses(sock: SocketLike | None) -> dict[str, Any]:
    """``peername`` and ``sockname`` of ``sock`` for ``AdapterFlow``, each ``None`` where the
    socket has none (no socket, or a connection that ended before the flow was made)."""
    if sock is None:
        return {"peername": None, "sockname": None}
    return {"peername": _name_or_none(sock.getpeername),
            "sockname": _name_or_none(sock.getsockname)}


def _name_or_none(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except OSError:
        return None


def send_queued(core: Flow, send: Callable[[list[Buffer]], int]) -> OSError | None:
    """Hand ``send`` what ``core`` has queued, for as long as the kernel takes all of it;
    ``core.queued`` then says what is left for later.

    ``send`` is a vectored send that never waits: it returns how many bytes it took, or raises
    ``BlockingIOError`` when it takes none. Any other ``OSError`` is returned, for the caller
    to fail the flow with: only it knows what else the failure must stop.
    """
    while core.queued:
        buffers = core.buffers_to_send(IOV_MAX)
        try:
            sent = send(buffers)
        except BlockingIOError:
            return None
        except OSError as exc:
            return exc
        core.sent(sent)
        if core.queued and (len(buffers) < IOV_MAX or sent < sum(map(len, buffers))):
            return None  # the kernel took a part: its buffer is full, a retry would only fail
    return None


def set_linger_zero(sock: SocketLike) -> None:
    """Make ``close()`` send an RST instead of a FIN (the contract's ``abort``)."""
    # Not a TCP socket (a socketpair, say) or already closed: a plain close will do.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class SocketLike(Protocol):
    """What the helpers here need of a socket: ``socket.socket`` and trio's sockets."""

    @property
    def family(self) -> int: ...
    @property
    def type(self) -> int: ...
    def fileno(self) -> int: ...
    def getpeername(self) -> Any: ...
    def getsockname(self) -> Any: ...
    @overload
    def getsockopt(self, level: int, optname: int, /) -> int: ...
    @overload
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...
    def setsockopt(self, level: int, optname: int, value: bytes, /) -> None: ...


# Linux's TCP_INFO (linux/tcp.h): tcpi_state is its first byte. tcpi_delivered (Linux 4.18+)
# counts the segments the peer acknowledged, the handshake's SYN or SYN-ACK included: it is
# 0 exactly when the socket never completed a handshake, and stays so after a reset.
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCPI_DELIVERED = struct.Struct("=I")
_TCPI_DELIVERED_AT = 192
_TCP_SYN_SENT = 2
_TCP_CLOSE = 7
_SO_ACCEPTCONN = getattr(socket, "SO_ACCEPTCONN", None)


def check_connected(sock: SocketLike) -> bool:
    """Raise ``ValueError`` unless ``sock`` is a stream socket that is connected, or was
    until its connection ended: an end before ``wrap()`` is an I/O outcome, not a mistake.

    Returns whether the adapter must call ``receive_ended`` rather than read the socket: a
    TCP connection that ended (state CLOSE) with no error waiting in ``SO_ERROR`` (a reset
    whose error something read already, or both FINs exchanged before ``wrap()``) reads as
    a clean EOF from the kernel. Any other end (an error waiting, or only the peer's FIN
    in) the flow reads from the kernel like an end that comes later.

    Changes nothing on ``sock`` (it does not even read ``SO_ERROR``), so a caller whose
    socket is refused still owns it as it was.
    """
    if sock.fileno() < 0:
        raise ValueError("wrap() takes an open socket; this one is closed")
    if sock.type != socket.SOCK_STREAM:
        kind = getattr(sock.type, "name", sock.type)
        raise ValueError(f"wrap() takes a stream socket (SOCK_STREAM), not {kind}")
    if _SO_ACCEPTCONN is not None and sock.getsockopt(socket.SOL_SOCKET, _SO_ACCEPTCONN):
        raise ValueError("wrap() takes a connected socket, not a listening one: "
                         "wrap the sockets that accept() returns")
    try:
        sock.getpeername()
    except OSError:
        # Linux answers ENOTCONN both for a socket never connected and for one whose
        # connection ended (TCP state CLOSE): TCP_INFO tells them apart.
        pass
    else:
        return False
    error_waits = _error_waits(sock.fileno())
    info = _tcp_info(sock)
    if info is not None and info[0] == _TCP_SYN_SENT:
        raise ValueError("wrap() takes a connected socket; this one's connect() has not "
                         "finished: wait until the socket is writable and SO_ERROR is 0")
    # Without TCP_INFO, a waiting error is the only sign of a past connection.
    was_connected = error_waits if info is None else info[0] == _TCP_CLOSE and info[1] > 0
    if not was_connected:
        raise ValueError("wrap() takes a connected socket; this one was never connected "
                         "(or its connect() failed)")
    return not error_waits


def receive_ended(sock: SocketLike, core: Flow) -> None:
    """End ``core`` as ``sock``'s connection ended, when ``check_connected`` said that the
    kernel no longer tells how: what the peer sent (the kernel keeps it past the end, and a
    read of it never waits), then a reset, the one end that cannot hide a lost one.

    Everything the kernel kept is buffered at once, even past the receive limit: the
    connection is over, so the kernel's receive buffer bounds it.
    """
    receive_kept(partial(os.read, sock.fileno()), core, past_limit=True)
    cause = ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))
    core.receive_error(FlowError(ErrorKind.RESET, cause, "the connection ended before wrap(), "
                                                      "and the kernel no longer says how"))


def eof_failure(sock: SocketLike, exc: OSError) -> OSError:
    """What a failed ``shutdown(SHUT_WR)`` (our EOF) reports: ``exc``, unless it is the
    ENOTCONN with which Linux answers on a connection that a reset already ended; then the
    reset itself, which waits in ``SO_ERROR`` until a read takes it. Read it before the
    kernel's last bytes (``receive_kept``): a read that meets the error takes it."""
    if exc.errno != errno.ENOTCONN:
        return exc
    try:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError:  # the socket is closed already: ENOTCONN is all there is to tell
        return exc
    return OSError(code, os.strerror(code)) if code else exc  # ECONNRESET: ConnectionResetError


def discard_input(read: Callable[[int], bytes]) -> None:
    """Read and drop what the kernel holds for a connection nobody will read any more, before
    closing it gracefully: a socket closed with unread input sends a reset, which drops our
    data still in the kernel (a TLS 1.3 client always holds the server's session tickets
    unread). ``read(size)`` must never wait. Bounded: a peer that goes on sending meets the
    reset."""
    for _ in range(_DISCARD_READS):
        try:
            if not read(READ_SIZE):
                return
        except OSError:  # BlockingIOError: nothing more now
            return


def receive_kept(read: Callable[[int], bytes], core: Flow, *, past_limit: bool = False) -> None:
    """Feed ``core`` what the kernel still holds for it, before the caller ends the flow:
    the peer's last bytes, which the kernel keeps readable after a reset, and which closing
    the socket would throw away. ``read(size)`` must never wait; it is called until it
    returns ``b""`` or raises ``OSError`` (``BlockingIOError``: nothing more now). Its ``b""``
    is not fed in as an EOF: once the connection failed, the kernel answers ``b""`` whether
    or not the peer's FIN came first, so the caller's error ends the flow.

    Only while the flow still takes input (its receive direction is open), and only as far
    as the receive limit has room, unless ``past_limit``: a send that failed may leave a
    live peer sending (an AF_UNIX peer that shut down only its reading side), and what the
    limit has no room for is what a flow that reads input as it arrives would not have
    taken either.
    """
    if core.receive_state is not ReceiveState.OPEN:
        return  # after shutdown(READ) or the peer's EOF nothing more is wanted
    while past_limit or not core.reading_paused:
        size = READ_SIZE if past_limit else min(READ_SIZE, core.receive_limit - core.buffered)
        try:
            data = read(size)
        except OSError:
            return
        if not data:
            return
        core.receive_data(data)


def _error_waits(fd: int) -> bool:
    """Whether an error waits in ``SO_ERROR``, without taking it as ``getsockopt`` would."""
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        return False
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR is always reported
    ready = poller.poll(0)
    return bool(ready and ready[0][1] & select.POLLERR)


def _tcp_info(sock: SocketLike) -> tuple[int, int] | None:
    """``(tcpi_state, tcpi_delivered)`` of a TCP socket on Linux 4.18+; else ``None``."""
    if _TCP_INFO is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except OSError:  # pragma: no cover - not TCP after all (SCTP's stream sockets, say)
        return None
    if len(info) < _TCPI_DELIVERED_AT + _TCPI_DELIVERED.size:  # pragma: no cover - old kernel
        return None
    return info[0], _TCPI_DELIVERED.unpack_from(info, _TCPI_DELIVERED_AT)[0]
