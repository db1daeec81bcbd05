"""The scale scenario (``--scale``, not in the default run): many connections open at once.

Every connection is opened, and the server has accepted it, before any sends a byte: they sit
idle together; then each sends ``scale_bytes``, half-closes and reads the echo to EOF. Client
and server run in one process, on one event loop, so each connection holds two descriptors
there: how many fit is bound by RLIMIT_NOFILE, which ``ScaleRun`` raises as far as the process
may (the hard limit, unless it is privileged enough to raise that too), and it runs as many as
fit. Each stack writes the phases in its own idiom; ``ScaleRun`` times them, reads the
process's memory between them and checks every byte of every echo.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import Protocol

from ._common import BACKLOG, Measurement, Params, check, payload
from ._worker import current_rss_kib, peak_rss_kib

__all__ = ["CONNECT_WAVE", "FD_MARGIN", "SCALE", "ScaleMeasurement", "ScaleRun", "raise_nofile"]

SCALE = "scale"
"""The scenario's name in a stack's mapping (not one of ``SCENARIOS``: the default run leaves it
out)."""

FD_MARGIN = 64
"""Descriptors kept for what is not a connection: stdio, the listener, the event loop's own."""

CONNECT_WAVE = BACKLOG // 4
"""Connects are started in waves of this many, each connected and accepted before the next
starts. Ten thousand at once overflow the listen queue (Linux caps it at 4,096 by default)
before the server, on the same loop, accepts them (trio's accepts one per scheduling round);
the kernel drops the overflow, and each dropped connect retries one, two or four seconds later:
the time to establish would be the kernel's backoff."""


class ScaleMeasurement(Measurement):
    """A scale run: ``value`` is connections per second over both phases."""

    connections: int
    """How many were open at once (``connections_wanted``, unless RLIMIT_NOFILE is lower)."""
    connections_wanted: int
    nofile_limit: int | None
    """RLIMIT_NOFILE (soft) as the run had it once raised; ``None``: unlimited or unknown."""
    nofile_hard: int | None
    established_s: float
    """From the first connect until every client is connected and the server accepted all."""
    finished_s: float
    """From the first send until every echo is read to EOF and every server end saw EOF."""
    rss_base_kib: int | None
    """Resident set once the server listens, before any connection (``None`` off Linux)."""
    rss_idle_kib: int | None
    """Resident set with every connection open and idle."""
    rss_peak_kib: int | None
    """The process's high-water mark after the echoes: meaningful in a process of its own."""
    echoes_verified: int


def raise_nofile(wanted: int) -> tuple[int | None, int | None]:
    """Raise this process's RLIMIT_NOFILE towards ``wanted``; returns (soft, hard) after,
    ``None`` for unlimited (or where there is no ``resource`` module)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return None, None
    limit, infinity = resource.RLIMIT_NOFILE, resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(limit)
    if soft != infinity and soft < wanted:
        if hard != infinity and hard < wanted:
            # Raising the hard limit takes privilege (CAP_SYS_RESOURCE): try, else live with it.
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(limit, (wanted, wanted))
            soft, hard = resource.getrlimit(limit)
        if soft < wanted:
            # Some systems cap the soft limit below the hard one (macOS: OPEN_MAX).
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(limit, (wanted if hard == infinity else min(wanted, hard),
                                           hard))
        soft, hard = resource.getrlimit(limit)
    return (None if soft == infinity else soft), (None if hard == infinity else hard)


class _Event(Protocol):
    """An event of any of the loops: asyncio's, trio's, anyio's."""

    def set(self) -> object: ...

    async def wait(self) -> object: ...


class ScaleRun:
    """One scale run's plan, clock, memory readings and echo checks.

    A stack, once its server listens, calls ``open_all`` with its way to open a wave of
    connections; calls ``accepted`` as its server accepts each, ``echoed`` for each piece of
    echo a client reads, and ``finished`` with what each server end and each client counted.
    """

    def __init__(self, p: Params) -> None:
        self.wanted = p.scale_connections
        if self.wanted < 1:
            raise ValueError(f"scale_connections must be at least 1, not {self.wanted}")
        self.nofile_limit, self.nofile_hard = raise_nofile(2 * self.wanted + FD_MARGIN)
        fit = self.wanted if self.nofile_limit is None else (self.nofile_limit - FD_MARGIN) // 2
        self.connections = min(self.wanted, fit)
        if self.connections < 1:
            raise OSError(f"RLIMIT_NOFILE {self.nofile_limit} leaves room for no connection")
        self.data = payload(p.scale_bytes)
        self._view = memoryview(self.data)
        self._started = 0.0
        self.established_s = 0.0
        self.rss_base_kib: int | None = None
        self.rss_idle_kib: int | None = None
        self._accepted = 0
        self._awaited = 0
        self._wake: Callable[[], object] | None = None

    async def open_all(self, open_wave: Callable[[int], Awaitable[object]],
                       new_event: Callable[[], _Event]) -> None:
        """Open every connection: ``open_wave(n)`` opens ``n`` at once, and each wave is
        accepted before the next starts; timed and measured from ``start`` to
        ``established``."""
        self.start()
        for wave in self.waves():
            accepted = new_event()
            self.expect_accepts(wave, accepted.set)
            await open_wave(wave)
            await accepted.wait()
        self.established()

    def waves(self) -> list[int]:
        """How many connects to start in each wave (``CONNECT_WAVE``)."""
        full, rest = divmod(self.connections, CONNECT_WAVE)
        return [CONNECT_WAVE] * full + ([rest] if rest else [])

    def expect_accepts(self, count: int, wake: Callable[[], object]) -> None:
        """Call ``wake`` once the server has accepted ``count`` more connections."""
        self._awaited += count
        self._wake = wake

    def accepted(self) -> None:
        """The server accepted a connection."""
        self._accepted += 1
        if self._accepted == self._awaited and self._wake is not None:
            wake, self._wake = self._wake, None
            wake()

    def start(self) -> None:
        gc.collect()
        self.rss_base_kib = current_rss_kib()
        self._started = perf_counter()

    def established(self) -> None:
        self.established_s = perf_counter() - self._started
        gc.collect()
        self.rss_idle_kib = current_rss_kib()
        self._started = perf_counter()

    def echoed(self, got: int, piece: bytes | bytearray | memoryview) -> int:
        """Check ``piece``, read after ``got`` bytes of one echo; returns the bytes read now."""
        end = got + len(piece)
        check(self._view[got:end] == piece, "an echo differs from what was sent")
        return end

    def finished(self, served: Sequence[int], echoed: Sequence[int]) -> ScaleMeasurement:
        finished_s = perf_counter() - self._started
        peak = peak_rss_kib()
        n, size = self.connections, len(self.data)
        check(len(served) == n, f"{n - len(served)} of {n} server ends did not see EOF")
        check(len(echoed) == n, f"{n - len(echoed)} of {n} clients did not finish")
        whole = sum(1 for got in echoed if got == size)
        check(whole == n, f"{n - whole} of {n} echoes came back short")
        elapsed = self.established_s + finished_s
        return {
            "value": n / max(elapsed, 1e-9),
            "unit": "connections/s",
            "elapsed_s": elapsed,
            "ops": n,
            "bytes_expected": 2 * n * size,
            "bytes_verified": sum(served) + sum(echoed),
            "p50_us": None,
            "p99_us": None,
            "connections": n,
            "connections_wanted": self.wanted,
            "nofile_limit": self.nofile_limit,
            "nofile_hard": self.nofile_hard,
            "established_s": self.established_s,
            "finished_s": finished_s,
            "rss_base_kib": self.rss_base_kib,
            "rss_idle_kib": self.rss_idle_kib,
            "rss_peak_kib": peak,
            "echoes_verified": whole,
        }
