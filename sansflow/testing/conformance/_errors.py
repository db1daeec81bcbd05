"""The checks of the contract's section "Errors" (docs/contract.md)."""

from __future__ import annotations

import anyio

from ..._errors import ErrorKind, FlowError
from ..._results import Error
from ..._state import FlowState, Shutdown
from ._runner import CheckContext, _check
from ._tools import (
    _EOF,
    _OK,
    _POLL,
    _SETTLE,
    _WAKE_WAIT,
    _expect,
    _expect_equal,
    _expect_one_line,
    _expect_os_error,
    _expect_peer_end,
    _expect_read,
    _expect_state,
    _Filler,
    _read,
    _read_exactly,
    _read_to_end,
    _start,
    _tasks,
    _within,
)


@_check("Errors: after abort(), received data is read first, then every read and write "
        "returns the same Error (ABORTED); the peer sees Eof() or a reset, also sticky")
async def _error_is_sticky(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    sent = b"unread data"
    _expect_equal(await b.write(sent), _OK, "b.write()")
    ctx.step = "letting b's data reach a"
    with anyio.move_on_after(4 * _SETTLE):
        while a.buffered < len(sent):
            await anyio.sleep(_POLL)
    before = a.buffered
    ctx.step = "a.abort()"
    await a.abort()
    error = a.error
    _expect(isinstance(error, FlowError) and error.kind is ErrorKind.ABORTED,
            f"a.error after abort(): {error!r}, expected kind ErrorKind.ABORTED")
    assert error is not None
    _expect_one_line(error, "a")
    _expect_state(a, "a", FlowState.CLOSED)
    # More may have arrived between the look and the abort, never less may remain.
    buffered = a.buffered
    _expect(buffered >= before,
            f"abort() dropped received data: {before} bytes buffered before, {buffered} after")
    if buffered:
        _expect_equal(await _read_exactly(a, buffered, "a"), sent[:buffered],
                      "data a had received before abort()")
    await _expect_read(a, Error(error), "a", times=3)
    _expect_equal(await a.write(b"x"), Error(error), "a.write() after abort()")
    _expect_equal(await a.writev([b"x"]), Error(error), "a.writev() after abort()")
    ctx.step = "a.close(), shutdown(BOTH), abort() after abort()"
    await a.close()
    await a.shutdown(Shutdown.BOTH)
    await a.abort()
    _expect(a.error is error, f"a.error changed after abort(): {a.error!r}")
    await _expect_read(a, Error(error), "a")
    ctx.step = "b reads after a's abort()"
    data, end = await _read_to_end(b, "b")
    _expect_equal(data, b"", "b received after a's abort (a sent nothing)")
    _expect_peer_end(end, "b")
    await _expect_read(b, end, "b", times=3)
    if isinstance(end, Error):
        _expect_state(b, "b", FlowState.CLOSED)


@_check("Errors: the peer's reset wakes a waiting reader and writer with the error (RESET "
        "or BROKEN_PIPE, its OSError kept as cause and named by error_message), or Eof() for "
        "the reader where the transport has no reset")
async def _peer_reset_wakes_waiters(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    filler = _Filler(a, 16 * 1024)
    async with _tasks(ctx) as group:
        ctx.step = "a reads and writes until both wait"
        reading = _start(group, lambda: _read(a, "a"))
        group.start_soon(filler.run)
        await filler.until_blocked()
        _expect(not reading.done.is_set(), "a.read() returned although b sent nothing")
        ctx.step = "b.abort() with a's reader and writer waiting"
        await b.abort()
        with _within(_WAKE_WAIT, "waking a's waiting read and write after the peer's reset"):
            read_result = await reading.wait()
            while filler.end is None:
                await anyio.sleep(_POLL)
    error = a.error
    _expect(isinstance(error, FlowError)
            and error.kind in (ErrorKind.RESET, ErrorKind.BROKEN_PIPE),
            f"a.error after the peer's reset: {error!r}, expected kind RESET or BROKEN_PIPE")
    assert error is not None
    _expect_os_error(error, "a")
    _expect_state(a, "a", FlowState.CLOSED)
    _expect_equal(filler.end, Error(error), "the waiting a.write() after the peer's reset")
    _expect(read_result in (_EOF, Error(error)),
            f"the waiting a.read() after the peer's reset returned {read_result!r}, "
            f"expected Eof() or {Error(error)!r}")
    await _expect_read(a, read_result, "a", times=2)
    _expect_equal(await a.write(b"x"), Error(error), "a.write() after the peer's reset")
