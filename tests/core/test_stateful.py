"""The core under hypothesis, and the testing kit's own checks: they must be able to fail.

``TestFlow`` runs ``FlowStateMachine`` against the real core. The rest shows that the kit
catches what it claims to catch: cores with planted bugs (a writable buffer kept without a
copy, a partial send resumed at the wrong byte, ...), flows and wires tampered with by hand,
and the strategies' own promises.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

import sansflow._flow
from sansflow import (
    WOULD_WAIT,
    Eof,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    Ok,
    SendState,
    Shutdown,
)
from sansflow.testing import (
    CheckedFlow,
    FlowPair,
    ModelMismatch,
    ReferenceModel,
    check_state_move,
    check_stream,
)
from sansflow.testing.stateful import (
    BUFFER_KINDS,
    SIDES,
    FlowStateMachine,
    abort_errors,
    as_buffer,
    buffers,
    chunkings,
    flow_options,
    interleavings,
    scribble,
    transport_errors,
)

TestFlow = FlowStateMachine.TestCase


# -- planted bugs: the state machine finds each one ----------------------------------------

# Generation only, and deterministic: these runs are expected to fail, and shrinking a
# failure would only cost time.
HUNT = settings(max_examples=300, stateful_step_count=50, phases=[Phase.generate],
                derandomize=True, database=None, deadline=None, print_blob=False)

_real_owned = sansflow._flow._owned
_real_sent = Flow.sent
_real_take = Flow._take


def _owned_without_copy(data: object, where: str) -> tuple[sansflow.Buffer, int]:
    if isinstance(data, (bytearray, memoryview)) and not isinstance(data, bytes):
        view = memoryview(data).cast("B")
        return view, view.nbytes  # keeps the caller's writable memory
    return _real_owned(data, where)


def _sent_forgetting_the_offset(self: Flow, nbytes: int) -> None:
    _real_sent(self, nbytes)
    self._send_offset = 0  # a partial send then resumes from the buffer's start


def _take_one_short(self: Flow, max_bytes: int | None) -> bytes:
    data = _real_take(self, max_bytes)
    return data[:-1] if len(data) > 3 else data  # loses a byte of long reads


def _eof_due_with_data_queued(self: Flow) -> bool:
    return self._send_state is SendState.EOF_QUEUED


PLANTED: dict[str, tuple[object, str, object]] = {
    "writable buffer not copied": (sansflow._flow, "_owned", _owned_without_copy),
    "partial send resumes at the start": (Flow, "sent", _sent_forgetting_the_offset),
    "read loses a byte": (Flow, "_take", _take_one_short),
    "EOF due before the queue is flushed": (Flow, "eof_due",
                                            property(_eof_due_with_data_queued)),
}


@pytest.mark.parametrize("bug", PLANTED)
def test_the_machine_finds_a_planted_bug(bug: str, monkeypatch: pytest.MonkeyPatch) -> None:
    owner, name, replacement = PLANTED[bug]
    monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(ModelMismatch):
        run_state_machine_as_test(FlowStateMachine, settings=HUNT)


# -- CheckedFlow catches a core that disagrees with the model ------------------------------


def test_checked_flow_catches_a_wrong_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Flow, "write", lambda self, data: Eof())
    with pytest.raises(ModelMismatch, match=r"write\(b'abc'\) returned Eof\(\); the model "
                                            r"expected Ok\(None\)"):
        CheckedFlow().write(b"abc")


def test_checked_flow_catches_a_wrong_result_type(monkeypatch: pytest.MonkeyPatch) -> None:
    flow = CheckedFlow()
    flow.receive_data(b"abc")
    monkeypatch.setattr(Flow, "read", lambda self, max_bytes=None: Ok(bytearray(b"abc")))
    with pytest.raises(ModelMismatch, match=r"returned Ok\(bytearray\(b'abc'\)\); the model "
                                            r"expected Ok\(b'abc'\)"):
        flow.read()


def test_checked_flow_catches_a_raise_the_model_did_not_expect(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Flow, data: object) -> None:
        raise ValueError("no")

    monkeypatch.setattr(Flow, "write", refuse)
    with pytest.raises(ModelMismatch, match=r"raised ValueError\('no'\); the model expected "
                                            r"Ok\(None\)") as raised:
        CheckedFlow().write(b"abc")
    assert isinstance(raised.value.__cause__, ValueError)


def test_checked_flow_catches_the_wrong_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Flow, max_bytes: object = None) -> None:
        raise ValueError("bad")

    monkeypatch.setattr(Flow, "read", refuse)
    with pytest.raises(ModelMismatch, match=r"raised ValueError\('bad'\); the model expected "
                                            r"TypeError"):
        CheckedFlow().read("3")  # type: ignore[arg-type]


def test_checked_flow_catches_an_accepted_mistake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Flow, "read", lambda self, max_bytes=None: WOULD_WAIT)
    with pytest.raises(ModelMismatch, match=r"read\(0\) returned WOULD_WAIT; the model "
                                            r"expected ValueError"):
        CheckedFlow().read(0)


def test_checked_flow_catches_a_rejected_call_that_changed_something(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_sent = Flow.sent

    def sent_then_refuse(self: Flow, nbytes: int) -> None:
        real_sent(self, min(nbytes, self.queued))
        raise ValueError("too much")

    monkeypatch.setattr(Flow, "sent", sent_then_refuse)
    flow = CheckedFlow()
    flow.write(b"abc")
    with pytest.raises(ModelMismatch, match="queued: flow 0, model 3"):
        flow.sent(4)


def test_checked_flow_catches_a_writable_buffer_handed_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Flow, "buffers_to_send",
                        lambda self, max_buffers=None: [bytearray(b"abc")])
    flow = CheckedFlow()
    flow.write(b"abc")
    with pytest.raises(ModelMismatch, match=r"handed out bytearray\(b'abc'\)"):
        flow.buffers_to_send()


def test_checked_flow_catches_wrong_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    flow = CheckedFlow()
    flow.writev([b"abc", b"def"])
    real = Flow.buffers_to_send
    monkeypatch.setattr(Flow, "buffers_to_send", lambda self, max_buffers=None: [b"abd"])
    with pytest.raises(ModelMismatch, match="buffers_to_send"):
        flow.buffers_to_send()
    monkeypatch.setattr(Flow, "buffers_to_send", real)
    assert flow.buffers_to_send(1) == [b"abc"]  # a prefix is right when the limit is hit


def test_checked_flow_catches_a_backwards_state(monkeypatch: pytest.MonkeyPatch) -> None:
    flow = CheckedFlow()
    flow.close()
    flow._state = FlowState.OPEN  # as a buggy core might
    flow.model.state = FlowState.OPEN
    with pytest.raises(ModelMismatch, match=r"moved from FlowState\.HALF_CLOSED_LOCAL to "
                                            r"FlowState\.OPEN"):
        flow.read()


def test_checked_flow_is_a_flow() -> None:
    flow = CheckedFlow(high_water=3, low_water=1, receive_limit=2)
    assert isinstance(flow, Flow)
    assert (flow.high_water, flow.low_water, flow.receive_limit) == (3, 1, 2)
    parts: list[bytes | bytearray] = [b"ab", bytearray(b"c")]
    assert flow.writev(iter(parts)) == Ok(None)
    assert flow.write(b"d") is WOULD_WAIT
    with pytest.raises(TypeError):
        flow.writev(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        flow.writev(b"abc")  # type: ignore[arg-type]
    flow.shutdown(Shutdown.BOTH)
    flow.sent(3)
    flow.eof_sent()
    flow.receive_error(ConnectionResetError(errno.ECONNRESET, "reset"))
    flow.receive_eof()
    flow.abort()
    assert flow.state is FlowState.CLOSED
    assert flow.model.state is FlowState.CLOSED


# -- ReferenceModel and check_stream on their own ------------------------------------------


def test_model_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="low_water must not exceed high_water"):
        ReferenceModel(high_water=1, low_water=2)
    with pytest.raises(TypeError):
        ReferenceModel(receive_limit=True)


def test_model_check_lists_every_difference() -> None:
    model = ReferenceModel()
    model.write(b"abc")
    model.receive_data(b"xy")
    with pytest.raises(ModelMismatch, match=r"queued: flow 0, model 3; buffered: flow 0, "
                                            r"model 2; read_ready: flow False, model True"):
        model.check(Flow())


def test_model_check_bounds_the_queue() -> None:
    flow, model = Flow(high_water=2, low_water=1), ReferenceModel(high_water=2, low_water=1)
    for side in (flow, model):
        side.write(b"abcdef")
    model.check(flow)
    model.largest_write = 3  # as if the flow had let the queue grow past one write
    with pytest.raises(ModelMismatch, match="6 bytes queued, more than high_water"):
        model.check(flow)


def test_check_stream_catches_loss_reordering_and_early_eof() -> None:
    sender, receiver = ReferenceModel(), ReferenceModel()
    sender.write(b"abcdef")
    sender.sent(4)
    receiver.receive_data(b"ab")
    check_stream(sender, receiver)
    receiver.receive_data(b"d")  # "c" lost
    with pytest.raises(ModelMismatch, match="arrived b'abd', which is not how the sent "
                                            "b'abcd' starts"):
        check_stream(sender, receiver)

    receiver = ReferenceModel()
    receiver.receive_data(b"ab")
    receiver.read_data += b"ax"
    with pytest.raises(ModelMismatch, match="read b'ax', which is not how the arrived"):
        check_stream(sender, receiver)

    receiver = ReferenceModel()
    receiver.receive_data(b"abcd")
    receiver.read()
    receiver.receive_eof()
    assert receiver.read() == Eof()
    with pytest.raises(ModelMismatch, match="read answered Eof\\(\\) after b'abcd', but the "
                                            "peer wrote b'abcdef'"):
        check_stream(sender, receiver)


def test_check_state_move_allows_forward_moves() -> None:
    order = [FlowState.OPEN, FlowState.HALF_CLOSED_LOCAL, FlowState.CLOSED]
    for i, before in enumerate(order):
        for after in order[i:]:
            check_state_move(before, after)
    check_state_move(FlowState.OPEN, FlowState.HALF_CLOSED_REMOTE)
    check_state_move(FlowState.HALF_CLOSED_REMOTE, FlowState.CLOSED)


# -- the machine's own checks, driven by hand ----------------------------------------------


@pytest.fixture
def machine() -> FlowStateMachine:
    machine = FlowStateMachine()
    machine.pair = FlowPair(CheckedFlow(high_water=4, low_water=1, receive_limit=3),
                            CheckedFlow(), capacity=5)
    return machine


def check_all(machine: FlowStateMachine) -> None:
    machine.flows_match_models()
    machine.streams_intact()
    machine.memory_bounded()


def test_rules_by_hand(machine: FlowStateMachine) -> None:
    assert machine.app_write("a", b"hello") == Ok(None)
    machine.transmit("a", 2)
    machine.deliver("b", 1)
    check_all(machine)
    machine.carry("a", 2, None)
    assert machine.model("b").arrived == b"hell"
    machine.read("b", None)
    machine.pump(None)
    machine.drain("b")
    machine.close("a")
    machine.shutdown("b", Shutdown.WRITE)
    check_all(machine)
    machine.finish()
    check_all(machine)
    assert all(machine.flow(side).state is FlowState.CLOSED for side in SIDES)
    assert machine.model("b").read_data == b"hello"


def test_hooks_see_every_chunk_and_the_end_once(machine: FlowStateMachine) -> None:
    seen: list[tuple[str, object]] = []
    machine.on_received = lambda side, data: seen.append((side, data))  # type: ignore[method-assign]
    machine.on_read_end = lambda side, result: seen.append((side, result))  # type: ignore[method-assign]
    machine.app_write("b", b"abc")
    machine.close("b")
    machine.settle()
    machine.app_read("a")
    assert seen == [("a", b"abc"), ("a", Eof())]


def test_finish_tolerates_a_failure_the_peer_never_hears_of(
        machine: FlowStateMachine) -> None:
    machine.app_write("a", b"abc")
    machine.transport_error("a", BrokenPipeError(errno.EPIPE, "Broken pipe"))
    assert machine.one_sided_fault
    machine.finish()  # b never hears of it, and stays half-closed
    assert machine.flow("b").state is FlowState.HALF_CLOSED_LOCAL


def test_finish_after_a_timeout_that_reaches_the_peer(machine: FlowStateMachine) -> None:
    machine.transport_error("b", TimeoutError(errno.ETIMEDOUT, "timed out"))
    assert machine.faulted
    assert not machine.one_sided_fault
    machine.abort("a", None)
    machine.reset()
    machine.finish()
    assert all(machine.flow(side).state is FlowState.CLOSED for side in SIDES)


def test_finish_catches_an_end_left_open(machine: FlowStateMachine,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FlowPair, "deliver", lambda self, receiver, max_bytes=None: 0)
    with pytest.raises(ModelMismatch, match="side a is <Flow HALF_CLOSED_LOCAL"):
        machine.finish()


def test_finish_catches_bytes_never_read(machine: FlowStateMachine) -> None:
    machine.app_write("a", b"abc")
    machine.settle()
    machine.model("b").read_data.clear()  # as if the reads had returned nothing
    with pytest.raises(ModelMismatch, match="side b read 0 bytes of the 3 written to it"):
        machine.finish()


def test_settle_gives_up_on_endless_motion(machine: FlowStateMachine) -> None:
    machine.app_write("a", b"abcdef")
    with pytest.raises(ModelMismatch, match="still moving after 1 rounds"):
        machine.settle(max_rounds=1)


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda m: m.pair.wire_from(m.pair.a).data.__setitem__(0, ord("X")),
     "wire from a holds b'Xbc', not the next bytes written"),
    (lambda m: m.pair.wire_from(m.pair.a).data.clear(),
     "wire from a: 0 bytes arrived \\+ 0 in flight, but 3 were sent"),
    (lambda m: setattr(m.pair.wire_from(m.pair.b), "eof", True),
     "wire from b: eof=True, but the model says EOF sent=False"),
    (lambda m: setattr(m.pair.wire_from(m.pair.b), "eof_delivered", True),
     "wire from b delivered EOF that was not received"),
])
def test_streams_intact_catches_a_broken_wire(
        machine: FlowStateMachine, tamper: Callable[[FlowStateMachine], None],
        message: str) -> None:
    machine.app_write("a", b"abc")
    machine.transmit("a", None)
    machine.streams_intact()
    tamper(machine)
    with pytest.raises(ModelMismatch, match=message):
        machine.streams_intact()


def test_memory_bounded_catches_a_flooded_reader(machine: FlowStateMachine) -> None:
    for _ in range(3):
        machine.flow("a").receive_data(b"xy")  # ignoring reading_paused, unlike the wire
    with pytest.raises(ModelMismatch, match="holds more than receive_limit \\+ one chunk"):
        machine.memory_bounded()


def test_memory_bounded_catches_an_overfull_wire(machine: FlowStateMachine) -> None:
    machine.pair.wire_from(machine.pair.b).data += b"123456"
    with pytest.raises(ModelMismatch, match="wire from b holds more than its capacity"):
        machine.memory_bounded()


def test_teardown_before_start_is_quiet() -> None:
    FlowStateMachine().teardown()


def test_writers_can_be_turned_off() -> None:
    class ReadOnlyA(FlowStateMachine):
        writes_to_a = False

    assert ReadOnlyA()._writers() == ["b"]
    assert FlowStateMachine()._writers() == ["a", "b"]


# -- strategies ----------------------------------------------------------------------------


@given(st.binary(max_size=40), st.sampled_from(BUFFER_KINDS))
def test_as_buffer_holds_the_bytes(data: bytes, kind: str) -> None:
    buffer = as_buffer(data, kind)
    assert memoryview(buffer).tobytes() == data
    readonly = memoryview(buffer).readonly
    scribble(buffer)
    if readonly or not data:
        assert memoryview(buffer).tobytes() == data
    else:
        assert memoryview(buffer).tobytes() == bytes(b ^ 0xFF for b in data)


def test_as_buffer_kinds() -> None:
    assert type(as_buffer(b"ab", "bytes")) is bytes
    assert type(as_buffer(b"ab", "bytearray")) is bytearray
    assert memoryview(as_buffer(b"ab", "readonly 2-byte items")).format == "H"
    assert not memoryview(as_buffer(b"ab", "2-byte items")).readonly
    assert type(as_buffer(b"abc", "2-byte items")) is bytes  # odd size: plain bytes
    with pytest.raises(ValueError, match="unknown buffer kind 'str'"):
        as_buffer(b"ab", "str")


@given(st.data())
def test_chunkings_cut_without_losing(data: st.DataObject) -> None:
    payload = data.draw(st.binary(max_size=30))
    most = data.draw(st.none() | st.integers(1, 5))
    chunks = data.draw(chunkings(payload, most))
    assert b"".join(chunks) == payload
    assert all(chunks)
    if most is not None:
        assert len(chunks) <= most


@given(st.data())
def test_interleavings_keep_each_order(data: st.DataObject) -> None:
    first = data.draw(st.lists(st.integers(0, 9), max_size=6))
    second = [f"s{i}" for i in range(data.draw(st.integers(0, 6)))]
    merged = data.draw(interleavings(first, second))
    assert len(merged) == len(first) + len(second)
    assert [x for x in merged if isinstance(x, int)] == first
    assert [x for x in merged if isinstance(x, str)] == second


@given(flow_options())
def test_flow_options_make_valid_flows(options: dict[str, int]) -> None:
    flow = Flow(**options)
    assert 1 <= flow.high_water <= 64
    assert 0 <= flow.low_water <= flow.high_water
    assert 1 <= flow.receive_limit <= 64


@given(transport_errors(), abort_errors(), buffers())
def test_fault_strategies(error: BaseException, abort: FlowError | None,
                          buffer: bytes | bytearray | memoryview) -> None:
    assert isinstance(FlowError.from_exception(error).kind, ErrorKind)
    assert abort is None or abort.kind is ErrorKind.TIMED_OUT
    assert isinstance(buffer, (bytes, bytearray, memoryview))
