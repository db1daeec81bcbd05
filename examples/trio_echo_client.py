"""An echo client on trio: send a message, half-close, read the echo until the server's EOF.

Run ``python examples/trio_echo_server.py`` first, then
``python examples/trio_echo_client.py [PORT] [MESSAGE]``.
"""

from __future__ import annotations

import sys

import trio

from sansflow import Eof, Error, Ok, Shutdown, error_message
from sansflow.adapters import trio as sf


async def main(host: str = "127.0.0.1", port: int = 8000,
               message: bytes = b"hello from trio") -> bytes:
    """The echoed bytes. Raises ``ConnectionError`` if the connection fails midway; if it
    cannot be opened at all, ``ConnectionRefusedError``, ``socket.gaierror`` (unknown name) or
    ``TimeoutError`` (no answer within 10 s), each naming the address."""
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


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    message = sys.argv[2].encode() if len(sys.argv) > 2 else b"hello from trio"
    print(trio.run(main, "127.0.0.1", port, message).decode(errors="replace"))
