"""What every stack shares: the scenario sizes, the measurement record, and the arithmetic."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypedDict

__all__ = [
    "HOST",
    "PROFILES",
    "READ_SIZE",
    "SCENARIOS",
    "Measurement",
    "Params",
    "Profile",
    "ScenarioFn",
    "Stack",
    "VerificationError",
    "bulk_result",
    "connections_result",
    "percentile",
    "pingpong_result",
    "small_writes_result",
]

HOST = "127.0.0.1"
# One read size for every stack, so that no stack wins by asking the kernel for more per call.
READ_SIZE = 64 * 1024
# Listen backlogs default to 100 in asyncio: 500 simultaneous connects would overflow it and
# the kernel's SYN retry (a whole second) would end up in the figures.
BACKLOG = 4096

SCENARIOS = ("bulk", "pingpong", "small_writes", "connections")


@dataclass(frozen=True)
class Params:
    """Sizes of the four scenarios and of the scale scenario, and the bound on any one run."""

    bulk_bytes: int = 256 * 1024 * 1024
    bulk_write: int = 64 * 1024
    pingpong_trips: int = 20_000
    pingpong_size: int = 64
    small_writes: int = 200_000
    small_size: int = 100
    connections: int = 500
    connection_bytes: int = 64 * 1024
    scale_connections: int = 10_000
    """The scale scenario (``--scale``, not in the default run): connections open at once."""
    scale_bytes: int = 4 * 1024
    """What each of them sends, and reads back, once all are open."""
    timeout: float = 120.0
    tls: bool = False
    """The TLS variants: every connection over TLS 1.3 (``_tls``), a handshake each."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Params:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Measurement(TypedDict):
    """One run of one scenario on one stack. ``value`` is a rate: higher is better."""

    value: float
    unit: str
    elapsed_s: float
    ops: int
    bytes_expected: int
    bytes_verified: int
    p50_us: float | None
    p99_us: float | None


ScenarioFn = Callable[[Params], Measurement]
Stack = Mapping[str, ScenarioFn]
"""The four scenario functions of one stack, keyed by the names in ``SCENARIOS``."""


class VerificationError(AssertionError):
    """A stack delivered other bytes than were sent: its figures must not be reported."""


def check(condition: bool, message: str) -> None:
    # Not ``assert``: the check must survive ``python -O``.
    if not condition:
        raise VerificationError(message)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (``q`` in 0..1)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def _elapsed(elapsed_s: float) -> float:
    # A coarse clock can read zero on the tiniest profile; a rate must stay finite for JSON.
    return max(elapsed_s, 1e-9)


def bulk_result(p: Params, elapsed_s: float, received: int) -> Measurement:
    return {
        "value": p.bulk_bytes / (1024 * 1024) / _elapsed(elapsed_s),
        "unit": "MiB/s",
        "elapsed_s": elapsed_s,
        "ops": p.bulk_bytes // p.bulk_write,
        "bytes_expected": p.bulk_bytes,
        "bytes_verified": received,
        "p50_us": None,
        "p99_us": None,
    }


def pingpong_result(
    p: Params, elapsed_s: float, samples_ns: list[int], server_received: int, client_received: int
) -> Measurement:
    samples = sorted(samples_ns)
    return {
        "value": p.pingpong_trips / _elapsed(elapsed_s),
        "unit": "round trips/s",
        "elapsed_s": elapsed_s,
        "ops": p.pingpong_trips,
        "bytes_expected": 2 * p.pingpong_trips * p.pingpong_size,
        "bytes_verified": server_received + client_received,
        "p50_us": percentile(samples, 0.50) / 1000,
        "p99_us": percentile(samples, 0.99) / 1000,
    }


def small_writes_result(p: Params, elapsed_s: float, received: int) -> Measurement:
    return {
        "value": p.small_writes / _elapsed(elapsed_s),
        "unit": "writes/s",
        "elapsed_s": elapsed_s,
        "ops": p.small_writes,
        "bytes_expected": p.small_writes * p.small_size,
        "bytes_verified": received,
        "p50_us": None,
        "p99_us": None,
    }


def connections_result(
    p: Params, elapsed_s: float, server_received: int, client_received: int
) -> Measurement:
    return {
        "value": p.connections / _elapsed(elapsed_s),
        "unit": "connections/s",
        "elapsed_s": elapsed_s,
        "ops": p.connections,
        "bytes_expected": 2 * p.connections * p.connection_bytes,
        "bytes_verified": server_received + client_received,
        "p50_us": None,
        "p99_us": None,
    }


def payload(size: int, seed: int = 0) -> bytes:
    """Bytes that are not all alike, so that a misplaced chunk cannot compare equal."""
    pattern = bytes((seed + i) % 251 for i in range(251))
    return (pattern * (size // len(pattern) + 1))[:size]


_MiB = 1024 * 1024


@dataclass(frozen=True)
class Profile:
    """A size of the whole suite: the scenario sizes, repetitions and idle-flow count."""

    name: str
    params: Params
    reps: int
    idle_count: int
    description: str


PROFILES: dict[str, Profile] = {
    "full": Profile("full", Params(), 5, 10_000, "the figures to publish"),
    "quick": Profile(
        "quick",
        Params(bulk_bytes=64 * _MiB, pingpong_trips=2_000, small_writes=20_000,
               connections=100, timeout=60.0),
        3, 10_000, "a first look in under a minute",
    ),
    "tiny": Profile(
        "tiny",
        Params(bulk_bytes=1 * _MiB, pingpong_trips=100, small_writes=1_000,
               connections=10, timeout=30.0),
        1, 1_000, "for tests: checks that every stack runs and verifies, in seconds",
    ),
}
