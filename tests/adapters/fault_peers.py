"""Peer programs for test_faults.py, each run in its own process so that it can be killed.

    python tests/adapters/fault_peers.py ROLE PORT [SIZE]

Each role connects to 127.0.0.1:PORT, prints ``connected`` and then one line per milestone
the test waits for (``say`` flushes each line). SIGUSR1 makes a peer reset the connection
(``SO_LINGER`` 0, then close) and exit; SIGKILL leaves the closing to its kernel. Data a peer
sends is ``pattern(size)``, so the test knows every byte to expect.

Roles:

- ``sink``: sends ``GREETING``, reads ``SIZE`` bytes, says ``stopped``, then never reads
  again (the test kills it with input unread: the kernel answers with an RST).
- ``source``: sends ``pattern`` for ever; says ``full`` the first time the kernel's send
  buffer is full, then keeps sending (blocking) and never reads.
- ``flood``: sends ``pattern(SIZE)`` as fast as it can, says ``sent``, sends EOF, reads to
  our EOF, says ``done``.
- ``trickle-echo``: echoes each byte with one ``recv(1)`` and one ``send``; at our EOF it
  sends EOF, says ``done N`` (bytes echoed).
- ``trickle-send``: sends ``pattern(SIZE)`` one byte per ``send``, sends EOF, then reads one
  byte per ``recv(1)`` until our EOF and says ``done N SHA256`` of what it read.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import struct
import sys
import time

GREETING = b"greeting sent before anything was read\n"
HOST = "127.0.0.1"
SMALL_BUFFER = 64 * 1024  # small kernel buffers: autotuning could otherwise absorb a flood


def pattern(size: int, seed: int = 7) -> bytes:
    """The bytes a peer sends: reproducible, so the test can check each one."""
    return random.Random(seed).randbytes(size)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def connect(port: int, *, nodelay: bool = False, small: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect((HOST, port))
    # SIGUSR1: reset the connection (SO_LINGER 0, then close) and exit.
    signal.signal(signal.SIGUSR1, lambda *_: reset_and_exit(sock))
    say("connected")
    return sock


def reset_and_exit(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    os._exit(0)


def read_exactly(sock: socket.socket, size: int) -> None:
    while size > 0:
        chunk = sock.recv(min(size, 65536))
        if not chunk:
            raise EOFError(f"EOF with {size} bytes still expected")
        size -= len(chunk)


def sink(port: int, size: int) -> None:
    sock = connect(port, small=True)
    sock.sendall(GREETING)
    read_exactly(sock, size)
    say("stopped")
    while True:
        time.sleep(60)


def source(port: int) -> None:
    sock = connect(port, small=True)
    chunk = pattern(1024 * 1024)
    view = memoryview(chunk)
    sock.setblocking(False)
    offset = 0
    while True:
        try:
            offset += sock.send(view[offset:])
        except BlockingIOError:
            break
        offset %= len(chunk)
    say("full")
    sock.setblocking(True)
    while True:
        offset += sock.send(view[offset:])
        offset %= len(chunk)


def flood(port: int, size: int) -> None:
    sock = connect(port, small=True)
    sock.sendall(pattern(size))
    say("sent")
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass
    sock.close()
    say("done")


def trickle_echo(port: int) -> None:
    sock = connect(port, nodelay=True)
    echoed = 0
    while byte := sock.recv(1):
        sock.send(byte)
        echoed += 1
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    say(f"done {echoed}")


def trickle_send(port: int, size: int) -> None:
    sock = connect(port, nodelay=True)
    data = pattern(size)
    for index in range(size):
        sock.send(data[index:index + 1])
    sock.shutdown(socket.SHUT_WR)
    received = bytearray()
    while byte := sock.recv(1):
        received += byte
    sock.close()
    say(f"done {len(received)} {hashlib.sha256(received).hexdigest()}")


def main(argv: list[str]) -> None:
    role, port = argv[0], int(argv[1])
    size = int(argv[2]) if len(argv) > 2 else 0
    if role == "sink":
        sink(port, size)
    elif role == "source":
        source(port)
    elif role == "flood":
        flood(port, size)
    elif role == "trickle-echo":
        trickle_echo(port)
    elif role == "trickle-send":
        trickle_send(port, size)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
