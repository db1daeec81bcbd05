"""Hypothesis strategies, and a state machine that fuzzes two flows and the wire between them.

This module needs the ``hypothesis`` extra (``pip install sansflow[hypothesis]``); nothing
else in sansflow imports hypothesis.

``FlowStateMachine`` drives both ends of a ``FlowPair`` of ``CheckedFlow`` objects and the
wire between them: writes (of ``bytes``, ``bytearray`` and memoryviews, which are scribbled
over right after the write, so a flow that kept a writable buffer instead of copying it
corrupts the stream), vectored writes, reads of random sizes, ``close``, every ``shutdown``,
``abort``, transport errors and resets, partial sends, deliveries in random chunks through a
wire of small capacity. Water marks and receive limits are drawn small so that backpressure
and paused reading happen all the time; closing, faults and the final ``finish`` are each held
back until a step drawn at the start, so that most runs carry data for a while before the
flows end (a subclass's rules are not held back). Every call is checked against the model
(see ``sansflow.testing.ReferenceModel``), and after every step: no byte lost, duplicated or
reordered, the wire carries exactly the bytes sent and not yet delivered, memory stays within
its bounds, and states only move towards CLOSED. The ``finish`` rule closes both ends and
runs everything to the end: both flows must be CLOSED with every byte read.

Run it as it is (``TestFlow = FlowStateMachine.TestCase``), or subclass it to fuzz a protocol
on top of the stream: add rules that write the protocol's bytes (``self.app_write``), and
check what arrives in ``on_received`` (called with every chunk a read returned) and
``on_read_end`` (called once, with the ``Eof()`` or ``Error`` that ended a side's reads)::

    from hypothesis import strategies as st
    from hypothesis.stateful import invariant, rule

    from sansflow import Ok
    from sansflow.testing.stateful import FlowStateMachine


    class LineMachine(FlowStateMachine):
        writes_to_a = False  # "a" sends lines only: the built-in writers keep to "b"

        def __init__(self) -> None:
            super().__init__()
            self.sent: list[bytes] = []
            self.received = b""

        @rule(line=st.binary(max_size=20).map(lambda b: b.replace(b"\\n", b"") + b"\\n"))
        def send_line(self, line: bytes) -> None:
            if self.app_write("a", line) == Ok(None):
                self.sent.append(line)

        def on_received(self, side: str, data: bytes) -> None:
            if side == "b":
                self.received += data

        @invariant()
        def lines_in_order(self) -> None:
            complete = self.received.split(b"\\n")[:-1]
            assert [line + b"\\n" for line in complete] == self.sent[: len(complete)]


    TestLines = LineMachine.TestCase  # pytest runs it; so does this module, run as a script

    if __name__ == "__main__":
        TestLines().runTest()

Side ``"a"`` is ``self.pair.a`` and ``"b"`` is ``self.pair.b``; ``self.flow(side)`` and
``self.model(side)`` give each end's flow and model. The built-in rules write random bytes
to both sides unless told otherwise: a protocol that owns a direction sets ``writes_to_a =
False`` (or ``writes_to_b``), and every other rule (reads, closes, faults, the wire) still
runs on both sides.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from .._errors import ErrorKind, FlowError
from .._results import Eof, Error, Ok
from .._state import FlowState, Shutdown
from ._model import CheckedFlow, ModelMismatch, ReferenceModel, check_stream
from ._pair import FlowPair

__all__ = [
    "BUFFER_KINDS",
    "SIDES",
    "FlowStateMachine",
    "abort_errors",
    "as_buffer",
    "buffers",
    "chunk_sizes",
    "chunkings",
    "flow_options",
    "interleavings",
    "payloads",
    "read_sizes",
    "scribble",
    "send_sizes",
    "transport_errors",
    "wire_capacities",
]

_T = TypeVar("_T")

SIDES = ("a", "b")
"""The two ends of the pair a ``FlowStateMachine`` drives."""

BUFFER_KINDS = (
    "bytes",
    "bytearray",
    "memoryview",  # writable, over a bytearray
    "readonly memoryview",  # over bytes
    "memoryview slice",  # writable, from the middle of a larger bytearray
    "readonly 2-byte items",  # a read-only memoryview of format "H" (even sizes only)
    "2-byte items",  # a writable memoryview of format "H" (even sizes only)
)
"""The kinds of buffer ``as_buffer`` builds: every shape ``write`` accepts."""

# Kinds of failure after which the pair tells the peer (a reset at the next transmit).
_RESET_KINDS = (ErrorKind.ABORTED, ErrorKind.TIMED_OUT)


def payloads(max_size: int = 64) -> st.SearchStrategy[bytes]:
    """Bytes to write, empty included."""
    return st.binary(max_size=max_size)


def as_buffer(data: bytes, kind: str) -> bytes | bytearray | memoryview:
    """``data`` as a fresh buffer of ``kind`` (one of ``BUFFER_KINDS``); the 2-byte kinds fall
    back to ``bytes`` for odd sizes."""
    if kind == "bytes":
        return bytes(data)
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(bytearray(data))
    if kind == "readonly memoryview":
        return memoryview(bytes(data))
    if kind == "memoryview slice":
        return memoryview(bytearray(b"<" + data + b">"))[1:-1]
    if kind in ("readonly 2-byte items", "2-byte items") and len(data) % 2 == 0:
        base = bytes(data) if kind.startswith("readonly") else bytearray(data)
        return memoryview(base).cast("H")
    if kind in BUFFER_KINDS:
        return bytes(data)
    raise ValueError(f"unknown buffer kind {kind!r}; use one of {BUFFER_KINDS}")


def buffers(max_size: int = 64) -> st.SearchStrategy[bytes | bytearray | memoryview]:
    """Fresh buffers of every kind ``write`` accepts, holding ``payloads(max_size)``."""
    return st.builds(as_buffer, payloads(max_size), st.sampled_from(BUFFER_KINDS))


def scribble(buffer: bytes | bytearray | memoryview) -> None:
    """Overwrite a writable buffer's every byte, as an application reusing it would.

    A flow must have copied it: the stream must not change. Read-only buffers are left alone.
    """
    view = memoryview(buffer).cast("B")
    if not view.readonly:
        view[:] = bytes(byte ^ 0xFF for byte in view)


def read_sizes(max_size: int = 96) -> st.SearchStrategy[int | None]:
    """``max_bytes`` for a read: ``None`` (everything buffered) or 1..max_size."""
    return st.none() | st.integers(1, max_size)


def chunk_sizes(max_size: int = 64) -> st.SearchStrategy[int | None]:
    """How much one delivery feeds in: ``None`` (all in flight) or 1..max_size."""
    return st.none() | st.integers(1, max_size)


def send_sizes(max_size: int = 64) -> st.SearchStrategy[int | None]:
    """How much one send takes: ``None`` (as much as the wire has room for) or 1..max_size;
    anything less than what is queued is a partial send."""
    return st.none() | st.integers(1, max_size)


def chunkings(data: bytes, max_chunks: int | None = None) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into non-empty chunks at random places (at most ``max_chunks``): the ways
    a transport may deliver it. ``b"".join(chunks) == data`` always holds."""
    if len(data) < 2:
        return st.just([data] if data else [])
    most = len(data) - 1 if max_chunks is None else max(0, min(len(data), max_chunks) - 1)

    def cut(points: set[int]) -> list[bytes]:
        bounds = [0, *sorted(points), len(data)]
        return [data[i:j] for i, j in itertools.pairwise(bounds)]

    return st.sets(st.integers(1, len(data) - 1), max_size=most).map(cut)


def interleavings(*sequences: Sequence[_T]) -> st.SearchStrategy[list[_T]]:
    """Every merge of ``sequences`` that keeps each one's own order: the ways operations of
    independent parties (a reader and a writer, two ends) can be scheduled."""
    # Which sequence each step takes from: a shuffle of each sequence's index, repeated.
    turns = [i for i, seq in enumerate(sequences) for _ in seq]

    def merge(order: list[int]) -> list[_T]:
        iterators = [iter(seq) for seq in sequences]
        return [next(iterators[i]) for i in order]

    return st.permutations(turns).map(merge)


@st.composite
def flow_options(draw: st.DrawFn, max_size: int = 64) -> dict[str, int]:
    """Small ``Flow`` keyword arguments, so that backpressure and pausing really happen."""
    high = draw(st.integers(1, max_size))
    return {
        "high_water": high,
        "low_water": draw(st.integers(0, high)),
        "receive_limit": draw(st.integers(1, max_size)),
    }


def wire_capacities(max_size: int = 64) -> st.SearchStrategy[int | None]:
    """How many bytes the wire holds in flight (``None``: unbounded)."""
    return st.none() | st.integers(1, max_size)


_ERRORS: tuple[Callable[[], BaseException], ...] = (
    lambda: ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    lambda: BrokenPipeError(errno.EPIPE, "Broken pipe"),
    lambda: TimeoutError(errno.ETIMEDOUT, "Connection timed out"),
    lambda: OSError(errno.EHOSTUNREACH, "No route to host"),
    lambda: ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort"),
    lambda: RuntimeError("the transport broke"),
)


def transport_errors() -> st.SearchStrategy[BaseException]:
    """Fresh exceptions a transport may report (``receive_error``), one of each kind."""
    return st.sampled_from(_ERRORS).map(lambda make: make())


def abort_errors() -> st.SearchStrategy[FlowError | None]:
    """What adapters pass to ``abort``: nothing (aborted), or a passed close deadline."""
    return st.sampled_from(
        [None, FlowError(ErrorKind.TIMED_OUT, detail="close() deadline passed")]
    )


_sides = st.sampled_from(SIDES)


class FlowStateMachine(RuleBasedStateMachine):
    """Both ends of a ``FlowPair`` of ``CheckedFlow`` objects, and the wire, under hypothesis.

    Attributes a subclass may use: ``pair``, ``flow(side)``, ``model(side)``,
    ``peer(side)``, ``steps`` (steps run so far), ``faulted`` (an abort, error or reset
    happened), ``finished`` (the ``finish`` rule ran). Helpers: ``app_write``, ``app_read``,
    ``app_drain``, ``settle``; the checks ``flows_match_models``, ``streams_intact`` and
    ``memory_bounded`` (run after every step by ``flow_invariants``). Hooks:
    ``on_received(side, data)``, ``on_read_end(side, result)``. Options: override
    ``options_strategy`` / ``capacity_strategy``, or set ``writes_to_a`` / ``writes_to_b``
    to ``False`` to keep the built-in writers off a side.
    """

    writes_to_a: ClassVar[bool] = True
    writes_to_b: ClassVar[bool] = True

    pair: FlowPair

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0
        self.faulted = False
        self.one_sided_fault = False  # a failure the pair does not pass on to the peer
        self.finished = False
        self.closes_from = 0
        self.faults_from = 0
        self.finish_from = 0
        self._ended: dict[str, bool] = dict.fromkeys(SIDES, False)

    # -- what subclasses use -------------------------------------------------------------

    def options_strategy(self) -> st.SearchStrategy[dict[str, int]]:
        """Keyword arguments for each end's ``CheckedFlow``."""
        return flow_options()

    def capacity_strategy(self) -> st.SearchStrategy[int | None]:
        return wire_capacities()

    def flow(self, side: str) -> CheckedFlow:
        flow = self.pair.a if side == "a" else self.pair.b
        assert isinstance(flow, CheckedFlow)
        return flow

    def model(self, side: str) -> ReferenceModel:
        return self.flow(side).model

    @staticmethod
    def peer(side: str) -> str:
        return "b" if side == "a" else "a"

    def on_received(self, side: str, data: bytes) -> None:
        """Called with each chunk a read on ``side`` returned, in order."""

    def on_read_end(self, side: str, result: Eof | Error) -> None:
        """Called once per side, with the first ``Eof()`` or ``Error`` its reads returned."""

    def app_write(self, side: str, data: bytes | bytearray | memoryview) -> object:
        """``write`` on ``side``'s flow (checked against the model); returns the result."""
        return self.flow(side).write(data)

    def app_read(self, side: str, max_bytes: int | None = None) -> object:
        """``read`` on ``side``'s flow, passing what it returns to the hooks."""
        result = self.flow(side).read(max_bytes)
        if isinstance(result, Ok):
            self.on_received(side, result.value)
        elif isinstance(result, (Eof, Error)) and not self._ended[side]:
            self._ended[side] = True
            self.on_read_end(side, result)
        return result

    def app_drain(self, side: str) -> None:
        """Read on ``side`` until a read would wait or the reads have ended."""
        while isinstance(self.app_read(side), Ok):
            pass

    def settle(self, max_rounds: int = 10_000) -> None:
        """Pump the wire and drain both ends until nothing moves any more."""
        for _ in range(max_rounds):
            before = self._progress()
            self.pair.pump()
            for side in SIDES:
                self.app_drain(side)
            if self._progress() == before:
                return
        raise ModelMismatch(f"still moving after {max_rounds} rounds of pump and read")

    # -- setup ---------------------------------------------------------------------------

    @initialize(data=st.data())
    def start(self, data: st.DataObject) -> None:
        options = [data.draw(self.options_strategy(), label=f"{side} options")
                   for side in SIDES]
        capacity = data.draw(self.capacity_strategy(), label="wire capacity")
        # Closing, faults and the final close each start after a drawn number of steps, so
        # that most runs get somewhere before the flows end.
        self.closes_from = data.draw(st.integers(0, 100), label="closes from step")
        self.faults_from = data.draw(st.integers(0, 100), label="faults from step")
        self.finish_from = data.draw(st.integers(0, 100), label="finish from step")
        self.pair = FlowPair(CheckedFlow(**options[0]), CheckedFlow(**options[1]),
                             capacity=capacity)

    # -- the application -----------------------------------------------------------------

    def _writers(self) -> list[str]:
        return [side for side, on in zip(SIDES, (self.writes_to_a, self.writes_to_b),
                                         strict=True) if on]

    @precondition(lambda self: bool(self._writers()))
    @rule(data=st.data(), buffer=buffers())
    def write(self, data: st.DataObject, buffer: bytes | bytearray | memoryview) -> None:
        side = data.draw(st.sampled_from(self._writers()), label="side")
        self.app_write(side, buffer)
        scribble(buffer)

    @precondition(lambda self: bool(self._writers()))
    @rule(data=st.data(), parts=st.lists(buffers(32), max_size=4))
    def writev(self, data: st.DataObject, parts: list[bytes | bytearray | memoryview]) -> None:
        side = data.draw(st.sampled_from(self._writers()), label="side")
        self.flow(side).writev(iter(parts))  # an iterator: the flow must take it in one pass
        for part in parts:
            scribble(part)

    @rule(side=_sides, max_bytes=read_sizes())
    def read(self, side: str, max_bytes: int | None) -> None:
        self.app_read(side, max_bytes)

    @rule(side=_sides)
    def drain(self, side: str) -> None:
        self.app_drain(side)

    def _closes_allowed(self) -> bool:
        return self.steps >= self.closes_from

    @precondition(_closes_allowed)
    @rule(side=_sides)
    def close(self, side: str) -> None:
        self.flow(side).close()

    @precondition(_closes_allowed)
    @rule(side=_sides, how=st.sampled_from(Shutdown))
    def shutdown(self, side: str, how: Shutdown) -> None:
        self.flow(side).shutdown(how)

    # -- faults --------------------------------------------------------------------------

    def _faults_allowed(self) -> bool:
        return self.steps >= self.faults_from

    @precondition(_faults_allowed)
    @rule(side=_sides, error=abort_errors())
    def abort(self, side: str, error: FlowError | None) -> None:
        self.faulted = True
        self.flow(side).abort(error)

    @precondition(_faults_allowed)
    @rule(side=_sides, error=transport_errors())
    def transport_error(self, side: str, error: BaseException) -> None:
        self.faulted = True
        if FlowError.from_exception(error).kind not in _RESET_KINDS:
            self.one_sided_fault = True
        self.flow(side).receive_error(error)

    @precondition(_faults_allowed)
    @rule()
    def reset(self) -> None:
        self.faulted = True
        self.pair.reset()

    # -- the transport -------------------------------------------------------------------

    @rule(side=_sides, max_bytes=send_sizes())
    def transmit(self, side: str, max_bytes: int | None) -> None:
        self.pair.transmit(self.flow(side), max_bytes)

    @rule(side=_sides, max_bytes=chunk_sizes())
    def deliver(self, side: str, max_bytes: int | None) -> None:
        self.pair.deliver(self.flow(side), max_bytes)

    @rule(side=_sides, max_bytes=send_sizes(), chunk=chunk_sizes())
    def carry(self, side: str, max_bytes: int | None, chunk: int | None) -> None:
        """One send from ``side``, then one delivery to its peer: a step of the pipe."""
        self.pair.transmit(self.flow(side), max_bytes)
        self.pair.deliver(self.flow(self.peer(side)), chunk)

    @rule(chunk=chunk_sizes())
    def pump(self, chunk: int | None) -> None:
        self.pair.pump(chunk)

    @precondition(lambda self: not self.finished and self.steps >= self.finish_from)
    @rule()
    def finish(self) -> None:
        """Close both ends and run the pair to the end: both CLOSED, every byte read."""
        self.finished = True
        for side in SIDES:
            self.flow(side).close()
        self.settle()
        if not self.one_sided_fault:
            for side in SIDES:
                if self.flow(side).state is not FlowState.CLOSED:
                    raise ModelMismatch(f"side {side} is {self.flow(side)!r} after settling")
        if not self.faulted:
            for side in SIDES:
                sender, receiver = self.model(self.peer(side)), self.model(side)
                if not receiver.read_closed and receiver.read_data != sender.written:
                    raise ModelMismatch(
                        f"side {side} read {len(receiver.read_data)} bytes of the "
                        f"{len(sender.written)} written to it"
                    )

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def flow_invariants(self) -> None:
        """After every step: the flows match their models, the stream is intact, memory is
        bounded. (It also counts the steps, which decide when faults may start.)"""
        self.steps += 1
        self.flows_match_models()
        self.streams_intact()
        self.memory_bounded()

    def flows_match_models(self) -> None:
        for side in SIDES:
            self.model(side).check(self.flow(side))

    def streams_intact(self) -> None:
        failed = any(self.flow(side).error is not None for side in SIDES)
        for side in SIDES:
            sender, receiver = self.model(side), self.model(self.peer(side))
            check_stream(sender, receiver)
            wire = self.pair.wire_from(self.flow(side))
            start = len(receiver.arrived)
            if wire.data != sender.written[start:start + len(wire.data)]:
                raise ModelMismatch(f"wire from {side} holds {bytes(wire.data)!r}, not the "
                                    "next bytes written")
            # Only a reset may drop bytes in flight; otherwise the wire holds all the rest.
            if not failed and start + len(wire.data) != sender.taken:
                raise ModelMismatch(
                    f"wire from {side}: {start} bytes arrived + {len(wire.data)} in flight, "
                    f"but {sender.taken} were sent"
                )
            if wire.eof is not sender.eof_out:
                raise ModelMismatch(f"wire from {side}: eof={wire.eof}, but the model says "
                                    f"EOF sent={sender.eof_out}")
            if wire.eof_delivered and not (receiver.eof_in or receiver.error is not None):
                raise ModelMismatch(f"wire from {side} delivered EOF that was not received")

    def memory_bounded(self) -> None:
        for side in SIDES:
            flow, model = self.flow(side), self.model(side)
            # The wire never feeds a paused reader, so one chunk may pass the limit, no more.
            if flow.buffered > flow.receive_limit + model.largest_chunk:
                raise ModelMismatch(f"{flow!r} holds more than receive_limit + one chunk")
            wire = self.pair.wire_from(flow)
            if wire.capacity is not None and len(wire.data) > wire.capacity:
                raise ModelMismatch(f"wire from {side} holds more than its capacity")

    def teardown(self) -> None:
        if hasattr(self, "pair"):
            for side in SIDES:
                event(f"side {side} ended {self.flow(side).state.name}")

    # -- internals -----------------------------------------------------------------------

    def _progress(self) -> tuple[Any, ...]:
        return tuple(
            (flow.state, flow.send_state, flow.receive_state, flow.queued, flow.buffered,
             len(self.pair.wire_from(flow).data), self.pair.wire_from(flow).eof_delivered,
             len(flow.model.read_data))
            for flow in (self.flow("a"), self.flow("b"))
        )
