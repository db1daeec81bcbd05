"""``AdapterFlow``: what every adapter's flow shares, with no I/O (state view, busy guard)."""

from __future__ import annotations

from ._errors import BusyError, FlowError
from ._flow import Flow
from ._state import FlowState, ReceiveState, SendState

__all__ = ["AdapterFlow", "check_timeout"]


class AdapterFlow:
    """The base of an adapter's flow: the core, a read-only view of its state, the busy flags.

    Subclass it to write an adapter: add ``read``/``write``/``writev``/``close``/``shutdown``/
    ``abort`` that drive ``self._core`` and wait in the adapter's own way.

    One reader and one writer may use a flow at once; a second concurrent reader (or writer)
    gets ``BusyError``, checked before anything else so that it changes nothing.
    """

    __slots__ = ("_core", "_reading", "_writing")

    def __init__(self, core: Flow) -> None:
        self._core = core
        self._reading = False
        self._writing = False

    @property
    def core(self) -> Flow:
        """The sans-IO flow underneath (read it; let the adapter drive it)."""
        return self._core

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


def check_timeout(timeout: object) -> None:
    """Refuse a ``close(timeout=...)`` that is not ``None`` or a number of seconds >= 0."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if not timeout >= 0:  # also refuses NaN
        raise ValueError(f"timeout must be at least 0 seconds, not {timeout!r}")
