"""Code written for anyio's streams, over sansflow flows: ``FlowByteStream`` makes any async
flow an ``anyio.abc.ByteStream``, so anyio's own helpers work on it (here
``BufferedByteReceiveStream`` and ``TextStream``), on the flow's event loop.

Run it as ``python examples/anyio_stream.py asyncio`` (or ``trio``).
"""

import sys
from importlib import import_module

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.text import TextStream

from sansflow import AsyncFlow
from sansflow.adapters.anyio import FlowByteStream


async def greet(flow: AsyncFlow) -> None:
    """The server: read a name up to its newline, answer, close."""
    stream = FlowByteStream(flow)
    name = await BufferedByteReceiveStream(stream).receive_until(b"\n", max_bytes=100)
    await TextStream(stream).send(f"hello, {name.decode()}!")
    await stream.aclose()  # what was sent goes out first; the client's end is not awaited


async def main(loop: str) -> str:
    sf = import_module(f"sansflow.adapters.{loop}")
    async with sf.serve(greet, "127.0.0.1", 0) as server:
        client = TextStream(FlowByteStream(await sf.connect("127.0.0.1", server.port)))
        await client.send("anyio\n")
        answer = ""
        try:
            while True:
                answer += await client.receive()
        except anyio.EndOfStream:  # the server's clean end, after all it sent
            pass
        await client.aclose()
    return answer


if __name__ == "__main__":
    loop = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    print(anyio.run(main, loop, backend=loop))
