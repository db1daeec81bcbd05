"""What the checks share: expectations, timings, test data, reading, calls in the background."""

from __future__ import annotations

import errno
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Generic, TypeVar

import anyio

from ..._errors import ErrorKind, FlowError, error_message
from ..._results import Eof, Error, Ok, ReadResult, WriteResult
from ..._state import FlowState
from ._runner import CheckContext, _fail, _release
from ._wrappers import AsyncFlowLike

T = TypeVar("T")


# -- expectations --------------------------------------------------------------------------


def _expect(condition: bool, detail: str) -> None:
    if not condition:
        raise _fail(detail)


def _expect_equal(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        raise _fail(f"{what}: expected {_short(expected)}, got {_short(actual)}")


def _short(value: object) -> str:
    if isinstance(value, (bytes, bytearray)) and len(value) > 40:
        return f"{len(value)} bytes starting {bytes(value[:24])!r}"
    if isinstance(value, Ok) and isinstance(value.value, bytes) and len(value.value) > 40:
        return f"Ok({_short(value.value)})"
    return repr(value)


# -- timings and the results the checks expect ---------------------------------------------

_POLL = 0.005  # how often a check looks at a flow's state while it waits
_QUIET = 0.05  # a write making no progress this long is taken to be waiting
_SETTLE = 0.05  # how long a check lets something that must not happen have a chance to
_BUSY_WAIT = 2.0  # how long the second of two concurrent calls may take to be refused
_WAKE_WAIT = 5.0  # how long a waiting call may take to wake up after abort()
_CONFIRM = 0.5  # how long a stalled writer is watched before the kit concludes it waits
_CLOSE_WAIT = 10.0  # how long a close() that has nothing left to wait for may take
_MAX_UNBLOCKED = 64 * 1024 * 1024  # more than any socket buffers take without a reader
_RECEIVE_SLACK = 1024 * 1024  # one transport read may land above the receive limit
_OK = Ok(None)
_EOF = Eof()


# -- test data -----------------------------------------------------------------------------


def _stream_block() -> bytes:
    global _BLOCK
    if _BLOCK is None:
        # An odd period, so that no lost or repeated whole chunk lines up with it.
        _BLOCK = random.Random(0x5EED).randbytes((1 << 20) + 13)
    return _BLOCK


_BLOCK: bytes | None = None


def _stream(offset: int, size: int) -> bytes:
    """Bytes ``offset`` to ``offset + size`` of an endless pseudo-random test stream."""
    block = _stream_block()
    start = offset % len(block)
    if start + size <= len(block):
        return block[start:start + size]
    pieces = []
    while size:
        piece = block[start:start + size]
        pieces.append(piece)
        size -= len(piece)
        start = 0
    return b"".join(pieces)


_HEADER = struct.Struct(">II")


def _record(index: int, size: int) -> bytes:
    """One write that can be recognised whole in the stream: index, size, payload."""
    return _HEADER.pack(index, size) + bytes([index % 251]) * size


def _parse_records(data: bytes) -> list[int]:
    """The indices of the whole records ``data`` is made of, or a failure."""
    indices = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            raise _fail(f"the stream ends inside a write's header at byte {offset}")
        index, size = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size:offset + _HEADER.size + size]
        if payload != bytes([index % 251]) * size:
            raise _fail(
                f"write #{index} ({size} bytes) arrived cut or corrupted at byte {offset}: "
                "a write was queued in part"
            )
        indices.append(index)
        offset += _HEADER.size + size
    return indices


# -- reading and looking at flows ----------------------------------------------------------


def _check_read(result: object, max_bytes: int | None, who: str) -> ReadResult:
    """``result`` after checking it is a read result; ``Ok`` data is 1..max_bytes bytes."""
    if isinstance(result, Ok):
        data = result.value
        _expect(isinstance(data, bytes), f"{who}.read() returned Ok({data!r}), not bytes")
        _expect(len(data) > 0, f"{who}.read() returned an empty Ok(b'')")
        _expect(max_bytes is None or len(data) <= max_bytes,
                f"{who}.read({max_bytes}) returned {len(data)} bytes")
        return result
    _expect(isinstance(result, (Eof, Error)),
            f"{who}.read() returned {result!r}, not Ok, Eof or Error")
    return result  # type: ignore[return-value]


async def _read(flow: AsyncFlowLike, who: str, max_bytes: int | None = None) -> ReadResult:
    return _check_read(await flow.read(max_bytes), max_bytes, who)


async def _read_exactly(flow: AsyncFlowLike, size: int, who: str) -> bytes:
    """Exactly ``size`` bytes (never asking for more, so nothing later is consumed)."""
    got = bytearray()
    while len(got) < size:
        result = await _read(flow, who, size - len(got))
        if not isinstance(result, Ok):
            raise _fail(
                f"{who}.read() returned {result!r} after {len(got)} of {size} expected bytes"
            )
        got += result.value
    return bytes(got)


async def _read_to_end(flow: AsyncFlowLike, who: str, max_bytes: int | None = None,
                       ) -> tuple[bytes, Eof | Error]:
    """Everything until ``Eof`` or ``Error``, and that final result."""
    got = bytearray()
    while True:
        result = await _read(flow, who, max_bytes)
        if not isinstance(result, Ok):
            assert isinstance(result, (Eof, Error))
            return bytes(got), result
        got += result.value


async def _expect_read(flow: AsyncFlowLike, expected: ReadResult, who: str,
                       times: int = 1) -> None:
    for attempt in range(times):
        result = await _read(flow, who)
        _expect_equal(result, expected, f"{who}.read() (call {attempt + 1} of {times})")


def _expect_state(flow: AsyncFlowLike, who: str, state: FlowState) -> None:
    _expect_equal(flow.state, state, f"{who}.state")


def _expect_one_line(error: FlowError, who: str) -> None:
    text = error_message(error)
    _expect(isinstance(text, str) and bool(text) and "\n" not in text and "\r" not in text,
            f"error_message({who}.error) is not one line of text: {text!r}")


def _expect_peer_end(end: Eof | Error, who: str) -> None:
    """What a peer sees when its connection is reset: ``Eof()`` or a reset error."""
    if isinstance(end, Error):
        _expect(end.error.kind is ErrorKind.RESET,
                f"{who} expected Eof() or a reset error, got {end!r} "
                f"({error_message(end.error)})")
        _expect_os_error(end.error, who)


def _expect_os_error(error: FlowError, who: str) -> None:
    """A failure the OS reported keeps its ``OSError`` as cause; the message names it."""
    cause = error.cause
    _expect(isinstance(cause, OSError),
            f"{who}.error {error!r} does not keep the OSError that caused it")
    assert isinstance(cause, OSError)
    _expect_one_line(error, who)
    name = errno.errorcode.get(cause.errno or 0)
    _expect(name is None or f"({name})" in error_message(error),
            f"error_message({who}.error) does not name {name}: {error_message(error)!r}")


# -- calls in the background ---------------------------------------------------------------


class _Pending(Generic[T]):
    """A call running in another task: ``done`` once it returned or raised."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self._value: T | None = None
        self._exception: Exception | None = None
        self._finished = False

    async def run(self, call: Callable[[], Awaitable[T]]) -> None:
        try:
            self._value = await call()
            self._finished = True
        except Exception as exc:
            self._exception = exc
            self._finished = True
        finally:
            self.done.set()

    @property
    def raised(self) -> Exception | None:
        return self._exception

    def result(self) -> T:
        if self._exception is not None:
            raise self._exception
        _expect(self._finished, "a background call was cancelled")
        return self._value  # type: ignore[return-value]

    async def wait(self) -> T:
        await self.done.wait()
        return self.result()


def _start(group: anyio.abc.TaskGroup, call: Callable[[], Awaitable[T]]) -> _Pending[T]:
    pending: _Pending[T] = _Pending()
    group.start_soon(pending.run, call)
    return pending


async def _expect_still_waiting(pending: _Pending[T], what: str) -> None:
    """Give ``pending`` a moment to (wrongly) finish; fail if it did."""
    with anyio.move_on_after(_SETTLE):
        await pending.done.wait()
    if pending.done.is_set():
        try:
            outcome: object = pending.result()
        except Exception as exc:
            outcome = exc
        raise _fail(f"{what} should still be waiting, but it ended with {outcome!r}")


@contextmanager
def _within(seconds: float, what: str) -> Iterator[None]:
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError:
        raise _fail(f"{what} took more than {seconds:g} s") from None


@asynccontextmanager
async def _tasks(ctx: CheckContext) -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group whose failure aborts both flows before waiting for its tasks.

    A call running in a worker thread (``threaded``, ``bridged``) cannot be cancelled; the
    abort wakes it, so a failed check ends instead of waiting for it forever.
    """
    async with anyio.create_task_group() as group:
        try:
            yield group
        except BaseException:
            await _release(ctx.a, ctx.b)
            raise


class _Filler:
    """Writes the test stream to a flow, chunk by chunk, until stopped or refused."""

    def __init__(self, flow: AsyncFlowLike, chunk: int) -> None:
        self.flow = flow
        self.chunk = chunk
        self.accepted = 0  # bytes of the stream that write() took
        self.writing = False
        self.stop = False
        self.end: WriteResult | None = None  # the first result that was not Ok(None)
        self.max_queued = 0

    async def run(self) -> None:
        while not self.stop:
            self.writing = True
            result = await self.flow.write(_stream(self.accepted, self.chunk))
            self.writing = False
            if result != _OK:
                self.end = result
                return
            self.accepted += self.chunk
            self.max_queued = max(self.max_queued, self.flow.queued)
            if self.accepted > _MAX_UNBLOCKED:
                raise _fail(
                    f"write() never waited although the peer was not reading: "
                    f"{self.accepted} bytes accepted"
                )

    async def until_blocked(self) -> None:
        """Return once a write has been pending, with nothing accepted, for a while."""
        last = -1
        since = anyio.current_time()
        while True:
            await anyio.sleep(_POLL)
            self.max_queued = max(self.max_queued, self.flow.queued)
            if not self.writing or self.accepted != last:
                last = self.accepted
                since = anyio.current_time()
            elif anyio.current_time() - since >= _QUIET:
                return
