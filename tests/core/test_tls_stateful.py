"""Two ``TlsLayer``s under hypothesis: writes, reads of any size, half-closes from either end
and ciphertext delivered in any chunks, in any order; what each side reads is always a prefix
of what the other wrote, an end is never read before the data in front of it, and once
everything is delivered each side has read all the other wrote, then its ``Eof()``.

The reference is the plaintext itself: the model is what each side wrote and whether it sent
its EOF, which is all a reader may see.
"""

from __future__ import annotations

import ssl

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_tls import client_context, server_context

from sansflow import WOULD_WAIT, Eof, Flow, Ok, SendState, Shutdown, TlsLayer

SIDES = ("client", "server")


def pattern(offset: int, size: int) -> bytes:
    """The bytes of a stream at ``offset``: a byte lost, repeated or moved shows."""
    return bytes((offset + i) % 251 for i in range(size))


CONTEXTS = {version: (client_context(version), server_context(version))
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)}


class TlsPairMachine(RuleBasedStateMachine):
    """Each side's outer flow is driven as an application would, its inner flow's ciphertext
    is carried to the other side by the rules, in chunks of any size."""

    def __init__(self) -> None:
        super().__init__()
        self.layers: dict[str, TlsLayer] = {}
        self.written = {side: bytearray() for side in SIDES}  # what each side's app wrote
        self.read = {side: bytearray() for side in SIDES}  # what each side's app read
        self.shut = dict.fromkeys(SIDES, False)  # the side's app sent its EOF
        self.ended = dict.fromkeys(SIDES, False)  # the side's app read Eof()

    @rule(tls13=st.booleans(), high_water=st.sampled_from([1024, 20_000, 65_536]))
    @precondition(lambda self: not self.layers)
    def start(self, tls13: bool, high_water: int) -> None:
        client, server = CONTEXTS[ssl.TLSVersion.TLSv1_3 if tls13 else ssl.TLSVersion.TLSv1_2]
        options = {"high_water": high_water, "low_water": high_water // 4}
        self.layers = {
            "client": TlsLayer(Flow(**options), client, server_hostname="localhost"),
            "server": TlsLayer(Flow(**options), server, server_side=True),
        }
        self.step()

    def other(self, side: str) -> str:
        return SIDES[1 - SIDES.index(side)]

    def step(self) -> None:
        for _ in range(100):  # both layers, until neither moves
            stepped = [layer.step() for layer in self.layers.values()]  # each one steps
            if not any(stepped):
                return
        raise AssertionError("the layers never settled")

    @rule(side=st.sampled_from(SIDES),
          size=st.one_of(st.integers(1, 100), st.integers(1_000, 40_000)))
    @precondition(lambda self: self.layers)
    def write(self, side: str, size: int) -> None:
        outer = self.layers[side].outer
        if self.shut[side] or outer.send_state is not SendState.OPEN or not outer.write_ready:
            return  # the application would wait (or has ended its side)
        data = pattern(len(self.written[side]), size)
        assert outer.write(data) == Ok(None)
        self.written[side] += data
        self.step()

    @rule(side=st.sampled_from(SIDES), size=st.none() | st.integers(1, 50_000))
    @precondition(lambda self: self.layers)
    def read_some(self, side: str, size: int | None) -> None:
        result = self.layers[side].outer.read(size)
        if isinstance(result, Ok):
            assert size is None or len(result.value) <= size
            self.read[side] += result.value
        elif result == Eof():
            # The end comes after everything the other side wrote, and only if it ended.
            assert self.shut[self.other(side)]
            assert self.read[side] == self.written[self.other(side)]
            self.ended[side] = True
        else:
            assert result is WOULD_WAIT, result
        self.step()

    @rule(side=st.sampled_from(SIDES))
    @precondition(lambda self: self.layers)
    def shutdown_write(self, side: str) -> None:
        if not self.shut[side]:
            self.layers[side].outer.shutdown(Shutdown.WRITE)
            self.shut[side] = True
            self.step()

    @rule(side=st.sampled_from(SIDES), size=st.integers(1, 70_000))
    @precondition(lambda self: self.layers)
    def carry(self, side: str, size: int) -> None:
        """Up to ``size`` bytes of ciphertext from ``side``'s inner flow to the other's, and
        its EOF once everything before it went."""
        sender, receiver = self.layers[side].inner, self.layers[self.other(side)].inner
        pending = b"".join(bytes(buffer) for buffer in sender.buffers_to_send())[:size]
        if pending:
            receiver.receive_data(pending)
            sender.sent(len(pending))
        if sender.eof_due:
            sender.eof_sent()
            receiver.receive_eof()
        self.step()

    @invariant()
    def reads_are_prefixes_of_writes(self) -> None:
        for side in SIDES:
            written = self.written[self.other(side)]
            assert self.read[side] == written[:len(self.read[side])]

    @invariant()
    def no_side_fails(self) -> None:
        for layer in self.layers.values():
            assert layer.outer.error is None
            assert layer.inner.error is None

    def teardown(self) -> None:
        """Everything delivered: each side reads all the other wrote, then its end if the
        other sent one; with both ends sent, both inner flows close."""
        if not self.layers:
            return
        for _ in range(10_000):
            moved = False
            for side in SIDES:
                sender = self.layers[side].inner
                receiver = self.layers[self.other(side)].inner
                for buffer in sender.buffers_to_send():
                    receiver.receive_data(bytes(buffer))
                    moved = True
                sender.sent(sender.queued)
                if sender.eof_due:
                    sender.eof_sent()
                    receiver.receive_eof()
                    moved = True
                result = self.layers[side].outer.read()
                if isinstance(result, Ok):
                    self.read[side] += result.value
                    moved = True
            stepped = [layer.step() for layer in self.layers.values()]  # each one steps
            if not (any(stepped) or moved):
                break
        for side in SIDES:
            assert self.read[side] == self.written[self.other(side)]
            if self.shut[self.other(side)]:
                assert self.layers[side].outer.read() == Eof()
        if all(self.shut.values()):
            for layer in self.layers.values():
                assert layer.inner.send_state is SendState.EOF_SENT


TestTlsPair = TlsPairMachine.TestCase
