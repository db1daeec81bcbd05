"""An echo server on asyncio (or uvloop): every byte a client sends comes back.

When the client half-closes (sends EOF), the handler returns and ``serve`` closes the flow the
seed's way: our EOF goes out, then it waits for the client's. Run it, then talk to it with
``asyncio_echo_client.py``::

    python examples/asyncio_echo_server.py --port 8007 [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence

from sansflow import Eof, Error, Ok, error_message
from sansflow.adapters import asyncio as sf


async def echo(flow: sf.AsyncioFlow) -> None:
    """Send back whatever arrives; stop at the client's EOF or at an error."""
    while True:
        match await flow.read():
            case Ok(data):
                if not isinstance(await flow.write(data), Ok):
                    return  # the flow failed: serve releases it
            case Eof():
                return
            case Error(err):
                print(f"client gone: {error_message(err)}", file=sys.stderr)
                return


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007, help="0 picks a free port")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None, *,
               ready: Callable[[int], object] | None = None,
               stop: asyncio.Event | None = None) -> int:
    """Serve until ``stop`` is set, or forever (until the task is cancelled: Ctrl-C);
    ``ready(port)`` is called once listening. Leaving stops accepting and ends the
    connections still open."""
    args = parse_args(argv)
    async with sf.serve(echo, args.host, args.port) as server:
        print(f"echo server listening on {args.host}:{server.port}", flush=True)
        if ready is not None:
            ready(server.port)
        if stop is None:
            await server.serve_forever()
        else:
            await stop.wait()
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """The script's entry point: ``main`` on asyncio's loop, or on uvloop with ``--uvloop``."""
    if parse_args(argv).uvloop:
        import uvloop

        runner: Callable[..., int] = uvloop.run
    else:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        return runner(main(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
