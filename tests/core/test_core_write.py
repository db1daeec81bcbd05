"""Writing: the send queue, backpressure at exact thresholds, buffer ownership, partial sends."""

from __future__ import annotations

import array
import errno
from collections.abc import Iterator

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
    SendState,
    Shutdown,
)
from sansflow._flow import buffer_list

KIB = 1024


def flush(flow: Flow) -> bytes:
    """Everything queued, as a transport would take it in one send."""
    data = b"".join(flow.buffers_to_send())
    flow.sent(len(data))
    return data


# -- queueing ------------------------------------------------------------------------------


def test_write_queues_without_sending() -> None:
    flow = Flow()
    assert flow.write(b"hello") == Ok(None)
    assert flow.write(b" world") == Ok(None)
    assert flow.queued == 11
    assert flow.buffers_to_send() == [b"hello", b" world"]
    assert flow.state is FlowState.OPEN


def test_write_returns_the_shared_ok() -> None:
    flow = Flow()
    assert type(flow.write(b"x")) is Ok
    assert flow.write(b"x") is flow.write(b"y")  # one immutable Ok(None) for every write


def test_empty_writes_queue_nothing() -> None:
    flow = Flow()
    assert flow.write(b"") == Ok(None)
    assert flow.writev([b"", bytearray(), memoryview(b"")]) == Ok(None)
    assert flow.writev([]) == Ok(None)
    assert flow.queued == 0
    assert flow.buffers_to_send() == []


def test_writev_queues_every_buffer_in_order() -> None:
    flow = Flow()
    assert flow.writev([b"a", bytearray(b"bc"), memoryview(b"def"), b"", b"g"]) == Ok(None)
    assert flow.queued == 7
    assert [bytes(b) for b in flow.buffers_to_send()] == [b"a", b"bc", b"def", b"g"]


def test_writev_takes_any_iterable_once() -> None:
    flow = Flow()
    assert flow.writev(iter([b"a", b"b"])) == Ok(None)
    assert flow.writev(b for b in (b"c", b"d")) == Ok(None)
    assert flow.writev((b"e",)) == Ok(None)
    assert flush(flow) == b"abcde"


# -- buffer ownership ----------------------------------------------------------------------


def test_bytes_are_queued_without_a_copy() -> None:
    flow = Flow()
    data = b"x" * 1000
    flow.write(data)
    assert flow.buffers_to_send()[0] is data
    other = bytes(range(10))
    flow.writev([other])
    assert flow.buffers_to_send()[1] is other


def test_readonly_memoryview_is_shared() -> None:
    flow = Flow()
    base = b"0123456789"
    view = memoryview(base)[2:6]
    flow.write(view)
    sent = flow.buffers_to_send()[0]
    assert isinstance(sent, memoryview)
    assert sent.obj is base  # the very same memory, no copy
    assert bytes(sent) == b"2345"


@pytest.mark.parametrize("make", [
    bytearray,
    lambda data: memoryview(bytearray(data)),
    lambda data: memoryview(bytearray(b"<" + data + b">"))[1:-1],
], ids=["bytearray", "memoryview", "memoryview slice"])
def test_writable_buffers_are_copied(make: type[bytearray]) -> None:
    flow = Flow()
    buffer = make(b"abcd")
    assert flow.write(buffer) == Ok(None)
    memoryview(buffer)[:] = b"XXXX"  # the application reuses its buffer at once
    vectored = make(b"efgh")
    assert flow.writev([vectored]) == Ok(None)
    memoryview(vectored)[:] = b"YYYY"
    assert all(type(b) is bytes for b in flow.buffers_to_send())
    assert flush(flow) == b"abcdefgh"


def test_buffers_of_wider_items_count_bytes() -> None:
    flow = Flow()
    items = array.array("H", [1, 2, 3])  # writable, 6 bytes
    readonly = memoryview(bytes(range(8))).cast("I")  # read-only, 8 bytes, 2 items
    assert flow.write(items) == Ok(None)  # type: ignore[arg-type]
    items[0] = 999
    assert flow.write(readonly) == Ok(None)
    assert flow.queued == 14
    assert all(len(b) == n for b, n in zip(flow.buffers_to_send(), (6, 8), strict=True))
    assert flush(flow) == array.array("H", [1, 2, 3]).tobytes() + bytes(range(8))


def test_non_contiguous_readonly_view_is_copied() -> None:
    flow = Flow()
    flow.write(memoryview(b"abcdef")[::2])
    assert flow.buffers_to_send() == [b"ace"]


# -- backpressure --------------------------------------------------------------------------


def test_default_water_marks() -> None:
    flow = Flow()
    assert (flow.high_water, flow.low_water, flow.receive_limit) == (64 * KIB, 16 * KIB,
                                                                     256 * KIB)


def test_default_backpressure_thresholds() -> None:
    flow = Flow()
    # Up to the high-water mark, everything is accepted.
    assert flow.write(b"x" * (64 * KIB)) == Ok(None)
    assert flow.queued == 64 * KIB
    assert not flow.write_ready
    # Above low water, a write that would pass high water waits; an empty one does not.
    assert flow.write(b"x") is WOULD_WAIT
    assert flow.writev([b"x"]) is WOULD_WAIT
    assert flow.write(b"") == Ok(None)
    assert flow.queued == 64 * KIB
    # Drained to one byte above low water: still waiting.
    flow.sent(48 * KIB - 1)
    assert flow.queued == 16 * KIB + 1
    assert not flow.write_ready
    assert flow.write(b"x" * (48 * KIB)) is WOULD_WAIT
    # ... but a write that fits under high water is accepted even above low water.
    assert flow.write(b"x" * (48 * KIB - 1)) == Ok(None)
    assert flow.queued == 64 * KIB
    flow.sent(48 * KIB)
    # At low water exactly, a waiting writer may go, and any write is accepted.
    assert flow.queued == 16 * KIB
    assert flow.write_ready
    assert flow.write(b"x" * (100 * KIB)) == Ok(None)
    assert flow.queued == 116 * KIB  # the high-water mark plus one write, at most


def test_one_write_larger_than_high_water_is_accepted_when_below_low_water() -> None:
    flow = Flow(high_water=10, low_water=4)
    assert flow.write(b"x" * 4) == Ok(None)
    assert flow.write(b"y" * 50) == Ok(None)  # queued was at low water
    assert flow.queued == 54
    assert flow.write(b"z") is WOULD_WAIT


@pytest.mark.parametrize(("high", "low"), [(1, 0), (1, 1), (5, 0), (5, 5), (8, 3)])
def test_custom_backpressure_thresholds(high: int, low: int) -> None:
    flow = Flow(high_water=high, low_water=low)
    assert flow.write(b"x" * high) == Ok(None)
    assert flow.write_ready is (high <= low)
    expected = Ok(None) if high <= low else WOULD_WAIT
    assert flow.write(b"y") == expected
    flow.sent(flow.queued - low)
    assert flow.write_ready
    assert flow.write(b"z" * (high + 1)) == Ok(None)


def test_would_wait_queues_nothing_and_writev_is_all_or_none() -> None:
    flow = Flow(high_water=4, low_water=1)
    assert flow.write(b"abc") == Ok(None)
    assert flow.writev([b"d", b"e"]) is WOULD_WAIT  # 5 > 4: none of it
    assert flow.queued == 3
    assert flow.writev([b"d"]) == Ok(None)  # 4 is not past the mark
    assert flush(flow) == b"abcd"


def test_write_ready_after_close_and_failure() -> None:
    flow = Flow(high_water=2, low_water=0)
    flow.write(b"abc")
    assert not flow.write_ready
    flow.close()
    assert flow.write_ready  # a waiting writer must wake up to see Eof()
    assert flow.write(b"x") == Eof()
    failed = Flow(high_water=2, low_water=0)
    failed.write(b"abc")
    failed.abort()
    assert failed.write_ready


# -- sending -------------------------------------------------------------------------------


def test_partial_sends_resume_at_the_exact_byte() -> None:
    flow = Flow()
    flow.write(b"abcdef")
    flow.write(b"ghi")
    flow.sent(2)
    first = flow.buffers_to_send()
    assert [bytes(b) for b in first] == [b"cdef", b"ghi"]
    assert isinstance(first[0], memoryview)
    assert first[0].readonly
    flow.sent(4)  # exactly the end of the first buffer
    assert flow.buffers_to_send() == [b"ghi"]
    flow.sent(1)
    assert [bytes(b) for b in flow.buffers_to_send()] == [b"hi"]
    flow.sent(2)
    assert flow.buffers_to_send() == []
    assert flow.queued == 0


def test_a_send_across_several_buffers() -> None:
    flow = Flow()
    flow.writev([b"ab", b"cd", b"ef", b"gh"])
    flow.sent(5)  # two whole buffers and one byte of the third
    assert [bytes(b) for b in flow.buffers_to_send()] == [b"f", b"gh"]
    assert flow.queued == 3
    flow.sent(0)
    assert flow.queued == 3
    flow.sent(3)
    assert flow.buffers_to_send() == []


def test_buffers_to_send_respects_max_buffers() -> None:
    flow = Flow()
    flow.writev([b"a", b"b", b"c"])
    flow.sent(0)
    assert flow.buffers_to_send(2) == [b"a", b"b"]
    assert flow.buffers_to_send(1) == [b"a"]
    assert flow.buffers_to_send(10) == [b"a", b"b", b"c"]
    flow.sent(1)
    assert flow.buffers_to_send(1) == [b"b"]


def test_buffers_to_send_does_not_take() -> None:
    flow = Flow()
    flow.write(b"abc")
    assert flow.buffers_to_send() == flow.buffers_to_send() == [b"abc"]
    assert flow.queued == 3


def test_sent_beyond_queued_is_refused_and_changes_nothing() -> None:
    flow = Flow()
    flow.write(b"abc")
    flow.sent(1)
    with pytest.raises(ValueError, match=r"sent\(3\) is more than the 2 bytes queued; the flow "
                                         r"is unchanged"):
        flow.sent(3)
    assert flow.queued == 2
    assert [bytes(b) for b in flow.buffers_to_send()] == [b"bc"]


@pytest.mark.parametrize(("value", "exception", "message"), [
    (-1, ValueError, "nbytes must be at least 0, not -1"),
    (True, TypeError, r"nbytes must be an int, not bool \(True\)"),
    (1.0, TypeError, r"nbytes must be an int, not float \(1.0\)"),
    (None, TypeError, r"nbytes must be an int, not NoneType \(None\)"),
    ("1", TypeError, r"nbytes must be an int, not str \('1'\)"),
])
def test_sent_rejects_bad_sizes(value: object, exception: type[Exception],
                                message: str) -> None:
    flow = Flow()
    flow.write(b"abc")
    with pytest.raises(exception, match=message):
        flow.sent(value)  # type: ignore[arg-type]
    assert flow.queued == 3


@pytest.mark.parametrize(("value", "exception"), [
    (0, ValueError), (-3, ValueError), (True, TypeError), (2.0, TypeError)])
def test_buffers_to_send_rejects_bad_max_buffers(value: object,
                                                 exception: type[Exception]) -> None:
    flow = Flow()
    flow.write(b"abc")
    with pytest.raises(exception, match="max_buffers must be"):
        flow.buffers_to_send(value)  # type: ignore[arg-type]


# -- writes in each state ------------------------------------------------------------------


def test_write_after_close_is_eof_and_queues_nothing() -> None:
    flow = Flow()
    flow.write(b"abc")
    flow.close()
    assert flow.write(b"x") == Eof()
    assert flow.writev([b"x"]) == Eof()
    assert flow.write(b"") == Eof()
    assert flow.queued == 3  # what was queued before close still goes out
    assert flush(flow) == b"abc"
    assert flow.eof_due
    flow.eof_sent()
    assert flow.send_state is SendState.EOF_SENT
    assert flow.write(b"x") == Eof()


def test_write_after_shutdown_write_or_both_is_eof() -> None:
    for how in (Shutdown.WRITE, Shutdown.BOTH):
        flow = Flow()
        flow.shutdown(how)
        assert flow.write(b"x") == Eof()
    reading_closed = Flow()
    reading_closed.shutdown(Shutdown.READ)
    assert reading_closed.write(b"x") == Ok(None)  # our direction is still open


def test_write_in_half_closed_remote_is_queued() -> None:
    flow = Flow()
    flow.receive_eof()
    assert flow.state is FlowState.HALF_CLOSED_REMOTE
    assert flow.write(b"reply") == Ok(None)
    assert flow.queued == 5


def test_write_after_failure_is_the_error() -> None:
    flow = Flow()
    flow.write(b"abc")
    reset = ConnectionResetError(errno.ECONNRESET, "reset")
    flow.receive_error(reset)
    result = flow.write(b"x")
    assert result == Error(FlowError(ErrorKind.RESET, reset))
    assert flow.writev([b"x"]) is result  # the same sticky Error every time
    assert flow.queued == 0
    assert flow.buffers_to_send() == []


def test_write_after_clean_close_then_failure_stays_eof() -> None:
    flow = Flow()
    flow.close()
    flow.eof_sent()
    flow.abort()
    assert flow.write(b"x") == Eof()  # our direction had ended cleanly before


def test_write_with_eof_queued_then_failure_is_the_error() -> None:
    flow = Flow()
    flow.write(b"abc")
    flow.close()
    flow.abort()
    assert flow.write(b"x") == Error(FlowError(ErrorKind.ABORTED))


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "message"), [
    ("text", "write\\(\\) takes bytes-like data, not str; encode it first"),
    (None, "write\\(\\) takes bytes-like data \\(bytes, bytearray, memoryview\\), not NoneType"),
    (3, "not int"),
    (1.5, "not float"),
    ([b"a"], "not list"),
])
def test_write_rejects_non_buffers(data: object, message: str) -> None:
    flow = Flow()
    flow.write(b"keep")
    with pytest.raises(TypeError, match=message):
        flow.write(data)  # type: ignore[arg-type]
    assert flow.queued == 4
    assert flow.buffers_to_send() == [b"keep"]


def test_write_rejects_bad_input_even_when_closed() -> None:
    flow = Flow()
    flow.close()
    with pytest.raises(TypeError):
        flow.write("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        flow.writev(["text"])  # type: ignore[list-item]


@pytest.mark.parametrize(("buffers", "message"), [
    (b"abc", "writev\\(\\) takes an iterable of buffers, not a single bytes; use write\\(\\)"),
    (bytearray(b"abc"), "not a single bytearray"),
    (memoryview(b"abc"), "not a single memoryview"),
    ("abc", "not a single str"),
    (None, "writev\\(\\) takes an iterable of buffers, not NoneType"),
    (7, "not int"),
    ([b"ok", "text"], "writev\\(\\) takes bytes-like data, not str"),
    ([b"ok", None], "writev\\(\\) takes bytes-like data .* not NoneType"),
])
def test_writev_rejects_bad_input_and_queues_none(buffers: object, message: str) -> None:
    flow = Flow()
    with pytest.raises(TypeError, match=message):
        flow.writev(buffers)  # type: ignore[arg-type]
    assert flow.queued == 0
    assert flow.buffers_to_send() == []


def test_eof_sent_with_data_queued_is_refused() -> None:
    flow = Flow()
    flow.write(b"abc")
    flow.close()
    assert not flow.eof_due
    with pytest.raises(FlowUsageError, match=r"eof_sent\(\) with 3 bytes still queued; flush "
                                             r"them first"):
        flow.eof_sent()
    assert flow.send_state is SendState.EOF_QUEUED
    assert flow.queued == 3


def test_writev_lets_the_callers_own_exception_through_and_queues_none() -> None:
    # A TypeError raised inside the caller's generator is theirs, not "not iterable": it must
    # reach them as it is, with nothing of the buffers yielded before it queued.
    own_error = TypeError("the caller's generator failed")

    def buffers() -> Iterator[bytes]:
        yield b"lost"
        raise own_error

    flow = Flow()
    with pytest.raises(TypeError) as raised:
        flow.writev(buffers())
    assert raised.value is own_error
    assert flow.queued == 0
    assert flow.buffers_to_send() == []


def test_buffer_list_keeps_lists_and_tuples_and_reads_other_iterables_once() -> None:
    as_list = [b"a"]
    as_tuple = (b"a",)
    assert buffer_list(as_list) is as_list
    assert buffer_list(as_tuple) is as_tuple
    assert buffer_list(iter([b"a", b"b"])) == [b"a", b"b"]
