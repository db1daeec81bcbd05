"""What every adapter shares: the busy guard, the read-only view of the core, socket helpers."""

from __future__ import annotations

import contextlib
import os
import socket
import struct

from sansflow import BusyError, Flow, FlowError, FlowState, ReceiveState, SendState

__all__ = ["IOV_MAX", "READ_SIZE", "AdapterFlow", "set_linger_zero"]

# sendmsg refuses more buffers than this (EMSGSIZE); 1024 on Linux.
IOV_MAX: int = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
# One receive call takes at most this much; 64 KiB matches the kernel's usual socket buffer.
READ_SIZE = 64 * 1024


class AdapterFlow:
    """The parts of an adapter's flow that do not wait: the core, its state, the busy flags.

    One reader and one writer may use a flow at once; a second concurrent reader (or writer)
    gets ``BusyError``, checked before anything else so that it changes nothing.
    """

    __slots__ = ("_core", "_reading", "_writing")

    def __init__(self, core: Flow) -> None:
        self._core = core
        self._reading = False
        self._writing = False

    @property
    def core(self) -> Flow:
        """The sans-IO flow underneath (read it; let the adapter drive it)."""
        return self._core

    @property
    def state(self) -> FlowState:
        return self._core.state

    @property
    def send_state(self) -> SendState:
        return self._core.send_state

    @property
    def receive_state(self) -> ReceiveState:
        return self._core.receive_state

    @property
    def error(self) -> FlowError | None:
        return self._core.error

    @property
    def high_water(self) -> int:
        return self._core.high_water

    @property
    def low_water(self) -> int:
        return self._core.low_water

    @property
    def receive_limit(self) -> int:
        return self._core.receive_limit

    def _claim_read(self) -> None:
        if self._reading:
            raise BusyError("another task is already reading this flow")
        self._reading = True

    def _claim_write(self) -> None:
        if self._writing:
            raise BusyError("another task is already writing to this flow")
        self._writing = True

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} {self._core!r}>"


def set_linger_zero(sock: socket.socket) -> None:
    """Make ``close()`` send an RST instead of a FIN (the contract's ``abort``)."""
    # Not a TCP socket (a socketpair, say) or already closed: a plain close will do.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
