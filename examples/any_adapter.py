"""One program on any async adapter: a server that answers after the client's EOF (half-close).

Run it as ``python examples/any_adapter.py asyncio`` (or ``uvloop``, ``trio``).
"""

import sys
from types import ModuleType

from sansflow import AsyncFlow, BrokenFlowError, Shutdown


async def shout(flow: AsyncFlow) -> None:
    """The handler: read the whole request, up to the client's EOF, then answer it."""
    request = b"".join([data async for data in flow])  # ends at the client's EOF
    await flow.write(request.upper())
    # serve() closes the flow when the handler returns: flush, send EOF, wait for the peer.


async def main(sf: ModuleType) -> None:  # sf: sansflow.adapters.asyncio or .trio
    async with sf.serve(shout, "127.0.0.1", 0) as server:
        flow: AsyncFlow = await sf.connect("127.0.0.1", server.port, timeout=10)
        async with flow:  # closes the flow on leaving (aborts it on an exception)
            await flow.write(b"hello, ")
            await flow.writev([b"half-", b"closed ", b"world"])
            await flow.shutdown(Shutdown.WRITE)  # our EOF; the reply can still come
            try:
                reply = b"".join([data async for data in flow])
            except BrokenFlowError as exc:  # a ConnectionError: exc.error says how
                print("failed:", exc)
                return
            print(reply.decode(), "from", flow.peername[0])


if __name__ == "__main__":
    loop = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    if loop == "trio":
        import trio

        from sansflow.adapters import trio as sf_trio

        trio.run(main, sf_trio)
    else:
        import asyncio

        from sansflow.adapters import asyncio as sf_asyncio

        if loop == "uvloop":
            import uvloop

            uvloop.run(main(sf_asyncio))
        else:
            asyncio.run(main(sf_asyncio))
