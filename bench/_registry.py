"""Which stacks exist, how to load one, and which sansflow stack is compared with which peer.

Nothing here imports a stack's libraries at import time: the worker loads exactly one stack, so
that its peak RSS carries no other stack's imports.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Literal

from ._common import SCENARIOS, Stack

__all__ = ["GROUPS", "PAIRS", "SCALE_GOAL", "SCALE_PAIRS", "SCALE_STACKS", "STACKS", "TLS_GOALS",
           "TLS_PAIRS", "Goal", "NotInstalled", "StackSpec", "Unavailable", "by_name",
           "load_stack"]

Kind = Literal["sansflow", "native", "core"]
Group = Literal["model", "limit"]

GROUPS: dict[Group, str] = {
    "model": "same programming model",
    "limit": "raw callbacks and syscalls, the limit",
}
"""The two kinds of peer. A sansflow adapter is read, written and awaited like a stream: its
fair comparison is the streams of the same event loop. Callbacks (and, for blocking sockets,
``sendmsg``/``recv_into`` into a reused buffer) do the least work per byte a program can: the
ceiling, not a rival API."""


class Unavailable(Exception):
    """The stack cannot run here: a library or a sansflow module is missing."""


class NotInstalled(Unavailable):
    """An optional library the stack needs is not installed: a note, not a failure."""


@dataclass(frozen=True)
class StackSpec:
    name: str
    kind: Kind
    loader: str
    """``module:function`` in this package; the function returns the ``Stack``."""
    description: str
    group: Group | None = None
    """A native peer's group (``GROUPS``); ``None`` for sansflow's own stacks."""
    optional: tuple[str, ...] = ()
    """The optional libraries it needs (extras): without one it is skipped with a note, a
    sansflow stack too (its peers are skipped alike, so there is nothing to compare). Any other
    reason it cannot run fails the benchmark: with uvloop or trio installed, their sansflow
    stacks must run."""
    tls: str | None = None
    """What the stack is over TLS (``--tls``), or ``None`` if it has no TLS variant."""


STACKS: tuple[StackSpec, ...] = (
    StackSpec("sansflow-asyncio", "sansflow", "_sansflow:asyncio_stack",
              "sansflow asyncio adapter (asyncio's own loop)",
              tls="sansflow asyncio adapter, TLS (its TlsLayer)"),
    StackSpec("asyncio-buffered", "native", "_asyncio_native:buffered_stack",
              "asyncio BufferedProtocol", "limit"),
    StackSpec("asyncio-protocol", "native", "_asyncio_native:protocol_stack", "asyncio Protocol",
              "limit",
              tls="asyncio Protocol with ssl= (asyncio's TLS transport)"),
    StackSpec("asyncio-streams", "native", "_asyncio_native:streams_stack", "asyncio Streams",
              "model",
              tls="asyncio Streams with ssl= (open_connection, start_server)"),
    StackSpec("anyio-asyncio", "native", "_anyio_native:asyncio_stack",
              "anyio streams on asyncio", "model", ("anyio",)),
    StackSpec("sansflow-asyncio-uvloop", "sansflow", "_sansflow:asyncio_uvloop_stack",
              "sansflow asyncio adapter on uvloop", None, ("uvloop",),
              tls="sansflow asyncio adapter on uvloop, TLS (its TlsLayer)"),
    StackSpec("uvloop-protocol", "native", "_asyncio_native:uvloop_protocol_stack",
              "uvloop Protocol", "limit", ("uvloop",),
              tls="uvloop Protocol with ssl= (uvloop's TLS transport)"),
    StackSpec("uvloop-streams", "native", "_asyncio_native:uvloop_streams_stack",
              "asyncio Streams on uvloop", "model", ("uvloop",),
              tls="asyncio Streams on uvloop with ssl="),
    StackSpec("sansflow-trio", "sansflow", "_sansflow:trio_stack", "sansflow trio adapter",
              None, ("trio",),
              tls="sansflow trio adapter, TLS (its TlsLayer)"),
    StackSpec("trio-socketstream", "native", "_trio_native:stack", "trio SocketStream",
              "model", ("trio",),
              tls="trio SSLStream over SocketStream"),
    StackSpec("sansflow-anyio-asyncio", "sansflow", "_sansflow:anyio_asyncio_stack",
              "sansflow anyio adapter on anyio's asyncio backend", None, ("anyio",)),
    StackSpec("sansflow-anyio-trio", "sansflow", "_sansflow:anyio_trio_stack",
              "sansflow anyio adapter on anyio's trio backend", None, ("anyio", "trio")),
    StackSpec("anyio-trio", "native", "_anyio_native:trio_stack", "anyio streams on trio",
              "model", ("anyio", "trio")),
    StackSpec("sansflow-socket", "sansflow", "_sansflow:socket_stack",
              "sansflow blocking-socket adapter",
              tls="sansflow blocking-socket adapter, TLS (its TlsLayer)"),
    StackSpec("blocking-sendall", "native", "_blocking_native:sendall_stack",
              "blocking socket, sendall/recv", "model",
              tls="blocking ssl.SSLSocket, sendall/recv"),
    StackSpec("blocking-sendmsg", "native", "_blocking_native:sendmsg_stack",
              "blocking socket, sendmsg/recv_into", "limit"),
    StackSpec("sansflow-core", "core", "_sansflow:core_stack",
              "sansflow core alone, in memory (no I/O)"),
)

PAIRS: tuple[tuple[str, str], ...] = (
    ("sansflow-asyncio", "asyncio-buffered"),
    ("sansflow-asyncio", "asyncio-protocol"),
    ("sansflow-asyncio", "asyncio-streams"),
    ("sansflow-asyncio", "anyio-asyncio"),
    ("sansflow-asyncio-uvloop", "uvloop-protocol"),
    ("sansflow-asyncio-uvloop", "uvloop-streams"),
    ("sansflow-trio", "trio-socketstream"),
    ("sansflow-anyio-asyncio", "anyio-asyncio"),
    ("sansflow-anyio-trio", "anyio-trio"),
    ("sansflow-socket", "blocking-sendall"),
    ("sansflow-socket", "blocking-sendmsg"),
)
"""(sansflow stack, peer): the ratio reported is sansflow's median over the peer's."""


TLS_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (ours, peer) for ours, peer in PAIRS
    if all(spec.tls is not None for spec in STACKS if spec.name in (ours, peer))
)
"""The pairs the TLS variants compare: both stacks have one."""


SCALE_PAIRS: tuple[tuple[str, str], ...] = (
    ("sansflow-asyncio", "asyncio-protocol"),
    ("sansflow-asyncio", "asyncio-streams"),
    ("sansflow-asyncio-uvloop", "uvloop-protocol"),
    ("sansflow-asyncio-uvloop", "uvloop-streams"),
    ("sansflow-trio", "trio-socketstream"),
    ("sansflow-anyio-asyncio", "anyio-asyncio"),
    ("sansflow-anyio-trio", "anyio-trio"),
)
"""The pairs the scale scenario (``--scale``) compares: the event loops' stacks, each of which
can hold thousands of connections in one thread. Each has the scenario in its mapping."""

SCALE_STACKS: tuple[StackSpec, ...] = tuple(
    spec for spec in STACKS if any(spec.name in pair for pair in SCALE_PAIRS)
)

SCALE_GOAL = 1.5
"""At scale, sansflow's peak memory per connection is at most this many times its native
protocol peer's (``asyncio-protocol``, ``uvloop-protocol``)."""


@dataclass(frozen=True)
class Goal:
    """A ratio the TLS variants aim at: sansflow's median over each named peer's, per scenario
    (among ``TLS_PAIRS``)."""

    text: str
    sansflow: tuple[str, ...]
    """The sansflow stacks it is about; empty: all of them."""
    peers: tuple[str, ...]
    """Their peers it is about; empty: each of their peers."""
    scenarios: tuple[str, ...]
    at_least: float


TLS_GOALS: tuple[Goal, ...] = (
    Goal("asyncio adapter >= 1.0x asyncio's TLS transport (Protocol, ssl=) on bulk and "
         "connections", ("sansflow-asyncio",), ("asyncio-protocol",), ("bulk", "connections"),
         1.0),
    Goal("asyncio adapter >= 1.5x asyncio TLS Streams everywhere", ("sansflow-asyncio",),
         ("asyncio-streams",), SCENARIOS, 1.5),
    Goal("trio adapter >= 1.2x trio SSLStream everywhere", ("sansflow-trio",),
         ("trio-socketstream",), SCENARIOS, 1.2),
    Goal("small writes >= 5x every peer", (), (), ("small_writes",), 5.0),
    Goal("socket adapter >= 0.8x ssl.SSLSocket on bulk", ("sansflow-socket",),
         ("blocking-sendall",), ("bulk",), 0.8),
)


def by_name(name: str) -> StackSpec:
    for spec in STACKS:
        if spec.name == name:
            return spec
    raise KeyError(name)


def load_stack(spec: StackSpec) -> Stack:
    """Import the stack's module and build it; ``Unavailable`` says why it cannot run here."""
    missing = [name for name in spec.optional if importlib.util.find_spec(name) is None]
    if missing:
        raise NotInstalled(f"not installed (optional): {', '.join(missing)}")
    module_name, _, function = spec.loader.partition(":")
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
        stack: Stack = getattr(module, function)()
    except Unavailable:
        raise
    except ImportError as exc:
        raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
    # A stack may leave a scenario out (the in-memory core has no connections to open).
    if not any(s in stack for s in SCENARIOS):
        raise Unavailable("no scenario")
    return stack
