"""The checks of the contract's section "Results" (docs/contract.md)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator

import anyio

from ..._errors import BusyError
from ..._results import Eof, Error, Ok
from ..._state import FlowState, Shutdown
from ._runner import CheckContext, _check, _fail
from ._tools import (
    _BUSY_WAIT,
    _EOF,
    _MAX_UNBLOCKED,
    _OK,
    _POLL,
    _expect,
    _expect_equal,
    _expect_state,
    _parse_records,
    _read,
    _read_exactly,
    _read_to_end,
    _record,
    _start,
    _stream,
    _tasks,
)
from ._wrappers import AsyncFlowLike


@_check("Results: write() returns Ok(None); read() returns Ok(data) with 1..max_bytes bytes")
async def _round_trip(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    ctx.step = "a.write(b'hello') then b reads it"
    _expect_equal(await a.write(b"hello"), _OK, "a.write(b'hello')")
    _expect_equal(await _read_exactly(b, 5, "b"), b"hello", "b received")
    ctx.step = "b.write(b'world') then a reads it"
    _expect_equal(await b.write(b"world"), _OK, "b.write(b'world')")
    _expect_equal(await _read_exactly(a, 5, "a"), b"world", "a received")
    ctx.step = "a.read(1) after b wrote 3 bytes"
    _expect_equal(await b.write(b"xyz"), _OK, "b.write(b'xyz')")
    _expect_equal(await _read(a, "a", 1), Ok(b"x"), "a.read(1)")
    _expect_equal(await _read_exactly(a, 2, "a"), b"yz", "a received after a.read(1)")
    ctx.step = "empty writes"
    _expect_equal(await a.write(b""), _OK, "a.write(b'')")
    _expect_equal(await a.writev([]), _OK, "a.writev([])")
    _expect_equal(await a.write(b"!"), _OK, "a.write(b'!')")
    _expect_equal(await _read(b, "b"), Ok(b"!"), "b.read() after empty writes and b'!'")
    _expect_state(a, "a", FlowState.OPEN)
    _expect_state(b, "b", FlowState.OPEN)


@_check("Results: writing and reading both ways at once, every byte arrives once, in order")
async def _duplex(ctx: CheckContext) -> None:
    size = 1024 * 1024
    forward = _stream(0, size)
    backward = _stream(size, size)

    async def send(flow: AsyncFlowLike, data: bytes, seed: int, who: str) -> None:
        rng = random.Random(seed)
        view = memoryview(data)
        while view:
            chunk = rng.randint(1, 16 * 1024)
            _expect_equal(await flow.write(view[:chunk]), _OK, f"{who}.write()")
            view = view[chunk:]

    async def receive(flow: AsyncFlowLike, size: int, seed: int, who: str) -> bytes:
        rng = random.Random(seed)
        got = bytearray()
        while len(got) < size:
            want = min(rng.randint(1, 16 * 1024), size - len(got))
            result = await _read(flow, who, want)
            if not isinstance(result, Ok):
                raise _fail(f"{who}.read() returned {result!r} after {len(got)} bytes")
            got += result.value
        return bytes(got)

    ctx.step = "1 MiB each way at once"
    async with _tasks(ctx) as group:
        group.start_soon(send, ctx.a, forward, 1, "a")
        group.start_soon(send, ctx.b, backward, 2, "b")
        at_b = _start(group, lambda: receive(ctx.b, size, 3, "b"))
        at_a = _start(group, lambda: receive(ctx.a, size, 4, "a"))
    _expect(at_b.result() == forward, "b received a corrupted copy of what a sent")
    _expect(at_a.result() == backward, "a received a corrupted copy of what b sent")


@_check("Results: two tasks reading at once -> BusyError for one, the other read "
        "completes normally")
async def _busy_read(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    async with _tasks(ctx) as group:
        ctx.step = "two a.read() calls at once"
        readers = [_start(group, lambda: _read(a, "a")) for _ in range(2)]
        with anyio.move_on_after(_BUSY_WAIT):
            while not any(r.done.is_set() for r in readers):
                await anyio.sleep(_POLL)
        _expect(any(r.done.is_set() for r in readers),
                f"two concurrent a.read() calls both kept waiting for {_BUSY_WAIT:g} s: "
                "expected one BusyError")
        finished = [r for r in readers if r.done.is_set()]
        _expect(len(finished) == 1 and isinstance(finished[0].raised, BusyError),
                "two concurrent a.read() calls: expected one BusyError, got "
                f"{[r.raised or r.result() for r in finished]!r}")
        ctx.step = "the other a.read() gets b's data"
        _expect_equal(await b.write(b"ping"), _OK, "b.write(b'ping')")
        other = next(r for r in readers if r not in finished)
        first = await other.wait()
    _expect(isinstance(first, Ok) and b"ping".startswith(first.value),
            f"the waiting a.read() returned {first!r}, expected Ok(b'ping')")
    assert isinstance(first, Ok)
    if len(first.value) < 4:
        await _read_exactly(a, 4 - len(first.value), "a")
    ctx.step = "a.read() after the busy error"
    _expect_equal(await b.write(b"pong"), _OK, "b.write(b'pong')")
    _expect_equal(await _read_exactly(a, 4, "a"), b"pong", "a received")


@_check("Results: two tasks writing at once -> BusyError for one, which queues nothing; "
        "the other write completes")
async def _busy_write(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    counter = iter(range(1 << 30))
    accepted: list[list[int]] = [[], []]
    busy: list[int] = []
    total = 0

    async def writer(me: int) -> None:
        nonlocal total
        while not busy:
            index = next(counter)
            record = _record(index, 16 * 1024)
            try:
                result = await a.write(record)
            except BusyError:
                busy.append(index)
                return
            _expect_equal(result, _OK, "a.write()")
            accepted[me].append(index)
            total += len(record)
            if total > _MAX_UNBLOCKED:
                raise _fail("two tasks writing at once never met a BusyError")

    reading = anyio.Event()

    async def read_later() -> tuple[bytes, Eof | Error]:
        await reading.wait()
        return await _read_to_end(b, "b")

    async with _tasks(ctx) as group:
        received = _start(group, read_later)
        async with _tasks(ctx) as writers:
            ctx.step = "two tasks write to a at once, b not reading"
            writers.start_soon(writer, 0)
            writers.start_soon(writer, 1)
            last, since = -1, anyio.current_time()
            while not busy:
                await anyio.sleep(_POLL)
                if total != last:
                    last, since = total, anyio.current_time()
                elif anyio.current_time() - since > _BUSY_WAIT:
                    raise _fail(f"two concurrent a.write() calls both kept waiting for "
                                f"{_BUSY_WAIT:g} s: expected one BusyError")
            ctx.step = "b reads; the write that was not refused completes"
            reading.set()
        await a.shutdown(Shutdown.WRITE)
    _expect_equal(len(busy), 1, "BusyError count")
    data, end = received.result()
    _expect_equal(end, _EOF, "b.read() at the end")
    indices = _parse_records(data)
    _expect(busy[0] not in indices, f"the write refused with BusyError (#{busy[0]}) was sent")
    _expect(sorted(indices) == sorted(accepted[0] + accepted[1]),
            f"b received writes {indices[:8]}..., not the {len(accepted[0] + accepted[1])} "
            "writes that returned Ok(None)")


@_check("Results: wrong argument types raise TypeError, bad sizes ValueError, and the "
        "flow is unchanged")
async def _bad_arguments(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    anything: object
    calls: list[tuple[str, Callable[[], Awaitable[object]], type[Exception]]] = [
        ("a.write('text')", lambda: a.write("text"), TypeError),  # type: ignore[arg-type]
        ("a.write(None)", lambda: a.write(None), TypeError),  # type: ignore[arg-type]
        ("a.write(42)", lambda: a.write(42), TypeError),  # type: ignore[arg-type]
        ("a.writev(b'abc')", lambda: a.writev(b"abc"), TypeError),  # type: ignore[arg-type]
        ("a.writev('text')", lambda: a.writev("text"), TypeError),  # type: ignore[arg-type]
        ("a.writev(None)", lambda: a.writev(None), TypeError),  # type: ignore[arg-type]
        ("a.writev([b'ok', 'text'])",
         lambda: a.writev([b"ok", "text"]), TypeError),  # type: ignore[list-item]
        ("a.writev([b'ok', None])",
         lambda: a.writev([b"ok", None]), TypeError),  # type: ignore[list-item]
        ("a.read(0)", lambda: a.read(0), ValueError),
        ("a.read(-1)", lambda: a.read(-1), ValueError),
        ("a.read('1')", lambda: a.read("1"), TypeError),  # type: ignore[arg-type]
        ("a.read(1.5)", lambda: a.read(1.5), TypeError),  # type: ignore[arg-type]
        ("a.read(True)", lambda: a.read(True), TypeError),
        ("a.close(timeout='1')",
         lambda: a.close(timeout="1"), TypeError),  # type: ignore[arg-type]
        ("a.close(timeout=-1)", lambda: a.close(timeout=-1), ValueError),
        ("a.close(timeout=nan)", lambda: a.close(timeout=float("nan")), ValueError),
        ("a.shutdown('write')",
         lambda: a.shutdown("write"), TypeError),  # type: ignore[arg-type]
        ("a.shutdown(None)", lambda: a.shutdown(None), TypeError),  # type: ignore[arg-type]
    ]
    # The caller's own iterator failing part-way: that very exception reaches the caller
    # (even a TypeError, which must not be mistaken for "not iterable"), nothing is queued.
    own_error = TypeError("the caller's iterator failed")

    def failing_buffers() -> Iterator[bytes]:
        yield b"lost"
        raise own_error

    class FailsThenYields:
        def __init__(self) -> None:
            self.calls = 0

        def __iter__(self) -> FailsThenYields:
            return self

        def __next__(self) -> bytes:
            self.calls += 1
            if self.calls == 2:
                raise own_error
            return b"lost"

    before = _snapshot(a)
    for what, buffers in [("a.writev(generator that raises)", failing_buffers()),
                          ("a.writev(iterator that raises, then yields)", FailsThenYields())]:
        ctx.step = what
        try:
            anything = await a.writev(buffers)
        except Exception as exc:
            if exc is not own_error:
                raise _fail(f"{what} raised {type(exc).__name__}: {exc}, expected the "
                            "iterator's own exception") from None
        else:
            raise _fail(f"{what} returned {anything!r}, expected the iterator's exception")
        _expect_equal(_snapshot(a), before, f"a's state after {what}")
    for what, call, expected in calls:
        ctx.step = what
        try:
            anything = await call()
        except expected:
            pass
        except Exception as exc:
            raise _fail(f"{what} raised {type(exc).__name__}: {exc}, "
                        f"expected {expected.__name__}") from None
        else:
            raise _fail(f"{what} returned {anything!r}, expected {expected.__name__}")
        _expect_equal(_snapshot(a), before, f"a's state after {what}")
    ctx.step = "a round trip after the rejected calls"
    _expect_equal(await a.write(b"fine"), _OK, "a.write(b'fine') after rejected calls")
    _expect_equal(await _read_exactly(b, 4, "b"), b"fine",
                  "b received (a rejected call must queue nothing)")
    _expect_equal(await b.write(b"back"), _OK, "b.write(b'back')")
    _expect_equal(await _read_exactly(a, 4, "a"), b"back", "a received")


def _snapshot(flow: AsyncFlowLike) -> tuple[object, ...]:
    return (flow.state, flow.send_state, flow.receive_state, flow.error, flow.queued)
