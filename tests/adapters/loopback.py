"""Plain loopback sockets that the adapter tests set against the flows: a peer's reset, a peer
that reads to the end, a port that refuses, a port whose connects hang, and whether IPv6
loopback exists here; and whether the programs some tests talk to (openssl, curl) are
installed."""

from __future__ import annotations

import select
import shutil
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

HOST = "127.0.0.1"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (``SO_LINGER`` 0), as a peer's abort does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_to_end(sock: socket.socket) -> bytes | OSError:
    """What a blocking ``sock`` receives until the peer's FIN, or the error that cut it short
    (a reset)."""
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except OSError as exc:
        return exc
    return bytes(received)


@contextmanager
def refusing_port(host: str = HOST) -> Iterator[int]:
    """A port that is bound but not listening: a connect to it is refused."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as bound:
        bound.bind((host, 0))
        yield bound.getsockname()[1]


@contextmanager
def full_backlog_port() -> Iterator[int]:
    """A port whose listen queue is full of connections it never accepts: the kernel drops a
    new connection's SYN, so a connect to it hangs until its timeout."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        fillers: list[socket.socket] = []
        try:
            for _ in range(64):
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex((HOST, port))
                if not select.select([], [filler], [], 0.25)[1]:
                    break  # this one hangs: the queue is full
            else:
                pytest.fail("the listen queue never filled")
            yield port
        finally:
            for filler in fillers:
                filler.close()


def has_ipv6_loopback() -> bool:
    """Whether this machine can bind ``::1``."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def bounded_runner(options: dict[str, Any], timeout: float = 30
                   ) -> Callable[[Callable[[], Awaitable[None]]], None]:
    """What runs a scenario on an adapter: ``anyio.run`` with ``options`` (the backend and its
    options), failing after ``timeout`` seconds instead of hanging."""
    def runner(main: Callable[[], Awaitable[None]]) -> None:
        async def bounded() -> None:
            with anyio.fail_after(timeout):
                await main()

        anyio.run(bounded, **options)

    return runner
