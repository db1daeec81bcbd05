"""Every reachable state of a flow, under every input: the transition tables are the truth.

For each input the test knows which table events it applies (``close()`` is ``SHUTDOWN`` on
the send side, ``receive_error`` is ``FAIL`` on both, and so on). The flow must then be in
exactly the states ``SEND_TRANSITIONS`` / ``RECEIVE_TRANSITIONS`` name, or, where the tables
have no entry (or the input is plain wrong), raise ``FlowUsageError`` / ``TypeError`` /
``ValueError`` and behave from then on exactly like a twin flow that never saw the call.
The flows are ``CheckedFlow`` objects, so every result is also checked against the model.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sansflow import (
    Eof,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    FlowUsageError,
    Ok,
    ReceiveState,
    SendState,
    Shutdown,
)
from sansflow._state import (
    RECEIVE_TRANSITIONS,
    SEND_TRANSITIONS,
    ReceiveEvent,
    SendEvent,
    _StateMachine,
)
from sansflow.testing import CheckedFlow, ModelMismatch, check_state_move

# Small marks so that a handful of bytes fills the queue and the receive buffer.
OPTIONS = {"high_water": 2, "low_water": 1, "receive_limit": 2}
REJECTIONS = (FlowUsageError, TypeError, ValueError)

Input = Callable[[Flow], object]
# One exception for every replay: a flow and its twin must hold an equal error, and
# exceptions compare by identity.
RESET_CAUSE = ConnectionResetError(errno.ECONNRESET, "reset")

# Inputs that reach states: the application's calls and the transport's.
GOOD: dict[str, Input] = {
    "read()": lambda f: f.read(),
    "read(1)": lambda f: f.read(1),
    "write(b'x')": lambda f: f.write(b"x"),
    "write(b'xyz')": lambda f: f.write(b"xyz"),
    "write(b'')": lambda f: f.write(b""),
    "write(bytearray)": lambda f: f.write(bytearray(b"ab")),
    "writev([b'x', memoryview])": lambda f: f.writev([b"x", memoryview(b"y")]),
    "writev([])": lambda f: f.writev([]),
    "close()": lambda f: f.close(),
    "shutdown(READ)": lambda f: f.shutdown(Shutdown.READ),
    "shutdown(WRITE)": lambda f: f.shutdown(Shutdown.WRITE),
    "shutdown(BOTH)": lambda f: f.shutdown(Shutdown.BOTH),
    "abort()": lambda f: f.abort(),
    "abort(TIMED_OUT)": lambda f: f.abort(FlowError(ErrorKind.TIMED_OUT, detail="deadline")),
    "receive_data(b'x')": lambda f: f.receive_data(b"x"),
    "receive_data(b'xyz')": lambda f: f.receive_data(b"xyz"),
    "receive_data(b'')": lambda f: f.receive_data(b""),
    "receive_eof()": lambda f: f.receive_eof(),
    "receive_error(ECONNRESET)": lambda f: f.receive_error(RESET_CAUSE),
    "receive_error(FlowError)": lambda f: f.receive_error(FlowError(ErrorKind.TRANSPORT)),
    "buffers_to_send()": lambda f: f.buffers_to_send(),
    "buffers_to_send(1)": lambda f: f.buffers_to_send(1),
    "sent(0)": lambda f: f.sent(0),
    "sent(1)": lambda f: f.sent(1),
    "sent(queued)": lambda f: f.sent(f.queued),
    "eof_sent()": lambda f: f.eof_sent(),
}

# Plain mistakes: wrong types and sizes. Each must raise and change nothing, in every state.
BAD: dict[str, tuple[Input, type[Exception]]] = {
    "write('x')": (lambda f: f.write("x"), TypeError),  # type: ignore[arg-type]
    "write(None)": (lambda f: f.write(None), TypeError),  # type: ignore[arg-type]
    "write(1)": (lambda f: f.write(1), TypeError),  # type: ignore[arg-type]
    "writev(b'x')": (lambda f: f.writev(b"x"), TypeError),  # type: ignore[arg-type]
    "writev(['x'])": (lambda f: f.writev(["x"]), TypeError),  # type: ignore[list-item]
    "writev(None)": (lambda f: f.writev(None), TypeError),  # type: ignore[arg-type]
    "read(0)": (lambda f: f.read(0), ValueError),
    "read(-1)": (lambda f: f.read(-1), ValueError),
    "read(True)": (lambda f: f.read(True), TypeError),
    "read(1.0)": (lambda f: f.read(1.0), TypeError),  # type: ignore[arg-type]
    "shutdown('write')": (lambda f: f.shutdown("write"), TypeError),  # type: ignore[arg-type]
    "abort('x')": (lambda f: f.abort("x"), TypeError),  # type: ignore[arg-type]
    "receive_data('x')": (lambda f: f.receive_data("x"), TypeError),  # type: ignore[arg-type]
    "receive_data(None)": (lambda f: f.receive_data(None), TypeError),  # type: ignore[arg-type]
    "receive_error('x')": (lambda f: f.receive_error("x"), TypeError),  # type: ignore[arg-type]
    "buffers_to_send(0)": (lambda f: f.buffers_to_send(0), ValueError),
    "buffers_to_send(False)": (lambda f: f.buffers_to_send(False), TypeError),
    "sent(-1)": (lambda f: f.sent(-1), ValueError),
    "sent(True)": (lambda f: f.sent(True), TypeError),
    "sent(None)": (lambda f: f.sent(None), TypeError),  # type: ignore[arg-type]
}

_FAIL = (SendEvent.FAIL, ReceiveEvent.FAIL)
# The table events each input applies, when it applies any.
EVENTS: dict[str, tuple[SendEvent | None, ReceiveEvent | None]] = {
    "close()": (SendEvent.SHUTDOWN, None),
    "shutdown(WRITE)": (SendEvent.SHUTDOWN, None),
    "shutdown(READ)": (None, ReceiveEvent.SHUTDOWN),
    "shutdown(BOTH)": (SendEvent.SHUTDOWN, ReceiveEvent.SHUTDOWN),
    "abort()": _FAIL,
    "abort(TIMED_OUT)": _FAIL,
    "receive_error(ECONNRESET)": _FAIL,
    "receive_error(FlowError)": _FAIL,
    "receive_eof()": (None, ReceiveEvent.EOF_RECEIVED),
    "eof_sent()": (SendEvent.EOF_SENT, None),
}


@dataclass(frozen=True)
class Config:
    """What tells two states of a flow apart, for this test."""

    state: FlowState
    send: SendState
    receive: ReceiveState
    failed: bool
    queued: bool
    buffered: bool
    write_ready: bool  # False: the queue is above low water, a big write would wait
    reading_paused: bool

    def __str__(self) -> str:
        return (f"{self.state.name}/{self.send.name}/{self.receive.name}"
                f"{'/failed' if self.failed else ''}{'/queued' if self.queued else ''}"
                f"{'/buffered' if self.buffered else ''}"
                f"{'' if self.write_ready else '/above-low-water'}"
                f"{'/paused' if self.reading_paused else ''}")


def config(flow: Flow) -> Config:
    return Config(flow.state, flow.send_state, flow.receive_state, flow.error is not None,
                  flow.queued > 0, flow.buffered > 0, flow.write_ready, flow.reading_paused)


def replay(path: tuple[str, ...]) -> CheckedFlow:
    flow = CheckedFlow(**OPTIONS)
    for name in path:
        GOOD[name](flow)
    return flow


def _explore() -> dict[Config, tuple[str, ...]]:
    """Breadth first from a new flow: each reachable configuration and a shortest path to it."""
    start = CheckedFlow(**OPTIONS)
    paths: dict[Config, tuple[str, ...]] = {config(start): ()}
    frontier: list[tuple[str, ...]] = [()]
    while frontier:
        next_frontier: list[tuple[str, ...]] = []
        for path in frontier:
            for name in GOOD:
                flow = replay(path)
                try:
                    GOOD[name](flow)
                except REJECTIONS:
                    continue
                key = config(flow)
                if key not in paths:
                    paths[key] = (*path, name)
                    next_frontier.append((*path, name))
        frontier = next_frontier
    return paths


REACHABLE = _explore()


def snapshot(flow: Flow) -> tuple[object, ...]:
    return (
        flow.state, flow.send_state, flow.receive_state, flow.error, flow.queued,
        flow.buffered, flow.read_ready, flow.write_ready, flow.eof_due, flow.reading_paused,
        flow.high_water, flow.low_water, flow.receive_limit, repr(flow),
        [bytes(b) for b in flow.buffers_to_send()],
    )


def predicted_state(before: Flow, send: SendState, receive: ReceiveState,
                    failed: bool) -> FlowState:
    """The contract's state table: CLOSED once both EOFs passed or the flow failed; else the
    first half-close names the state."""
    if failed or (send is SendState.EOF_SENT and receive is ReceiveState.EOF_RECEIVED):
        return FlowState.CLOSED
    if before.state is not FlowState.OPEN:
        return before.state
    if send is not SendState.OPEN:
        return FlowState.HALF_CLOSED_LOCAL
    if receive is ReceiveState.EOF_RECEIVED:
        return FlowState.HALF_CLOSED_REMOTE
    return FlowState.OPEN


def expectation(flow: Flow, name: str
                ) -> tuple[SendState, ReceiveState, FlowState] | type[Exception]:
    """The states after ``name``, or the exception with which the flow must refuse it."""
    send_event, receive_event = EVENTS.get(name, (None, None))
    failed = flow.error is not None
    if send_event is SendEvent.FAIL and flow.state is FlowState.CLOSED:
        send_event = receive_event = None  # the first end stands
    elif send_event is SendEvent.FAIL:
        failed = True
    if name == "receive_eof()" and failed:
        receive_event = None  # a late EOF after a failure changes nothing
    # Rules outside the tables: what a flow holds limits what the transport may report.
    if name == "eof_sent()" and flow.queued:
        return FlowUsageError
    if name == "sent(1)" and not flow.queued and flow.send_state is not SendState.FAILED:
        return ValueError
    if (name.startswith("receive_data") and flow.receive_state is ReceiveState.EOF_RECEIVED
            and not failed):
        return FlowUsageError
    try:
        send = flow.send_state if send_event is None else SEND_TRANSITIONS[
            flow.send_state][send_event]
        receive = flow.receive_state if receive_event is None else RECEIVE_TRANSITIONS[
            flow.receive_state][receive_event]
    except KeyError:  # a missing entry is the misuse
        return FlowUsageError
    return send, receive, predicted_state(flow, send, receive, failed)


def check_input(path: tuple[str, ...], name: str) -> None:
    flow = replay(path)
    expected = expectation(flow, name)
    before = flow.state
    if not isinstance(expected, tuple):
        twin = replay(path)
        with pytest.raises(expected) as raised:
            GOOD[name](flow)
        assert type(raised.value) is expected
        assert_same_behaviour(flow, twin)
        return
    GOOD[name](flow)
    assert (flow.send_state, flow.receive_state, flow.state) == expected, name
    check_state_move(before, flow.state)


def assert_same_behaviour(flow: Flow, twin: Flow) -> None:
    """``flow`` is indistinguishable from ``twin``: same properties, same queued bytes, and the
    same results from reading everything buffered."""
    assert snapshot(flow) == snapshot(twin)
    while True:
        result = flow.read(1)
        assert result == twin.read(1)
        if not isinstance(result, Ok):
            break


def test_exploration_reaches_every_state() -> None:
    """Every state of each direction, and every flow state, is reached."""
    assert {c.send for c in REACHABLE} == set(SendState)
    assert {c.receive for c in REACHABLE} == set(ReceiveState)
    assert {c.state for c in REACHABLE} == set(FlowState)
    # Both half-closed states hold with both directions ended but not yet CLOSED.
    assert Config(FlowState.HALF_CLOSED_LOCAL, SendState.EOF_QUEUED,
                  ReceiveState.EOF_RECEIVED, False, False, False, True, False) in REACHABLE
    assert Config(FlowState.HALF_CLOSED_REMOTE, SendState.EOF_QUEUED,
                  ReceiveState.EOF_RECEIVED, False, False, False, True, False) in REACHABLE
    # Backpressure and paused reading, together, while the flow is open.
    assert Config(FlowState.OPEN, SendState.OPEN, ReceiveState.OPEN, False, True, True,
                  False, True) in REACHABLE


@pytest.mark.parametrize("path", REACHABLE.values(), ids=[str(c) for c in REACHABLE])
def test_every_input_follows_the_tables(path: tuple[str, ...]) -> None:
    for name in GOOD:
        check_input(path, name)


@pytest.mark.parametrize("path", REACHABLE.values(), ids=[str(c) for c in REACHABLE])
def test_every_mistake_raises_and_changes_nothing(path: tuple[str, ...]) -> None:
    for name, (call, exception) in BAD.items():
        flow, twin = replay(path), replay(path)
        with pytest.raises(exception) as raised:
            call(flow)
        assert type(raised.value) is exception, name
        assert_same_behaviour(flow, twin)


@given(st.lists(st.sampled_from(sorted(GOOD)), max_size=40))
def test_random_input_sequences_follow_the_tables(names: list[str]) -> None:
    path: tuple[str, ...] = ()
    for name in names:
        check_input(path, name)
        flow = replay(path)
        try:
            GOOD[name](flow)
        except REJECTIONS:
            continue
        path = (*path, name)


def test_state_moves_only_towards_closed() -> None:
    """Over every edge the exploration found: never backwards, never between half-closed."""
    for path in REACHABLE.values():
        for name in GOOD:
            flow = replay(path)
            before = flow.state
            try:
                GOOD[name](flow)
            except REJECTIONS:
                continue
            check_state_move(before, flow.state)


@pytest.mark.parametrize(("before", "after"), [
    (FlowState.CLOSED, FlowState.OPEN),
    (FlowState.HALF_CLOSED_LOCAL, FlowState.OPEN),
    (FlowState.HALF_CLOSED_LOCAL, FlowState.HALF_CLOSED_REMOTE),
    (FlowState.HALF_CLOSED_REMOTE, FlowState.HALF_CLOSED_LOCAL),
    (FlowState.CLOSED, FlowState.HALF_CLOSED_REMOTE),
])
def test_check_state_move_refuses_backwards_and_sideways(before: FlowState,
                                                          after: FlowState) -> None:
    with pytest.raises(ModelMismatch, match="moved from"):
        check_state_move(before, after)


def test_every_state_allows_shutdown_and_fail() -> None:
    """``close``, ``shutdown`` and ``abort`` never raise: both tables have those events in
    every state. A transition never leaves a failed or ended direction."""
    for send_state, send_row in SEND_TRANSITIONS.items():
        assert {SendEvent.SHUTDOWN, SendEvent.FAIL} <= send_row.keys(), send_state
    for receive_state, receive_row in RECEIVE_TRANSITIONS.items():
        assert {ReceiveEvent.SHUTDOWN, ReceiveEvent.FAIL} <= receive_row.keys(), receive_state
    for send_state in (SendState.EOF_SENT, SendState.FAILED):
        assert set(SEND_TRANSITIONS[send_state].values()) == {send_state}
    for receive_state in (ReceiveState.EOF_RECEIVED, ReceiveState.FAILED):
        assert set(RECEIVE_TRANSITIONS[receive_state].values()) == {receive_state}


def test_a_second_failure_keeps_the_first() -> None:
    """The state machine itself keeps the first end, whoever asks it to fail again."""
    machine = _StateMachine()
    first, second = FlowError(ErrorKind.RESET), FlowError(ErrorKind.ABORTED)
    machine._fail(first)
    machine._fail(second)
    assert machine._state is FlowState.CLOSED
    assert machine._failure is not None
    assert machine._failure.error is first


def test_missing_table_entry_names_the_event_and_state() -> None:
    flow = Flow()
    with pytest.raises(FlowUsageError,
                       match=r"SendEvent.EOF_SENT is not allowed in SendState.OPEN; the flow "
                             r"is unchanged"):
        flow.eof_sent()
    flow.receive_eof()
    with pytest.raises(FlowUsageError, match=r"ReceiveEvent.EOF_RECEIVED is not allowed in "
                                             r"ReceiveState.EOF_RECEIVED"):
        flow.receive_eof()
    assert flow.state is FlowState.HALF_CLOSED_REMOTE
    assert flow.read() == Eof()
