"""The checks of the contract's section "Reading and receive limits" (docs/contract.md).

Its one check also covers the writer's side of backpressure: a peer that does not read must
stop the writer before either end buffers without bound.
"""

from __future__ import annotations

from ..._state import Shutdown
from ._runner import CheckContext, _check
from ._tools import (
    _EOF,
    _RECEIVE_SLACK,
    _expect,
    _expect_equal,
    _Filler,
    _read_to_end,
    _start,
    _stream,
    _tasks,
)


@_check("Writing and backpressure; Reading and receive limits: with the peer not reading, "
        "write() waits, the send queue stays within high_water plus one write, the peer's "
        "buffer near its receive limit")
async def _water_marks(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    chunk = 16 * 1024
    filler = _Filler(a, chunk)
    async with _tasks(ctx) as group:
        ctx.step = "a writes while b does not read, until a write waits"
        filling = _start(group, filler.run)
        await filler.until_blocked()
        max_buffered = b.buffered
        ctx.step = "b reads everything, a stops and shuts down"
        filler.stop = True
        received = _start(group, lambda: _read_to_end(b, "b"))
        await filling.wait()
        await a.shutdown(Shutdown.WRITE)
    data, end = received.result()
    _expect(filler.max_queued <= a.high_water + chunk,
            f"a.queued reached {filler.max_queued}, above high_water "
            f"({a.high_water}) plus one write ({chunk})")
    _expect(max_buffered <= b.receive_limit + _RECEIVE_SLACK,
            f"b.buffered reached {max_buffered} while b did not read, far above "
            f"its receive_limit ({b.receive_limit})")
    _expect(data == _stream(0, filler.accepted),
            f"b received {len(data)} bytes, not the {filler.accepted} a wrote")
    _expect_equal(end, _EOF, "b.read() after a.shutdown(WRITE)")
