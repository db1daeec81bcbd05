"""Reading: buffered data first, never an empty Ok, sticky ends, zero copies, receive limits."""

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
    Shutdown,
)


def test_read_would_wait_with_nothing_buffered() -> None:
    flow = Flow()
    assert flow.read() is WOULD_WAIT
    assert flow.read(10) is WOULD_WAIT
    assert not flow.read_ready


def test_read_returns_what_arrived() -> None:
    flow = Flow()
    flow.receive_data(b"hello")
    assert flow.read_ready
    assert flow.buffered == 5
    assert flow.read() == Ok(b"hello")
    assert flow.buffered == 0
    assert flow.read() is WOULD_WAIT


def test_read_joins_chunks_and_honours_max_bytes() -> None:
    flow = Flow()
    for chunk in (b"ab", b"cde", b"f", b"ghij"):
        flow.receive_data(chunk)
    assert flow.read(1) == Ok(b"a")  # inside the first chunk
    assert flow.read(3) == Ok(b"bcd")  # across two chunks
    assert flow.read(2) == Ok(b"ef")  # to the end of a chunk, across
    assert flow.read(2) == Ok(b"gh")
    assert flow.read(100) == Ok(b"ij")  # more than buffered: what there is
    assert flow.read() is WOULD_WAIT


def test_read_max_bytes_exactly_buffered_after_a_partial_read() -> None:
    flow = Flow()
    flow.receive_data(b"abcdef")
    assert flow.read(2) == Ok(b"ab")
    assert flow.read(4) == Ok(b"cdef")
    flow.receive_data(b"xyz")
    flow.receive_data(b"12")
    assert flow.read(1) == Ok(b"x")
    assert flow.read() == Ok(b"yz12")


def test_read_results_are_bytes() -> None:
    flow = Flow()
    flow.receive_data(bytearray(b"ab"))
    flow.receive_data(memoryview(b"cd"))
    for max_bytes in (1, 2, None):
        result = flow.read(max_bytes)
        assert isinstance(result, Ok)
        assert type(result.value) is bytes


def test_read_returns_the_chunk_that_arrived_without_a_copy() -> None:
    flow = Flow()
    data = b"z" * 4096
    flow.receive_data(data)
    result = flow.read()
    assert isinstance(result, Ok)
    assert result.value is data
    flow.receive_data(data)
    result = flow.read(len(data) + 1)
    assert isinstance(result, Ok)
    assert result.value is data


def test_single_piece_after_offset_is_not_copied_twice() -> None:
    flow = Flow()
    flow.receive_data(b"abcd")
    flow.receive_data(b"efgh")
    assert flow.read(2) == Ok(b"ab")
    assert flow.read(2) == Ok(b"cd")  # the rest of the first chunk
    whole = flow.read()
    assert whole == Ok(b"efgh")


def test_received_writable_buffers_are_copied() -> None:
    flow = Flow()
    buffer = bytearray(b"abc")
    flow.receive_data(buffer)
    buffer[:] = b"XYZ"  # the adapter reuses its receive buffer
    view = memoryview(bytearray(b"def"))
    flow.receive_data(view)
    view[:] = b"XYZ"
    assert flow.read() == Ok(b"abcdef")


def test_received_empty_data_changes_nothing() -> None:
    flow = Flow()
    flow.receive_data(b"")
    assert flow.buffered == 0
    assert not flow.read_ready


def test_eof_comes_after_the_data_and_is_sticky() -> None:
    flow = Flow()
    flow.receive_data(b"last words")
    flow.receive_eof()
    assert flow.state is FlowState.HALF_CLOSED_REMOTE
    assert flow.read(4) == Ok(b"last")
    assert flow.read() == Ok(b" words")
    for _ in range(3):
        assert flow.read() == Eof()
        assert flow.read(1) == Eof()
    assert flow.read_ready


def test_error_comes_after_the_data_and_is_sticky() -> None:
    flow = Flow()
    flow.receive_data(b"partial")
    flow.write(b"unsent")
    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    flow.receive_error(reset)
    assert flow.state is FlowState.CLOSED
    assert flow.error == FlowError(ErrorKind.RESET, reset)
    assert flow.read() == Ok(b"partial")  # received before the error: never dropped
    first = flow.read()
    assert first == Error(FlowError(ErrorKind.RESET, reset))
    assert isinstance(first, Error)
    assert first.error.cause is reset
    for _ in range(3):
        assert flow.read() is first
    flow.receive_data(b"late")  # nothing more arrives after a failure
    assert flow.read() is first


def test_eof_then_error_keeps_eof() -> None:
    flow = Flow()
    flow.receive_eof()
    assert flow.read() == Eof()
    flow.receive_error(BrokenPipeError(errno.EPIPE, "Broken pipe"))
    assert flow.state is FlowState.CLOSED
    assert flow.receive_state is ReceiveState.EOF_RECEIVED
    assert flow.read() == Eof()


def test_abort_keeps_received_data_readable() -> None:
    flow = Flow()
    flow.receive_data(b"keep me")
    flow.abort()
    assert flow.read() == Ok(b"keep me")
    assert flow.read() == Error(FlowError(ErrorKind.ABORTED))


def test_reading_in_half_closed_local() -> None:
    flow = Flow()
    flow.close()
    assert flow.read() is WOULD_WAIT  # the peer may still send
    flow.receive_data(b"reply")
    assert flow.read() == Ok(b"reply")


def test_reading_after_clean_close() -> None:
    flow = Flow()
    flow.close()
    flow.eof_sent()
    flow.receive_data(b"bye")
    flow.receive_eof()
    assert flow.state is FlowState.CLOSED
    assert flow.error is None
    assert flow.read() == Ok(b"bye")
    assert flow.read() == Eof()


# -- receive limit -------------------------------------------------------------------------


def test_default_receive_limit() -> None:
    flow = Flow()
    flow.receive_data(b"x" * (256 * 1024 - 1))
    assert not flow.reading_paused
    flow.receive_data(b"x")
    assert flow.reading_paused
    flow.read(1)
    assert not flow.reading_paused


def test_custom_receive_limit() -> None:
    flow = Flow(receive_limit=4)
    flow.receive_data(b"abc")
    assert not flow.reading_paused
    flow.receive_data(b"defgh")  # a chunk may pass the limit; the adapter stops after it
    assert flow.reading_paused
    assert flow.buffered == 8
    assert flow.read(4) == Ok(b"abcd")
    assert flow.reading_paused  # 4 buffered: still at the limit
    assert flow.read(1) == Ok(b"e")
    assert not flow.reading_paused


def test_shutdown_read_unpauses() -> None:
    flow = Flow(receive_limit=2)
    flow.receive_data(b"abc")
    assert flow.reading_paused
    flow.shutdown(Shutdown.READ)
    assert not flow.reading_paused  # keep reading, to drop input until the peer's EOF


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("max_bytes", "exception", "message"), [
    (0, ValueError, "max_bytes must be at least 1, not 0"),
    (-5, ValueError, "max_bytes must be at least 1, not -5"),
    (True, TypeError, r"max_bytes must be an int, not bool \(True\)"),
    (False, TypeError, r"max_bytes must be an int, not bool \(False\)"),
    (2.0, TypeError, r"max_bytes must be an int, not float \(2.0\)"),
    ("3", TypeError, r"max_bytes must be an int, not str \('3'\)"),
])
def test_read_rejects_bad_max_bytes_and_changes_nothing(max_bytes: object,
                                                        exception: type[Exception],
                                                        message: str) -> None:
    flow = Flow()
    flow.receive_data(b"abc")
    with pytest.raises(exception, match=message):
        flow.read(max_bytes)  # type: ignore[arg-type]
    assert flow.buffered == 3
    assert flow.read() == Ok(b"abc")


def test_read_rejects_bad_max_bytes_in_every_state() -> None:
    flow = Flow()
    flow.receive_eof()
    with pytest.raises(ValueError, match="max_bytes"):
        flow.read(0)
    assert flow.read() == Eof()


@pytest.mark.parametrize(("data", "message"), [
    ("text", r"receive_data\(\) takes bytes-like data, not str"),
    (None, r"receive_data\(\) takes bytes-like data .*not NoneType"),
    (12, "not int"),
])
def test_receive_data_rejects_non_buffers(data: object, message: str) -> None:
    flow = Flow()
    with pytest.raises(TypeError, match=message):
        flow.receive_data(data)  # type: ignore[arg-type]
    assert flow.buffered == 0


def test_receive_data_after_eof_is_refused() -> None:
    flow = Flow()
    flow.receive_data(b"abc")
    flow.receive_eof()
    with pytest.raises(FlowUsageError, match=r"receive_data\(\) after receive_eof\(\): the "
                                             r"peer's EOF came first"):
        flow.receive_data(b"more")
    with pytest.raises(FlowUsageError):
        flow.receive_data(b"")
    assert flow.buffered == 3
    assert flow.read() == Ok(b"abc")


def test_second_eof_is_refused() -> None:
    flow = Flow()
    flow.receive_eof()
    with pytest.raises(FlowUsageError, match="EOF_RECEIVED"):
        flow.receive_eof()
    assert flow.state is FlowState.HALF_CLOSED_REMOTE


def test_eof_after_failure_is_ignored() -> None:
    flow = Flow()
    flow.abort()
    flow.receive_eof()
    flow.receive_eof()
    assert flow.receive_state is ReceiveState.FAILED


# -- unread: input an adapter handed straight to a reader that never got it ----------------


def test_unread_comes_back_first_on_an_empty_flow() -> None:
    flow = Flow()
    flow.unread(b"handed")
    assert flow.buffered == 6
    assert flow.read_ready
    assert flow.read() == Ok(b"handed")
    assert flow.read() is WOULD_WAIT


def test_unread_goes_before_what_arrived_since() -> None:
    flow = Flow()
    flow.receive_data(b"later")
    flow.receive_data(b"!")
    flow.unread(b"first ")
    assert flow.buffered == 12
    assert flow.read() == Ok(b"first later!")


def test_unread_goes_before_the_rest_of_a_partly_read_chunk() -> None:
    flow = Flow()
    flow.receive_data(b"abcdef")
    assert flow.read(2) == Ok(b"ab")
    flow.unread(b"XY")
    assert flow.buffered == 6
    assert flow.read(3) == Ok(b"XYc")
    assert flow.read() == Ok(b"def")


@pytest.mark.parametrize("end", ["eof", "error", "abort"])
def test_unread_comes_before_the_end_that_followed(end: str) -> None:
    flow = Flow()
    if end == "eof":
        flow.receive_eof()
    elif end == "error":
        flow.receive_error(ConnectionResetError(errno.ECONNRESET, "reset"))
    else:
        flow.abort()
    ending = flow.read()
    assert not isinstance(ending, Ok)
    flow.unread(b"data")
    assert flow.read() == Ok(b"data")
    assert flow.read() == ending


@pytest.mark.parametrize("then_eof", [False, True])
def test_unread_after_shutdown_read_is_dropped(then_eof: bool) -> None:
    flow = Flow()
    flow.shutdown(Shutdown.READ)
    if then_eof:  # the state no longer says DISCARDING, but the input is still unwanted
        flow.receive_eof()
        assert flow.receive_state is ReceiveState.EOF_RECEIVED
    flow.unread(b"data")
    assert flow.buffered == 0
    assert flow.read() == Eof()


def test_unread_empty_changes_nothing_and_refuses_non_bytes() -> None:
    flow = Flow()
    flow.receive_data(b"x")
    flow.unread(b"")
    for data in (bytearray(b"y"), memoryview(b"y"), "y", None):
        with pytest.raises(TypeError, match="unread"):
            flow.unread(data)  # type: ignore[arg-type]
    assert flow.buffered == 1
    assert flow.read() == Ok(b"x")
