"""The checks of the contract's section "Writing and backpressure" (docs/contract.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from ..._results import WriteResult
from ._runner import CheckContext, _check
from ._tools import (
    _CONFIRM,
    _OK,
    _POLL,
    _expect,
    _expect_equal,
    _Filler,
    _read_exactly,
    _start,
    _stream,
    _tasks,
)


@_check("Writing and backpressure: writev() queues all buffers in order; any bytes-like "
        "buffer is accepted, its length counted in bytes")
async def _writev_and_buffer_types(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    calls: list[tuple[str, Callable[[], Awaitable[WriteResult]], bytes]] = [
        ("a.writev([bytes, bytearray, memoryview, b'', writable memoryview])",
         lambda: a.writev([b"ab", bytearray(b"cd"), memoryview(b"ef"), b"",
                           memoryview(bytearray(b"gh"))]), b"abcdefgh"),
        ("a.writev(tuple)", lambda: a.writev((b"tu", b"ple")), b"tuple"),
        ("a.writev(generator)", lambda: a.writev(p for p in (b"gen", b"erator")),
         b"generator"),
        ("a.write(memoryview slice)", lambda: a.write(memoryview(b"0123456789")[2:5]), b"234"),
        ("a.write(memoryview cast to 'I')",
         lambda: a.write(memoryview(b"abcdefgh").cast("I")), b"abcdefgh"),
        ("a.writev([memoryview cast to 'H'])",
         lambda: a.writev([memoryview(b"ijklmnop").cast("H")]), b"ijklmnop"),
        ("a.write(bytearray)", lambda: a.write(bytearray(b"qrs")), b"qrs"),
    ]
    for what, call, expected in calls:
        ctx.step = what
        _expect_equal(await call(), _OK, what)
        _expect_equal(await _read_exactly(b, len(expected), "b"), expected,
                      f"b received after {what}")


@_check("Writing and backpressure, buffer ownership: a writable buffer is copied, so "
        "reusing it never corrupts the stream")
async def _writable_buffer_reuse(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    size = max(2 * a.high_water, 4096)
    expected = b"1" * size + b"2" * size + b"3" * size + b"4" * (size + 10)
    async with _tasks(ctx) as group:
        received = _start(group, lambda: _read_exactly(b, len(expected), "b"))
        buffer = bytearray(b"1" * size)
        view = memoryview(buffer)
        ctx.step = "writing a bytearray, then changing it"
        _expect_equal(await a.write(buffer), _OK, "a.write(bytearray)")
        buffer[:] = b"2" * size
        _expect_equal(await a.write(buffer), _OK, "a.write(the same bytearray)")
        view[:] = b"3" * size
        ctx.step = "writing a writable memoryview, then changing it"
        _expect_equal(await a.write(view), _OK, "a.write(writable memoryview)")
        buffer[:] = b"4" * size
        _expect_equal(await a.writev([buffer, view[:10]]), _OK, "a.writev([bytearray, view])")
        buffer[:] = b"5" * size
        view.release()
        ctx.step = "b reads everything"
        _expect_equal(await received.wait(), expected, "b received")


@_check("Writing and backpressure: write() returns once its data is queued; it waits only "
        "while the queue is above low water and the data would pass high water")
async def _write_returns_when_queued(ctx: CheckContext) -> None:
    a = ctx.a
    filler = _Filler(a, 16 * 1024)
    async with _tasks(ctx) as group:
        ctx.step = "a writes until a write waits (b not reading)"
        group.start_soon(filler.run)
        for _ in range(5):
            await filler.until_blocked()
            accepted = filler.accepted
            # A writer rightly woken (the queue drained to low water) resumes at once.
            with anyio.move_on_after(_CONFIRM):
                while filler.accepted == accepted and a.queued <= a.low_water:
                    await anyio.sleep(_POLL)
            if filler.accepted == accepted:
                break
        queued = a.queued
        _expect(queued > a.low_water,
                f"with b not reading, a.write() of {filler.chunk} bytes kept waiting while "
                f"a.queued was {queued}, not above low_water ({a.low_water}): a write "
                "must return once its data is queued, and wait only for room in the queue")
        ctx.step = "a.abort() to end the waiting write"
        await a.abort()


@_check("Writing and backpressure: more buffers than a vectored send takes at once "
        "(IOV_MAX, 1024 on Linux) all arrive, in order")
async def _many_buffers(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    pieces = [_stream(i * 7, 7) for i in range(3000)]
    small = pieces[:1100]  # queued faster than sent, they too exceed one vectored send
    expected = b"".join(pieces) + b"".join(small)
    async with _tasks(ctx) as group:
        ctx.step = "a.writev() of 3000 buffers, then 1100 small writes, b reading"
        received = _start(group, lambda: _read_exactly(b, len(expected), "b"))
        _expect_equal(await a.writev(pieces), _OK, "a.writev(3000 buffers)")
        for piece in small:
            _expect_equal(await a.write(piece), _OK, "a.write(7 bytes)")
        data = await received.wait()
    _expect(data == expected, "b received a corrupted copy of 4100 small buffers")
