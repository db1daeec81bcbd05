"""What the socket-based adapters share: socket helpers, sizes, and the ``AdapterFlow`` base."""

from __future__ import annotations

import contextlib
import os
import socket
import struct

from sansflow import AdapterFlow

__all__ = ["IOV_MAX", "READ_SIZE", "AdapterFlow", "set_linger_zero"]

# sendmsg refuses more buffers than this (EMSGSIZE); 1024 on Linux.
IOV_MAX: int = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
# One receive call takes at most this much; 64 KiB matches the kernel's usual socket buffer.
READ_SIZE = 64 * 1024


def set_linger_zero(sock: socket.socket) -> None:
    """Make ``close()`` send an RST instead of a FIN (the contract's ``abort``)."""
    # Not a TCP socket (a socketpair, say) or already closed: a plain close will do.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
