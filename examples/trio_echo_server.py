"""An echo server on trio: every byte a client sends comes back, until the client's EOF.

Run it with ``python examples/trio_echo_server.py [PORT]`` and talk to it with
``examples/trio_echo_client.py``. When the handler returns, ``serve`` closes the flow the
seed's way: our EOF goes out, then it waits for the client's.
"""

from __future__ import annotations

import sys

import trio

from sansflow import Eof, Error, Ok, error_message
from sansflow.adapters import trio as sf


async def echo(flow: sf.TrioFlow) -> None:
    """Send back whatever arrives; stop at the client's EOF or at an error."""
    while True:
        match await flow.read():
            case Ok(data):
                if not isinstance(await flow.write(data), Ok):
                    return  # the connection failed: serve releases it
            case Eof():
                return
            case Error(err):
                print(f"client gone: {error_message(err)}", file=sys.stderr)
                return


async def main(host: str = "127.0.0.1", port: int = 8000, *,
               task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled (Ctrl-C); ``await nursery.start(main, host, 0)`` returns the bound
    port. Leaving stops accepting and ends the connections still open."""
    async with sf.serve(echo, host, port) as server:
        print(f"echo server listening on {host}:{server.port}", flush=True)
        task_status.started(server.port)
        await server.serve_forever()


if __name__ == "__main__":
    trio.run(main, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
