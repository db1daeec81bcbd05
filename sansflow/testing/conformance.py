"""The conformance kit: does an adapter's flow keep the contract (docs/CONTRACT.md)?

``check_flow_pair(make_pair)`` runs every check against connected pairs of flows that
``make_pair`` creates, one fresh pair per check, and raises ``ConformanceError`` naming each
failed check, the contract row it covers, and what went wrong. It needs no test framework and
is written against anyio, so the same checks run under asyncio and under trio::

    anyio.run(check_flow_pair, make_pair, backend="trio")

Blocking adapters are checked through ``threaded(flow)``; flows whose event loop runs in
another thread through ``bridged(flow, loop)`` (``sansflow.testing._bridge``). This module
needs anyio (the ``test`` extra); ``sansflow.testing`` itself does not import it.
"""

from __future__ import annotations

import errno
import itertools
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import anyio

from .._adapter import AdapterFlow
from .._errors import BusyError, ErrorKind, FlowError, error_message
from .._flow import Flow
from .._results import Eof, Error, Ok, ReadResult, WriteResult
from .._state import FlowState, ReceiveState, SendState, Shutdown
from ._bridge import BridgedFlow, LoopThread, asyncio_loop_thread, bridged, trio_loop_thread
from ._memory import MemoryFlow, memory_flow_pair

__all__ = [
    "CHECKS",
    "AsyncFlowLike",
    "BlockingFlowLike",
    "BridgedFlow",
    "Check",
    "CheckContext",
    "ConformanceError",
    "LoopThread",
    "MemoryFlow",
    "PairFactory",
    "ThreadedFlow",
    "asyncio_loop_thread",
    "bridged",
    "check_flow_pair",
    "get_check",
    "memory_flow_pair",
    "run_check",
    "swapped",
    "threaded",
    "trio_loop_thread",
]

BytesLike = bytes | bytearray | memoryview
T = TypeVar("T")


# -- what a flow under test offers ---------------------------------------------------------


class FlowView(Protocol):
    """What every flow under test shows, async or blocking: its state and its options."""

    @property
    def state(self) -> FlowState: ...

    @property
    def send_state(self) -> SendState: ...

    @property
    def receive_state(self) -> ReceiveState: ...

    @property
    def error(self) -> FlowError | None: ...

    @property
    def high_water(self) -> int: ...

    @property
    def low_water(self) -> int: ...

    @property
    def receive_limit(self) -> int: ...

    @property
    def core(self) -> Flow: ...


class AsyncFlowLike(FlowView, Protocol):
    """The async adapter API that every check drives (asyncio, trio and in-memory flows).

    ``read``/``write``/``writev`` return ``Ok``/``Eof``/``Error``; ``close``, ``shutdown`` and
    ``abort`` return nothing and never raise for an I/O failure. ``core`` is the sans-IO
    ``Flow`` underneath: the checks only look at it (``queued``, ``buffered``).
    """

    async def read(self, max_bytes: int | None = None) -> ReadResult: ...

    async def write(self, data: BytesLike) -> WriteResult: ...

    async def writev(self, buffers: Iterable[BytesLike]) -> WriteResult: ...

    async def close(self, timeout: float | None = None) -> None: ...

    async def shutdown(self, how: Shutdown) -> None: ...

    async def abort(self) -> None: ...


class BlockingFlowLike(FlowView, Protocol):
    """The same API with plain (blocking) methods: the socket adapter's flows."""

    def read(self, max_bytes: int | None = None) -> ReadResult: ...

    def write(self, data: BytesLike) -> WriteResult: ...

    def writev(self, buffers: Iterable[BytesLike]) -> WriteResult: ...

    def close(self, timeout: float | None = None) -> None: ...

    def shutdown(self, how: Shutdown) -> None: ...

    def abort(self) -> None: ...


PairFactory = Callable[[], Awaitable[tuple[AsyncFlowLike, AsyncFlowLike]]]
"""An async callable returning two freshly connected flows ``(a, b)``."""


class ThreadedFlow(AdapterFlow):
    """A blocking flow seen through the async API: each call runs in a worker thread.

    A call cannot be cancelled once it runs (a blocking ``read`` ends only when data, EOF or
    an error arrives), so run the kit with ``supports_cancellation=False``.
    """

    __slots__ = ("_flow",)

    def __init__(self, flow: BlockingFlowLike) -> None:
        super().__init__(flow.core)  # the state view reads the core, as the flow's own does
        self._flow = flow

    @property
    def flow(self) -> BlockingFlowLike:
        return self._flow


    async def read(self, max_bytes: int | None = None) -> ReadResult:
        return await anyio.to_thread.run_sync(self._flow.read, max_bytes)

    async def write(self, data: BytesLike) -> WriteResult:
        return await anyio.to_thread.run_sync(self._flow.write, data)

    async def writev(self, buffers: Iterable[BytesLike]) -> WriteResult:
        return await anyio.to_thread.run_sync(self._flow.writev, buffers)

    async def close(self, timeout: float | None = None) -> None:
        await anyio.to_thread.run_sync(self._flow.close, timeout)

    async def shutdown(self, how: Shutdown) -> None:
        await anyio.to_thread.run_sync(self._flow.shutdown, how)

    async def abort(self) -> None:
        # Abandoned if cancelled: an abort that hangs must not hang whoever gave up on it.
        await anyio.to_thread.run_sync(self._flow.abort, abandon_on_cancel=True)

    def __repr__(self) -> str:
        return f"threaded({self._flow!r})"


def threaded(flow: BlockingFlowLike) -> ThreadedFlow:
    """``flow`` (a blocking-socket adapter's flow) with the async API the checks drive."""
    return ThreadedFlow(flow)


def swapped(make_pair: PairFactory) -> PairFactory:
    """``make_pair`` with its two flows exchanged, to check the other end as ``a``."""

    async def make_swapped() -> tuple[AsyncFlowLike, AsyncFlowLike]:
        a, b = await make_pair()
        return b, a

    return make_swapped


# -- checks, their registry and how they fail ------------------------------------------------


@dataclass(slots=True)
class CheckContext:
    """What a check works on: flow ``a`` (the one under test) and its peer ``b``.

    ``step`` says what the check is doing; a timeout reports it.
    """

    a: AsyncFlowLike
    b: AsyncFlowLike
    step: str = "starting"


CheckFunction = Callable[[CheckContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Check:
    """One conformance check: its ``name``, the ``contract`` row it covers, and its code."""

    name: str
    contract: str
    function: CheckFunction = field(repr=False)
    needs_cancellation: bool = False

    async def run(self, make_pair: PairFactory, *, timeout: float = 30.0) -> None:
        """Run this check on a fresh pair; raise ``ConformanceError`` if it fails."""
        await run_check(self, make_pair, timeout=timeout)


class ConformanceError(AssertionError):
    """One or more checks failed. ``failures`` holds ``(check, what went wrong)`` pairs."""

    def __init__(self, failures: Sequence[tuple[Check, str]]) -> None:
        self.failures = list(failures)
        lines = [
            f"{check.name} failed (contract: {check.contract}): {detail}"
            for check, detail in self.failures
        ]
        super().__init__("\n".join(lines))


class _Violation(AssertionError):
    """Raised inside a check; the runner adds the check's name and contract row."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        # When a failure aborts the flows, the tasks still running fail too; the first
        # failure is the one to report.
        self.order = next(_VIOLATIONS)


_VIOLATIONS = itertools.count()


def _fail(detail: str) -> _Violation:
    return _Violation(detail)


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


_REGISTRY: list[Check] = []


def _check(contract: str, *, cancellation: bool = False
           ) -> Callable[[CheckFunction], CheckFunction]:
    def register(function: CheckFunction) -> CheckFunction:
        name = function.__name__.removeprefix("_")
        _REGISTRY.append(Check(name, contract, function, cancellation))
        return function

    return register


async def run_check(check: Check, make_pair: PairFactory, *, timeout: float = 30.0) -> None:
    """Run ``check`` on a fresh pair from ``make_pair``, bounded by ``timeout`` seconds.

    Both flows are aborted afterwards, whatever happened. A failure raises
    ``ConformanceError`` naming the check and its contract row.
    """
    with anyio.fail_after(timeout):
        a, b = await make_pair()
    context = CheckContext(a, b)
    timed_out = False

    async def watchdog(scope: anyio.CancelScope) -> None:
        nonlocal timed_out
        await anyio.sleep(timeout)
        timed_out = True
        # Abort first: a call stuck in a worker thread cannot be cancelled, but the abort
        # wakes it, and only then can the check's tasks end.
        await _release(a, b)
        scope.cancel()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(watchdog, group.cancel_scope)
            try:
                await check.function(context)
            finally:
                group.cancel_scope.cancel()
    except Exception as exc:
        if timed_out:
            raise ConformanceError(
                [(check, f"no progress after {timeout:g} s while {context.step}")]
            ) from None
        violation = _find_violation(exc)
        if violation is None:
            detail = f"unexpected {type(exc).__name__}: {exc} (while {context.step})"
            raise ConformanceError([(check, detail)]) from exc
        raise ConformanceError([(check, str(violation))]) from None
    finally:
        await _release(a, b)
    if timed_out:
        raise ConformanceError([(check, f"no progress after {timeout:g} s while {context.step}")])


async def _release(*flows: AsyncFlowLike) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(10):
        for flow in flows:
            with suppress(Exception):  # releasing must reach the second flow
                await flow.abort()


def _find_violation(exc: BaseException) -> _Violation | None:
    """The check's first failure, even from inside a task group's exception group."""
    if isinstance(exc, _Violation):
        return exc
    found = [_find_violation(inner) for inner in getattr(exc, "exceptions", ())
             if isinstance(inner, BaseException)]
    return min((v for v in found if v is not None), key=lambda v: v.order, default=None)


def get_check(name: str) -> Check:
    """The check called ``name`` (see ``CHECKS``)."""
    for check in _REGISTRY:
        if check.name == name:
            return check
    raise KeyError(f"no conformance check named {name!r}; known: {[c.name for c in _REGISTRY]}")


async def check_flow_pair(make_pair: PairFactory, *, supports_cancellation: bool = True,
                          checks: Iterable[Check | str] | None = None,
                          timeout: float = 30.0) -> None:
    """Run the conformance checks on flows from ``make_pair`` and report every failure.

    ``make_pair`` is an async callable returning a connected ``(a, b)`` pair with the async
    adapter API (``AsyncFlowLike``); it is called once per check, and both flows are aborted
    after each check. ``supports_cancellation=False`` skips the checks that cancel an
    operation (for ``threaded`` and ``bridged`` flows). ``checks`` picks checks by ``Check``
    or by name (default: all of ``CHECKS``). Each check must finish within ``timeout``
    seconds.

    Raises ``ConformanceError`` listing each failed check with its contract row.
    """
    selected = CHECKS if checks is None else [
        get_check(c) if isinstance(c, str) else c for c in checks
    ]
    failures: list[tuple[Check, str]] = []
    for check in selected:
        if check.needs_cancellation and not supports_cancellation:
            continue
        try:
            await run_check(check, make_pair, timeout=timeout)
        except ConformanceError as exc:
            failures.extend(exc.failures)
    if failures:
        raise ConformanceError(failures)


# -- tools the checks share -----------------------------------------------------------------

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
            self.max_queued = max(self.max_queued, self.flow.core.queued)
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
            self.max_queued = max(self.max_queued, self.flow.core.queued)
            if not self.writing or self.accepted != last:
                last = self.accepted
                since = anyio.current_time()
            elif anyio.current_time() - since >= _QUIET:
                return


# -- the checks ----------------------------------------------------------------------------


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


@_check("Errors: after abort(), received data is read first, then every read and write "
        "returns the same Error (ABORTED); the peer sees Eof() or a reset, also sticky")
async def _error_is_sticky(ctx: CheckContext) -> None:
    a, b = ctx.a, ctx.b
    sent = b"unread data"
    _expect_equal(await b.write(sent), _OK, "b.write()")
    ctx.step = "letting b's data reach a"
    with anyio.move_on_after(4 * _SETTLE):
        while a.core.buffered < len(sent):
            await anyio.sleep(_POLL)
    before = a.core.buffered
    ctx.step = "a.abort()"
    await a.abort()
    error = a.error
    _expect(isinstance(error, FlowError) and error.kind is ErrorKind.ABORTED,
            f"a.error after abort(): {error!r}, expected kind ErrorKind.ABORTED")
    assert error is not None
    _expect_one_line(error, "a")
    _expect_state(a, "a", FlowState.CLOSED)
    # More may have arrived between the look and the abort, never less may remain.
    buffered = a.core.buffered
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
            queued = a.core.queued
            _expect(queued <= a.high_water + largest,
                    f"a.core.queued is {queued}, above high_water ({a.high_water}) "
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
        max_buffered = b.core.buffered
        ctx.step = "b reads everything, a stops and shuts down"
        filler.stop = True
        received = _start(group, lambda: _read_to_end(b, "b"))
        await filling.wait()
        await a.shutdown(Shutdown.WRITE)
    data, end = received.result()
    _expect(filler.max_queued <= a.high_water + chunk,
            f"a.core.queued reached {filler.max_queued}, above high_water "
            f"({a.high_water}) plus one write ({chunk})")
    _expect(max_buffered <= b.receive_limit + _RECEIVE_SLACK,
            f"b.core.buffered reached {max_buffered} while b did not read, far above "
            f"its receive_limit ({b.receive_limit})")
    _expect(data == _stream(0, filler.accepted),
            f"b received {len(data)} bytes, not the {filler.accepted} a wrote")
    _expect_equal(end, _EOF, "b.read() after a.shutdown(WRITE)")


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
        waiting_for_room = a.core.queued > a.low_water
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
                while filler.accepted == accepted and a.core.queued <= a.low_water:
                    await anyio.sleep(_POLL)
            if filler.accepted == accepted:
                break
        queued = a.core.queued
        _expect(queued > a.low_water,
                f"with b not reading, a.write() of {filler.chunk} bytes kept waiting while "
                f"a.core.queued was {queued}, not above low_water ({a.low_water}): a write "
                "must return once its data is queued, and wait only for room in the queue")
        ctx.step = "a.abort() to end the waiting write"
        await a.abort()


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
    return (flow.state, flow.send_state, flow.receive_state, flow.error, flow.core.queued)


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


CHECKS: tuple[Check, ...] = tuple(_REGISTRY)
"""Every check, in the order ``check_flow_pair`` runs them."""
