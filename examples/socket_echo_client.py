"""A client for ``socket_echo_server.py``: send words, half-close, print what comes back.

::

    python examples/socket_echo_client.py --port 8007 hello world
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sansflow import BrokenFlowError, Shutdown
from sansflow.adapters import socket as sf


def main(argv: Sequence[str] | None = None) -> int:
    """Send the words, read the echo up to the server's EOF, close. 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to connect")
    parser.add_argument("words", nargs="*", default=["hello"])
    args = parser.parse_args(argv)

    try:
        flow = sf.connect(args.host, args.port, timeout=args.timeout)
    except OSError as exc:  # refused, unknown name, timed out: each names host and port
        print(f"cannot connect: {exc}")
        return 1
    # Leaving the block closes the flow (our EOF is out and the server's arrived: CLOSED at
    # once), or aborts it if something raised.
    with flow:
        for i, word in enumerate(args.words):  # small writes: the flow coalesces them
            flow.write(word.encode() if i == 0 else b" " + word.encode())
        flow.shutdown(Shutdown.WRITE)  # flush, then EOF: the server's handler sees Eof()
        try:
            echoed = b"".join(flow)  # every chunk until the server's EOF
        except BrokenFlowError as exc:
            print(f"failed: {exc}")
            return 1
    print(echoed.decode())
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
