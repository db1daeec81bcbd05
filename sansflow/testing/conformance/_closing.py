"""The checks of the contract's section "Closing" (docs/contract.md)."""

from __future__ import annotations

import random

import anyio

from ..._errors import ErrorKind, FlowError
from ..._results import Eof, Error, Ok
from ..._state import FlowState, ReceiveState, Shutdown
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
    _expect_one_line,
    _expect_peer_end,
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


@_check("Closing: close() flushes, sends EOF and returns only once the peer's EOF "
        "arrived (HALF_CLOSED_LOCAL meanwhile, input still readable); idempotent")
async def _close_waits_for_peer(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    _expect_equal(await a.write(b"request"), _OK, "a.write(b'request')")
    async with _tasks(ctx) as group:
        ctx.step = "a.close() while b has not closed"
        first_close = _start(group, a.close)
        second_close = _start(group, a.close)
        reader = _start(group, lambda: _read_to_end(a, "a"))
        ctx.step = "b reads a's data and EOF while a.close() is pending"
        data, end = await _read_to_end(b, "b")
        _expect_equal(data, b"request", "b received")
        _expect_equal(end, _EOF, "b.read() after a.close() started")
        await _expect_still_waiting(first_close, "a.close() (the peer has not closed)")
        _expect(not second_close.done.is_set(),
                "a second a.close() returned before the peer closed")
        _expect_state(a, "a", FlowState.HALF_CLOSED_LOCAL)
        ctx.step = "b writes 1 MiB, far above a's receive limit, while a.close() is pending"
        response = _stream(0, 1024 * 1024)
        _expect_equal(await b.write(response), _OK, "b.write(1 MiB)")
        ctx.step = "b.close() (a's EOF already arrived) while a's reader reads"
        await b.close()
        ctx.step = "both a.close() calls return after b closed"
        await first_close.wait()
        await second_close.wait()
        data, end = await reader.wait()
        _expect(data == response,
                f"a's reader, during close(), received {len(data)} bytes, not the "
                f"{len(response)} b sent")
        _expect_equal(end, _EOF, "a's reader, during close(), at the end")
    for who, flow in (("a", a), ("b", b)):
        _expect_state(flow, who, FlowState.CLOSED)
        _expect_equal(flow.error, None, f"{who}.error after a clean close")
    ctx.step = "a.close() once CLOSED"
    with _within(5, "a.close() on a CLOSED flow"):
        await a.close()


@_check("Closing: a backlog far above high water, then close(): every byte arrives, "
        "in order, before Eof()")
async def _large_backlog(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    total = 4 * 1024 * 1024
    sizes = [1, 1000, 65536, 300_000, 7, 16384, 128 * 1024]
    largest = max(sizes)

    async def write_then_close() -> None:
        offset = 0
        index = 0
        while offset < total:
            size = min(sizes[index % len(sizes)], total - offset)
            chunk = _stream(offset, size)
            if index % 3 == 2:
                result = await a.writev(chunk[i:i + 4096] for i in range(0, size, 4096))
            else:
                result = await a.write(chunk)
            _expect_equal(result, _OK, f"a.write() at byte {offset}")
            queued = a.queued
            _expect(queued <= a.high_water + largest,
                    f"a.queued is {queued}, above high_water ({a.high_water}) "
                    f"plus one write ({largest})")
            offset += size
            index += 1
        ctx.step = "a.close() after the backlog"
        await a.close()

    async def read_slowly() -> tuple[bytes, Eof | Error]:
        rng = random.Random(11)
        got = bytearray()
        reads = 0
        while True:
            want = rng.choice((512, 4096, 65536, None))
            result = await _read(b, "b", want)
            if not isinstance(result, Ok):
                assert isinstance(result, (Eof, Error))
                return bytes(got), result
            got += result.value
            reads += 1
            if reads % 8 == 0:
                await anyio.sleep(0.001)

    ctx.step = "a writes 4 MiB and closes while b reads slowly"
    async with _tasks(ctx) as group:
        group.start_soon(write_then_close)
        received = _start(group, read_slowly)
        data, end = await received.wait()
        _expect(data == _stream(0, total),
                f"b received {len(data)} bytes before {end!r}, not the {total} a wrote "
                "(or not in order)")
        _expect_equal(end, _EOF, "b.read() after a.close()")
        ctx.step = "b.close(), then a.close() returns"
        await b.close()
    for who, flow in (("a", a), ("b", b)):
        _expect_state(flow, who, FlowState.CLOSED)
        _expect_equal(flow.error, None, f"{who}.error")


@_check("Closing: close(timeout) against a peer that never closes returns at the "
        "deadline: CLOSED, error TIMED_OUT; the peer sees Eof() or a reset")
async def _close_deadline(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    sent = b"last words"
    _expect_equal(await a.write(sent), _OK, "a.write()")
    ctx.step = "a.close(timeout=0.1) while b never closes"
    with _within(_CLOSE_WAIT, "a.close(timeout=0.1) against a peer that never closes"):
        await a.close(timeout=0.1)
    _expect_state(a, "a", FlowState.CLOSED)
    error = a.error
    _expect(isinstance(error, FlowError) and error.kind is ErrorKind.TIMED_OUT,
            f"a.error after close() timed out: {error!r}, expected kind TIMED_OUT")
    assert error is not None
    _expect_one_line(error, "a")
    await _expect_read(a, Error(error), "a", times=3)
    ctx.step = "b reads after a's close deadline"
    data, end = await _read_to_end(b, "b")
    _expect(sent.startswith(data), f"b received {data!r}, not a prefix of {sent!r}")
    _expect_peer_end(end, "b")


@_check("Closing: close(timeout) against a peer that never reads returns at the deadline "
        "even though the queue cannot be flushed: CLOSED, error TIMED_OUT")
async def _close_deadline_while_flushing(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    filler = _Filler(a, 16 * 1024)
    async with _tasks(ctx) as group:
        ctx.step = "a writes until a write waits (b not reading)"
        group.start_soon(filler.run)
        await filler.until_blocked()
        ctx.step = "a.close(timeout=0.1) with a write waiting and b never reading"
        with _within(_CLOSE_WAIT, "a.close(timeout=0.1) with a queue that cannot drain"):
            await a.close(timeout=0.1)
        with _within(_WAKE_WAIT, "waking the waiting a.write() when close() ended"):
            while filler.end is None:
                await anyio.sleep(_POLL)
    _expect_state(a, "a", FlowState.CLOSED)
    error = a.error
    _expect(isinstance(error, FlowError) and error.kind is ErrorKind.TIMED_OUT,
            f"a.error after close() timed out: {error!r}, expected kind TIMED_OUT")
    assert error is not None
    _expect(filler.end in (_EOF, Error(error)),
            f"the waiting a.write() returned {filler.end!r} when close() began and timed out")
    await _expect_read(a, Error(error), "a", times=2)
    ctx.step = "b reads after a's close deadline"
    data, end = await _read_to_end(b, "b")
    _expect(_stream(0, filler.accepted).startswith(data),
            f"b received {len(data)} bytes that are not a prefix of what a wrote")
    _expect_peer_end(end, "b")


@_check("Closing: abort() ends a pending close(): it returns, the flow is CLOSED with the "
        "ABORTED error")
async def _abort_ends_close(ctx: CheckContext) -> None:
    a = ctx.a
    async with _tasks(ctx) as group:
        ctx.step = "a.close() while b never closes"
        closing = _start(group, a.close)
        await _expect_still_waiting(closing, "a.close() (the peer has not closed)")
        ctx.step = "a.abort() with a.close() pending"
        await a.abort()
        with _within(_WAKE_WAIT, "a.close() returning after abort()"):
            await closing.wait()
    _expect_state(a, "a", FlowState.CLOSED)
    error = a.error
    _expect(isinstance(error, FlowError) and error.kind is ErrorKind.ABORTED,
            f"a.error after abort(): {error!r}, expected kind ErrorKind.ABORTED")


@_check("Closing: abort() wakes a waiting reader and a waiting writer with the same Error "
        "(ABORTED); the peer reads what arrived, then Eof() or a reset")
async def _abort_wakes_waiters(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    filler = _Filler(a, 16 * 1024)
    async with _tasks(ctx) as group:
        ctx.step = "a reads and writes until both wait"
        reading = _start(group, lambda: _read(a, "a"))
        group.start_soon(filler.run)
        await filler.until_blocked()
        _expect(not reading.done.is_set(), "a.read() returned although b sent nothing")
        ctx.step = "a.abort() with a reader and a writer waiting"
        await a.abort()
        with _within(_WAKE_WAIT, "waking the waiting a.read() and a.write() after abort()"):
            read_result = await reading.wait()
            while filler.end is None:
                await anyio.sleep(_POLL)
    error = a.error
    _expect(isinstance(error, FlowError) and error.kind is ErrorKind.ABORTED,
            f"a.error after abort(): {error!r}, expected kind ErrorKind.ABORTED")
    assert error is not None
    _expect_equal(read_result, Error(error), "the waiting a.read() after abort()")
    _expect_equal(filler.end, Error(error), "the waiting a.write() after abort()")
    _expect_state(a, "a", FlowState.CLOSED)
    ctx.step = "b reads after a's abort()"
    data, end = await _read_to_end(b, "b")
    _expect(_stream(0, filler.accepted).startswith(data),
            f"b received {len(data)} bytes that are not a prefix of what a wrote "
            f"({filler.accepted} bytes accepted)")
    _expect_peer_end(end, "b")
    await _expect_read(b, end, "b", times=2)


@_check("Closing: cancelling close() aborts the flow (CLOSED, ABORTED); the peer sees "
        "Eof() or a reset", cancellation=True)
async def _cancelled_close(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    sent = b"goodbye"
    _expect_equal(await a.write(sent), _OK, "a.write()")
    ctx.step = "cancelling a.close() while b never closes"
    with anyio.move_on_after(2 * _SETTLE) as scope:
        await a.close()
    _expect(scope.cancelled_caught, "a.close() returned although b never closed")
    _expect_state(a, "a", FlowState.CLOSED)
    error = a.error
    _expect(isinstance(error, FlowError) and error.kind is ErrorKind.ABORTED,
            f"a.error after a cancelled close(): {error!r}, expected kind ABORTED")
    ctx.step = "b reads after a's cancelled close()"
    data, end = await _read_to_end(b, "b")
    _expect(sent.startswith(data), f"b received {data!r}, not a prefix of {sent!r}")
    _expect_peer_end(end, "b")
    ctx.step = "a.close() cancelled before it starts, on a fresh CLOSED flow"
    with anyio.CancelScope() as scope:
        scope.cancel()
        await a.close()
    _expect_state(a, "a", FlowState.CLOSED)


@_check("Closing: shutdown(READ) discards buffered and later input, reads return Eof(); "
        "writing and the peer's EOF still work")
async def _shutdown_read(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    _expect_equal(await b.write(b"discard me"), _OK, "b.write()")
    await anyio.sleep(_SETTLE)
    ctx.step = "a.shutdown(Shutdown.READ)"
    await a.shutdown(Shutdown.READ)
    _expect(a.receive_state in (ReceiveState.DISCARDING, ReceiveState.EOF_RECEIVED),
            f"a.receive_state after shutdown(READ): {a.receive_state!r}")
    await _expect_read(a, _EOF, "a", times=3)
    _expect_equal(await b.write(b"and me"), _OK, "b.write() after a's shutdown(READ)")
    ctx.step = "a writes after its shutdown(READ)"
    _expect_equal(await a.write(b"still writable"), _OK, "a.write() after shutdown(READ)")
    _expect_equal(await _read_exactly(b, 14, "b"), b"still writable", "b received")
    await _expect_read(a, _EOF, "a")
    ctx.step = "b.shutdown(WRITE), then a.close() sees b's EOF"
    await b.shutdown(Shutdown.WRITE)
    with _within(_CLOSE_WAIT, "a.close() after the peer's EOF, reading shut down"):
        await a.close()
    _expect_state(a, "a", FlowState.CLOSED)
    _expect_equal(a.error, None, "a.error")
    await _expect_read(a, _EOF, "a")


@_check("Closing: after shutdown(BOTH) reads and writes return Eof(), the peer sees EOF; "
        "close() then completes once the peer closes")
async def _shutdown_both(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    _expect_equal(await a.write(b"before"), _OK, "a.write()")
    async with _tasks(ctx) as group:
        ctx.step = "a.shutdown(Shutdown.BOTH) with a read waiting"
        reading = _start(group, lambda: _read(a, "a"))
        await _expect_still_waiting(reading, "a.read() with nothing sent")
        await a.shutdown(Shutdown.BOTH)
        _expect_state(a, "a", FlowState.HALF_CLOSED_LOCAL)
        _expect_equal(await a.write(b"after"), _EOF, "a.write() after shutdown(BOTH)")
        data, end = await _read_to_end(b, "b")
        _expect_equal((data, end), (b"before", _EOF), "b: data, then")
        ctx.step = "b.close(), then a.close()"
        with _within(_CLOSE_WAIT, "b.close() after the peer's EOF"):
            await b.close()
        # A read waiting when input was shut down returns Eof() at the latest when the
        # peer's EOF arrives (an adapter may not be able to interrupt a pending receive).
        with _within(_WAKE_WAIT, "the waiting a.read() returning after shutdown(BOTH) "
                                 "and the peer's EOF"):
            _expect_equal(await reading.wait(), _EOF, "the waiting a.read() after "
                                                      "shutdown(BOTH)")
        await _expect_read(a, _EOF, "a", times=2)
        with _within(_CLOSE_WAIT, "a.close() after the peer closed"):
            await a.close()
    for who, flow in (("a", a), ("b", b)):
        _expect_state(flow, who, FlowState.CLOSED)
        _expect_equal(flow.error, None, f"{who}.error")
