"""The copy/proxy rules as bookkeeping (sansflow.Relay, ProxyRelay): each outcome's next step,
the counts, the idle timeout, and refused calls that change nothing."""

from __future__ import annotations

import errno
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sansflow import (
    CopyStats,
    Eof,
    Error,
    ErrorKind,
    FlowError,
    FlowUsageError,
    Ok,
    ProxyRelay,
    ProxyResult,
    Relay,
    RelayStep,
    error_message,
)

RESET = FlowError.from_exception(ConnectionResetError(errno.ECONNRESET, "reset"))
PIPE = FlowError.from_exception(BrokenPipeError(errno.EPIPE, "pipe"))


def copy_through(relay: Relay, chunks: list[bytes], now: float = 1.0) -> None:
    for chunk in chunks:
        assert relay.on_read(Ok(chunk), now) is RelayStep.WRITE
        assert relay.pending == chunk
        assert relay.on_write(Ok(None), now) is RelayStep.READ
        assert relay.pending == b""


def test_data_then_eof_shuts_the_destination_down() -> None:
    relay = Relay(10.0)
    copy_through(relay, [b"abc", b"de"], now=11.0)
    assert not relay.done
    assert relay.on_read(Eof(), 12.5) is RelayStep.SHUTDOWN_DST
    assert relay.done
    assert relay.stats == CopyStats(5, 2, 5, 2, 10.0, 12.5, Eof())
    assert relay.stats.duration == 2.5


def test_a_read_error_aborts_the_destination_and_is_kept() -> None:
    errors: list[FlowError] = []
    relay = Relay(0.0, errors=errors)
    copy_through(relay, [b"partial-"])
    assert relay.on_read(Error(RESET), 2.0) is RelayStep.ABORT_DST
    assert relay.stats.end == Error(RESET)
    assert relay.stats.read_bytes == relay.stats.write_bytes == 8
    assert errors == [RESET]


def test_a_write_error_aborts_the_source_and_counts_only_what_was_written() -> None:
    relay = Relay(0.0)
    copy_through(relay, [b"one"])
    assert relay.on_read(Ok(b"two"), 1.0) is RelayStep.WRITE
    assert relay.on_write(Error(PIPE), 2.0) is RelayStep.ABORT_SRC
    assert relay.stats == CopyStats(6, 2, 3, 1, 0.0, 2.0, Error(PIPE))
    assert relay.pending == b""  # the chunk that could not be written is not kept


def test_a_write_refused_with_eof_stops_reading_the_source() -> None:
    relay = Relay(0.0)
    assert relay.on_read(Ok(b"late"), 1.0) is RelayStep.WRITE
    assert relay.on_write(Eof(), 1.0) is RelayStep.SHUTDOWN_SRC
    assert relay.stats.end == Eof()
    assert (relay.stats.read_bytes, relay.stats.write_bytes) == (4, 0)


def test_outcomes_after_the_end_are_ignored() -> None:
    relay = Relay(0.0)
    relay.on_read(Eof(), 1.0)
    before = relay.stats
    assert relay.on_read(Ok(b"x"), 2.0) is RelayStep.STOP
    assert relay.on_write(Ok(None), 2.0) is RelayStep.STOP
    relay.stop(RESET, 3.0)
    assert relay.stats == before


def test_duration_is_zero_while_running_and_at_an_instant_end() -> None:
    relay = Relay(5.0)
    assert relay.stats.duration == 0.0
    assert relay.stats.ended is None
    assert relay.stats.end is None
    relay.on_read(Eof(), 5.0)
    assert relay.stats.duration == 0.0
    assert CopyStats().duration == 0.0


@pytest.mark.parametrize(
    ("call", "exception", "match"),
    [
        (lambda r: r.on_write(Ok(None), 1.0), FlowUsageError, "waits for on_read"),
        (lambda r: r.on_read(Ok(b""), 1.0), TypeError, "takes a read's result"),
        (lambda r: r.on_read(Ok("text"), 1.0), TypeError, "takes a read's result"),
        (lambda r: r.on_read(b"raw", 1.0), TypeError, "takes a read's result"),
        (lambda r: r.on_read(Eof(), 0.5), ValueError, "back in time"),
        (lambda r: r.on_read(Eof(), "1"), TypeError, "number of seconds"),
        (lambda r: r.on_read(Eof(), True), TypeError, "number of seconds"),
        (lambda r: r.on_read(Eof(), math.nan), ValueError, "finite"),
        (lambda r: r.stop("reset", 2.0), TypeError, "takes a FlowError"),
        (lambda r: r.stop(RESET, 0.0), ValueError, "back in time"),
    ],
)
def test_refused_calls_change_nothing(call: Any, exception: type[Exception], match: str) -> None:
    relay = Relay(1.0)
    before = relay.stats
    with pytest.raises(exception, match=match):
        call(relay)
    assert relay.stats == before
    assert relay.on_read(Ok(b"still works"), 1.0) is RelayStep.WRITE


@pytest.mark.parametrize(
    ("call", "exception", "match"),
    [
        (lambda r: r.on_read(Ok(b"again"), 1.0), FlowUsageError, "waits for on_write"),
        (lambda r: r.on_write(Ok(b"data"), 1.0), TypeError, "takes a write's result"),
        (lambda r: r.on_write(None, 1.0), TypeError, "takes a write's result"),
    ],
)
def test_refused_calls_while_writing_change_nothing(call: Any, exception: type[Exception],
                                                    match: str) -> None:
    relay = Relay(1.0)
    relay.on_read(Ok(b"held"), 1.0)
    before = relay.stats
    with pytest.raises(exception, match=match):
        call(relay)
    assert relay.stats == before
    assert relay.pending == b"held"
    assert relay.on_write(Ok(None), 1.0) is RelayStep.READ


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=30), st.booleans())
def test_counts_are_exact_for_any_chunking(chunks: list[bytes], fails: bool) -> None:
    relay = Relay(0.0)
    copy_through(relay, chunks)
    relay.on_read(Error(RESET) if fails else Eof(), 2.0)
    total = sum(map(len, chunks))
    assert relay.stats == CopyStats(total, len(chunks), total, len(chunks), 0.0, 2.0,
                                    Error(RESET) if fails else Eof())


# -- the proxy's two directions ------------------------------------------------------------


def test_a_half_closed_proxy_keeps_the_other_direction_forever() -> None:
    proxy = ProxyRelay(0.0)
    assert proxy.a_to_b.on_read(Eof(), 1.0) is RelayStep.SHUTDOWN_DST
    assert not proxy.done
    assert proxy.deadline is None  # no timer unless asked for
    assert not proxy.expire(1e9)
    copy_through(proxy.b_to_a, [b"reply after the EOF"], now=1e9)
    proxy.b_to_a.on_read(Eof(), 1e9)
    assert proxy.done
    assert proxy.result == ProxyResult(proxy.a_to_b.stats, proxy.b_to_a.stats, None)
    assert proxy.result.b_to_a.write_bytes == 19


def test_the_first_error_is_the_proxys_error() -> None:
    proxy = ProxyRelay(0.0)
    proxy.b_to_a.on_read(Error(RESET), 1.0)  # upstream reset: the proxy aborts a
    aborted = FlowError(ErrorKind.ABORTED)
    proxy.a_to_b.on_read(Error(aborted), 1.0)  # ... so a's read then fails too
    assert proxy.result.error is RESET
    assert proxy.result.a_to_b.end == Error(aborted)


def test_the_idle_timeout_counts_from_the_last_data_either_way() -> None:
    proxy = ProxyRelay(0.0, idle_timeout=5)
    assert proxy.deadline == 5.0
    assert not proxy.expire(4.9)
    copy_through(proxy.b_to_a, [b"x"], now=3.0)
    assert proxy.deadline == 8.0
    proxy.a_to_b.on_read(Eof(), 4.0)  # a half-close is not activity, and no end either
    assert proxy.deadline == 8.0
    assert not proxy.expire(7.0)
    assert proxy.expire(8.0)
    assert proxy.done
    assert proxy.deadline is None
    error = proxy.result.error
    assert error is not None
    assert error.kind is ErrorKind.TIMED_OUT
    assert error_message(error) == "timed out: no data moved either way for 5 s"
    assert proxy.result.a_to_b.end == Eof()  # the direction that had ended keeps its end
    assert proxy.result.b_to_a.end == Error(error)
    assert proxy.result.b_to_a.ended == 8.0
    assert not proxy.expire(100.0)  # once is enough


@pytest.mark.parametrize(
    ("timeout", "exception"),
    [(0, ValueError), (-1, ValueError), (math.inf, ValueError), (math.nan, ValueError),
     ("5", TypeError), (True, TypeError)],
)
def test_bad_idle_timeouts_are_refused(timeout: Any, exception: type[Exception]) -> None:
    with pytest.raises(exception, match="idle_timeout"):
        ProxyRelay(0.0, idle_timeout=timeout)


def test_reprs_show_the_counts() -> None:
    proxy = ProxyRelay(0.0)
    assert "read_bytes=0" in repr(proxy.a_to_b)
    assert "error=None" in repr(proxy)
    assert repr(RelayStep.WRITE) == "RelayStep.WRITE"
