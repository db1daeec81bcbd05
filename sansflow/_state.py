"""Every state transition of a flow lives here, as data.

Two rules hold this module together:

1. Nothing outside ``_StateMachine`` assigns a state. ``Flow`` reads the states and asks for
   an event to be applied; the tables below say what the event does.
2. A missing key in a table *is* the misuse: ``apply`` raises ``FlowUsageError`` and changes
   nothing, so a rejected call never leaves a half-updated flow.

Each direction has its own small machine::

    send:     OPEN --shutdown--> EOF_QUEUED --eof_sent--> EOF_SENT
                 \\--fail--> FAILED  <--fail--/           (a failure after EOF_SENT changes nothing)

    receive:  OPEN --shutdown(READ)--> DISCARDING
              OPEN, DISCARDING --peer EOF--> EOF_RECEIVED
              OPEN --fail--> FAILED              (DISCARDING and EOF_RECEIVED already answer Eof)

The flow's own state is derived from the two, with one twist: it only moves towards CLOSED,
so the first half-close (ours or the peer's) names the half-closed state until the flow is
CLOSED, even if the other side half-closes before our EOF reaches the transport.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from ._errors import FlowError, FlowUsageError
from ._results import Error

__all__ = ["FlowState", "ReceiveEvent", "ReceiveState", "SendEvent", "SendState", "Shutdown"]


class _NamedEnum(enum.Enum):
    # Members are singletons compared by identity, so identity hashing is exact; Enum's own
    # ``__hash__`` is Python code, run on every table lookup.
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __str__(self) -> str:
        return self.name


class FlowState(_NamedEnum):
    """The state of a whole flow, as in the contract's state table."""

    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed-local"
    HALF_CLOSED_REMOTE = "half-closed-remote"
    CLOSED = "closed"


class SendState(_NamedEnum):
    """Our direction: tells "EOF queued" (still flushing) from "EOF sent"."""

    OPEN = "open"
    EOF_QUEUED = "eof-queued"
    EOF_SENT = "eof-sent"
    FAILED = "failed"


class ReceiveState(_NamedEnum):
    """The peer's direction: ``DISCARDING`` is ``shutdown(READ)`` waiting for the peer's EOF."""

    OPEN = "open"
    DISCARDING = "discarding"
    EOF_RECEIVED = "eof-received"
    FAILED = "failed"


class Shutdown(_NamedEnum):
    """Which direction ``shutdown`` ends (MirageOS ``read | write | read_write``)."""

    READ = "read"
    WRITE = "write"
    BOTH = "both"


class SendEvent(_NamedEnum):
    SHUTDOWN = "shutdown"  # close() or shutdown(WRITE)
    EOF_SENT = "eof-sent"  # the transport took our EOF
    FAIL = "fail"  # transport error or abort()


class ReceiveEvent(_NamedEnum):
    SHUTDOWN = "shutdown"  # shutdown(READ)
    EOF_RECEIVED = "eof-received"  # the peer's EOF arrived
    FAIL = "fail"  # transport error or abort()


SEND_TRANSITIONS: dict[SendState, dict[SendEvent, SendState]] = {
    SendState.OPEN: {
        SendEvent.SHUTDOWN: SendState.EOF_QUEUED,
        SendEvent.FAIL: SendState.FAILED,
    },
    SendState.EOF_QUEUED: {
        SendEvent.SHUTDOWN: SendState.EOF_QUEUED,
        SendEvent.EOF_SENT: SendState.EOF_SENT,
        SendEvent.FAIL: SendState.FAILED,
    },
    # Our EOF is out: that direction ended cleanly, so writes keep answering Eof.
    SendState.EOF_SENT: {
        SendEvent.SHUTDOWN: SendState.EOF_SENT,
        SendEvent.FAIL: SendState.EOF_SENT,
    },
    # EOF_SENT here is an adapter that handed over EOF while another thread aborted: harmless.
    SendState.FAILED: {
        SendEvent.SHUTDOWN: SendState.FAILED,
        SendEvent.EOF_SENT: SendState.FAILED,
        SendEvent.FAIL: SendState.FAILED,
    },
}

RECEIVE_TRANSITIONS: dict[ReceiveState, dict[ReceiveEvent, ReceiveState]] = {
    ReceiveState.OPEN: {
        ReceiveEvent.SHUTDOWN: ReceiveState.DISCARDING,
        ReceiveEvent.EOF_RECEIVED: ReceiveState.EOF_RECEIVED,
        ReceiveEvent.FAIL: ReceiveState.FAILED,
    },
    # Reads already answer Eof here, and Eof is sticky: a failure must not turn it into Error.
    ReceiveState.DISCARDING: {
        ReceiveEvent.SHUTDOWN: ReceiveState.DISCARDING,
        ReceiveEvent.EOF_RECEIVED: ReceiveState.EOF_RECEIVED,
        ReceiveEvent.FAIL: ReceiveState.DISCARDING,
    },
    # A second EOF from the transport is missing on purpose: it is an adapter bug.
    ReceiveState.EOF_RECEIVED: {
        ReceiveEvent.SHUTDOWN: ReceiveState.EOF_RECEIVED,
        ReceiveEvent.FAIL: ReceiveState.EOF_RECEIVED,
    },
    ReceiveState.FAILED: {
        ReceiveEvent.SHUTDOWN: ReceiveState.FAILED,
        ReceiveEvent.FAIL: ReceiveState.FAILED,
    },
}


def next_flow_state(current: FlowState, send: SendState, receive: ReceiveState,
                    failed: bool) -> FlowState:
    """The flow state after a transition; it never moves away from CLOSED."""
    if failed or (send is _EOF_SENT and receive is _EOF_RECEIVED):
        return _CLOSED
    if current is not _OPEN:
        return current
    if send is not _SEND_OPEN:
        return _HALF_CLOSED_LOCAL
    if receive is _EOF_RECEIVED:
        return _HALF_CLOSED_REMOTE
    return _OPEN


# Module constants: an enum attribute lookup is slow on CPython 3.11, and these run on every
# transition.
_OPEN = FlowState.OPEN
_HALF_CLOSED_LOCAL = FlowState.HALF_CLOSED_LOCAL
_HALF_CLOSED_REMOTE = FlowState.HALF_CLOSED_REMOTE
_CLOSED = FlowState.CLOSED
_SEND_OPEN = SendState.OPEN
_EOF_SENT = SendState.EOF_SENT
_EOF_RECEIVED = ReceiveState.EOF_RECEIVED


class _StateMachine:
    """Owns ``_state``, ``_send_state``, ``_receive_state`` and the error that ended the flow."""

    __slots__ = ("_failure", "_receive_state", "_send_state", "_state")

    def __init__(self) -> None:
        self._state = FlowState.OPEN
        self._send_state = SendState.OPEN
        self._receive_state = ReceiveState.OPEN
        self._failure: Error | None = None  # the sticky ``Error`` result, built once

    def _apply(self, send_event: SendEvent | None = None,
               receive_event: ReceiveEvent | None = None) -> None:
        send = self._send_state
        receive = self._receive_state
        # Look both up before assigning either, so that a missing key changes nothing.
        if send_event is not None:
            send = _lookup(SEND_TRANSITIONS, send, send_event)
        if receive_event is not None:
            receive = _lookup(RECEIVE_TRANSITIONS, receive, receive_event)
        self._send_state = send
        self._receive_state = receive
        self._state = next_flow_state(self._state, send, receive, self._failure is not None)

    def _fail(self, error: FlowError) -> None:
        """End the flow with ``error``: every direction still open fails with it."""
        if self._state is _CLOSED:
            return  # closed cleanly or already failed: the first end stands
        self._failure = Error(error)
        self._apply(SendEvent.FAIL, ReceiveEvent.FAIL)


_S = TypeVar("_S", bound=enum.Enum)
_E = TypeVar("_E", bound=enum.Enum)


def _lookup(table: dict[_S, dict[_E, _S]], state: _S, event: _E) -> _S:
    try:
        return table[state][event]
    except KeyError:
        raise FlowUsageError(
            f"{event!r} is not allowed in {state!r}; the flow is unchanged"
        ) from None
