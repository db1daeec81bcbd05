"""Results, states and errors: immutable values with readable reprs, usable with ``match``."""

from __future__ import annotations

import copy
import dataclasses
import errno
import pickle
from typing import NoReturn

import pytest

import sansflow
from sansflow import (
    WOULD_WAIT,
    BusyError,
    Eof,
    Error,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    FlowUsageError,
    Ok,
    ReadResult,
    ReceiveState,
    SendState,
    Shutdown,
    WouldWait,
    WriteResult,
    error_message,
)


def assert_never(value: NoReturn) -> NoReturn:
    raise AssertionError(f"unexpected {value!r}")


RESET = FlowError(ErrorKind.RESET, ConnectionResetError(errno.ECONNRESET, "reset"))


def describe(result: ReadResult) -> str:
    """A ``match`` over every read result; mypy proves it exhaustive (``assert_never``)."""
    match result:
        case Ok(data):
            return f"data {data!r}"
        case Eof():
            return "end"
        case Error(err):
            return f"failed: {error_message(err)}"
        case _:
            assert_never(result)


def describe_write(result: WriteResult) -> str:
    match result:
        case Ok(None):
            return "queued"
        case Eof():
            return "closed"
        case Error(err):
            return err.kind.name
        case _:
            assert_never(result)


def test_results_match() -> None:
    assert describe(Ok(b"abc")) == "data b'abc'"
    assert describe(Eof()) == "end"
    assert describe(Error(RESET)) == "failed: connection reset by peer (ECONNRESET)"
    assert describe_write(Ok(None)) == "queued"
    assert describe_write(Eof()) == "closed"
    assert describe_write(Error(RESET)) == "RESET"


def test_results_reprs_read_as_code() -> None:
    assert repr(Ok(b"ab")) == "Ok(b'ab')"
    assert repr(Ok(None)) == "Ok(None)"
    assert repr(Eof()) == "Eof()"
    assert repr(Error(FlowError(ErrorKind.ABORTED))) == "Error(error=FlowError(ErrorKind.ABORTED))"
    assert repr(WOULD_WAIT) == "WOULD_WAIT"
    assert eval(repr(Ok(b"ab"))) == Ok(b"ab")
    assert eval(repr(Eof())) == Eof()


def test_results_compare_by_value_and_hash() -> None:
    assert Ok(b"a") == Ok(b"a")
    assert Ok(b"a") != Ok(b"b")
    assert Ok(None) != Eof()
    assert Ok(b"a") != b"a"
    assert Eof() == Eof()
    assert Error(RESET) == Error(RESET)
    assert Error(RESET) != Error(FlowError(ErrorKind.ABORTED))
    assert len({Ok(b"a"), Ok(b"a"), Eof(), Eof(), Error(RESET), Error(RESET)}) == 3
    assert hash(Ok(b"a")) == hash(Ok(b"a"))


@pytest.mark.parametrize("result", [Ok(b"a"), Eof(), Error(RESET)], ids=repr)
def test_results_are_immutable(result: object) -> None:
    fields = ("value",) if isinstance(result, Ok) else ("error", "other")
    for name in fields:
        # (CPython 3.10/3.11 raise TypeError, not FrozenInstanceError, for a slotted frozen
        # dataclass's non-field names; either way nothing changes.)
        with pytest.raises((AttributeError, TypeError)):
            setattr(result, name, b"changed")
    assert not hasattr(result, "__dict__")
    assert copy.copy(result) == result


def test_ok_is_immutable_and_slotted() -> None:
    ok = Ok(b"a")
    with pytest.raises(AttributeError, match="Ok is immutable; cannot assign to 'value'"):
        ok.value = b"b"
    with pytest.raises(AttributeError, match="Ok is immutable; cannot delete 'value'"):
        del ok.value
    assert ok.value == b"a"
    assert not hasattr(ok, "__dict__")
    assert Ok.__match_args__ == ("value",)


def test_results_pickle_and_copy() -> None:
    """``Ok`` is written by hand; it copies and pickles like the dataclasses beside it."""
    for result in (Ok(b"a"), Ok(None), Eof(), Error(FlowError(ErrorKind.ABORTED, detail="x"))):
        assert pickle.loads(pickle.dumps(result)) == result
        assert copy.deepcopy(result) == result
    assert copy.copy(Ok(b"a")).value == b"a"


def test_would_wait_is_a_singleton_sentinel() -> None:
    assert WOULD_WAIT is WouldWait.WOULD_WAIT
    assert Flow().read() is WOULD_WAIT
    assert copy.deepcopy(WOULD_WAIT) is WOULD_WAIT
    assert Eof() != WOULD_WAIT  # type: ignore[comparison-overlap]


@pytest.mark.parametrize("enum", [FlowState, SendState, ReceiveState, Shutdown])
def test_states_print_their_names(enum: type[FlowState]) -> None:
    for member in enum:
        assert str(member) == member.name
        assert repr(member) == f"{enum.__name__}.{member.name}"


def test_flow_repr_shows_state_and_sizes() -> None:
    flow = Flow()
    flow.write(b"abc")
    flow.receive_data(b"xy")
    flow.close()
    assert repr(flow) == (
        "<Flow HALF_CLOSED_LOCAL send=EOF_QUEUED receive=OPEN queued=3 buffered=2>"
    )


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(("exc", "kind", "message"), [
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), ErrorKind.RESET,
     "connection reset by peer (ECONNRESET)"),
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), ErrorKind.BROKEN_PIPE,
     "broken pipe: the peer is no longer reading (EPIPE)"),
    (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), ErrorKind.TIMED_OUT,
     "timed out (ETIMEDOUT)"),
    # The errno decides, whatever the class.
    (OSError(errno.ECONNRESET, "reset"), ErrorKind.RESET,
     "connection reset by peer (ECONNRESET)"),
    (OSError(errno.EPIPE, "pipe"), ErrorKind.BROKEN_PIPE,
     "broken pipe: the peer is no longer reading (EPIPE)"),
    # Without an errno, the class decides.
    (ConnectionResetError(), ErrorKind.RESET, "connection reset by peer"),
    (BrokenPipeError(), ErrorKind.BROKEN_PIPE, "broken pipe: the peer is no longer reading"),
    (TimeoutError(), ErrorKind.TIMED_OUT, "timed out"),
    # Anything else is a transport failure, described by the OS text or the exception.
    (OSError(errno.EHOSTUNREACH, "No route to host"), ErrorKind.TRANSPORT,
     "transport failure: No route to host (EHOSTUNREACH)"),
    (ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort"),
     ErrorKind.TRANSPORT,
     "transport failure: Software caused connection abort (ECONNABORTED)"),
    (RuntimeError("the transport\nbroke"), ErrorKind.TRANSPORT,
     "transport failure: the transport broke"),
    (RuntimeError(), ErrorKind.TRANSPORT, "transport failure: RuntimeError"),
    (OSError(99999, "odd"), ErrorKind.TRANSPORT, "transport failure: odd"),
])
def test_errors_are_classified_and_named(exc: BaseException, kind: ErrorKind,
                                         message: str) -> None:
    error = FlowError.from_exception(exc)
    assert error == FlowError(kind, exc)
    assert error.cause is exc
    assert error_message(error) == message
    assert "\n" not in error_message(error)


def test_error_detail_and_repr() -> None:
    error = FlowError(ErrorKind.TIMED_OUT, detail="close() deadline passed")
    assert error_message(error) == "timed out: close() deadline passed"
    assert repr(error) == "FlowError(ErrorKind.TIMED_OUT, detail='close() deadline passed')"
    assert repr(RESET) == (
        "FlowError(ErrorKind.RESET, cause=ConnectionResetError(104, 'reset'))"
    )
    assert error_message(FlowError(ErrorKind.ABORTED)) == "connection aborted locally"
    assert repr(ErrorKind.ABORTED) == "ErrorKind.ABORTED"


def test_error_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RESET.kind = ErrorKind.ABORTED  # type: ignore[misc]


def test_error_helpers_reject_other_types() -> None:
    with pytest.raises(TypeError, match="from_exception\\(\\) takes an exception, not str"):
        FlowError.from_exception("reset")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="error_message\\(\\) takes a FlowError, not "
                                        "ConnectionResetError"):
        error_message(ConnectionResetError())  # type: ignore[arg-type]


def test_usage_errors() -> None:
    assert issubclass(BusyError, FlowUsageError)
    assert issubclass(FlowUsageError, RuntimeError)


def test_public_surface() -> None:
    assert set(sansflow.__all__) == {
        "HIGH_WATER", "LOW_WATER", "RECEIVE_LIMIT", "WOULD_WAIT", "AdapterFlow",
        "AsyncAdapterFlow", "AsyncDriverFlow", "AsyncFlow", "BlockingAdapterFlow",
        "BlockingDriverFlow", "BlockingFlow", "BrokenFlowError", "Buffer", "BusyError",
        "CopyStats", "Eof", "Error", "ErrorKind", "Flow", "FlowError", "FlowState",
        "FlowUsageError", "FlowView", "Ok", "ProxyRelay", "ProxyResult", "ReadResult", "Relay",
        "RelayStep", "ReceiveState", "SendState", "Shutdown", "TlsInfo", "TlsLayer",
        "WouldWait", "WriteResult", "error_message",
    }
    for name in sansflow.__all__:
        assert getattr(sansflow, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'TLSLayer'"):
        sansflow.TLSLayer  # noqa: B018  # a misspelt name is an AttributeError, as usual
