"""What every adapter's flow shares, with no I/O: ``AdapterFlow`` (state view, busy guard),
and ``AsyncAdapterFlow`` / ``BlockingAdapterFlow`` (``with`` and iteration, from the flow's own
``read``, ``close`` and ``abort``)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

from ._api import BrokenFlowError, FlowView
from ._errors import BusyError, FlowError
from ._results import Eof, Ok, ReadResult
from ._state import FlowState, ReceiveState, SendState

__all__ = ["AdapterFlow", "AsyncAdapterFlow", "BlockingAdapterFlow", "check_timeout"]

_Self = TypeVar("_Self")


class AdapterFlow:
    """The base of an adapter's flow: the core, a read-only view of its state, the busy flags.

    Subclass it to write an adapter: add ``read``/``write``/``writev``/``close``/``shutdown``/
    ``abort`` that drive ``self._core`` and wait in the adapter's own way. The core stays
    private, so that no caller writes to it behind the adapter's back; a subclass that drives
    it declares ``_core: Flow``.

    One reader and one writer may use a flow at once; a second concurrent reader (or writer)
    gets ``BusyError``, checked before anything else so that it changes nothing.
    """

    __slots__ = ("_core", "_peername", "_reading", "_sockname", "_writing")

    def __init__(self, core: FlowView, *, peername: Any = None, sockname: Any = None) -> None:
        self._core = core
        self._reading = False
        self._writing = False
        self._peername = peername
        self._sockname = sockname

    @property
    def peername(self) -> Any:
        """The peer's address when the flow was made (``(host, port)`` for IPv4, a 4-tuple for
        IPv6, the path for AF_UNIX); ``None`` where there is no socket, or the connection had
        ended by then. Taken once, so it still answers after the flow is closed."""
        return self._peername

    @property
    def sockname(self) -> Any:
        """Our own address when the flow was made; ``None`` where there is no socket."""
        return self._sockname

    @property
    def state(self) -> FlowState:
        return self._core.state

    @property
    def send_state(self) -> SendState:
        return self._core.send_state

    @property
    def receive_state(self) -> ReceiveState:
        return self._core.receive_state

    @property
    def error(self) -> FlowError | None:
        return self._core.error

    @property
    def high_water(self) -> int:
        return self._core.high_water

    @property
    def low_water(self) -> int:
        return self._core.low_water

    @property
    def receive_limit(self) -> int:
        return self._core.receive_limit

    @property
    def queued(self) -> int:
        """Bytes written and not yet sent."""
        return self._core.queued

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return self._core.buffered

    def _claim_read(self) -> None:
        if self._reading:
            raise BusyError("another task is already reading this flow")
        self._reading = True

    def _claim_write(self) -> None:
        if self._writing:
            raise BusyError("another task is already writing to this flow")
        self._writing = True

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} {self._core!r}>"


def _data_or_stop(result: ReadResult, stop: type[Exception]) -> bytes:
    """What one step of iterating over a flow gives for ``result``."""
    if type(result) is Ok:
        return result.value
    if type(result) is Eof:
        raise stop
    raise BrokenFlowError(result.error)  # type: ignore[union-attr]  # neither Ok nor Eof


class AsyncAdapterFlow(AdapterFlow):
    """``AdapterFlow`` for an async adapter: ``async with`` closes on a normal exit and aborts
    on an exception; ``async for`` yields data until ``Eof`` and raises ``BrokenFlowError`` at
    an ``Error``. The subclass supplies ``read``, ``close`` and ``abort``."""

    __slots__ = ()

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        raise NotImplementedError

    async def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    async def abort(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, traceback: TracebackType | None) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()

    def __aiter__(self: _Self) -> _Self:
        return self

    async def __anext__(self) -> bytes:
        return _data_or_stop(await self.read(), StopAsyncIteration)


class BlockingAdapterFlow(AdapterFlow):
    """``AsyncAdapterFlow`` without ``await``: ``with`` and ``for`` over a blocking flow."""

    __slots__ = ()

    def read(self, max_bytes: int | None = None) -> ReadResult:
        raise NotImplementedError

    def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, traceback: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __iter__(self: _Self) -> _Self:
        return self

    def __next__(self) -> bytes:
        return _data_or_stop(self.read(), StopIteration)


def check_timeout(timeout: object) -> None:
    """Refuse a ``close(timeout=...)`` that is not ``None`` or a number of seconds >= 0."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if not timeout >= 0:  # also refuses NaN
        raise ValueError(f"timeout must be at least 0 seconds, not {timeout!r}")
