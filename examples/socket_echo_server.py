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

from sansflow import BrokenFlowError, Ok
from sansflow.adapters import socket as sf


def handle(flow: sf.SocketFlow) -> None:
    """Echo until the client's EOF; the server then closes the flow (flush, EOF, wait)."""
    try:
        for data in flow:  # until Eof; BrokenFlowError if the connection fails
            if flow.write(data) != Ok(None):
                return  # the flow failed: the server's close finds it so
    except BrokenFlowError as exc:
        print(f"connection failed: {exc}", flush=True)


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
        if stop is not None:
            def close_when_stopped() -> None:
                stop.wait()
                server.close()

            threading.Thread(target=close_when_stopped, daemon=True).start()
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()  # returns once closed; leaving the block joins handlers
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
