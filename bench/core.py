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


def run(small_count: int = 200_000, large_count: int = 20_000, reps: int = 5,
        ) -> list[dict[str, Any]]:
    """Every contender on 100-byte and 64 KiB writes, interleaved, ``reps`` times; medians."""
    import statistics

    rows = []
    for payload, count in ((SMALL, small_count), (LARGE, large_count)):
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
        for _ in range(reps):
            for name in CONTENDERS:
                runs[name].append(measure(name, count, payload))
        for name, results in runs.items():
            rows.append({
                "name": name,
                "write_size": len(payload),
                "writes_per_s": statistics.median(r["writes_per_s"] for r in results),
                "mib_per_s": statistics.median(r["mib_per_s"] for r in results),
            })
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.core",
        description="The sans-IO core alone against in-memory streams, no I/O.")
    parser.add_argument("--quick", action="store_true", help="a tenth of the writes, 3 reps")
    args = parser.parse_args(argv)
    scale, reps = (10, 3) if args.quick else (1, 5)
    rows = run(200_000 // scale, 20_000 // scale, reps)
    print(f"{'contender':40} {'write':>6} {'writes/s':>12} {'MiB/s':>10}")
    for row in rows:
        print(f"{row['name']:40} {row['write_size']:>6} {row['writes_per_s']:>12,.0f} "
              f"{row['mib_per_s']:>10,.0f}")


if __name__ == "__main__":
    main()
