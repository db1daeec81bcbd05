"""``check_anyio_byte_stream``: does a pair of ``anyio.abc.ByteStream`` keep anyio's contract?

anyio has no stream checker of its own; this one ports the checks of trio's
``trio.testing.check_half_closeable_stream`` that anyio's ``ByteStream`` contract shares, in
anyio's terms (``EndOfStream`` at the end instead of ``b""``, no
``wait_send_all_might_not_block``), and runs on either anyio backend::

    anyio.run(check_anyio_byte_stream, make_pair, backend="trio")

Each failure is an ``AssertionError`` whose text starts with the check's name in brackets.
A call that the contract says must end (a receive after the peer's EOF, a send after the
peer closed) and has not after ``wait_limit`` seconds is reported as hung: the limit only
turns a hang into a failure, no check measures how long anything takes.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["StreamMaker", "check_anyio_byte_stream"]

StreamMaker = Callable[[], Awaitable[tuple[anyio.abc.ByteStream, anyio.abc.ByteStream]]]
"""An async function returning a new connected pair of streams: what one sends, the other
receives."""

_Check = Callable[["_Run"], Awaitable[None]]
_DUPLEX_SIZE = 1 << 18  # each way, in random chunks of up to _CHUNK_MAX
_CHUNK_MAX = 1 << 14


async def check_anyio_byte_stream(stream_maker: StreamMaker,
                                  clogged_stream_maker: StreamMaker | None = None, *,
                                  wait_limit: float = 10.0) -> None:
    """Check the streams that ``stream_maker`` makes (a fresh pair for each check) against
    anyio's ``ByteStream`` contract; raise ``AssertionError`` at the first check that fails.

    ``clogged_stream_maker``, if given, makes pairs whose ``send`` blocks (in both
    directions) until the peer receives, for the checks of a blocked ``send``. The checks of
    one direction run both ways (each stream of the pair as the sender).
    """
    makers = [stream_maker, _flipped(stream_maker)]
    for maker in makers:
        for check in _ONE_WAY:
            await check(_Run(check, maker, wait_limit))
    for check in _TWO_WAY:
        await check(_Run(check, stream_maker, wait_limit))
    if clogged_stream_maker is not None:
        for maker in (clogged_stream_maker, _flipped(clogged_stream_maker)):
            for check in _CLOGGED:
                await check(_Run(check, maker, wait_limit))


def _flipped(maker: StreamMaker) -> StreamMaker:
    async def flipped() -> tuple[anyio.abc.ByteStream, anyio.abc.ByteStream]:
        first, second = await maker()
        return second, first

    return flipped


class _Run:
    """One check on one kind of pair: its streams, its failures, its limit for hangs."""

    def __init__(self, check: _Check, maker: StreamMaker, wait_limit: float) -> None:
        self.name = check.__name__.removeprefix("_check_").replace("_", " ")
        self._maker = maker
        self.wait_limit = wait_limit

    def fail(self, detail: str) -> AssertionError:
        return AssertionError(f"[{self.name}] {detail}")

    def expect(self, condition: bool, detail: str) -> None:
        if not condition:
            raise self.fail(detail)

    @asynccontextmanager
    async def streams(self) -> AsyncIterator[tuple[anyio.abc.ByteStream, anyio.abc.ByteStream]]:
        """A fresh pair, closed forcefully at the end (in case the check left it open)."""
        first, second = await self._maker()
        try:
            yield first, second
        except BaseException:
            await _forget(first)
            await _forget(second)
            raise
        try:
            await self.close(first, forced=True)
        except BaseException:
            await _forget(second)
            raise
        await self.close(second, forced=True)

    async def close(self, stream: anyio.abc.ByteStream, *, forced: bool = False) -> None:
        """``aclose()`` (in a cancelled scope if ``forced``), which must not raise: it is
        idempotent, and ends a broken stream too."""
        try:
            if forced:
                await anyio.aclose_forcefully(stream)
            else:
                async with self.ends("aclose()"):  # it does not wait for the peer
                    await stream.aclose()
        except AssertionError:
            raise
        except Exception as exc:
            raise self.fail(f"aclose() raised {exc!r}: it must be idempotent and end a "
                            f"stream in any state without raising") from exc

    @contextmanager
    def raises(self, expected: type[BaseException], what: str) -> Iterator[None]:
        try:
            yield
        except expected:
            return
        except AssertionError:  # a failure found inside the block says more
            raise
        except Exception as exc:
            raise self.fail(f"{what} raised {exc!r}, not {expected.__name__}") from exc
        raise self.fail(f"{what} did not raise {expected.__name__}")

    @asynccontextmanager
    async def ends(self, what: str) -> AsyncIterator[None]:
        """The block must end (return or raise) within the wait limit."""
        with anyio.move_on_after(self.wait_limit) as scope:
            yield
        if scope.cancelled_caught:
            raise self.fail(f"{what} hung: it had not ended after {self.wait_limit} s")

    async def receive(self, stream: anyio.abc.ByteStream, max_bytes: int = 65536) -> bytes:
        """One receive, which must return 1 to ``max_bytes`` bytes."""
        data = await stream.receive(max_bytes)
        self.expect(isinstance(data, bytes), f"receive() returned {type(data).__name__}, "
                                             f"not bytes")
        self.expect(data != b"", "receive() returned b'': anyio streams raise EndOfStream "
                                 "at the end, and never return empty bytes")
        self.expect(len(data) <= max_bytes,
                    f"receive({max_bytes}) returned {len(data)} bytes")
        return data

    async def receive_exactly(self, stream: anyio.abc.ByteStream, size: int) -> bytes:
        got = bytearray()
        async with self.ends(f"receiving {size} bytes sent by the peer"):
            while len(got) < size:
                got += await self.receive(stream, size - len(got))
        return bytes(got)

    async def expect_end(self, stream: anyio.abc.ByteStream, what: str) -> None:
        """``receive()`` raises ``EndOfStream``, now and on the next call."""
        for attempt in ("", " again"):
            async with self.ends(f"receive() {what}"):
                with self.raises(anyio.EndOfStream, f"receive(){attempt} {what}"):
                    data = await self.receive(stream)
                    raise self.fail(f"receive(){attempt} {what} returned {data!r}")


async def _forget(stream: anyio.abc.ByteStream) -> None:
    """Close a stream after a failure, which must stay the failure reported."""
    with suppress(Exception):
        await anyio.aclose_forcefully(stream)


async def _record(outcome: list[object], call: Callable[..., Awaitable[object]],
                  *args: object) -> None:
    """``call(*args)``, keeping what it returned or raised in ``outcome``. What runs in a
    task group never raises, so that a failure is reported as it is, not in a group."""
    try:
        outcome.append(await call(*args))
    except Exception as exc:
        outcome.append(exc)


# -- one direction: the first stream sends, the second receives -------------------------------


async def _check_send_and_receive(run: _Run) -> None:
    async with run.streams() as (s, r):
        result = await s.send(b"x")  # type: ignore[func-returns-value]
        run.expect(result is None, f"send() returned {result!r}, not None")
        run.expect(await run.receive_exactly(r, 1) == b"x", "the data sent was not received")
        await s.send(b"")  # no meaning of its own: not an end, not a message
        await s.send(b"y")
        run.expect(await run.receive_exactly(r, 1) == b"y", "after an empty send, the next "
                                                           "send's data was not received")
        await s.send(b"abcdef")
        first = await run.receive(r, 2)  # at most 2 (run.receive checks)
        rest = await run.receive_exactly(r, 6 - len(first))
        run.expect(first + rest == b"abcdef", f"received {first + rest!r}, sent b'abcdef'")


async def _check_bad_arguments(run: _Run) -> None:
    async with run.streams() as (s, r):
        for size in (0, -1):
            with run.raises(ValueError, f"receive({size})"):
                await r.receive(size)
        with run.raises(TypeError, "send() of a str"):
            await s.send("text")  # type: ignore[arg-type]
        await s.send(b"ok")
        run.expect(await run.receive_exactly(r, 2) == b"ok",
                   "the stream did not work after refusing bad arguments")


async def _check_busy_receive(run: _Run) -> None:
    """A second concurrent receive raises BusyResourceError at once; cancelling the first
    leaves the stream usable."""
    async with run.streams() as (s, r):
        first: list[object] = []
        second: list[object] = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_record, first, run.receive, r)
            await anyio.wait_all_tasks_blocked()
            tasks.start_soon(_record, second, run.receive, r)
            await anyio.wait_all_tasks_blocked()
            tasks.cancel_scope.cancel()
        run.expect(not first, f"a receive with nothing sent ended with {first!r}")
        run.expect(len(second) == 1 and isinstance(second[0], anyio.BusyResourceError),
                   "a second concurrent receive did not raise BusyResourceError "
                   f"(it {'ended with ' + repr(second[0]) if second else 'waited'})")
        await s.send(b"after")
        run.expect(await run.receive_exactly(r, 5) == b"after",
                   "after a cancelled receive, the data sent next was not received")


async def _check_cancellation_points(run: _Run) -> None:
    """``send`` and ``receive`` in a cancelled scope raise the cancellation and move nothing,
    as anyio's own streams do."""
    async with run.streams() as (s, r):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await s.send(b"lost")
        run.expect(scope.cancelled_caught, "send() in a cancelled scope was not cancelled")
        await s.send(b"kept")
        run.expect(await run.receive_exactly(r, 4) == b"kept",
                   "a send cancelled before it started sent its data anyway")
        await s.send(b"later")
        with anyio.CancelScope() as scope:
            scope.cancel()
            await r.receive()
        run.expect(scope.cancelled_caught, "receive() in a cancelled scope was not cancelled")
        run.expect(await run.receive_exactly(r, 5) == b"later",
                   "a receive cancelled before it started took data")


async def _check_closing_the_receiver(run: _Run) -> None:
    """Once the receiver is closed, the sender's sends fail (eventually, as for a socket)
    with BrokenResourceError and keep failing; the closed stream raises ClosedResourceError
    on both methods; aclose is idempotent."""
    async with run.streams() as (s, r):
        await run.close(r)
        async with run.ends("sending after the peer closed"):
            with run.raises(anyio.BrokenResourceError, "sending after the peer closed"):
                while True:
                    await s.send(b"x" * 100)
        with run.raises(anyio.BrokenResourceError, "a send after one was broken"):
            await s.send(b"x" * 100)
        with run.raises(anyio.ClosedResourceError, "receive() after aclose()"):
            await r.receive()
        with run.raises(anyio.ClosedResourceError, "send() after aclose()"):
            await r.send(b"x")
        await run.close(r)
        await run.close(r)
        await run.close(s)
        with run.raises(anyio.ClosedResourceError, "send() after aclose() of a broken stream"):
            await s.send(b"x")
        with run.raises(anyio.ClosedResourceError,
                        "receive() after aclose() of a broken stream"):
            await s.receive()
        await run.close(s)


async def _check_send_then_close(run: _Run) -> None:
    """Data sent before aclose() arrives, then the end: EndOfStream, not an error."""
    async with run.streams() as (s, r):
        await s.send(b"y")
        await run.close(s)
        run.expect(await run.receive_exactly(r, 1) == b"y",
                   "data sent before aclose() was not received")
        await run.expect_end(r, "after the peer's aclose()")


async def _check_forceful_closes(run: _Run) -> None:
    """A cancelled aclose() still closes; the peer then gets the end or BrokenResourceError,
    never data, and never waits for ever."""
    async with run.streams() as (s, r):
        await anyio.aclose_forcefully(s)
        with run.raises(anyio.ClosedResourceError, "send() after a cancelled aclose()"):
            await s.send(b"123")
        with run.raises(anyio.ClosedResourceError, "receive() after a cancelled aclose()"):
            await s.receive()
        async with run.ends("receive() after the peer's cancelled aclose()"):
            try:
                data = await run.receive(r)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
            else:
                raise run.fail(f"receive() after the peer's cancelled aclose() returned "
                               f"{data!r}")
    async with run.streams() as (s, r):
        await anyio.aclose_forcefully(r)
        with run.raises(anyio.ClosedResourceError, "receive() after a cancelled aclose()"):
            await r.receive()
        async with run.ends("sending after the peer's cancelled aclose()"):
            with run.raises(anyio.BrokenResourceError,
                            "sending after the peer's cancelled aclose()"):
                while True:
                    await s.send(b"x" * 100)


async def _check_aclose_wakes_a_blocked_receive(run: _Run) -> None:
    async with run.streams() as (_, r):
        received: list[object] = []
        closed: list[object] = []
        async with (run.ends("a receive blocked while its stream was closed"),
                    anyio.create_task_group() as tasks):
            tasks.start_soon(_record, received, run.receive, r)
            await anyio.wait_all_tasks_blocked()
            await _record(closed, r.aclose)
        run.expect(closed == [None], f"aclose() raised {closed[0]!r}")
        run.expect(isinstance(received[0], anyio.ClosedResourceError),
                   f"a receive blocked while its stream was closed ended with "
                   f"{received[0]!r}, not ClosedResourceError")


# -- both directions -----------------------------------------------------------------------


async def _check_send_eof(run: _Run) -> None:
    """The peer receives the data, then EndOfStream for good; send_eof is idempotent; the
    other direction goes on."""
    async with run.streams() as (s, r):
        await s.send(b"x")
        await s.send_eof()
        run.expect(await run.receive_exactly(r, 1) == b"x",
                   "data sent before send_eof() was not received")
        await run.expect_end(r, "after the peer's send_eof()")
        await s.send_eof()
        await r.send(b"back")
        run.expect(await run.receive_exactly(s, 4) == b"back",
                   "after send_eof(), the peer's data did not come back")
        await r.send_eof()
        await run.expect_end(s, "after both sent EOF")
        await run.close(s)
        await run.close(r)


async def _check_duplex(run: _Run) -> None:
    """Both ways at once, in chunks of random sizes: every byte arrives, in order."""
    async with run.streams() as (a, b):
        data = random.Random(0).randbytes(_DUPLEX_SIZE)

        async def send(stream: anyio.abc.ByteStream, payload: bytes, seed: int) -> None:
            chunks = random.Random(seed)
            view = memoryview(payload)
            while view:
                size = chunks.randint(1, _CHUNK_MAX)
                await stream.send(bytes(view[:size]))
                view = view[size:]

        async def receive(stream: anyio.abc.ByteStream, size: int, seed: int) -> bytes:
            chunks = random.Random(seed)
            got = bytearray()
            while len(got) < size:
                got += await run.receive(stream, chunks.randint(1, _CHUNK_MAX))
            return bytes(got)

        outcomes: list[list[object]] = [[], [], [], []]
        async with (run.ends(f"sending {_DUPLEX_SIZE} bytes each way at once"),
                    anyio.create_task_group() as tasks):
            tasks.start_soon(_record, outcomes[0], send, a, data, 0)
            tasks.start_soon(_record, outcomes[1], send, b, data[::-1], 1)
            tasks.start_soon(_record, outcomes[2], receive, b, len(data), 2)
            tasks.start_soon(_record, outcomes[3], receive, a, len(data), 3)
        for (outcome,) in outcomes:
            if isinstance(outcome, AssertionError):
                raise outcome
            run.expect(not isinstance(outcome, Exception),
                       f"sending both ways at once raised {outcome!r}")
        run.expect(outcomes[2] == [data] and outcomes[3] == [data[::-1]],
                   "the bytes received both ways at once differ from the bytes sent")
        await run.close(a)
        await run.expect_end(b, "after the peer's aclose()")


# -- a clogged pair: send blocks until the peer receives ----------------------------------


async def _check_busy_send(run: _Run) -> None:
    async with run.streams() as (s, _):
        first: list[object] = []
        second: list[object] = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_record, first, s.send, b"x" * 65536)
            await anyio.wait_all_tasks_blocked()
            if not first:
                tasks.start_soon(_record, second, s.send, b"123")
                await anyio.wait_all_tasks_blocked()
            tasks.cancel_scope.cancel()
        if first:
            raise run.fail(f"send() on a clogged stream did not wait: it ended with "
                           f"{first[0]!r}")
        run.expect(len(second) == 1 and isinstance(second[0], anyio.BusyResourceError),
                   "a second concurrent send did not raise BusyResourceError "
                   f"(it {'ended with ' + repr(second[0]) if second else 'waited'})")


async def _check_aclose_wakes_a_blocked_send(run: _Run) -> None:
    async with run.streams() as (s, _):
        sent: list[object] = []
        closed: list[object] = []
        async with (run.ends("a send blocked while its stream was closed"),
                    anyio.create_task_group() as tasks):
            tasks.start_soon(_record, sent, s.send, b"x" * 65536)
            await anyio.wait_all_tasks_blocked()
            await _record(closed, anyio.aclose_forcefully, s)
        run.expect(closed == [None], f"a cancelled aclose() raised {closed[0]!r}")
        run.expect(isinstance(sent[0], anyio.ClosedResourceError),
                   f"a send blocked while its stream was closed ended with {sent[0]!r}, "
                   f"not ClosedResourceError")


_ONE_WAY: list[_Check] = [
    _check_send_and_receive,
    _check_bad_arguments,
    _check_busy_receive,
    _check_cancellation_points,
    _check_send_then_close,
    _check_closing_the_receiver,
    _check_forceful_closes,
    _check_aclose_wakes_a_blocked_receive,
]
_TWO_WAY: list[_Check] = [_check_send_eof, _check_duplex]
_CLOGGED: list[_Check] = [_check_busy_send, _check_aclose_wakes_a_blocked_send]
