"""``FlowPair``: two flows joined by a deterministic in-memory wire."""

from __future__ import annotations

import errno

import pytest

from sansflow import (
    WOULD_WAIT,
    Eof,
    Error,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    Ok,
    ReceiveState,
    SendState,
)
from sansflow.testing import CheckedFlow, FlowPair, Wire, check_stream

RESET = Error(FlowError(ErrorKind.RESET))


def checked_pair(capacity: int | None = None, **options: int) -> FlowPair:
    return FlowPair(CheckedFlow(**options), CheckedFlow(**options), capacity=capacity)


def state(flow: Flow) -> FlowState:
    return flow.state  # a call, so that mypy does not narrow it across other calls


def read_all(flow: Flow) -> bytes:
    data = b""
    while isinstance(result := flow.read(), Ok):
        data += result.value
    return data


def test_default_flows_and_peers() -> None:
    pair = FlowPair()
    assert isinstance(pair.a, Flow)
    assert isinstance(pair.b, Flow)
    assert pair.peer(pair.a) is pair.b
    assert pair.peer(pair.b) is pair.a
    assert pair.wire_from(pair.a) is not pair.wire_from(pair.b)
    assert pair.wire_from(pair.a) == Wire()
    assert pair.resets == 0


def test_given_flows_are_used() -> None:
    a, b = Flow(high_water=5, low_water=1), Flow()
    pair = FlowPair(a, b)
    assert pair.a is a
    assert pair.b is b


@pytest.mark.parametrize("capacity", [0, -1, True, 1.5, "4"])
def test_bad_capacity_is_refused(capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity must be a positive int or None, not "):
        FlowPair(capacity=capacity)  # type: ignore[arg-type]


def test_a_flow_cannot_pair_with_itself() -> None:
    flow = Flow()
    with pytest.raises(ValueError, match="a flow cannot be paired with itself"):
        FlowPair(flow, flow)


def test_foreign_flows_are_refused() -> None:
    pair = FlowPair()
    stranger = Flow()
    for call in (pair.peer, pair.wire_from, pair.transmit, pair.deliver):
        with pytest.raises(ValueError, match="is not one of this pair's flows"):
            call(stranger)


def test_wire_room() -> None:
    assert Wire().room is None
    wire = Wire(capacity=4)
    assert wire.room == 4
    wire.data += b"abc"
    assert wire.room == 1


def test_transmit_then_deliver() -> None:
    pair = checked_pair()
    pair.a.write(b"hello")
    assert pair.transmit(pair.a) == 5
    assert pair.wire_from(pair.a).data == b"hello"
    assert pair.a.queued == 0
    assert pair.b.read() is WOULD_WAIT
    assert pair.deliver(pair.b) == 5
    assert pair.b.read() == Ok(b"hello")
    assert pair.deliver(pair.b) == 0  # nothing in flight


def test_partial_sends_and_small_chunks() -> None:
    pair = checked_pair()
    pair.a.writev([b"abc", b"def"])
    assert pair.transmit(pair.a, 2) == 2
    assert pair.transmit(pair.a, 3) == 3
    assert pair.a.queued == 1
    assert pair.wire_from(pair.a).data == b"abcde"
    assert pair.deliver(pair.b, 4) == 4
    assert pair.deliver(pair.b, 4) == 1
    assert pair.transmit(pair.a) == 1
    assert pair.deliver(pair.b) == 1
    assert read_all(pair.b) == b"abcdef"


def test_wire_capacity_bounds_a_send() -> None:
    pair = checked_pair(capacity=3)
    pair.a.write(b"abcdefgh")
    assert pair.transmit(pair.a) == 3
    assert pair.transmit(pair.a) == 0  # the wire is full
    assert pair.deliver(pair.b, 2) == 2
    assert pair.transmit(pair.a) == 2
    assert pair.wire_from(pair.a).data == b"cde"


def test_eof_follows_the_data() -> None:
    pair = checked_pair(capacity=2)
    pair.a.write(b"abc")
    pair.a.close()
    assert pair.transmit(pair.a) == 2
    assert not pair.wire_from(pair.a).eof  # one byte still queued
    assert pair.transmit(pair.a) == 0
    assert pair.deliver(pair.b) == 2
    assert pair.transmit(pair.a) == 1
    assert pair.wire_from(pair.a).eof
    assert pair.a.send_state is SendState.EOF_SENT
    assert pair.deliver(pair.b) == 1
    assert pair.b.receive_state is ReceiveState.OPEN  # EOF only once the wire is empty
    assert pair.deliver(pair.b) == 0
    assert pair.b.read_ready
    assert state(pair.b) is FlowState.HALF_CLOSED_REMOTE
    assert pair.wire_from(pair.a).eof_delivered
    assert pair.deliver(pair.b) == 0  # delivered once
    assert read_all(pair.b) == b"abc"
    assert pair.b.read() == Eof()


def test_a_paused_reader_gets_nothing() -> None:
    pair = checked_pair(receive_limit=2)
    pair.a.write(b"abcd")
    pair.a.close()
    pair.transmit(pair.a)
    assert pair.deliver(pair.b, 3) == 3
    assert pair.b.reading_paused
    assert pair.deliver(pair.b) == 0
    assert pair.b.buffered == 3
    assert pair.b.read(2) == Ok(b"ab")
    assert pair.deliver(pair.b) == 1
    assert pair.b.reading_paused
    assert pair.deliver(pair.b) == 0
    assert pair.b.receive_state is ReceiveState.OPEN  # nor does the EOF pass a paused reader
    assert read_all(pair.b) == b"cd"
    pair.deliver(pair.b)
    assert pair.b.read() == Eof()


def test_pump_runs_everything_both_ways() -> None:
    pair = checked_pair(capacity=3, receive_limit=4, high_water=8, low_water=2)
    pair.a.write(b"from a to b, a long way")
    pair.b.write(b"and back")
    pair.a.close()
    pair.b.close()
    pair.pump()
    # Reading paused both: the pump stops, nothing lost.
    assert pair.b.reading_paused
    received = {"a": b"", "b": b""}
    while not (pair.a.state is FlowState.CLOSED and pair.b.state is FlowState.CLOSED):
        received["a"] += read_all(pair.a)
        received["b"] += read_all(pair.b)
        pair.pump(2)
    received["a"] += read_all(pair.a)  # CLOSED, and what arrived last is still readable
    received["b"] += read_all(pair.b)
    assert received == {"a": b"and back", "b": b"from a to b, a long way"}
    assert pair.a.error is None
    assert pair.b.error is None
    assert isinstance(pair.a, CheckedFlow)
    assert isinstance(pair.b, CheckedFlow)
    check_stream(pair.a.model, pair.b.model)
    check_stream(pair.b.model, pair.a.model)


def test_pump_on_an_idle_pair_returns() -> None:
    pair = FlowPair()
    pair.pump()
    assert pair.a.state is FlowState.OPEN


def test_reset_breaks_both_ends_and_loses_bytes_in_flight() -> None:
    pair = checked_pair()
    pair.a.write(b"lost in flight")
    pair.transmit(pair.a)
    pair.b.write(b"queued")
    pair.deliver(pair.b, 4)
    pair.reset()
    assert pair.resets == 1
    assert pair.wire_from(pair.a).data == b""
    for flow in (pair.a, pair.b):
        assert state(flow) is FlowState.CLOSED
        assert flow.error is not None
        assert flow.error.kind is ErrorKind.RESET
        assert isinstance(flow.error.cause, ConnectionResetError)
        assert flow.error.cause.errno == errno.ECONNRESET
    assert pair.b.read() == Ok(b"lost")  # what arrived stays readable
    result = pair.b.read()
    assert isinstance(result, Error)
    assert result.error.kind is ErrorKind.RESET
    assert pair.b.write(b"x") == result


@pytest.mark.parametrize("error", [None, FlowError(ErrorKind.TIMED_OUT, detail="deadline")])
def test_abort_reaches_the_peer_as_a_reset(error: FlowError | None) -> None:
    pair = checked_pair()
    pair.a.write(b"in flight")
    pair.transmit(pair.a)
    pair.a.abort(error)
    assert state(pair.b) is FlowState.OPEN  # not until the transport acts
    assert pair.transmit(pair.a) == 0
    assert pair.resets == 1
    assert pair.wire_from(pair.a).data == b""
    assert state(pair.b) is FlowState.CLOSED
    assert pair.b.error is not None
    assert pair.b.error.kind is ErrorKind.RESET
    pair.transmit(pair.a)
    assert pair.resets == 1  # the peer is CLOSED already: one reset is enough


def test_abort_after_the_peer_closed_resets_nothing() -> None:
    pair = checked_pair()
    pair.a.close()
    pair.b.close()
    pair.pump()
    assert state(pair.b) is FlowState.CLOSED
    pair.a.abort()  # CLOSED already: changes nothing
    pair.transmit(pair.a)
    assert pair.resets == 0
    assert pair.b.error is None


def test_a_transport_failure_on_one_end_does_not_reach_the_other() -> None:
    pair = checked_pair()
    pair.a.receive_error(BrokenPipeError(errno.EPIPE, "Broken pipe"))
    pair.pump()
    assert state(pair.b) is FlowState.OPEN
    assert pair.resets == 0


def test_data_for_a_failed_end_is_dropped() -> None:
    pair = checked_pair()
    pair.b.write(b"too late")
    pair.transmit(pair.b)
    pair.a.receive_error(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert pair.deliver(pair.a) == 8
    assert pair.a.buffered == 0
