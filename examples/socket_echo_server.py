"""An echo server on blocking sockets: one thread per connection, half-close aware.

Each connection gets back everything it sends. When the client half-closes (sends EOF), the
handler returns and the server closes the flow: the client reads the last echoed bytes, then
``Eof()``. Run it, then talk to it with ``socket_echo_client.py``::

    python examples/socket_echo_server.py --port 8007
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from collections.abc import Callable, Sequence

from sansflow import Eof, Error, Ok, error_message
from sansflow.adapters import socket as sf


def handle(flow: sf.SocketFlow) -> None:
    """Echo until the client's EOF; the server then closes the flow (flush, EOF, wait)."""
    while True:
        match flow.read():
            case Ok(data):
                if flow.write(data) != Ok(None):
                    return  # the flow failed: the next read says how
            case Eof():
                return
            case Error(err):
                print(f"connection failed: {error_message(err)}", flush=True)
                return


def main(argv: Sequence[str] | None = None, *, ready: Callable[[int], object] | None = None,
         stop: threading.Event | None = None) -> int:
    """Serve until ``stop`` is set (or Ctrl-C). ``ready(port)`` is called once listening."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007, help="0 picks a free port")
    args = parser.parse_args(argv)
    with sf.serve(handle, args.host, args.port) as server:
        print(f"echo server listening on {args.host}:{server.port}", flush=True)
        if ready is not None:
            ready(server.port)
        with contextlib.suppress(KeyboardInterrupt):
            (stop or threading.Event()).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
