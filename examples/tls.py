"""TLS on any async adapter: a server and a client, a reply after the client's close_notify,
and STARTTLS after a plaintext greeting.

Run it as ``python examples/tls.py asyncio`` (or ``trio``). The certificates come from
trustme, a test CA (``pip install trustme``); give real ones to a real server.
"""

import ssl
import sys
from types import ModuleType

import trustme

from sansflow import AsyncFlow, Ok, Shutdown

ca = trustme.CA()
server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ca.issue_cert("localhost").configure_cert(server_tls)
client_tls = ssl.create_default_context()
ca.configure_trust(client_tls)


async def count_then_answer(flow: AsyncFlow) -> None:
    request = b"".join([data async for data in flow])  # until the client's close_notify
    version = flow.tls.version if flow.tls else "plain TCP"
    await flow.write(b"got %d bytes over %s" % (len(request), version.encode()))


async def starttls(sf: ModuleType, flow: AsyncFlow) -> None:
    await flow.write(b"220 ready, say STARTTLS\n")
    # Read the command and no more: what follows it is already the TLS handshake.
    if await flow.read(len(b"STARTTLS\n")) == Ok(b"STARTTLS\n"):
        await sf.wrap_tls(flow, server_tls, server_side=True)
        await count_then_answer(flow)


async def main(sf: ModuleType) -> None:
    async with sf.serve(count_then_answer, "127.0.0.1", 0, ssl=server_tls) as server, \
            await sf.connect("127.0.0.1", server.port, ssl=client_tls,
                             server_hostname="localhost") as flow:
        await flow.write(b"hello")
        await flow.shutdown(Shutdown.WRITE)  # close_notify; the reply still comes
        print(b"".join([data async for data in flow]).decode())

    async with sf.serve(lambda flow: starttls(sf, flow), "127.0.0.1", 0) as server, \
            await sf.connect("127.0.0.1", server.port) as flow:
        print((await flow.read()).value.decode().strip())
        await flow.write(b"STARTTLS\n")
        await sf.wrap_tls(flow, client_tls, server_hostname="localhost")
        await flow.write(b"secret")
        await flow.shutdown(Shutdown.WRITE)
        print(b"".join([data async for data in flow]).decode())


if __name__ == "__main__":
    loop = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    if loop == "trio":
        import trio

        from sansflow.adapters import trio as sf_trio

        trio.run(main, sf_trio)
    else:
        import asyncio

        from sansflow.adapters import asyncio as sf_asyncio

        asyncio.run(main(sf_asyncio))
