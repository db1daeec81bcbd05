"""The core alone, no I/O: bytes go write -> buffers_to_send -> sent -> receive_data -> read.

Compared in the same run with the in-memory streams a user would otherwise reach for:
trio's ``memory_stream_pair`` and an asyncio ``StreamReader`` fed by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sansflow import Flow, Ok

SMALL = b"x" * 100
LARGE = bytes(64 * 1024)
BATCH = 64  # small writes queued before one flush, as an adapter's send loop would find them


def _transfer(sender: Flow, receiver: Flow) -> None:
    for buffer in sender.buffers_to_send():
        receiver.receive_data(buffer)
    sender.sent(sender.queued)


def core_lockstep(count: int, payload: bytes) -> int:
    """One write, one flush, one read per message: the worst case for per-call overhead."""
    a, b = Flow(), Flow(receive_limit=1 << 30)
    received = 0
    for _ in range(count):
        a.write(payload)
        _transfer(a, b)
        result = b.read()
        assert isinstance(result, Ok)
        received += len(result.value)
    return received


def core_batched(count: int, payload: bytes) -> int:
    """``BATCH`` writes, then one flush and one read: what an adapter's loop does."""
    a, b = Flow(high_water=1 << 30), Flow(receive_limit=1 << 30)
    received = 0
    for _ in range(count // BATCH):
        for _ in range(BATCH):
            a.write(payload)
        _transfer(a, b)
        result = b.read()
        assert isinstance(result, Ok)
        received += len(result.value)
    return received


def trio_memory(count: int, payload: bytes) -> int:
    import trio
    import trio.testing

    async def main() -> int:
        left, right = trio.testing.memory_stream_pair()
        received = 0
        for _ in range(count):
            await left.send_all(payload)
            while True:
                data = await right.receive_some(1 << 20)
                received += len(data)
                if received % len(payload) == 0:
                    break
        return received

    return trio.run(main)


def asyncio_stream_reader(count: int, payload: bytes) -> int:
    async def main() -> int:
        reader = asyncio.StreamReader(limit=1 << 30)
        received = 0
        for _ in range(count):
            reader.feed_data(payload)
            received += len(await reader.read(1 << 20))
        return received

    return asyncio.run(main())


CONTENDERS: dict[str, Callable[[int, bytes], int]] = {
    "sansflow core (lockstep)": core_lockstep,
    "sansflow core (64 writes per flush)": core_batched,
    "trio memory_stream_pair": trio_memory,
    "asyncio StreamReader fed by hand": asyncio_stream_reader,
}


def measure(name: str, count: int, payload: bytes) -> dict[str, Any]:
    """One timed run; the byte count is verified, not assumed."""
    run = CONTENDERS[name]
    start = time.perf_counter()
    received = run(count, payload)
    elapsed = time.perf_counter() - start
    expected = (count // BATCH * BATCH if run is core_batched else count) * len(payload)
    if received != expected:
        raise AssertionError(f"{name}: received {received} bytes, expected {expected}")
    writes = expected // len(payload)
    return {
        "name": name,
        "writes_per_s": writes / elapsed,
        "mib_per_s": expected / elapsed / (1 << 20),
        "bytes": received,
    }
