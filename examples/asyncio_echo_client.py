"""An echo client on asyncio (or uvloop): send a message, half-close, read the echo to EOF.

Run ``python examples/asyncio_echo_server.py`` first, then::

    python examples/asyncio_echo_client.py --port 8007 "hello" [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from sansflow import Eof, Error, Ok, Shutdown, error_message
from sansflow.adapters import asyncio as sf


async def echo(host: str, port: int, message: bytes) -> bytes:
    """Send ``message``, then EOF; return what came back before the server's EOF.

    Raises ``ConnectionError`` if the connection fails midway; if it cannot be opened at all,
    ``ConnectionRefusedError``, ``socket.gaierror`` (unknown name) or ``TimeoutError`` (no
    answer within 10 s), each naming the address.
    """
    flow = await sf.connect(host, port, timeout=10)
    try:
        match await flow.write(message):
            case Error(err):
                raise ConnectionError(error_message(err))
            case _:
                pass
        await flow.shutdown(Shutdown.WRITE)  # the server echoes until it sees this EOF
        echoed = bytearray()
        while True:
            match await flow.read():
                case Ok(data):
                    echoed += data
                case Eof():
                    break
                case Error(err):
                    raise ConnectionError(error_message(err))
    finally:
        await flow.close(timeout=10)
    return bytes(echoed)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("message", nargs="?", default="hello from asyncio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> int:
    """Print the echo of the message given on the command line."""
    args = parse_args(argv)
    echoed = await echo(args.host, args.port, args.message.encode())
    print(echoed.decode(errors="replace"), flush=True)
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """The script's entry point: ``main`` on asyncio's loop, or on uvloop with ``--uvloop``."""
    runner: Callable[..., int]
    if parse_args(argv).uvloop:
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run
    return runner(main(argv))


if __name__ == "__main__":
    sys.exit(run())
