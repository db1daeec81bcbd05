"""The conformance kit over TLS: every adapter's flows with a TLS layer, and the in-memory pair
with one, keep the same contract as plain flows, every check of it. TLS changes what goes
over the wire (close_notify before the FIN, records instead of the bytes written), not what
the application sees, so no check is left out.

Each pair is a client and a server that completed a handshake: over loopback TCP, the client
from ``connect(ssl=...)`` and the server from ``wrap_tls(server_side=True)`` on the accepted
socket; in memory, a ``TlsLayer`` on each end of ``memory_flow_pair``, stepped whenever the
wire moves, as an adapter steps its layers. The checks about waiting and limits run again with
limits below one TLS record. One event loop per adapter (the anyio adapter's second backend and
uvloop run the checks of what crosses the wire), and no pairs of different adapters
(test_conformance.py runs those without TLS), so that the file stays quick.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import Any

import anyio
import pytest
import trustme
from test_conformance import LIMITED, WIRE

from sansflow import Flow, TlsLayer
from sansflow.adapters._handshake import new_layer
from sansflow.testing import conformance as kit
from sansflow.testing._memory import MemoryFlow, _Link
from sansflow.testing._pair import FlowPair

Pair = tuple[kit.AsyncFlowLike, kit.AsyncFlowLike]
PairFactory = Callable[[], Awaitable[Pair]]
Contexts = tuple[ssl.SSLContext, ssl.SSLContext]  # (client, server)

HOST = "127.0.0.1"
NAME = "localhost"  # what the test certificate names
CHECK_TIMEOUT = 20.0


# -- the in-memory pair with a TLS layer on each end ---------------------------------------


class _TlsLink(_Link):
    """The memory pair's wire, which also steps each end's TLS layer, until nothing moves."""

    __slots__ = ("layers",)

    def __init__(self, pair: FlowPair) -> None:
        super().__init__(pair)
        self.layers: list[TlsLayer] = []

    def pump(self) -> None:
        moved = True
        while moved:
            self._pair.pump()
            moved = False
            for layer in self.layers:
                moved = layer.step() or moved
        super().pump()


async def memory_tls_pair(contexts: Contexts, *, capacity: int = 64 * 1024,
                          limits: dict[str, int] | None = None) -> Pair:
    limits = limits or {}
    client_ctx, server_ctx = contexts
    pair = FlowPair(Flow(**limits), Flow(**limits), capacity=capacity)
    link = _TlsLink(pair)
    a, b = MemoryFlow(pair.a, link), MemoryFlow(pair.b, link)
    for flow, layer in (
        (a, new_layer(pair.a, client_ctx, server_hostname=NAME)),
        (b, new_layer(pair.b, server_ctx, server_side=True)),
    ):
        flow._add_layer(layer)
        link.layers.append(layer)
    link.pump()  # the whole handshake: nothing waits in memory
    assert all(layer.handshake_done for layer in link.layers)
    await anyio.lowlevel.checkpoint()
    return a, b


# -- the adapters over loopback TCP --------------------------------------------------------


def adapter(name: str) -> ModuleType:
    module: ModuleType = pytest.importorskip(f"sansflow.adapters.{name}")
    return module


async def accepted(listener: socket.socket) -> socket.socket:
    sock, _ = await anyio.to_thread.run_sync(listener.accept)
    sock.settimeout(None)
    return sock


async def async_tls_pair(name: str, contexts: Contexts, limits: dict[str, int] | None = None
                         ) -> Pair:
    sf = adapter(name)
    limits = limits or {}
    client_ctx, server_ctx = contexts
    flows: dict[str, Any] = {}
    with socket.create_server((HOST, 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        async def client() -> None:
            flows["a"] = await sf.connect(HOST, port, ssl=client_ctx, server_hostname=NAME,
                                          timeout=10, **limits)

        async def server() -> None:
            plain = await sf.wrap(await accepted(listener), **limits)
            flows["b"] = await sf.wrap_tls(plain, server_ctx, server_side=True,
                                           handshake_timeout=10)

        async with anyio.create_task_group() as group:
            group.start_soon(client)
            group.start_soon(server)
    return flows["a"], flows["b"]


async def socket_tls_pair(contexts: Contexts, limits: dict[str, int] | None = None) -> Pair:
    sf = adapter("socket")
    limits = limits or {}
    client_ctx, server_ctx = contexts
    flows: dict[str, Any] = {}
    with socket.create_server((HOST, 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def client() -> None:
            flows["a"] = sf.connect(HOST, port, ssl=client_ctx, server_hostname=NAME, timeout=10,
                                    **limits)

        def server() -> None:
            sock, _ = listener.accept()
            sock.settimeout(None)
            flows["b"] = sf.wrap_tls(sf.wrap(sock, **limits), server_ctx, server_side=True,
                                     handshake_timeout=10)

        async with anyio.create_task_group() as group:
            group.start_soon(anyio.to_thread.run_sync, client)
            group.start_soon(anyio.to_thread.run_sync, server)
    return kit.threaded(flows["a"]), kit.threaded(flows["b"])


# -- the runs ------------------------------------------------------------------------------


@dataclass
class Setup:
    """How to make a pair for one run: the caller's backend, and the two ends."""

    name: str
    backend: str
    make: Callable[[Contexts], Awaitable[Pair]]
    options: dict[str, Any] = field(default_factory=dict)
    cancellation: bool = True
    only: tuple[str, ...] | None = None  # the checks to run, if not all


# Limits far below the defaults and below one TLS record (16 KiB of plaintext): a record is
# encrypted only while the flow below takes more, so writers wait on both flows' marks.
SMALL = {"high_water": 4096, "low_water": 1024, "receive_limit": 4096}
# Every check runs over TLS on every adapter and on the in-memory pair; each variant runs what
# it can change, as in test_conformance.py. Limits below one TLS record change when a flow
# waits: the checks about waiting and limits (test_conformance.LIMITED). uvloop changes the
# transport under the same TLS layer and adapter code: the checks of what crosses the wire
# and when (test_conformance.WIRE); so does the anyio adapter's second backend, under the
# same adapter code.
SETUPS = [
    Setup("memory", "trio", memory_tls_pair),
    Setup("memory-small-limits", "asyncio",
          partial(memory_tls_pair, capacity=500,
                  limits={"high_water": 2000, "low_water": 0, "receive_limit": 1000}),
          only=LIMITED),
    Setup("asyncio", "asyncio", partial(async_tls_pair, "asyncio")),
    Setup("uvloop", "asyncio", partial(async_tls_pair, "asyncio"), {"use_uvloop": True},
          only=WIRE),
    Setup("trio", "trio", partial(async_tls_pair, "trio")),
    Setup("anyio", "asyncio", partial(async_tls_pair, "anyio")),
    Setup("anyio-trio", "trio", partial(async_tls_pair, "anyio"), only=WIRE),
    Setup("socket", "asyncio", socket_tls_pair, cancellation=False),
    Setup("asyncio-small-limits", "asyncio", partial(async_tls_pair, "asyncio", limits=SMALL),
          only=LIMITED),
    Setup("trio-small-limits", "trio", partial(async_tls_pair, "trio", limits=SMALL), only=LIMITED),
    Setup("socket-small-limits", "asyncio", partial(socket_tls_pair, limits=SMALL),
          cancellation=False, only=LIMITED),
]


def runs() -> list[Any]:
    params = []
    for setup in SETUPS:
        for check in kit.CHECKS:
            if check.needs_cancellation and not setup.cancellation:
                continue
            if setup.only is not None and check.name not in setup.only:
                continue
            params.append(pytest.param(setup, check, id=f"{setup.name}-{check.name}"))
    return params


@pytest.fixture(scope="module")
def contexts(ca: trustme.CA, server_cert: trustme.LeafCert) -> Contexts:
    """The conftest's client and server contexts, made once: loading the system's CAs into
    each new context costs more than most checks."""
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_ctx)
    return client_ctx, server_ctx


@pytest.mark.parametrize(("setup", "check"), runs())
def test_tls_pair_passes(setup: Setup, check: kit.Check, contexts: Contexts) -> None:
    async def make() -> Pair:
        return await setup.make(contexts)

    anyio.run(partial(kit.run_check, check, make, timeout=CHECK_TIMEOUT),
              backend=setup.backend, backend_options=setup.options)
