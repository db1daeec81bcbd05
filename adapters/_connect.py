"""What every adapter's ``connect`` and ``serve`` share: argument checks, the default backlog,
and one way to report a connect that failed, so that a program sees the same exception on
every adapter."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Sequence
from typing import Any

__all__ = [
    "BACKLOG", "UnixPath", "check_address", "check_path", "connect_failed", "connect_timed_out",
    "remove_socket_file", "remove_stale_socket_file", "socket_file_inode", "where",
]

UnixPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

BACKLOG = socket.SOMAXCONN
"""The listen backlog of every adapter's ``serve`` unless told otherwise: the most the system
takes, so that a burst of connections waits in the kernel instead of being refused."""


def check_address(host: object, port: object, *, server: bool = False) -> None:
    """Refuse a ``host`` that is not a str (``None`` too, for a server: every interface) and a
    ``port`` that is not an int from 0 to 65535 (a str such as "8000" too: one rule
    everywhere)."""
    if not (isinstance(host, str) or (server and host is None)):
        wanted = "a str or None" if server else "a str"
        raise TypeError(f"host must be {wanted}, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be from 0 to 65535, not {port!r}")


def check_path(path: object) -> None:
    """Refuse an AF_UNIX ``path`` that is not a str, bytes or ``os.PathLike``."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str, bytes or os.PathLike, not {path!r}")


def where(host: str, port: int) -> str:
    """``host``:``port`` as people write it (``[::1]:8000`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def address_text(address: Any, missing: str = "?") -> str:
    """A socket address as people write it: ``where`` for an IP address, an AF_UNIX path as
    it is, ``missing`` where there is none."""
    if isinstance(address, tuple) and len(address) >= 2:
        return where(str(address[0]), address[1])
    return str(address) if address else missing


def connect_failed(where: str, errors: Sequence[OSError]) -> OSError:
    """The exception for a connect to ``where`` that failed with ``errors`` (one per address
    tried, in order): ``ConnectionRefusedError`` when every address refused,
    ``socket.gaierror`` when the name did not resolve, else the first other error, each of
    its usual class, with a message that names the address. The error it comes from is its
    ``__cause__``."""
    if not errors:
        raise ValueError("connect_failed() needs the errors the attempts ended with")
    first = errors[0]
    failed: OSError
    cause: OSError
    if isinstance(first, socket.gaierror):
        failed = socket.gaierror(first.errno, f"{first.strerror}: {where}")
        cause = first
    elif all(isinstance(error, ConnectionRefusedError) for error in errors):
        tried = f" (all {len(errors)} addresses)" if len(errors) > 1 else ""
        failed = ConnectionRefusedError(errno.ECONNREFUSED,
                                        f"connection refused by {where}{tried}")
        cause = first
    else:
        cause = next(e for e in errors if not isinstance(e, ConnectionRefusedError))
        text = f"{cause.strerror or cause or type(cause).__name__}: {where}"
        # OSError(errno, text) builds the class that errno names (TimeoutError, ...).
        failed = OSError(cause.errno, text) if cause.errno else type(cause)(text)
    failed.__cause__ = cause
    return failed


def connect_timed_out(where: str, timeout: float) -> TimeoutError:
    """The exception for a connect to ``where`` that did not finish within ``timeout``
    seconds."""
    return TimeoutError(errno.ETIMEDOUT, f"connect to {where} timed out after {timeout:g} s")


# -- AF_UNIX servers' socket files ---------------------------------------------------------------


def _abstract(path: UnixPath) -> bool:
    """Whether ``path`` names a Linux abstract socket, which has no file."""
    return os.fsencode(path).startswith(b"\0")


def remove_stale_socket_file(path: UnixPath) -> None:
    """Before a server binds ``path``: remove a socket file left there by a server that is
    gone (never a file of data, which makes the bind fail as it should)."""
    if not _abstract(path):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)


def socket_file_inode(path: UnixPath) -> int | None:
    """Once a server is bound at ``path``: the inode of the socket file it made (``None`` for
    an abstract socket), for ``remove_socket_file`` to know it again."""
    return None if _abstract(path) else os.stat(path).st_ino


def remove_socket_file(path: UnixPath, inode: int | None) -> None:
    """Remove the socket file a server made, unless something else took its place since."""
    if inode is None:
        return
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            os.unlink(path)
