"""Closing: close, every shutdown, abort and transport errors, state by state."""

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
    FlowUsageError,
    Ok,
    ReceiveState,
    SendState,
    Shutdown,
)


# Read through calls: mypy would otherwise narrow a property and keep it narrowed across the
# very calls that change it.
def state(flow: Flow) -> FlowState:
    return flow.state


def send_state(flow: Flow) -> SendState:
    return flow.send_state


def receive_state(flow: Flow) -> ReceiveState:
    return flow.receive_state


def test_a_new_flow_is_open() -> None:
    flow = Flow()
    assert state(flow) is FlowState.OPEN
    assert send_state(flow) is SendState.OPEN
    assert receive_state(flow) is ReceiveState.OPEN
    assert flow.error is None
    assert (flow.queued, flow.buffered) == (0, 0)
    assert flow.write_ready
    assert not flow.read_ready
    assert not flow.eof_due
    assert not flow.reading_paused


def test_close_flushes_then_hands_over_eof() -> None:
    flow = Flow()
    flow.write(b"abc")
    flow.close()
    assert state(flow) is FlowState.HALF_CLOSED_LOCAL
    assert send_state(flow) is SendState.EOF_QUEUED
    assert not flow.eof_due  # the queue first
    flow.sent(2)
    assert not flow.eof_due
    flow.sent(1)
    assert flow.eof_due
    flow.eof_sent()
    assert send_state(flow) is SendState.EOF_SENT
    assert not flow.eof_due
    assert state(flow) is FlowState.HALF_CLOSED_LOCAL  # until the peer's EOF
    flow.receive_eof()
    assert state(flow) is FlowState.CLOSED
    assert flow.error is None


def test_close_is_idempotent() -> None:
    flow = Flow()
    flow.close()
    flow.close()
    flow.shutdown(Shutdown.WRITE)
    assert send_state(flow) is SendState.EOF_QUEUED
    flow.eof_sent()
    flow.close()
    assert send_state(flow) is SendState.EOF_SENT
    flow.receive_eof()
    flow.close()
    assert state(flow) is FlowState.CLOSED


def test_eof_sent_twice_or_before_close_is_refused() -> None:
    flow = Flow()
    with pytest.raises(FlowUsageError, match=r"EOF_SENT is not allowed in SendState\.OPEN"):
        flow.eof_sent()
    assert send_state(flow) is SendState.OPEN
    flow.close()
    flow.eof_sent()
    with pytest.raises(FlowUsageError, match=r"not allowed in SendState\.EOF_SENT"):
        flow.eof_sent()
    assert send_state(flow) is SendState.EOF_SENT


def test_peer_eof_first_then_close() -> None:
    flow = Flow()
    flow.receive_eof()
    assert state(flow) is FlowState.HALF_CLOSED_REMOTE
    flow.close()
    assert state(flow) is FlowState.HALF_CLOSED_REMOTE  # the first half-close names it
    flow.eof_sent()
    assert state(flow) is FlowState.CLOSED


def test_close_then_peer_eof_before_our_eof_is_out() -> None:
    flow = Flow()
    flow.write(b"x")
    flow.close()
    flow.receive_eof()
    assert state(flow) is FlowState.HALF_CLOSED_LOCAL
    assert receive_state(flow) is ReceiveState.EOF_RECEIVED
    flow.sent(1)
    flow.eof_sent()
    assert state(flow) is FlowState.CLOSED


def test_shutdown_read_discards_buffered_and_future_input() -> None:
    flow = Flow()
    flow.receive_data(b"unwanted")
    flow.shutdown(Shutdown.READ)
    assert receive_state(flow) is ReceiveState.DISCARDING
    assert state(flow) is FlowState.OPEN  # our direction is still open
    assert flow.buffered == 0
    assert flow.read() == Eof()
    flow.receive_data(b"more")
    assert flow.buffered == 0
    assert flow.read() == Eof()
    flow.receive_eof()
    assert receive_state(flow) is ReceiveState.EOF_RECEIVED
    assert state(flow) is FlowState.HALF_CLOSED_REMOTE
    assert flow.read() == Eof()
    assert flow.write(b"still") == Ok(None)


def test_shutdown_write_is_close() -> None:
    flow = Flow()
    flow.shutdown(Shutdown.WRITE)
    assert send_state(flow) is SendState.EOF_QUEUED
    assert receive_state(flow) is ReceiveState.OPEN
    assert state(flow) is FlowState.HALF_CLOSED_LOCAL
    assert flow.eof_due


def test_shutdown_both() -> None:
    flow = Flow()
    flow.receive_data(b"x")
    flow.write(b"y")
    flow.shutdown(Shutdown.BOTH)
    assert send_state(flow) is SendState.EOF_QUEUED
    assert receive_state(flow) is ReceiveState.DISCARDING
    assert state(flow) is FlowState.HALF_CLOSED_LOCAL
    assert flow.read() == Eof()
    assert flow.write(b"z") == Eof()
    assert flow.queued == 1  # what was written before still goes out
    flow.sent(1)
    flow.eof_sent()
    flow.receive_eof()
    assert state(flow) is FlowState.CLOSED
    assert flow.error is None


def test_shutdown_read_after_eof_drops_what_is_buffered() -> None:
    flow = Flow()
    flow.receive_data(b"abc")
    flow.receive_eof()
    flow.shutdown(Shutdown.READ)
    assert receive_state(flow) is ReceiveState.EOF_RECEIVED
    assert flow.read() == Eof()


def test_shutdown_read_after_failure_keeps_the_error() -> None:
    flow = Flow()
    flow.receive_data(b"abc")
    flow.abort()
    flow.shutdown(Shutdown.READ)
    assert receive_state(flow) is ReceiveState.FAILED
    assert flow.read() == Error(FlowError(ErrorKind.ABORTED))


def test_failure_while_discarding_keeps_eof() -> None:
    flow = Flow()
    flow.shutdown(Shutdown.READ)
    flow.abort()
    assert receive_state(flow) is ReceiveState.DISCARDING
    assert send_state(flow) is SendState.FAILED
    assert flow.read() == Eof()
    assert flow.write(b"x") == Error(FlowError(ErrorKind.ABORTED))


@pytest.mark.parametrize("how", ["read", "WRITE", 1, None, True])
def test_shutdown_rejects_other_values(how: object) -> None:
    flow = Flow()
    with pytest.raises(TypeError, match=r"shutdown\(\) takes a sansflow.Shutdown, not "):
        flow.shutdown(how)  # type: ignore[arg-type]
    assert state(flow) is FlowState.OPEN


# -- abort and errors ----------------------------------------------------------------------


def test_abort_drops_the_queue_and_closes_with_aborted() -> None:
    flow = Flow()
    flow.write(b"never sent")
    flow.sent(3)
    flow.abort()
    assert state(flow) is FlowState.CLOSED
    assert send_state(flow) is SendState.FAILED
    assert receive_state(flow) is ReceiveState.FAILED
    assert flow.error == FlowError(ErrorKind.ABORTED)
    assert flow.queued == 0
    assert flow.buffers_to_send() == []
    assert not flow.eof_due
    assert flow.read_ready
    assert flow.write_ready


def test_abort_with_an_error() -> None:
    flow = Flow()
    error = FlowError(ErrorKind.TIMED_OUT, detail="close() deadline passed")
    flow.abort(error)
    assert flow.error is error
    assert flow.read() == Error(error)
    assert flow.write(b"x") == Error(error)


def test_abort_rejects_other_values_and_changes_nothing() -> None:
    flow = Flow()
    flow.write(b"abc")
    with pytest.raises(TypeError, match=r"abort\(\) takes a FlowError or None, not "
                                        r"ConnectionResetError"):
        flow.abort(ConnectionResetError())  # type: ignore[arg-type]
    assert state(flow) is FlowState.OPEN
    assert flow.queued == 3


def test_the_first_end_stands() -> None:
    flow = Flow()
    flow.abort()
    flow.abort(FlowError(ErrorKind.TIMED_OUT))
    flow.receive_error(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert flow.error == FlowError(ErrorKind.ABORTED)


def test_abort_after_a_clean_close_changes_nothing() -> None:
    flow = Flow()
    flow.receive_data(b"abc")
    flow.close()
    flow.eof_sent()
    flow.receive_eof()
    flow.abort()
    flow.receive_error(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert state(flow) is FlowState.CLOSED
    assert flow.error is None
    assert flow.read() == Ok(b"abc")
    assert flow.read() == Eof()
    assert flow.write(b"x") == Eof()


@pytest.mark.parametrize(("exc", "kind"), [
    (ConnectionResetError(errno.ECONNRESET, "reset"), ErrorKind.RESET),
    (BrokenPipeError(errno.EPIPE, "pipe"), ErrorKind.BROKEN_PIPE),
    (TimeoutError(errno.ETIMEDOUT, "timed out"), ErrorKind.TIMED_OUT),
    (OSError(errno.ENETDOWN, "Network is down"), ErrorKind.TRANSPORT),
    (ValueError("not an OSError"), ErrorKind.TRANSPORT),
])
def test_receive_error_closes_with_the_cause(exc: BaseException, kind: ErrorKind) -> None:
    flow = Flow()
    flow.write(b"abc")
    flow.receive_error(exc)
    assert state(flow) is FlowState.CLOSED
    assert flow.error == FlowError(kind, exc)
    assert flow.queued == 0
    assert flow.read() == Error(FlowError(kind, exc))


def test_receive_error_takes_a_flow_error() -> None:
    flow = Flow()
    error = FlowError(ErrorKind.TRANSPORT, detail="serial line dropped")
    flow.receive_error(error)
    assert flow.error is error


def test_receive_error_rejects_other_values() -> None:
    flow = Flow()
    with pytest.raises(TypeError, match=r"from_exception\(\) takes an exception, not int"):
        flow.receive_error(104)  # type: ignore[arg-type]
    assert state(flow) is FlowState.OPEN


def test_failure_after_our_eof_is_out_keeps_the_send_side_clean() -> None:
    flow = Flow()
    flow.close()
    flow.eof_sent()
    flow.receive_error(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert state(flow) is FlowState.CLOSED
    assert send_state(flow) is SendState.EOF_SENT
    assert receive_state(flow) is ReceiveState.FAILED
    assert flow.write(b"x") == Eof()
    assert flow.read() == Error(flow.error)  # type: ignore[arg-type]


def test_late_transport_completions_after_a_failure_are_harmless() -> None:
    """An adapter may learn that a send (or the EOF) completed after another thread aborted."""
    flow = Flow()
    flow.write(b"abcdef")
    flow.close()
    flow.abort()
    flow.sent(6)  # the queue is gone: ignored
    flow.eof_sent()
    assert send_state(flow) is SendState.FAILED
    assert flow.queued == 0
    with pytest.raises(ValueError, match="nbytes must be at least 0"):
        flow.sent(-1)  # a bad size is still a bad size


def test_would_wait_never_after_an_end() -> None:
    """Once a direction ended, no call on it answers WOULD_WAIT: a waiter always wakes."""
    for end in (Flow.abort, Flow.receive_eof, Flow.close):
        flow = Flow(high_water=1, low_water=0)
        flow.write(b"ab")
        end(flow)
        if end is not Flow.close:
            assert flow.read() is not WOULD_WAIT
        if end is not Flow.receive_eof:
            assert flow.write(b"cd") is not WOULD_WAIT
