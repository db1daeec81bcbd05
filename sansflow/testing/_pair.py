"""Two flows joined in memory by a deterministic wire: the transport for tests.

Every step is explicit, so a test (or hypothesis) decides how data is chunked, how much a
send takes, how much the wire holds, and when EOF or a reset arrives.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from .._errors import ErrorKind
from .._flow import Flow
from .._state import FlowState

__all__ = ["FlowPair", "Wire"]


@dataclass(slots=True)
class Wire:
    """One direction of the connection: bytes in flight, then perhaps the sender's EOF.

    ``capacity`` bounds the bytes in flight (``None``: unbounded), like a socket buffer that
    makes the sender's transport take only part of a send.
    """

    capacity: int | None = None
    data: bytearray = field(default_factory=bytearray)
    eof: bool = False  # the sender's EOF follows ``data``
    eof_delivered: bool = False

    @property
    def room(self) -> int | None:
        return None if self.capacity is None else self.capacity - len(self.data)


def _reset_error() -> ConnectionResetError:
    return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


class FlowPair:
    """Flows ``a`` and ``b``, connected: what ``a`` sends, ``b`` receives, and back.

    ``transmit(flow)`` moves bytes from a flow's send queue onto its wire (a send, possibly
    partial); ``deliver(flow)`` feeds bytes from the wire into a flow (one chunk). ``pump()``
    runs both until nothing moves. ``abort()`` on either flow reaches the other as a reset at
    the next ``transmit``, as a TCP RST would; ``reset()`` breaks the whole connection.
    """

    def __init__(self, a: Flow | None = None, b: Flow | None = None, *,
                 capacity: int | None = None) -> None:
        if capacity is not None and (type(capacity) is not int or capacity < 1):
            raise ValueError(f"capacity must be a positive int or None, not {capacity!r}")
        self.a = Flow() if a is None else a
        self.b = Flow() if b is None else b
        if self.a is self.b:
            raise ValueError("a flow cannot be paired with itself")
        self._wires = {id(self.a): Wire(capacity), id(self.b): Wire(capacity)}
        self.resets = 0  # how many resets the pair delivered

    def peer(self, flow: Flow) -> Flow:
        """The other end of ``flow``."""
        self._wire_from(flow)
        return self.b if flow is self.a else self.a

    def wire_from(self, flow: Flow) -> Wire:
        """The wire that carries what ``flow`` sends."""
        return self._wire_from(flow)

    def transmit(self, sender: Flow, max_bytes: int | None = None) -> int:
        """One send from ``sender``: up to ``max_bytes`` (and the wire's room) of its queue,
        then its EOF if that is due. A local abort goes out as a reset. Returns bytes moved."""
        wire = self._wire_from(sender)
        error = sender.error
        if error is not None and error.kind in (ErrorKind.ABORTED, ErrorKind.TIMED_OUT):
            self._reset_peer_of(sender)
            return 0
        limit = sender.queued
        if max_bytes is not None:
            limit = min(limit, max_bytes)
        room = wire.room
        if room is not None:
            limit = min(limit, room)
        moved = 0
        for buffer in sender.buffers_to_send():
            if moved >= limit:
                break
            piece = memoryview(buffer)[: limit - moved]
            wire.data += piece
            moved += len(piece)
        sender.sent(moved)
        if sender.eof_due:
            sender.eof_sent()
            wire.eof = True
        return moved

    def deliver(self, receiver: Flow, max_bytes: int | None = None) -> int:
        """Feed one chunk (up to ``max_bytes``) from the wire into ``receiver``, unless its
        reading is paused; once the wire is empty, the sender's EOF. Returns bytes moved."""
        wire = self._wire_from(self.peer(receiver))
        if receiver.reading_paused:
            return 0
        size = len(wire.data) if max_bytes is None else min(max_bytes, len(wire.data))
        if size:
            chunk = bytes(wire.data[:size])
            del wire.data[:size]
            receiver.receive_data(chunk)
        elif wire.eof and not wire.eof_delivered:
            wire.eof_delivered = True
            receiver.receive_eof()
        return size

    def reset(self) -> None:
        """Break the connection: bytes in flight are lost and both flows get ECONNRESET."""
        for flow in (self.a, self.b):
            self._wire_from(flow).data.clear()
            flow.receive_error(_reset_error())
        self.resets += 1

    def pump(self, chunk: int | None = None) -> None:
        """Transmit and deliver both ways, ``chunk`` bytes at a time, until nothing moves."""
        while True:
            before = self._progress()
            for flow in (self.a, self.b):
                self.transmit(flow, chunk)
                self.deliver(self.peer(flow), chunk)
            if self._progress() == before:
                return

    # -- internals -----------------------------------------------------------------------

    def _wire_from(self, flow: Flow) -> Wire:
        try:
            return self._wires[id(flow)]
        except KeyError:
            raise ValueError(f"{flow!r} is not one of this pair's flows") from None

    def _reset_peer_of(self, flow: Flow) -> None:
        peer = self.peer(flow)
        self._wire_from(flow).data.clear()
        if peer.state is not FlowState.CLOSED:
            peer.receive_error(_reset_error())
            self.resets += 1

    def _progress(self) -> tuple[object, ...]:
        return tuple(
            (flow.queued, flow.buffered, flow.send_state, flow.receive_state,
             len(self._wire_from(flow).data), self._wire_from(flow).eof_delivered)
            for flow in (self.a, self.b)
        )
