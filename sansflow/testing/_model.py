"""A reference model of one flow, and a ``Flow`` that checks itself against it on every call.

The model is the contract written as plain bookkeeping: a ``bytearray`` of what the
application wrote, one of what arrived, one of what was read, and a flag for each thing the
application or the transport did (closed, EOF handed over, EOF received, failed). From these
alone it predicts what every ``Flow`` call returns or raises and what every property reads
afterwards. It keeps no queue of chunks and no offsets, so it is small enough to check by eye.

``CheckedFlow`` is a ``Flow`` that runs the model beside itself: every call is made on both
and compared, and all the flow's properties are compared after it. Any test that drives
``CheckedFlow`` objects (by hand, through ``FlowPair``, or from a hypothesis state machine)
checks the core against the contract as a side effect. A disagreement raises
``ModelMismatch``, an ``AssertionError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

from .._errors import ErrorKind, FlowError, FlowUsageError
from .._flow import Buffer, Flow
from .._results import WOULD_WAIT, Eof, Error, Ok, ReadResult, WouldWait, WriteResult
from .._state import FlowState, ReceiveState, SendState, Shutdown

__all__ = [
    "CheckedFlow",
    "ModelMismatch",
    "ReferenceModel",
    "check_state_move",
    "check_stream",
]

_WouldWait = Literal[WouldWait.WOULD_WAIT]
_T = TypeVar("_T")

# The exceptions a rejected call may raise; anything else is a bug, not a rejection.
_REJECTIONS = (TypeError, ValueError, FlowUsageError)

# How far along a flow is. Equal ranks are the two half-closed states: one never becomes
# the other, since the first half-close names the state until the flow is CLOSED.
_RANK = {
    FlowState.OPEN: 0,
    FlowState.HALF_CLOSED_LOCAL: 1,
    FlowState.HALF_CLOSED_REMOTE: 1,
    FlowState.CLOSED: 2,
}


class ModelMismatch(AssertionError):
    """The flow did something the contract (as the reference model states it) does not allow."""


def check_state_move(before: FlowState, after: FlowState) -> None:
    """Raise ``ModelMismatch`` unless ``before -> after`` moves towards CLOSED (or stays).

    Backwards moves and moves between ``HALF_CLOSED_LOCAL`` and ``HALF_CLOSED_REMOTE`` fail.
    """
    if _RANK[after] < _RANK[before] or (_RANK[after] == _RANK[before] and after is not before):
        raise ModelMismatch(f"the flow state moved from {before!r} to {after!r}")


class ReferenceModel:
    """What one flow must do, predicted from the calls made on it.

    Each method mirrors the ``Flow`` method of the same name: it returns what the flow must
    return, or raises the exception the flow must raise, in which case the model is unchanged
    (as the flow must be). ``check(flow)`` compares every property of a flow with the model.

    The bookkeeping is public, for invariants that span both ends (see ``check_stream``):

    * ``written``: every byte a write accepted; ``taken``: how many of them the transport
      took (``sent``); ``dropped``: how many were dropped by a failure before being sent.
    * ``arrived``: every byte fed in by ``receive_data``, kept or dropped; ``unread``: the
      bytes a read would return; ``read_data``: every byte reads returned.
    * ``read_end``: the ``Eof()`` or ``Error`` a read returned first, if any.
    """

    def __init__(self, *, high_water: int = 64 * 1024, low_water: int = 16 * 1024,
                 receive_limit: int = 256 * 1024) -> None:
        _check_size("high_water", high_water, 1)
        _check_size("low_water", low_water, 0)
        _check_size("receive_limit", receive_limit, 1)
        if low_water > high_water:
            raise ValueError("low_water must not exceed high_water")
        self.high_water = high_water
        self.low_water = low_water
        self.receive_limit = receive_limit
        # Sending.
        self.written = bytearray()
        self.taken = 0
        self.dropped = 0
        self.write_closed = False  # close() or shutdown(WRITE | BOTH) was called
        self.eof_out = False  # the transport took our EOF before any failure
        self.largest_write = 0
        # Receiving.
        self.arrived = bytearray()
        self.unread = bytearray()
        self.read_data = bytearray()
        self.read_closed = False  # shutdown(READ | BOTH) was called
        self.eof_in = False  # the peer's EOF arrived before any failure
        self.largest_chunk = 0
        self.read_end: Eof | Error | None = None
        # Failing: the error, and whether each direction had already ended cleanly.
        self.error: FlowError | None = None
        self._receive_ended = False
        self.state = FlowState.OPEN

    # -- derived state -------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self.written) - self.taken - self.dropped

    @property
    def buffered(self) -> int:
        return len(self.unread)

    @property
    def send_state(self) -> SendState:
        if self.eof_out:
            return SendState.EOF_SENT
        if self.error is not None:
            return SendState.FAILED
        return SendState.EOF_QUEUED if self.write_closed else SendState.OPEN

    @property
    def receive_state(self) -> ReceiveState:
        if self.eof_in:
            return ReceiveState.EOF_RECEIVED
        if self.error is not None and not self._receive_ended:
            return ReceiveState.FAILED
        return ReceiveState.DISCARDING if self.read_closed else ReceiveState.OPEN

    @property
    def read_ready(self) -> bool:
        """A read would not answer ``WOULD_WAIT``."""
        return bool(self.unread) or self.receive_state is not ReceiveState.OPEN

    @property
    def write_ready(self) -> bool:
        """No write, however large, would answer ``WOULD_WAIT``."""
        return self.send_state is not SendState.OPEN or self.queued <= self.low_water

    @property
    def eof_due(self) -> bool:
        """``eof_sent()`` would be accepted and would end our direction."""
        return self.send_state is SendState.EOF_QUEUED and not self.queued

    @property
    def reading_paused(self) -> bool:
        return self.buffered >= self.receive_limit

    def _update_state(self) -> None:
        if self.error is not None or (self.eof_out and self.eof_in):
            self.state = FlowState.CLOSED
        elif self.state is FlowState.OPEN:
            if self.write_closed:
                self.state = FlowState.HALF_CLOSED_LOCAL
            elif self.eof_in:
                self.state = FlowState.HALF_CLOSED_REMOTE

    def _fail(self, error: FlowError) -> None:
        if self.state is FlowState.CLOSED:
            return
        self.dropped += self.queued
        self._receive_ended = self.eof_in or self.read_closed
        self.error = error
        self._update_state()

    # -- application side ----------------------------------------------------------------

    def read(self, max_bytes: int | None = None) -> ReadResult | _WouldWait:
        if max_bytes is not None:
            _check_size("max_bytes", max_bytes, 1)
        if self.unread:
            size = len(self.unread) if max_bytes is None else min(max_bytes, len(self.unread))
            data = bytes(self.unread[:size])
            del self.unread[:size]
            self.read_data += data
            return Ok(data)
        receive = self.receive_state
        if receive is ReceiveState.OPEN:
            return WOULD_WAIT
        end: Eof | Error
        if receive is ReceiveState.FAILED:
            assert self.error is not None
            end = Error(self.error)
        else:
            end = Eof()
        if self.read_end is None:
            self.read_end = end
        return end

    def write(self, data: bytes | bytearray | memoryview) -> WriteResult | _WouldWait:
        return self._queue([_as_bytes(data, "write")])

    def writev(self, buffers: Iterable[bytes | bytearray | memoryview]
               ) -> WriteResult | _WouldWait:
        if isinstance(buffers, (bytes, bytearray, memoryview, str)):
            raise TypeError("writev() takes an iterable of buffers")
        try:
            iterator = iter(buffers)
        except TypeError:
            raise TypeError("writev() takes an iterable of buffers") from None
        # The caller's iterator may raise; that is theirs to see, and nothing is queued.
        return self._queue([_as_bytes(item, "writev") for item in list(iterator)])

    def _queue(self, pieces: list[bytes]) -> WriteResult | _WouldWait:
        send = self.send_state
        if send is SendState.FAILED:
            assert self.error is not None
            return Error(self.error)
        if send is not SendState.OPEN:
            return Eof()
        size = sum(map(len, pieces))
        if self.queued + size > self.high_water and self.queued > self.low_water:
            return WOULD_WAIT
        for piece in pieces:
            self.written += piece
        self.largest_write = max(self.largest_write, size)
        return Ok(None)

    def close(self) -> None:
        self.write_closed = True
        self._update_state()

    def shutdown(self, how: Shutdown) -> None:
        if not isinstance(how, Shutdown):
            raise TypeError("shutdown() takes a sansflow.Shutdown")
        if how is not Shutdown.READ:
            self.write_closed = True
        if how is not Shutdown.WRITE:
            self.read_closed = True
            self.unread.clear()
        self._update_state()

    def abort(self, error: FlowError | None = None) -> None:
        if error is not None and not isinstance(error, FlowError):
            raise TypeError("abort() takes a FlowError or None")
        self._fail(FlowError(ErrorKind.ABORTED) if error is None else error)

    # -- transport side ------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        chunk = _as_bytes(data, "receive_data")
        if self.error is None and self.eof_in:
            raise FlowUsageError("receive_data() after receive_eof()")
        self.arrived += chunk
        if self.error is None and not self.read_closed:
            self.unread += chunk
            self.largest_chunk = max(self.largest_chunk, len(chunk))

    def receive_eof(self) -> None:
        if self.error is not None:
            return
        if self.eof_in:
            raise FlowUsageError("a second receive_eof()")
        self.eof_in = True
        self._update_state()

    def receive_error(self, error: BaseException | FlowError) -> None:
        if not isinstance(error, FlowError):
            if not isinstance(error, BaseException):
                raise TypeError("receive_error() takes an exception or a FlowError")
            error = FlowError.from_exception(error)
        self._fail(error)

    def pending(self) -> bytes:
        """The bytes ``buffers_to_send()`` must hand out, in order."""
        return bytes(self.written[self.taken:self.taken + self.queued])

    def buffers_to_send(self, max_buffers: int | None = None) -> bytes:
        """Not a list of buffers (the model keeps no chunks): the bytes they must start with."""
        if max_buffers is not None:
            _check_size("max_buffers", max_buffers, 1)
        return self.pending()

    def sent(self, nbytes: int) -> None:
        _check_size("nbytes", nbytes, 0)
        if self.send_state is SendState.FAILED:
            return  # the queue is gone; a send that completes late changes nothing
        if nbytes > self.queued:
            raise ValueError("sent() more than is queued")
        self.taken += nbytes

    def eof_sent(self) -> None:
        if self.queued:
            raise FlowUsageError("eof_sent() with data queued")
        send = self.send_state
        if send is SendState.FAILED:
            return  # an EOF that completes after a failure changes nothing
        if send is not SendState.EOF_QUEUED:
            raise FlowUsageError(f"eof_sent() in {send!r}")
        self.eof_out = True
        self._update_state()

    # -- comparing with a flow -----------------------------------------------------------

    def check(self, flow: Flow) -> None:
        """Raise ``ModelMismatch`` unless every property of ``flow`` is what the model says,
        and the memory a flow holds is within its bounds."""
        differences = [
            f"{name}: flow {actual!r}, model {expected!r}"
            for name, actual, expected in (
                ("state", flow.state, self.state),
                ("send_state", flow.send_state, self.send_state),
                ("receive_state", flow.receive_state, self.receive_state),
                ("error", flow.error, self.error),
                ("queued", flow.queued, self.queued),
                ("buffered", flow.buffered, self.buffered),
                ("read_ready", flow.read_ready, self.read_ready),
                ("write_ready", flow.write_ready, self.write_ready),
                ("eof_due", flow.eof_due, self.eof_due),
                ("reading_paused", flow.reading_paused, self.reading_paused),
                ("high_water", flow.high_water, self.high_water),
                ("low_water", flow.low_water, self.low_water),
                ("receive_limit", flow.receive_limit, self.receive_limit),
            )
            if actual != expected
        ]
        if differences:
            raise ModelMismatch(f"{flow!r} differs from the model: " + "; ".join(differences))
        # The contract's memory bound: one write may pass the high-water mark, no more.
        if flow.queued > self.high_water + self.largest_write:
            raise ModelMismatch(
                f"{flow.queued} bytes queued, more than high_water ({self.high_water}) "
                f"plus the largest write ({self.largest_write})"
            )


def check_stream(sender: ReferenceModel, receiver: ReferenceModel) -> None:
    """Raise ``ModelMismatch`` unless the bytes from ``sender``'s flow to ``receiver``'s are
    intact: what arrived is a prefix of what the transport took (no byte lost, duplicated or
    reordered), what was read is a prefix of what arrived, and a read that answered ``Eof()``
    after the peer's EOF came only once everything written had been read.
    """
    taken = sender.written[:sender.taken]
    if not taken.startswith(receiver.arrived):
        raise ModelMismatch(
            f"arrived {_short(receiver.arrived)}, which is not how the sent "
            f"{_short(taken)} starts"
        )
    if not receiver.arrived.startswith(receiver.read_data):
        raise ModelMismatch(
            f"read {_short(receiver.read_data)}, which is not how the arrived "
            f"{_short(receiver.arrived)} starts"
        )
    clean_end = receiver.read_end == Eof() and receiver.eof_in and not receiver.read_closed
    if clean_end and receiver.read_data != sender.written:
        raise ModelMismatch(
            f"read answered Eof() after {_short(receiver.read_data)}, but the peer wrote "
            f"{_short(sender.written)}"
        )


class CheckedFlow(Flow):
    """A ``Flow`` that checks every call against a ``ReferenceModel`` (its ``model``).

    It behaves exactly like ``Flow`` (it *is* one: each call runs ``Flow``'s own code) and
    raises ``ModelMismatch`` as soon as a result, a raised exception or a property differs
    from the model's prediction (the model answers reads with the same ``Eof()`` or ``Error``
    for ever once it answered one). Use it wherever a test builds flows::

        from sansflow.testing import CheckedFlow, FlowPair

        pair = FlowPair(CheckedFlow(), CheckedFlow(high_water=4, low_water=1))
    """

    __slots__ = ("_seen_state", "model")

    def __init__(self, *, high_water: int = 64 * 1024, low_water: int = 16 * 1024,
                 receive_limit: int = 256 * 1024) -> None:
        super().__init__(high_water=high_water, low_water=low_water,
                         receive_limit=receive_limit)
        self.model = ReferenceModel(high_water=high_water, low_water=low_water,
                                    receive_limit=receive_limit)
        self._seen_state = self.state

    def _mirror(self, call: str, predict: Callable[[], object], run: Callable[[], _T],
                agree: Callable[[_T, object], bool] | None = None) -> _T:
        try:
            expected = predict()
        except _REJECTIONS as exc:
            rejected: BaseException | None = exc
        else:
            rejected = None
        try:
            actual = run()
        except _REJECTIONS as exc:
            if rejected is None or type(exc) is not type(rejected):
                raise ModelMismatch(
                    f"{call} raised {exc!r}; the model expected "
                    + (f"{expected!r}" if rejected is None else f"{rejected!r}")
                ) from exc
            self._verify()  # a rejected call must change nothing
            raise
        if rejected is not None:
            raise ModelMismatch(f"{call} returned {actual!r}; the model expected {rejected!r}")
        if not (_same_result if agree is None else agree)(actual, expected):
            raise ModelMismatch(f"{call} returned {actual!r}; the model expected {expected!r}")
        self._verify()
        return actual

    def _verify(self) -> None:
        self.model.check(self)
        check_state_move(self._seen_state, self.state)
        self._seen_state = self.state

    # -- application side ----------------------------------------------------------------

    def read(self, max_bytes: int | None = None) -> ReadResult | _WouldWait:
        return self._mirror(f"read({max_bytes!r})", lambda: self.model.read(max_bytes),
                            lambda: Flow.read(self, max_bytes))

    def write(self, data: bytes | bytearray | memoryview) -> WriteResult | _WouldWait:
        return self._mirror(f"write({_short(data)})", lambda: self.model.write(data),
                            lambda: Flow.write(self, data))

    def writev(self, buffers: Iterable[bytes | bytearray | memoryview]
               ) -> WriteResult | _WouldWait:
        # An iterator is consumed once, so both sides are given the same list.
        if not isinstance(buffers, (bytes, bytearray, memoryview, str)):
            try:
                iterator = iter(buffers)
            except TypeError:
                pass  # not iterable: both must reject it
            else:
                buffers = list(iterator)  # the caller's own exception reaches the caller
        return self._mirror(f"writev({_short(buffers)})", lambda: self.model.writev(buffers),
                            lambda: Flow.writev(self, buffers))

    def close(self) -> None:
        self._mirror("close()", self.model.close, lambda: Flow.close(self))

    def shutdown(self, how: Shutdown) -> None:
        self._mirror(f"shutdown({how!r})", lambda: self.model.shutdown(how),
                     lambda: Flow.shutdown(self, how))

    def abort(self, error: FlowError | None = None) -> None:
        self._mirror(f"abort({error!r})", lambda: self.model.abort(error),
                     lambda: Flow.abort(self, error))

    # -- transport side ------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._mirror(f"receive_data({_short(data)})", lambda: self.model.receive_data(data),
                     lambda: Flow.receive_data(self, data))

    def receive_eof(self) -> None:
        self._mirror("receive_eof()", self.model.receive_eof, lambda: Flow.receive_eof(self))

    def receive_error(self, error: BaseException | FlowError) -> None:
        self._mirror(f"receive_error({error!r})", lambda: self.model.receive_error(error),
                     lambda: Flow.receive_error(self, error))

    def buffers_to_send(self, max_buffers: int | None = None) -> list[Buffer]:
        def agree(buffers: list[Buffer], expected: object) -> bool:
            assert isinstance(expected, bytes)
            joined = b"".join(buffers)
            if max_buffers is None or len(buffers) < max_buffers:
                return joined == expected
            return expected.startswith(joined)

        buffers = self._mirror(f"buffers_to_send({max_buffers!r})",
                               lambda: self.model.buffers_to_send(max_buffers),
                               lambda: Flow.buffers_to_send(self, max_buffers), agree)
        for buffer in buffers:
            # Read-only, so that the transport cannot change what was queued; never empty.
            if not buffer or not (type(buffer) is bytes
                                  or (type(buffer) is memoryview and buffer.readonly)):
                raise ModelMismatch(f"buffers_to_send() handed out {buffer!r}")
        return buffers

    def sent(self, nbytes: int) -> None:
        self._mirror(f"sent({nbytes!r})", lambda: self.model.sent(nbytes),
                     lambda: Flow.sent(self, nbytes))

    def eof_sent(self) -> None:
        self._mirror("eof_sent()", self.model.eof_sent, lambda: Flow.eof_sent(self))


def _same_result(actual: object, expected: object) -> bool:
    """Equal, and ``Ok`` holds the same type (``bytes`` from a read, never a ``bytearray``)."""
    if isinstance(actual, Ok) and isinstance(expected, Ok):
        return type(actual.value) is type(expected.value) and actual == expected
    return type(actual) is type(expected) and actual == expected


def _check_size(name: str, value: object, minimum: int) -> None:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}")


def _as_bytes(data: object, where: str) -> bytes:
    """A copy of ``data``'s bytes as they are now: the model's own record of a buffer."""
    if isinstance(data, str):
        raise TypeError(f"{where}() takes bytes-like data, not str")
    try:
        return memoryview(data).tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{where}() takes bytes-like data") from None


def _short(data: object, limit: int = 40) -> str:
    text = repr(bytes(data)) if isinstance(data, (bytes, bytearray)) else repr(data)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"
