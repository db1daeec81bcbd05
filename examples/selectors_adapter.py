"""A whole sansflow adapter in one short file: non-blocking sockets and one ``selectors`` loop.

It shows the loop every adapter runs (feed in what arrived, take out what to send, hand over
EOF when it is due) with nothing but the standard library. Here an echo server and a client
share one thread: the client sends a message and half-closes; the server echoes everything
back and closes when the client's EOF arrives.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable

from sansflow import Eof, Flow, FlowState, Ok, ReceiveState

READ_SIZE = 64 * 1024


def step(sock: socket.socket, flow: Flow) -> None:
    """Move bytes between ``sock`` and ``flow`` until the socket would block."""
    try:
        while buffers := flow.buffers_to_send(1024):
            flow.sent(sock.sendmsg(buffers))  # a partial send resumes at the exact byte
        if flow.eof_due:
            sock.shutdown(socket.SHUT_WR)
            flow.eof_sent()
        while wants_input(flow):
            data = sock.recv(READ_SIZE)
            if not data:
                flow.receive_eof()
            else:
                flow.receive_data(data)
    except (BlockingIOError, InterruptedError):
        pass
    except OSError as exc:
        flow.receive_error(exc)  # the flow is CLOSED with the error; data read so far stays


def wants_input(flow: Flow) -> bool:
    live = flow.receive_state in (ReceiveState.OPEN, ReceiveState.DISCARDING)
    return live and flow.error is None and not flow.reading_paused


def events(flow: Flow) -> int:
    """What to wait for: readable if the flow takes input, writable if it has output."""
    wanted = selectors.EVENT_READ if wants_input(flow) else 0
    if flow.queued or flow.eof_due:
        wanted |= selectors.EVENT_WRITE
    return wanted


def run(ends: list[tuple[socket.socket, Flow]], until: Callable[[], bool]) -> None:
    """Drive every (socket, flow) with one selector until ``until()`` is true."""
    with selectors.DefaultSelector() as selector:
        while True:
            for sock, flow in ends:
                step(sock, flow)
            if until():  # the application's turn; it may queue more output
                return
            for sock, flow in ends:
                key = selector.get_map().get(sock)
                wanted = events(flow)
                if key is not None and not wanted:
                    selector.unregister(sock)
                elif key is None and wanted:
                    selector.register(sock, wanted)
                elif key is not None and key.events != wanted:
                    selector.modify(sock, wanted)
            if selector.get_map():
                selector.select(timeout=5)


def main() -> bytes:
    left, right = socket.socketpair()
    for sock in (left, right):
        sock.setblocking(False)
    client, server = Flow(), Flow()
    ends = [(left, client), (right, server)]
    echoed = bytearray()
    unsent: list[bytes] = []  # what the server read but could not queue yet (backpressure)

    client.writev([b"hello ", b"from ", b"selectors"])
    client.close()

    def server_echo() -> bool:
        if not unsent:
            match server.read():
                case Ok(data):
                    unsent.append(data)
                case Eof():
                    server.close()
                case _:
                    pass  # nothing yet (WOULD_WAIT), or an Error: the flow is CLOSED then
        if unsent and server.write(unsent[0]) == Ok(None):
            unsent.clear()
        match client.read():
            case Ok(data):
                echoed.extend(data)
            case _:
                pass
        return client.state is FlowState.CLOSED and server.state is FlowState.CLOSED

    try:
        run(ends, server_echo)
    finally:
        left.close()
        right.close()
    return bytes(echoed)


if __name__ == "__main__":
    print(main().decode())
