"""The flow every adapter hands out, stated once: ``AsyncFlow``, ``BlockingFlow``.

Code written for "any async flow" annotates with ``AsyncFlow`` and runs on the asyncio (and
uvloop) and trio adapters alike; ``BlockingFlow`` is the same API without ``await``, for the
socket adapter. The contract below is the whole of what a caller may rely on; an adapter's
own documentation only says where its transport adds to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from ._errors import FlowError, error_message
from ._results import ReadResult, WriteResult
from ._state import FlowState, ReceiveState, SendState, Shutdown

if TYPE_CHECKING:
    from ._tls import TlsInfo

__all__ = ["AsyncFlow", "BlockingFlow", "BrokenFlowError", "FlowView"]

_BytesLike = bytes | bytearray | memoryview
_Self = TypeVar("_Self")


class BrokenFlowError(ConnectionError):
    """Iterating over a flow met an ``Error``: ``error`` is the ``FlowError``, and the text is
    its ``error_message`` (for example "connection reset by peer (ECONNRESET)").

    Only iteration raises it; ``read`` returns the same failure as ``Error(error)``.
    """

    def __init__(self, error: FlowError) -> None:
        if not isinstance(error, FlowError):
            raise TypeError(f"BrokenFlowError() takes a FlowError, not {type(error).__name__}")
        super().__init__(error_message(error))
        self.error = error

    def __reduce__(self) -> tuple[type[BrokenFlowError], tuple[FlowError]]:
        return (type(self), (self.error,))


@runtime_checkable
class FlowView(Protocol):
    """What a flow shows of its state and options, every property read-only: the core
    ``Flow`` and every adapter's flow alike."""

    @property
    def state(self) -> FlowState:
        """``OPEN``, ``HALF_CLOSED_LOCAL``, ``HALF_CLOSED_REMOTE`` or ``CLOSED``."""

    @property
    def send_state(self) -> SendState:
        """Our direction alone: ``OPEN``, ``EOF_QUEUED``, ``EOF_SENT``, ``FAILED``."""

    @property
    def receive_state(self) -> ReceiveState:
        """The peer's direction alone: ``OPEN``, ``DISCARDING``, ``EOF_RECEIVED``, ``FAILED``."""

    @property
    def error(self) -> FlowError | None:
        """How the flow failed, once it did (``None`` until then, and after a clean end)."""

    @property
    def high_water(self) -> int:
        """A write waits while more than this many bytes are queued (and above low water)."""

    @property
    def low_water(self) -> int:
        """A waiting writer resumes once the queue is down to this many bytes."""

    @property
    def receive_limit(self) -> int:
        """Reading from the transport pauses while this many received bytes wait for
        ``read``."""

    @property
    def queued(self) -> int:
        """Bytes written and not yet sent to the transport."""

    @property
    def buffered(self) -> int:
        """Bytes received from the transport and not yet returned by ``read``."""


class _Connection(FlowView, Protocol):
    """``FlowView`` and the addresses of the connection underneath."""

    @property
    def peername(self) -> Any:
        """The peer's address when the flow was made; ``None`` where there is no socket."""

    @property
    def sockname(self) -> Any:
        """Our own address when the flow was made; ``None`` where there is no socket."""

    @property
    def tls(self) -> TlsInfo | None:
        """What the TLS handshake settled on (version, cipher, ALPN protocol, the peer's
        certificate); ``None`` for a flow without TLS."""


@runtime_checkable
class AsyncFlow(_Connection, Protocol):
    """A byte stream with half-close, backpressure and errors as values (the MirageOS FLOW).

    Results: ``read`` returns ``Ok(data)`` (1 to ``max_bytes`` bytes), ``Eof()`` once the
    peer's EOF is reached, or ``Error(flow_error)``; ``write``/``writev`` return ``Ok(None)``
    once the data is queued, ``Eof()`` after our own ``shutdown(WRITE)``/``close``, or the
    ``Error``. Eof and Error are sticky: every later call answers the same. Data received before
    an error is read first. I/O outcomes are results; a programming mistake (a wrong type, a
    bad size, a second concurrent reader or writer) is an exception that changes nothing.

    One reader and one writer may use a flow at once. Cancelling a ``read`` loses no data; a
    cancelled ``write`` leaves all of its data queued or none of it; a cancelled ``close``
    aborts the flow.

    ``async with flow:`` closes the flow on a normal exit and aborts it when the block raises.
    ``async for data in flow:`` yields each read's data until ``Eof``, and raises
    ``BrokenFlowError`` (a ``ConnectionError``) at an ``Error``.
    """

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        """Buffered data (at most ``max_bytes``), else wait for data, the peer's EOF or an
        error."""

    async def write(self, data: _BytesLike) -> WriteResult:
        """Queue ``data``; wait only while the queue is above the high-water mark. A writable
        buffer is copied, a read-only one kept as it is."""

    async def writev(self, buffers: Iterable[_BytesLike]) -> WriteResult:
        """Queue every buffer, in order, or none of them (same rules as ``write``)."""

    async def close(self, timeout: float | None = None) -> None:
        """Flush, send EOF, wait for the peer's EOF, release the transport. After ``timeout``
        seconds the flow is aborted with ``ErrorKind.TIMED_OUT``. Idempotent; never raises
        for an I/O failure."""

    async def shutdown(self, how: Shutdown) -> None:
        """``WRITE``: flush, then EOF, and keep reading. ``READ``: drop buffered and future
        input. ``BOTH``: both. Idempotent."""

    async def abort(self) -> None:
        """End the flow now: queued data is dropped, the peer sees a reset, waiting calls
        return ``Error(ABORTED)``."""

    async def __aenter__(self: _Self) -> _Self: ...

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, traceback: TracebackType | None) -> None: ...

    def __aiter__(self: _Self) -> _Self: ...

    async def __anext__(self) -> bytes: ...


@runtime_checkable
class BlockingFlow(_Connection, Protocol):
    """``AsyncFlow`` without ``await``: the same contract, for threads and blocking sockets.

    Waiting calls block the calling thread; ``close(timeout)`` bounds the wait for the peer.
    ``with flow:`` closes on a normal exit and aborts on an exception; ``for data in flow:``
    yields data until ``Eof`` and raises ``BrokenFlowError`` at an ``Error``.
    """

    def read(self, max_bytes: int | None = None) -> ReadResult:
        """As ``AsyncFlow.read``, blocking."""

    def write(self, data: _BytesLike) -> WriteResult:
        """As ``AsyncFlow.write``, blocking while the queue is above high water."""

    def writev(self, buffers: Iterable[_BytesLike]) -> WriteResult:
        """As ``AsyncFlow.writev``."""

    def close(self, timeout: float | None = None) -> None:
        """As ``AsyncFlow.close``, blocking."""

    def shutdown(self, how: Shutdown) -> None:
        """As ``AsyncFlow.shutdown``."""

    def abort(self) -> None:
        """As ``AsyncFlow.abort``."""

    def __enter__(self: _Self) -> _Self: ...

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, traceback: TracebackType | None) -> None: ...

    def __iter__(self: _Self) -> _Self: ...

    def __next__(self) -> bytes: ...
