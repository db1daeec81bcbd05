"""The checks of the contract's section "States" (docs/contract.md)."""

from __future__ import annotations

import random

import anyio

from ..._results import Ok
from ..._state import FlowState, ReceiveState, SendState, Shutdown
from ._runner import CheckContext, _check
from ._tools import (
    _CLOSE_WAIT,
    _EOF,
    _OK,
    _POLL,
    _SETTLE,
    _WAKE_WAIT,
    _expect,
    _expect_equal,
    _expect_read,
    _expect_state,
    _expect_still_waiting,
    _Filler,
    _read,
    _read_exactly,
    _read_to_end,
    _start,
    _stream,
    _tasks,
    _within,
)
from ._wrappers import AsyncFlowLike


@_check("States, OPEN: read returns buffered data, else waits; write is queued")
async def _state_open(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    for who, flow in (("a", a), ("b", b)):
        _expect_state(flow, who, FlowState.OPEN)
        _expect_equal(flow.send_state, SendState.OPEN, f"{who}.send_state")
        _expect_equal(flow.receive_state, ReceiveState.OPEN, f"{who}.receive_state")
        _expect_equal(flow.error, None, f"{who}.error")
        _expect(0 <= flow.low_water <= flow.high_water and flow.receive_limit >= 1,
                f"{who}: inconsistent limits high_water={flow.high_water!r} "
                f"low_water={flow.low_water!r} receive_limit={flow.receive_limit!r}")
    async with _tasks(ctx) as group:
        ctx.step = "a.read() with nothing sent"
        reading = _start(group, lambda: _read(a, "a"))
        await _expect_still_waiting(reading, "a.read() with nothing sent")
        _expect_equal(await b.write(b"wake"), _OK, "b.write(b'wake')")
        ctx.step = "the waiting a.read() returns b's data"
        first = await reading.wait()
        _expect(isinstance(first, Ok) and b"wake".startswith(first.value),
                f"the waiting a.read() returned {first!r}, expected Ok(b'wake')")
    assert isinstance(first, Ok)
    rest = 4 - len(first.value)
    if rest:
        _expect_equal(await _read_exactly(a, rest, "a"), b"wake"[-rest:], "a received")
    _expect_equal(await a.write(b"queued"), _OK, "a.write(b'queued')")
    _expect_equal(await _read_exactly(b, 6, "b"), b"queued", "b received")
    _expect_state(a, "a", FlowState.OPEN)


@_check("States, HALF_CLOSED_LOCAL after shutdown(WRITE): read works; write/writev "
        "return Eof() and queue nothing")
async def _state_half_closed_local(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    _expect_equal(await a.write(b"data"), _OK, "a.write(b'data')")
    ctx.step = "a.shutdown(Shutdown.WRITE)"
    await a.shutdown(Shutdown.WRITE)
    _expect_state(a, "a", FlowState.HALF_CLOSED_LOCAL)
    _expect(a.send_state in (SendState.EOF_QUEUED, SendState.EOF_SENT),
            f"a.send_state after shutdown(WRITE): {a.send_state!r}")
    _expect_equal(await a.write(b"more"), _EOF, "a.write() after shutdown(WRITE)")
    _expect_equal(await a.writev([b"more"]), _EOF, "a.writev() after shutdown(WRITE)")
    _expect_equal(await a.write(b""), _EOF, "a.write(b'') after shutdown(WRITE)")
    ctx.step = "b reads up to a's EOF"
    data, end = await _read_to_end(b, "b")
    _expect_equal(data, b"data", "b received before Eof (nothing may follow shutdown)")
    _expect_equal(end, _EOF, "b.read() after a.shutdown(WRITE)")
    _expect_equal(a.send_state, SendState.EOF_SENT, "a.send_state once b saw the EOF")
    _expect_state(b, "b", FlowState.HALF_CLOSED_REMOTE)
    await a.shutdown(Shutdown.WRITE)
    _expect_state(a, "a", FlowState.HALF_CLOSED_LOCAL)
    async with _tasks(ctx) as group:
        ctx.step = "a.read() in HALF_CLOSED_LOCAL"
        reading = _start(group, lambda: _read(a, "a", 4))
        await _expect_still_waiting(reading, "a.read() in HALF_CLOSED_LOCAL")
        _expect_equal(await b.write(b"back"), _OK, "b.write(b'back')")
        first = await reading.wait()
    _expect(isinstance(first, Ok) and b"back".startswith(first.value),
            f"a.read() returned {first!r}, expected Ok(b'back')")
    assert isinstance(first, Ok)
    if len(first.value) < 4:
        await _read_exactly(a, 4 - len(first.value), "a")
    _expect_state(a, "a", FlowState.HALF_CLOSED_LOCAL)


@_check("States, HALF_CLOSED_REMOTE after the peer's EOF: buffered data, then Eof(); "
        "writes still queued")
async def _state_half_closed_remote(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    data = _stream(0, 100_000)

    async def send_then_eof() -> None:
        _expect_equal(await b.write(data), _OK, "b.write()")
        await b.shutdown(Shutdown.WRITE)

    async with _tasks(ctx) as group:
        ctx.step = "b writes 100000 bytes then shutdown(WRITE); a reads to Eof"
        group.start_soon(send_then_eof)
        await anyio.sleep(_SETTLE)  # let data and EOF arrive before a reads
        got, end = await _read_to_end(a, "a")
    _expect(got == data, f"a received {len(got)} bytes, not the {len(data)} b sent")
    _expect_equal(end, _EOF, "a.read() after b's data and EOF")
    _expect_state(a, "a", FlowState.HALF_CLOSED_REMOTE)
    _expect_equal(a.receive_state, ReceiveState.EOF_RECEIVED, "a.receive_state")
    _expect_equal(a.send_state, SendState.OPEN, "a.send_state")
    await _expect_read(a, _EOF, "a", times=2)
    ctx.step = "a writes after b's EOF"
    _expect_equal(await a.write(b"still open"), _OK, "a.write() in HALF_CLOSED_REMOTE")
    _expect_equal(await a.writev([b" and ", bytearray(b"writable")]), _OK,
                  "a.writev() in HALF_CLOSED_REMOTE")
    _expect_equal(await _read_exactly(b, 23, "b"), b"still open and writable", "b received")
    _expect_state(a, "a", FlowState.HALF_CLOSED_REMOTE)
    ctx.step = "a.close() after b's EOF"
    with _within(_CLOSE_WAIT, "a.close() after the peer's EOF"):
        await a.close()
    _expect_state(a, "a", FlowState.CLOSED)
    _expect_equal(a.error, None, "a.error")
    await _expect_read(b, _EOF, "b")
    _expect_state(b, "b", FlowState.CLOSED)


@_check("States, CLOSED after both EOFs: received data stays readable, then read -> "
        "Eof() and write -> Eof() on every call; close/shutdown/abort change nothing")
async def _state_closed(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    _expect_equal(await a.write(b"from a"), _OK, "a.write()")
    _expect_equal(await b.write(b"from b"), _OK, "b.write()")

    async def close(flow: AsyncFlowLike, who: str) -> None:
        await flow.close()
        _expect_equal(flow.state, FlowState.CLOSED, f"{who}.state when {who}.close() returned")

    ctx.step = "a.close() and b.close() at once"
    async with _tasks(ctx) as group:
        group.start_soon(close, a, "a")
        group.start_soon(close, b, "b")
    for who, flow, expected in (("a", a, b"from b"), ("b", b, b"from a")):
        _expect_state(flow, who, FlowState.CLOSED)
        _expect_equal(flow.error, None, f"{who}.error after a clean close")
        ctx.step = f"{who} reads what arrived before CLOSED"
        data, end = await _read_to_end(flow, who)
        _expect_equal(data, expected, f"{who} received (still readable when CLOSED)")
        _expect_equal(end, _EOF, f"{who}.read() at the end")
        await _expect_read(flow, _EOF, who, times=3)
        _expect_equal(await flow.read(1), _EOF, f"{who}.read(1) when CLOSED")
        _expect_equal(await flow.write(b"late"), _EOF, f"{who}.write() when CLOSED")
        _expect_equal(await flow.writev([b"late"]), _EOF, f"{who}.writev() when CLOSED")
        ctx.step = f"{who}.close(), shutdown(BOTH), abort() when CLOSED"
        await flow.close()
        await flow.shutdown(Shutdown.BOTH)
        await flow.abort()
        _expect_state(flow, who, FlowState.CLOSED)
        _expect_equal(flow.error, None, f"{who}.error after abort() of a cleanly closed flow")
        _expect_equal(await flow.write(b"late"), _EOF, f"{who}.write() after abort()")


@_check("States: the peer's EOF wakes a waiting read, and Eof is sticky: once read() "
        "returned Eof() every later read returns Eof()")
async def _eof_is_sticky(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    async with _tasks(ctx) as group:
        ctx.step = "a.read() waits, b writes"
        reading = _start(group, lambda: _read(a, "a", 4))
        await _expect_still_waiting(reading, "a.read() with nothing sent")
        _expect_equal(await b.write(b"last"), _OK, "b.write(b'last')")
        first = await reading.wait()
    _expect(isinstance(first, Ok) and b"last".startswith(first.value),
            f"the waiting a.read() returned {first!r}, expected Ok(b'last')")
    assert isinstance(first, Ok)
    if len(first.value) < 4:
        await _read_exactly(a, 4 - len(first.value), "a")
    async with _tasks(ctx) as group:
        ctx.step = "a.read() waits, b shuts down its side"
        reading = _start(group, lambda: _read(a, "a"))
        await _expect_still_waiting(reading, "a.read() with nothing more sent")
        await b.shutdown(Shutdown.WRITE)
        _expect_equal(await reading.wait(), _EOF, "the waiting a.read() after b's EOF")
    await _expect_read(a, _EOF, "a", times=3)
    _expect_equal(await a.read(1), _EOF, "a.read(1) after Eof")
    ctx.step = "a.close()"
    await a.close()
    _expect_state(a, "a", FlowState.CLOSED)
    await _expect_read(a, _EOF, "a", times=3)


@_check("States, HALF_CLOSED_REMOTE: writes after the peer's EOF are queued and all arrive")
async def _writes_after_peer_eof(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    await b.shutdown(Shutdown.WRITE)
    ctx.step = "a reads b's EOF"
    await _expect_read(a, _EOF, "a")
    total = 2 * 1024 * 1024
    rng = random.Random(7)

    async def write_all() -> None:
        offset = 0
        while offset < total:
            size = min(rng.randint(1, 64 * 1024), total - offset)
            chunk = _stream(offset, size)
            if size % 2:
                result = await a.write(chunk)
            else:
                half = size // 2
                result = await a.writev(p for p in (chunk[:half], chunk[half:]))
            _expect_equal(result, _OK, f"a.write() at byte {offset} after b's EOF")
            offset += size
        await a.shutdown(Shutdown.WRITE)

    ctx.step = "a writes 2 MiB after b's EOF while b reads"
    async with _tasks(ctx) as group:
        group.start_soon(write_all)
        received = _start(group, lambda: _read_to_end(b, "b"))
    data, end = received.result()
    _expect(data == _stream(0, total),
            f"b received {len(data)} bytes, not the {total} a wrote after b's EOF")
    _expect_equal(end, _EOF, "b.read() after a's shutdown(WRITE)")
    _expect_state(a, "a", FlowState.CLOSED)
    _expect_equal(a.error, None, "a.error")
    with _within(_CLOSE_WAIT, "a.close() once CLOSED"):
        await a.close()


@_check("States, HALF_CLOSED_LOCAL: shutdown(WRITE) during a pending write; a write "
        "waiting for room wakes with Eof() having queued nothing, what was queued is "
        "flushed, then EOF")
async def _shutdown_during_write(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    filler = _Filler(a, 16 * 1024)
    async with _tasks(ctx) as group:
        ctx.step = "a writes until a write waits (b not reading)"
        group.start_soon(filler.run)
        await filler.until_blocked()
        # Above low water the pending write is waiting for room, its buffer not queued.
        waiting_for_room = a.queued > a.low_water
        ctx.step = "a.shutdown(Shutdown.WRITE) with a write pending, b not reading"
        shutting = _start(group, lambda: a.shutdown(Shutdown.WRITE))
        if waiting_for_room:
            with _within(_WAKE_WAIT, "waking the a.write() waiting for room after "
                                     "shutdown(WRITE)"):
                while filler.end is None:
                    await anyio.sleep(_POLL)
            _expect_equal(filler.end, _EOF, "the a.write() waiting for room after "
                                            "shutdown(WRITE)")
        with _within(_WAKE_WAIT, "a.shutdown(WRITE) taking effect"):
            while a.send_state is SendState.OPEN:
                await anyio.sleep(_POLL)
        _expect_state(a, "a", FlowState.HALF_CLOSED_LOCAL)
        ctx.step = "b reads everything a queued, then its EOF"
        data, end = await _read_to_end(b, "b")
        await shutting.wait()
        with _within(_WAKE_WAIT, "the pending a.write() ending once b read everything"):
            while filler.end is None:
                await anyio.sleep(_POLL)
    _expect_equal(filler.end, _EOF, "a.write() after shutdown(WRITE)")
    _expect(data == _stream(0, filler.accepted),
            f"b received {len(data)} bytes, not the {filler.accepted} a's writes queued "
            "(a write refused by shutdown must queue nothing)")
    _expect_equal(end, _EOF, "b.read() after a's shutdown(WRITE)")
