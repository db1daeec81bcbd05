"""AdapterFlow, the I/O-free base of every adapter's flow: its state view and busy guard."""

from __future__ import annotations

import math

import pytest

from sansflow import (
    AdapterFlow,
    BusyError,
    Flow,
    FlowState,
    ReceiveState,
    SendState,
    Shutdown,
)
from sansflow._adapter import check_timeout


def test_the_view_follows_the_core() -> None:
    core = Flow(high_water=10, low_water=5, receive_limit=7)
    flow = AdapterFlow(core)
    assert (flow.high_water, flow.low_water, flow.receive_limit) == (10, 5, 7)
    core.write(b"abc")
    core.receive_data(b"de")
    assert (flow.queued, flow.buffered) == (3, 2)
    assert (flow.state, flow.send_state, flow.receive_state, flow.error) == (
        FlowState.OPEN, SendState.OPEN, ReceiveState.OPEN, None)
    core.shutdown(Shutdown.WRITE)
    core.abort()
    assert (flow.state, flow.send_state, flow.receive_state) == (
        FlowState.CLOSED, SendState.FAILED, ReceiveState.FAILED)
    assert flow.error is core.error
    assert repr(flow) == f"<sansflow._adapter.AdapterFlow {core!r}>"


def test_a_second_reader_or_writer_is_refused_and_changes_nothing() -> None:
    flow = AdapterFlow(Flow())
    flow._claim_read()
    flow._claim_write()
    with pytest.raises(BusyError, match="already reading"):
        flow._claim_read()
    with pytest.raises(BusyError, match="already writing"):
        flow._claim_write()
    assert (flow._reading, flow._writing) == (True, True)


@pytest.mark.parametrize("timeout", [None, 0, 0.5, 10**9])
def test_close_timeouts_accepted(timeout: float | None) -> None:
    check_timeout(timeout)


@pytest.mark.parametrize(
    ("timeout", "error"),
    [("1", TypeError), (True, TypeError), ([1], TypeError), (-1, ValueError),
     (math.nan, ValueError), (-0.001, ValueError)],
)
def test_close_timeouts_refused(timeout: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        check_timeout(timeout)
