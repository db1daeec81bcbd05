"""What a flow holds in the process while its peer never reads, on every adapter.

The contract bounds a flow's send queue by the high-water mark plus one write; an adapter that
keeps data anywhere else in the process (asyncio's transports have a buffer of their own) must
count it against the same bound. So the test measures from outside the adapter:

    held = bytes that write() accepted
           - the writer's kernel send queue (SIOCOUTQ)
           - the bytes waiting unread at the peer (FIONREAD)

whatever is left is in the process, wherever the adapter keeps it. A writer writes chunks of
1 KiB to 64 KiB over loopback TCP into a peer that does not read (small kernel buffers, so the
writer soon waits); ``held`` is sampled after every accepted write and once the writer waits.
Then the peer reads everything, to check that waiting lost and reordered nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import random
import socket
import struct
import termios
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from types import ModuleType

import pytest
import trio

from sansflow import Ok
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop does not exist on Windows
    uvloop = None

HOST = "127.0.0.1"
TIMEOUT = 20.0  # the bound on any wait; generous, as a slow machine is not a bug
KERNEL_BUFFER = 8192  # SO_SNDBUF of the writer, SO_RCVBUF of the peer
TOTAL = 2 * 1024 * 1024  # far more than the kernel buffers and the flow can hold together
STILL = 20  # samples in a row without any change: the writer waits and nothing moves
SIOCOUTQ = termios.TIOCOUTQ  # 0x5411: bytes in a TCP socket's send queue, not yet acked
FIONREAD = termios.FIONREAD  # bytes waiting to be read
ADAPTERS = ["asyncio", "uvloop", "trio", "socket"]
PATTERNS = ["1KiB", "64KiB", "1KiB-64KiB"]


def chunk_sizes(pattern: str) -> list[int]:
    """Write sizes adding up to ``TOTAL``: all 1 KiB, all 64 KiB, or a mix of the two and
    everything between."""
    rng = random.Random(pattern)
    sizes: list[int] = []
    left = TOTAL
    while left:
        if pattern == "1KiB-64KiB":
            size = rng.randint(1024, 64 * 1024)
        else:
            size = 1024 if pattern == "1KiB" else 64 * 1024
        size = min(size, left)
        sizes.append(size)
        left -= size
    return sizes


def tcp_sockets() -> tuple[socket.socket, socket.socket]:
    """The writer's socket and the peer's, with small kernel buffers set before connecting."""
    with socket.create_server((HOST, 0)) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER)
        writer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER)
        writer.settimeout(TIMEOUT)
        writer.connect(listener.getsockname())
        listener.settimeout(TIMEOUT)
        peer, _ = listener.accept()
    writer.settimeout(None)
    peer.settimeout(TIMEOUT)
    return writer, peer


def ioctl_int(sock: socket.socket, request: int) -> int:
    value: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0]
    return value


class Meter:
    """Counts what write() accepted and works out what the process holds of it."""

    def __init__(self, writer: socket.socket, peer: socket.socket, sizes: list[int]) -> None:
        self.writer = writer
        self.peer = peer
        self.sizes = sizes
        self.data = random.Random(len(sizes)).randbytes(TOTAL)
        self.accepted = 0
        self.peak = 0
        self._last: tuple[int, int, int] | None = None
        self._still = 0

    def chunks(self) -> Iterator[bytes]:
        offset = 0
        for size in self.sizes:
            yield self.data[offset:offset + size]
            offset += size

    def took(self, size: int) -> None:
        """A write of ``size`` bytes returned Ok: count it, then measure."""
        self.accepted += size
        self.sample()

    def sample(self) -> int:
        """``accepted - SIOCOUTQ - FIONREAD``, kept as the peak. Read in this order, a byte
        moving from one count to the next meanwhile is subtracted twice, never missed: a
        sample taken while data moves can only come out low, never above what is held."""
        accepted = self.accepted
        in_kernel = ioctl_int(self.writer, SIOCOUTQ)
        at_peer = ioctl_int(self.peer, FIONREAD)
        held = accepted - in_kernel - at_peer
        self.peak = max(self.peak, held)
        state = (accepted, in_kernel, at_peer)
        self._still = self._still + 1 if state == self._last else 0
        self._last = state
        return held

    def settled(self) -> bool:
        """Sample; ``True`` once nothing moved for ``STILL`` samples in a row (the writer
        waits and the kernel buffers are full)."""
        self.sample()
        return self._still >= STILL

    def check_waiting(self, high_water: int) -> None:
        """The writer waits with data held, no more than high water plus the largest write."""
        bound = high_water + max(self.sizes)
        held = self.sample()  # at rest, every count is exact
        assert self.accepted < TOTAL, "the writer never had to wait"
        assert 0 < held <= bound, (held, bound)
        assert self.peak <= bound, (self.peak, bound)


class PeerReader:
    """Reads the peer to the end of the data on a thread, so that any adapter can go on."""

    def __init__(self, meter: Meter) -> None:
        self.received = bytearray()
        self._peer = meter.peer
        self._thread = threading.Thread(target=self._read, name="test-peer-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while len(self.received) < TOTAL:
            chunk = self._peer.recv(1 << 20)
            if not chunk:
                break
            self.received += chunk

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> bytes:
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the peer did not get all the data"
        return bytes(self.received)


def run_asyncio(new_loop: Callable[[], asyncio.AbstractEventLoop], pattern: str) -> None:
    async def main() -> None:
        writer_sock, peer = tcp_sockets()
        meter = Meter(writer_sock, peer, chunk_sizes(pattern))
        flow = await sf_asyncio.wrap(writer_sock)
        try:
            async def write_all() -> None:
                for chunk in meter.chunks():
                    assert await flow.write(chunk) == Ok(None)
                    meter.took(len(chunk))

            writing = asyncio.ensure_future(write_all())
            await until_async(lambda: meter.settled() or writing.done(), asyncio.sleep)
            meter.check_waiting(flow.high_water)
            reader = PeerReader(meter)
            await asyncio.wait_for(writing, TIMEOUT)
            await until_async(lambda: reader.done, asyncio.sleep)
            assert reader.join() == meter.data
        finally:
            await flow.abort()
            peer.close()
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)

    loop = new_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    finally:
        loop.close()


def run_trio(pattern: str) -> None:
    async def main() -> None:
        writer_sock, peer = tcp_sockets()
        writer_sock.setblocking(False)
        meter = Meter(writer_sock, peer, chunk_sizes(pattern))
        flow = await sf_trio.wrap(trio.SocketStream(trio.socket.from_stdlib_socket(writer_sock)))
        try:
            async def write_all() -> None:
                for chunk in meter.chunks():
                    assert await flow.write(chunk) == Ok(None)
                    meter.took(len(chunk))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_all)
                await until_async(lambda: meter.settled(), trio.sleep)
                meter.check_waiting(flow.high_water)
                reader = PeerReader(meter)
            await until_async(lambda: reader.done, trio.sleep)
            assert reader.join() == meter.data
        finally:
            with trio.CancelScope(shield=True):
                await flow.abort()
            peer.close()

    async def bounded() -> None:
        with trio.fail_after(TIMEOUT):
            await main()

    trio.run(bounded)


def run_socket(pattern: str) -> None:
    writer_sock, peer = tcp_sockets()
    meter = Meter(writer_sock, peer, chunk_sizes(pattern))
    flow = sf_socket.wrap(writer_sock)
    failure: list[BaseException] = []

    def write_all() -> None:
        try:
            for chunk in meter.chunks():
                assert flow.write(chunk) == Ok(None)
                meter.took(len(chunk))
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    writing = threading.Thread(target=write_all, name="test-writer", daemon=True)
    try:
        writing.start()
        until_sync(lambda: meter.settled() or not writing.is_alive())
        meter.check_waiting(flow.high_water)
        reader = PeerReader(meter)
        writing.join(TIMEOUT)
        assert not writing.is_alive(), "the writer did not finish once the peer read"
        if failure:
            raise failure[0]
        assert reader.join() == meter.data
    finally:
        flow.abort()
        writing.join(TIMEOUT)
        peer.close()


async def until_async(condition: Callable[[], bool],
                      sleep: Callable[[float], Awaitable[None]]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        await sleep(0.002)


def until_sync(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.002)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_peer_that_never_reads_pins_at_most_high_water_plus_one_write(adapter: str,
                                                                       pattern: str) -> None:
    if adapter == "asyncio":
        run_asyncio(asyncio.new_event_loop, pattern)
    elif adapter == "uvloop":
        if uvloop is None:  # pragma: no cover - uvloop does not exist on Windows
            pytest.skip("uvloop is not installed")
        run_asyncio(uvloop.new_event_loop, pattern)
    elif adapter == "trio":
        run_trio(pattern)
    else:
        run_socket(pattern)
