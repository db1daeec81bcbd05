"""A length-prefixed request/response protocol, written once, run over all three adapters.

The framing is sans-IO (``Framer`` turns bytes into frames and back); the client and the
server are written once against the flow API. The asyncio and trio adapters share the very
same ``async`` code, since only the import differs; the blocking adapter runs the same steps
without ``await``.
"""

from __future__ import annotations

import asyncio
import struct

import trio

from sansflow import AsyncFlow, BlockingFlow, Eof, Error, Ok, error_message
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio

HEADER = struct.Struct("!I")


class ProtocolError(Exception):
    """The connection ended in the middle of a frame, or failed."""


class Framer:
    """Frames as ``length (4 bytes, big-endian) + payload``, whatever chunks the bytes come in."""

    def __init__(self) -> None:
        self._pending = bytearray()

    @staticmethod
    def encode(payload: bytes) -> list[bytes]:
        return [HEADER.pack(len(payload)), payload]  # one writev, no copy of the payload

    def feed(self, data: bytes) -> list[bytes]:
        """The frames that ``data`` completes (a header may be split across chunks)."""
        self._pending += data
        frames = []
        while len(self._pending) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._pending)
            if len(self._pending) < HEADER.size + size:
                break
            frames.append(bytes(self._pending[HEADER.size:HEADER.size + size]))
            del self._pending[:HEADER.size + size]
        return frames

    def check_complete(self) -> None:
        if self._pending:
            raise ProtocolError(f"EOF inside a frame ({len(self._pending)} bytes left)")


def answer(request: bytes) -> bytes:
    return request.upper()


# -- the protocol over the async adapters (asyncio and trio alike) ---------------------------

async def serve_requests(flow: AsyncFlow) -> None:
    """Answer each request frame until the client's EOF; the server then closes the flow."""
    framer = Framer()
    while True:
        match await flow.read():
            case Ok(data):
                for request in framer.feed(data):
                    await flow.writev(Framer.encode(answer(request)))
            case Eof():
                framer.check_complete()
                return
            case Error(err):
                raise ProtocolError(error_message(err))


async def call(flow: AsyncFlow,
               requests: list[bytes]) -> list[bytes]:
    """Send every request, then read one reply per request."""
    framer = Framer()
    for request in requests:
        await flow.writev(Framer.encode(request))
    replies: list[bytes] = []
    while len(replies) < len(requests):
        match await flow.read():
            case Ok(data):
                replies += framer.feed(data)
            case Eof() | Error() as end:
                raise ProtocolError(f"the server ended the flow early: {end!r}")
    await flow.close(timeout=10)
    return replies


# -- the same protocol over the blocking adapter ----------------------------------------------

def serve_requests_blocking(flow: BlockingFlow) -> None:
    framer = Framer()
    while True:
        match flow.read():
            case Ok(data):
                for request in framer.feed(data):
                    flow.writev(Framer.encode(answer(request)))
            case Eof():
                framer.check_complete()
                return
            case Error(err):
                raise ProtocolError(error_message(err))


def call_blocking(flow: BlockingFlow, requests: list[bytes]) -> list[bytes]:
    framer = Framer()
    for request in requests:
        flow.writev(Framer.encode(request))
    replies: list[bytes] = []
    while len(replies) < len(requests):
        match flow.read():
            case Ok(data):
                replies += framer.feed(data)
            case Eof() | Error() as end:
                raise ProtocolError(f"the server ended the flow early: {end!r}")
    flow.close(timeout=10)
    return replies


# -- one run per adapter: a server and a client in one process --------------------------------

def run_asyncio(requests: list[bytes]) -> list[bytes]:
    async def main() -> list[bytes]:
        async with sf_asyncio.serve(serve_requests, "127.0.0.1", 0) as server:
            return await call(await sf_asyncio.connect("127.0.0.1", server.port), requests)

    return asyncio.run(main())


def run_trio(requests: list[bytes]) -> list[bytes]:
    async def main() -> list[bytes]:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(sf_trio.serve, serve_requests, "127.0.0.1", 0)
            replies = await call(await sf_trio.connect("127.0.0.1", port), requests)
            nursery.cancel_scope.cancel()
        return replies

    return trio.run(main)


def run_socket(requests: list[bytes]) -> list[bytes]:
    with sf_socket.serve(serve_requests_blocking, "127.0.0.1", 0) as server:
        return call_blocking(sf_socket.connect("127.0.0.1", server.port), requests)


def run_across(requests: list[bytes]) -> list[bytes]:
    """A trio client against a blocking server: the wire protocol is the same."""
    with sf_socket.serve(serve_requests_blocking, "127.0.0.1", 0) as server:
        port = server.port
        return trio.run(lambda: _trio_call(port, requests))


async def _trio_call(port: int, requests: list[bytes]) -> list[bytes]:
    return await call(await sf_trio.connect("127.0.0.1", port), requests)


RUNS = {"asyncio": run_asyncio, "trio": run_trio, "socket": run_socket, "across": run_across}


def main() -> None:
    requests = [b"ping", b"", b"x" * 100_000, b"sansflow"]
    for name, run in RUNS.items():
        replies = run(requests)
        assert replies == [answer(r) for r in requests], name
        print(f"{name}: {len(replies)} replies, {sum(map(len, replies))} bytes")


if __name__ == "__main__":
    main()
