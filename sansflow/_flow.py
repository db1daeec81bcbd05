"""``Flow``: the sans-IO byte stream. The application side and the transport side meet here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from ._errors import ErrorKind, FlowError, FlowUsageError
from ._results import WOULD_WAIT, Eof, Error, Ok, ReadResult, WouldWait, WriteResult
from ._state import (
    FlowState,
    ReceiveEvent,
    ReceiveState,
    SendEvent,
    SendState,
    Shutdown,
    _StateMachine,
)

__all__ = ["HIGH_WATER", "LOW_WATER", "RECEIVE_LIMIT", "Buffer", "Flow", "buffer_list"]

HIGH_WATER = 64 * 1024
"""The default high-water mark: a write waits while more than this is queued."""
LOW_WATER = 16 * 1024
"""The default low-water mark: a waiting writer resumes once the queue is down to this."""
RECEIVE_LIMIT = 256 * 1024
"""The default receive limit: reading from the transport pauses at this many unread bytes."""

Buffer = bytes | memoryview
"""What ``buffers_to_send`` hands out: read-only, byte-addressed (``len`` counts bytes)."""

_OK = Ok(None)
_EOF = Eof()
# Module constants, not ``SendState.OPEN``: an enum attribute lookup costs more than a whole
# write's other work on CPython 3.11.
_SEND_OPEN = SendState.OPEN
_SEND_FAILED = SendState.FAILED
_SEND_EOF_QUEUED = SendState.EOF_QUEUED
_RECEIVE_OPEN = ReceiveState.OPEN
_RECEIVE_FAILED = ReceiveState.FAILED
_RECEIVE_EOF = ReceiveState.EOF_RECEIVED
_CLOSED = FlowState.CLOSED
_WouldWait = Literal[WouldWait.WOULD_WAIT]
_BytesLike = bytes | bytearray | memoryview


class Flow(_StateMachine):
    """One byte stream's state, send queue and receive buffer, with no I/O.

    Application side: ``read``, ``write``, ``writev``, ``close``, ``shutdown``, ``abort``. They
    return a result, or ``WOULD_WAIT`` where a blocking call would wait; the adapter waits for
    ``read_ready`` / ``write_ready`` and calls again.

    Transport side: ``receive_data``, ``receive_eof``, ``receive_error`` feed in what arrived;
    ``buffers_to_send`` and ``sent`` take out what to send; ``eof_due`` and ``eof_sent`` hand
    our EOF over once the queue is flushed; ``reading_paused`` says when to stop reading;
    ``unread`` takes back input an adapter handed past the queue to a reader that never got it.
    """

    __slots__ = (
        "_buffered",
        "_discarding",
        "_high_water",
        "_low_water",
        "_queued",
        "_receive_buffer",
        "_receive_limit",
        "_receive_offset",
        "_send_offset",
        "_send_queue",
    )

    def __init__(self, *, high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
                 receive_limit: int = RECEIVE_LIMIT) -> None:
        _check_size("high_water", high_water, minimum=1)
        _check_size("low_water", low_water, minimum=0)
        _check_size("receive_limit", receive_limit, minimum=1)
        if low_water > high_water:
            raise ValueError(
                f"low_water ({low_water!r}) must not exceed high_water ({high_water!r})"
            )
        super().__init__()
        self._high_water = high_water
        self._low_water = low_water
        self._receive_limit = receive_limit
        # Lists, not deques: an empty deque takes 760 bytes, an empty list 56, which is most
        # of what an idle flow costs; both queues are short, and each send or read takes
        # from the front in one slice.
        self._send_queue: list[Buffer] = []
        self._send_offset = 0  # bytes of _send_queue[0] that the transport already took
        self._queued = 0
        self._receive_buffer: list[bytes] = []
        self._receive_offset = 0  # bytes of _receive_buffer[0] already read
        self._buffered = 0
        self._discarding = False  # shutdown(READ) was called: input is dropped from then on

    # -- what users and adapters look at -------------------------------------------------

    @property
    def state(self) -> FlowState:
        return self._state

    @property
    def send_state(self) -> SendState:
        return self._send_state

    @property
    def receive_state(self) -> ReceiveState:
        return self._receive_state

    @property
    def error(self) -> FlowError | None:
        """The error that ended the flow, or ``None``."""
        return None if self._failure is None else self._failure.error

    @property
    def high_water(self) -> int:
        return self._high_water

    @property
    def low_water(self) -> int:
        return self._low_water

    @property
    def receive_limit(self) -> int:
        return self._receive_limit

    @property
    def queued(self) -> int:
        """Bytes written but not yet taken by the transport."""
        return self._queued

    @property
    def buffered(self) -> int:
        """Bytes received but not yet read."""
        return self._buffered

    @property
    def read_ready(self) -> bool:
        """``read`` would return a result now: a waiting reader should be woken."""
        return self._buffered > 0 or self._receive_state is not _RECEIVE_OPEN

    @property
    def write_ready(self) -> bool:
        """A writer that got ``WOULD_WAIT`` should try again now."""
        return self._send_state is not _SEND_OPEN or self._queued <= self._low_water

    def __repr__(self) -> str:
        return (
            f"<Flow {self._state.name} send={self._send_state.name} "
            f"receive={self._receive_state.name} queued={self._queued} "
            f"buffered={self._buffered}>"
        )

    # -- application side ----------------------------------------------------------------

    def read(self, max_bytes: int | None = None) -> ReadResult | _WouldWait:
        """Up to ``max_bytes`` buffered bytes (all of them if ``None``), never an empty ``Ok``.

        Buffered data comes first, whatever happened since it arrived; then ``Eof()`` or the
        flow's ``Error`` on this and every later call. ``WOULD_WAIT`` when nothing is buffered
        and the peer may still send.
        """
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            _check_size("max_bytes", max_bytes, minimum=1)  # raises
        if self._buffered:
            return Ok(self._take(max_bytes))
        receive = self._receive_state
        if receive is _RECEIVE_OPEN:
            return WOULD_WAIT
        if receive is _RECEIVE_FAILED:
            assert self._failure is not None  # FAILED is only reached through _fail
            return self._failure
        return _EOF

    def write(self, data: bytes | bytearray | memoryview) -> WriteResult | _WouldWait:
        """Queue ``data``: ``Ok(None)`` once it is in the send queue, or ``WOULD_WAIT`` if the
        queue is above its low-water mark and ``data`` would push it past the high-water mark.

        Read-only buffers are queued as they are; writable ones are copied first, so reusing
        them later cannot corrupt the stream.
        """
        if type(data) is bytes:  # the common case, kept free of calls
            size = len(data)
            buffer: Buffer = data
        else:
            buffer, size = _owned(data, "write")
        if self._send_state is not _SEND_OPEN:
            return self._write_refused()
        queued = self._queued
        if queued + size > self._high_water and queued > self._low_water:
            return WOULD_WAIT
        if size:
            self._send_queue.append(buffer)
            self._queued = queued + size
        return _OK

    def writev(self, buffers: Iterable[bytes | bytearray | memoryview]
               ) -> WriteResult | _WouldWait:
        """Queue every buffer, in order, or none of them (same rules as ``write``)."""
        owned = [_owned(item, "writev") for item in buffer_list(buffers)]
        if self._send_state is not _SEND_OPEN:
            return self._write_refused()
        total = sum(size for _, size in owned)
        queued = self._queued
        if queued + total > self._high_water and queued > self._low_water:
            return WOULD_WAIT
        self._send_queue.extend(buffer for buffer, size in owned if size)
        self._queued = queued + total
        return _OK

    def close(self) -> None:
        """The first half of the seed's ``close``: flush, then send EOF (``shutdown(WRITE)``).

        The adapter's ``close`` then waits until the flow is CLOSED (the peer's EOF arrived).
        """
        self._apply(send_event=SendEvent.SHUTDOWN)

    def shutdown(self, how: Shutdown) -> None:
        """``WRITE``: flush, then EOF. ``READ``: drop buffered and future input; reads answer
        ``Eof()``. ``BOTH``: both. Idempotent; it never fails for an I/O reason."""
        if not isinstance(how, Shutdown):
            raise TypeError(f"shutdown() takes a sansflow.Shutdown, not {how!r}")
        send_event = None if how is Shutdown.READ else SendEvent.SHUTDOWN
        receive_event = None if how is Shutdown.WRITE else ReceiveEvent.SHUTDOWN
        self._apply(send_event, receive_event)
        if receive_event is not None:
            self._discarding = True
            self._receive_buffer.clear()
            self._receive_offset = self._buffered = 0

    def abort(self, error: FlowError | None = None) -> None:
        """Drop the send queue and end the flow with ``error`` (default: aborted locally).

        The adapter resets the connection. Data already received stays readable. Nothing
        happens if the flow is already CLOSED.
        """
        if error is None:
            error = FlowError(ErrorKind.ABORTED)
        elif not isinstance(error, FlowError):
            raise TypeError(f"abort() takes a FlowError or None, not {type(error).__name__}")
        if self._state is not _CLOSED:
            self._drop_send_queue()
            self._fail(error)

    # -- transport side ------------------------------------------------------------------

    @property
    def reading_paused(self) -> bool:
        """The receive buffer is at its limit: stop reading from the transport until the
        application reads (``reading_paused`` turns false again)."""
        return self._buffered >= self._receive_limit

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed in bytes that arrived. Writable buffers are copied (the adapter may reuse
        them); ``bytes`` are kept as they are. Dropped after ``shutdown(READ)`` or a failure."""
        if type(data) is not bytes:
            buffer, _ = _owned(data, "receive_data")
            data = bytes(buffer)
        receive = self._receive_state
        if receive is _RECEIVE_OPEN and self._failure is None:
            if data:
                self._receive_buffer.append(data)
                self._buffered += len(data)
        elif receive is _RECEIVE_EOF and self._failure is None:
            raise FlowUsageError("receive_data() after receive_eof(): the peer's EOF came first")

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what is buffered: input the adapter handed straight
        to a waiting reader that never got it (its task was cancelled as the data arrived).
        The next read returns it first, whatever arrived or happened since, as if it had been
        buffered all along; so after ``shutdown(READ)`` it is dropped."""
        if type(data) is not bytes:
            raise TypeError(f"unread() takes bytes, not {type(data).__name__}")
        if self._discarding or not data:
            return
        chunks = self._receive_buffer
        offset = self._receive_offset
        if offset:  # the first chunk was partly read: keep only its rest
            chunks[0] = chunks[0][offset:]
            self._receive_offset = 0
        chunks.insert(0, data)
        self._buffered += len(data)

    def receive_eof(self) -> None:
        """The peer's EOF arrived. Ignored once the flow has failed."""
        if self._failure is None:
            self._apply(receive_event=ReceiveEvent.EOF_RECEIVED)

    def receive_error(self, error: BaseException | FlowError) -> None:
        """The transport failed: the flow becomes CLOSED with that error, unless it is already
        CLOSED. Received data stays readable; the send queue is dropped (it cannot be sent)."""
        if not isinstance(error, FlowError):
            error = FlowError.from_exception(error)
        if self._state is not _CLOSED:
            self._drop_send_queue()
            self._fail(error)

    def buffers_to_send(self, max_buffers: int | None = None) -> list[Buffer]:
        """The queued data, as read-only buffers for one vectored send, without copying.

        The first buffer starts at the exact byte where the last partial send stopped. Pass
        ``max_buffers`` to respect the transport's limit (``IOV_MAX`` for ``sendmsg``).
        """
        if max_buffers is not None and (type(max_buffers) is not int or max_buffers < 1):
            _check_size("max_buffers", max_buffers, minimum=1)  # raises
        queue = self._send_queue
        if not queue:
            return []
        buffers = queue[:max_buffers]  # a copy: the queue changes as the transport sends
        if self._send_offset:
            buffers[0] = memoryview(buffers[0])[self._send_offset:]
        return buffers

    def sent(self, nbytes: int) -> None:
        """The transport took ``nbytes`` from the front of ``buffers_to_send()``.

        Ignored once the send direction has failed, since the queue is gone: an adapter may
        learn of a send's size after another thread aborted the flow.
        """
        if type(nbytes) is not int or nbytes < 0:
            _check_size("nbytes", nbytes, minimum=0)  # raises
        if self._send_state is _SEND_FAILED:
            return  # the queue was dropped while the transport was sending: nothing to advance
        if nbytes > self._queued:
            raise ValueError(
                f"sent({nbytes!r}) is more than the {self._queued} bytes queued; "
                "the flow is unchanged"
            )
        self._queued -= nbytes
        offset = self._send_offset + nbytes
        queue = self._send_queue
        done = 0  # buffers sent whole
        while done < len(queue) and offset >= len(queue[done]):
            offset -= len(queue[done])
            done += 1
        del queue[:done]
        self._send_offset = offset

    @property
    def eof_due(self) -> bool:
        """The queue is flushed and our EOF should go out now (then call ``eof_sent``)."""
        return self._send_state is _SEND_EOF_QUEUED and not self._queued

    def eof_sent(self) -> None:
        """The transport took our EOF (for TCP: ``shutdown(SHUT_WR)`` returned)."""
        if self._queued:
            raise FlowUsageError(
                f"eof_sent() with {self._queued} bytes still queued; flush them first"
            )
        self._apply(send_event=SendEvent.EOF_SENT)

    # -- internals -----------------------------------------------------------------------

    def _write_refused(self) -> Eof | Error:
        return self._failure if self._send_state is _SEND_FAILED else _EOF  # type: ignore[return-value]

    def _drop_send_queue(self) -> None:
        self._send_queue.clear()
        self._send_offset = self._queued = 0

    def _take(self, max_bytes: int | None) -> bytes:
        """Remove and return up to ``max_bytes`` buffered bytes (at least one)."""
        chunks = self._receive_buffer
        offset = self._receive_offset
        first = chunks[0]
        if max_bytes is None or max_bytes >= self._buffered:
            max_bytes = self._buffered
            if len(chunks) == 1 and not offset:  # the chunk as it arrived: no copy
                chunks.clear()
                self._buffered = 0
                return first
        if offset + max_bytes < len(first):  # inside the first chunk
            self._receive_offset = offset + max_bytes
            self._buffered -= max_bytes
            return first[offset:offset + max_bytes]
        pieces = []
        wanted = max_bytes
        done = 0  # chunks read whole
        while wanted:
            chunk = chunks[done]
            available = len(chunk) - offset
            if available > wanted:
                pieces.append(chunk[offset:offset + wanted])
                offset += wanted
                break
            pieces.append(chunk[offset:] if offset else chunk)
            done += 1
            wanted -= available
            offset = 0
        del chunks[:done]
        self._receive_offset = offset
        self._buffered -= max_bytes
        return b"".join(pieces)


def _check_size(name: str, value: object, *, minimum: int) -> None:
    if type(value) is not int:  # bool is an int subclass but never a size
        raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")


def buffer_list(buffers: Iterable[_BytesLike]) -> list[_BytesLike] | tuple[_BytesLike, ...]:
    """The buffers of a ``writev`` call, taken out of the caller's iterable once.

    A list or tuple comes back as it is; any other iterable is read into a list, so that an
    adapter retrying after a wait sees the same buffers. An exception raised by the caller's
    own iterator reaches the caller unchanged (it is theirs, not a type mistake of ours), and
    since nothing was queued yet, nothing changes. A single buffer or a non-iterable is a
    ``TypeError`` that says what ``writev`` takes.
    """
    if type(buffers) is list or type(buffers) is tuple:
        return buffers
    if isinstance(buffers, (bytes, bytearray, memoryview, str)):
        raise TypeError(
            f"writev() takes an iterable of buffers, not a single {type(buffers).__name__}; "
            "use write() for one buffer"
        )
    try:
        iterator = iter(buffers)
    except TypeError:
        raise TypeError(
            f"writev() takes an iterable of buffers, not {type(buffers).__name__}"
        ) from None
    return list(iterator)


def _owned(data: object, where: str) -> tuple[Buffer, int]:
    """``data`` as a buffer the flow may keep, and its size in bytes.

    Read-only buffers are shared; writable ones are copied, because the caller may reuse them.
    """
    if type(data) is bytes:
        return data, len(data)
    if isinstance(data, str):
        raise TypeError(f"{where}() takes bytes-like data, not str; encode it first")
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{where}() takes bytes-like data (bytes, bytearray, memoryview), "
            f"not {type(data).__name__}"
        ) from None
    if view.readonly and view.c_contiguous:
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        return view, view.nbytes
    copy = view.tobytes()
    return copy, len(copy)
