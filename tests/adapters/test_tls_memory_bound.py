"""What a TLS flow holds in the process while its peer never reads, on every adapter.

test_memory_bound.py bounds the plaintext queue of a plain flow. Under TLS the process also
holds the ciphertext made of it that the kernel has not taken: the layer encrypts only while
the flow below is at or under its low-water mark, whole records up to its high-water mark, so
that ciphertext stays within the high-water mark and the records' overhead (the low-water mark
plus one record, for marks smaller than a record), below the request's bound of high water plus
one record, however much was written. A 10 MiB write is queued as it is (one write: the
contract's bound for the plaintext queue), never encrypted ahead into memory.

Measured from outside the adapter, as test_memory_bound.py does: the records are all full
(16 KiB of plaintext each, as a write of whole records makes them), so the ciphertext made is
known from the plaintext taken out of the queue, and

    held = ciphertext made - the writer's kernel send queue (SIOCOUTQ)
                           - the bytes waiting unread at the peer (FIONREAD)

is what the process holds of it, wherever the adapter keeps it (or less: see ``check``). The
peer is Python's
``ssl.SSLObject``; once the writer waits, it reads and decrypts everything, to check that
waiting lost and reordered nothing.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from test_memory_bound import FIONREAD, SIOCOUTQ, STILL, TIMEOUT, ioctl_int, tcp_sockets

from sansflow import AdapterFlow, Ok
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio

NAME = "localhost"  # what the test certificate names
TOTAL = 10 * 1024 * 1024
RECORD = 16 * 1024  # the plaintext of a full TLS record
OVERHEAD = 5 + 1 + 16  # a TLS 1.3 record's header, inner content type and AEAD tag
PATTERNS = {"one-10MiB-write": [TOTAL], "64KiB-writes": [64 * 1024] * (TOTAL // (64 * 1024))}


class Peer:
    """The reading end: a TLS server over the peer's socket, which reads only when told to."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._thread = threading.Thread(target=self._handshake, name="test-tls-peer",
                                        daemon=True)
        self._thread.start()

    def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_pending()
                self._incoming.write(self.sock.recv(64 * 1024))
        self._send_pending()  # the session tickets

    def _send_pending(self) -> None:
        if self._outgoing.pending:
            self.sock.sendall(self._outgoing.read())

    def handshake_done(self) -> None:
        """Wait for the handshake, which reads nothing past the client's last message (the
        client writes only once its own handshake is done, after the server's answer)."""
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the peer's handshake did not end"

    def read_all(self, size: int) -> bytes:
        """Read and decrypt until ``size`` bytes of plaintext came."""
        received = bytearray()
        while len(received) < size:
            chunk = self.sock.recv(1 << 20)
            assert chunk, f"the peer's EOF after {len(received)} of {size} bytes"
            self._incoming.write(chunk)
            while True:
                try:
                    received += self._tls.read(1 << 20)
                except ssl.SSLWantReadError:
                    break
        return bytes(received)


class Meter:
    """Counts what write() accepted and works out the ciphertext the process holds."""

    def __init__(self, writer: socket.socket, peer: socket.socket) -> None:
        self.writer = writer
        self.peer = peer
        self.accepted = 0
        self._last: tuple[int, ...] | None = None
        self._still = 0

    def held(self, flow: AdapterFlow) -> int:
        """Ciphertext made and not yet in the kernel, from the plaintext the layer took."""
        encrypted = self.accepted - flow.queued
        assert encrypted % RECORD == 0, encrypted  # whole records only: writes of whole ones
        made = encrypted + encrypted // RECORD * OVERHEAD
        return made - ioctl_int(self.writer, SIOCOUTQ) - ioctl_int(self.peer, FIONREAD)

    def settled(self, flow: AdapterFlow) -> bool:
        """``True`` once nothing moved for ``STILL`` samples in a row: the kernel buffers
        are full and the flow waits."""
        state = (self.accepted, flow.queued, ioctl_int(self.writer, SIOCOUTQ),
                 ioctl_int(self.peer, FIONREAD))
        self._still = self._still + 1 if state == self._last else 0
        self._last = state
        return self._still >= STILL

    def check(self, flow: AdapterFlow) -> None:
        assert flow.tls is not None
        assert flow.tls.version == "TLSv1.3"  # the record overhead counted above
        # At rest, though bytes the peer received but has not acknowledged yet count in
        # both queues: the sample can only come out low, never above what is held.
        held = self.held(flow)
        assert flow.queued > 0, "the writer never had to wait"
        records = max(flow.high_water, flow.low_water + RECORD) // RECORD
        assert held <= max(flow.high_water, flow.low_water + RECORD) + records * OVERHEAD, (
            held, flow.high_water)
        assert held <= flow.high_water + RECORD  # the request's bound


def chunks(data: bytes, pattern: str) -> list[memoryview]:
    view = memoryview(data)  # read-only: queued as it is, never copied
    at = 0
    pieces = []
    for size in PATTERNS[pattern]:
        pieces.append(view[at:at + size])
        at += size
    return pieces


DATA = bytes(range(256)) * (TOTAL // 256)


async def until(condition: Callable[[], bool], sleep: Callable[[float], Awaitable[Any]]
                ) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        await sleep(0.002)


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("adapter", ["asyncio", "uvloop", "trio"])
def test_an_async_tls_flow_holds_at_most_high_water_of_ciphertext(
        adapter: str, pattern: str, server_ctx: ssl.SSLContext,
        client_ctx: ssl.SSLContext) -> None:
    sf = sf_trio if adapter == "trio" else sf_asyncio

    async def main(sleep: Callable[[float], Awaitable[Any]],
                   in_thread: Callable[..., Awaitable[bytes]],
                   in_background: Callable[[Callable[[], Awaitable[None]]], Any]) -> None:
        writer, peer_sock = tcp_sockets()
        writer.setblocking(False)
        peer = Peer(peer_sock, server_ctx)
        meter = Meter(writer, peer_sock)
        flow = await sf.wrap_tls(await sf.wrap(writer), client_ctx, server_hostname=NAME,
                                 handshake_timeout=TIMEOUT)
        peer.handshake_done()
        try:
            async def write_all() -> None:
                for piece in chunks(DATA, pattern):
                    assert await flow.write(piece) == Ok(None)
                    meter.accepted += len(piece)

            writing = await in_background(write_all)
            await until(lambda: meter.settled(flow), sleep)
            meter.check(flow)
            assert await in_thread(peer.read_all, TOTAL) == DATA
            await writing()
        finally:
            await flow.abort()
            peer_sock.close()

    if adapter == "trio":
        async def trio_main() -> None:
            async with trio.open_nursery() as nursery:
                async def in_background(job: Callable[[], Awaitable[None]]) -> Any:
                    done = trio.Event()

                    async def run() -> None:
                        await job()
                        done.set()

                    nursery.start_soon(run)
                    return done.wait

                await main(trio.sleep, trio.to_thread.run_sync, in_background)

        trio.run(trio_main)
    else:
        async def asyncio_main() -> None:
            async def in_background(job: Callable[[], Awaitable[None]]) -> Any:
                task = asyncio.ensure_future(job())

                async def wait() -> None:
                    await asyncio.wait_for(task, TIMEOUT)

                return wait

            await main(asyncio.sleep, asyncio.to_thread, in_background)

        if adapter == "uvloop":
            uvloop = pytest.importorskip("uvloop")
            loop = uvloop.new_event_loop()
            try:
                loop.run_until_complete(asyncio_main())
            finally:
                loop.close()
        else:
            asyncio.run(asyncio_main())


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_a_blocking_tls_flow_holds_at_most_high_water_of_ciphertext(
        pattern: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    writer, peer_sock = tcp_sockets()
    peer = Peer(peer_sock, server_ctx)
    meter = Meter(writer, peer_sock)
    flow = sf_socket.wrap_tls(sf_socket.wrap(writer), client_ctx, server_hostname=NAME,
                              handshake_timeout=TIMEOUT)
    peer.handshake_done()
    failure: list[BaseException] = []

    def write_all() -> None:
        try:
            for piece in chunks(DATA, pattern):
                assert flow.write(piece) == Ok(None)
                meter.accepted += len(piece)
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    writing = threading.Thread(target=write_all, name="test-writer", daemon=True)
    try:
        writing.start()
        deadline = time.monotonic() + TIMEOUT
        while not meter.settled(flow):
            assert time.monotonic() < deadline, "gave up waiting"
            time.sleep(0.002)
        meter.check(flow)
        assert peer.read_all(TOTAL) == DATA
        writing.join(TIMEOUT)
        assert not writing.is_alive(), "the writer did not finish once the peer read"
        assert failure == []
    finally:
        flow.abort()
        writing.join(TIMEOUT)
        peer_sock.close()
