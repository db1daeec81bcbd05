"""The checks of the contract's section "Cancellation" (docs/contract.md)."""

from __future__ import annotations

import random

import anyio

from ..._results import Eof, Error, Ok, ReadResult
from ..._state import Shutdown
from ._runner import CheckContext, _check
from ._tools import (
    _EOF,
    _OK,
    _POLL,
    _QUIET,
    _SETTLE,
    _expect,
    _expect_equal,
    _parse_records,
    _read,
    _read_exactly,
    _record,
    _start,
    _stream,
    _tasks,
)


@_check("Cancellation: a cancelled read loses no data", cancellation=True)
async def _cancelled_read(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    ctx.step = "cancelling a.read() that waits"
    result: ReadResult | None = None
    with anyio.move_on_after(_SETTLE) as scope:
        result = await a.read()
    _expect(scope.cancelled_caught, f"a.read() returned {result!r} although nothing was sent")
    _expect_equal(await b.write(b"after"), _OK, "b.write(b'after')")
    _expect_equal(await _read_exactly(a, 5, "a"), b"after", "a received after a cancelled read")
    total = 256 * 1024
    rng = random.Random(5)

    async def trickle() -> None:
        offset = 0
        while offset < total:
            size = min(rng.randint(1, 8192), total - offset)
            _expect_equal(await b.write(_stream(offset, size)), _OK, "b.write()")
            offset += size
            await anyio.sleep(0 if offset % 3 else 0.0005)
        await b.shutdown(Shutdown.WRITE)

    ctx.step = "a reads under random cancellation while b trickles 256 KiB, then EOF"
    got = bytearray()
    end: ReadResult | None = None
    async with _tasks(ctx) as group:
        group.start_soon(trickle)
        while end is None:
            with anyio.move_on_after(rng.choice((0, 0, 0.0001, 0.001, 0.01))):
                result = await _read(a, "a", rng.choice((1, 100, 4096, None)))
                if isinstance(result, Ok):
                    got += result.value
                else:
                    end = result
    _expect_equal(end, _EOF, f"a.read() after {len(got)} bytes")
    _expect(got == _stream(0, total),
            f"a received {len(got)} bytes that differ from the {total} b sent: "
            "a cancelled read lost or repeated data")


@_check("Cancellation: a cancelled write leaves all of its buffer queued or none of it",
        cancellation=True)
async def _cancelled_write(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    rng = random.Random(3)
    accepted: set[int] = set()
    cancelled: set[int] = set()
    next_index = 0
    progress = {"writing": False, "done": 0}

    async def write_record(size: int, deadline: float | None) -> None:
        nonlocal next_index
        index = next_index
        next_index += 1
        progress["writing"] = True
        try:
            with anyio.move_on_after(deadline):
                _expect_equal(await a.write(_record(index, size)), _OK, f"a.write(#{index})")
                accepted.add(index)
                progress["done"] += 1
                return
            cancelled.add(index)
        finally:
            progress["writing"] = False

    async def fill(scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await write_record(16 * 1024, None)
        cancelled.add(next_index - 1)  # the write that was waiting when the scope ended

    ctx.step = "a writes until a write waits (b not reading), then that write is cancelled"
    async with _tasks(ctx) as group:
        fill_scope = anyio.CancelScope()
        group.start_soon(fill, fill_scope)
        last, since = -1, anyio.current_time()
        while True:
            await anyio.sleep(_POLL)
            if not progress["writing"] or progress["done"] != last:
                last, since = progress["done"], anyio.current_time()
            elif anyio.current_time() - since >= _QUIET:
                break
        fill_scope.cancel()

    async def read_slowly() -> tuple[bytes, Eof | Error]:
        got = bytearray()
        while True:
            result = await _read(b, "b", 16 * 1024)
            if not isinstance(result, Ok):
                assert isinstance(result, (Eof, Error))
                return bytes(got), result
            got += result.value
            await anyio.sleep(0.0005)

    ctx.step = "a writes under random cancellation while b reads slowly"
    async with _tasks(ctx) as group:
        received = _start(group, read_slowly)
        for _ in range(150):
            await write_record(rng.randint(1, 32 * 1024),
                               rng.choice((0, 0.0001, 0.001, 0.005)))
        await a.shutdown(Shutdown.WRITE)
    data, end = received.result()
    _expect_equal(end, _EOF, "b.read() at the end")
    indices = _parse_records(data)
    _expect(indices == sorted(indices), f"writes arrived out of order: {indices[:20]}...")
    missing = accepted - set(indices)
    _expect(not missing, f"writes that returned Ok(None) never arrived: {sorted(missing)[:10]}")
    unknown = set(indices) - accepted - cancelled
    _expect(not unknown, f"unexpected writes arrived: {sorted(unknown)[:10]}")
