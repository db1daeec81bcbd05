"""Copying between flows, as bookkeeping and policy with no I/O: ``Relay``, ``ProxyRelay``.

An adapter's ``copy`` and ``proxy`` are loops that read, write and do what these objects say
next; the rules live here once, so that every adapter follows them and a test checks them
without a network. The caller's clock is passed in as ``now`` (seconds, any monotonic origin).

The rules, for one direction src -> dst (they fix what socat, nc and mirage's ``proxy`` get
wrong: a reset passed on as a clean end, a reply lost after a timer, a hang on half-close):

- ``Eof()`` from src: shut dst's write side down (a FIN); the other direction keeps going, with
  no timer, since a half-closed connection is legal forever.
- ``Error`` from src (a reset, a truncation): abort dst, so that its peer sees a reset too and
  can never take the truncation for a clean end.
- ``Error`` writing to dst: abort src, whose data can no longer be delivered.
- ``Eof()`` writing to dst (its write side was shut down by someone else): shut src's read side
  down, since nothing more can be delivered; the direction ends.
- An idle timeout, only when asked for: no byte moved either way for that long ends both
  directions with ``ErrorKind.TIMED_OUT`` and both flows are aborted. It is in the result.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from ._errors import ErrorKind, FlowError, FlowUsageError
from ._results import Eof, Error, Ok, ReadResult, WriteResult

__all__ = ["CopyStats", "ProxyRelay", "ProxyResult", "Relay", "RelayStep"]


@dataclass(frozen=True, slots=True)
class CopyStats:
    """What one direction of a copy moved, and how it ended.

    ``read_ops`` counts reads that returned data, ``write_ops`` writes that were accepted;
    ``started`` and ``ended`` are the caller's clock (``ended`` is ``None`` while running) and
    ``end`` is the ``Eof()`` or ``Error`` that ended the direction.
    """

    read_bytes: int = 0
    read_ops: int = 0
    write_bytes: int = 0
    write_ops: int = 0
    started: float = 0.0
    ended: float | None = None
    end: Eof | Error | None = None

    @property
    def duration(self) -> float:
        """Seconds from start to end; 0.0 while running. It may be 0.0 after the end too,
        so a rate computed from it must check first."""
        return 0.0 if self.ended is None else self.ended - self.started


@dataclass(frozen=True, slots=True)
class ProxyResult:
    """Both directions of a proxy, and the error that ended it (``None`` for a clean end:
    both directions ended with ``Eof()``)."""

    a_to_b: CopyStats
    b_to_a: CopyStats
    error: FlowError | None


class RelayStep(enum.Enum):
    """What a copy loop does next."""

    READ = "read from the source"
    WRITE = "write the data just read (Relay.pending) to the destination"
    SHUTDOWN_DST = "shut the destination's write side down, then stop"
    ABORT_DST = "abort the destination, then stop"
    SHUTDOWN_SRC = "shut the source's read side down, then stop"
    ABORT_SRC = "abort the source, then stop"
    STOP = "stop: the direction ended already"

    def __repr__(self) -> str:
        return f"RelayStep.{self.name}"


class Relay:
    """One direction of a copy, src -> dst: its counts, and what to do after each outcome.

    The loop reads from src and passes the result to ``on_read``; when told ``RelayStep.WRITE``, it
    writes ``pending`` to dst and passes that result to ``on_write``; any other step is the
    last one. A call out of turn raises ``FlowUsageError`` and changes nothing. Once the
    direction ended (``done``), outcomes still arriving (a read woken by the abort of an idle
    timeout, say) are ignored and answered with ``RelayStep.STOP``.

    ``errors`` collects the error that ends this direction, if one does: a ``ProxyRelay``
    gives both directions the same list, so that the first error is known.
    """

    __slots__ = ("_end", "_ended", "_errors", "_expect", "_last", "_pending", "_read_bytes",
                 "_read_ops", "_started", "_write_bytes", "_write_ops")

    def __init__(self, now: float, *, errors: list[FlowError] | None = None) -> None:
        _check_now(now, None)
        self._started = self._last = now
        self._ended: float | None = None
        self._end: Eof | Error | None = None
        self._errors: list[FlowError] = [] if errors is None else errors
        self._expect = RelayStep.READ
        self._pending = b""
        self._read_bytes = self._read_ops = self._write_bytes = self._write_ops = 0

    @property
    def stats(self) -> CopyStats:
        return CopyStats(self._read_bytes, self._read_ops, self._write_bytes, self._write_ops,
                         self._started, self._ended, self._end)

    @property
    def done(self) -> bool:
        return self._end is not None

    @property
    def pending(self) -> bytes:
        """The data read and not yet written: what ``RelayStep.WRITE`` writes."""
        return self._pending

    @property
    def last_active(self) -> float:
        """When data last moved (or the start): what an idle timeout counts from."""
        return self._last

    def on_read(self, result: ReadResult, now: float) -> RelayStep:
        """The source's ``read`` returned ``result``: ``WRITE`` its data, or the last step."""
        if self.done:
            return RelayStep.STOP
        self._check_turn(RelayStep.READ, now)
        match result:
            case Ok(data) if isinstance(data, bytes) and data:
                self._read_bytes += len(data)
                self._read_ops += 1
                self._last = now
                self._pending = data
                self._expect = RelayStep.WRITE
                return RelayStep.WRITE
            case Eof():
                self._finish(result, now)
                return RelayStep.SHUTDOWN_DST
            case Error(error):
                self._finish(result, now, error)
                return RelayStep.ABORT_DST
        raise TypeError(f"on_read() takes a read's result (Ok with bytes, Eof, Error), "
                        f"not {result!r}")

    def on_write(self, result: WriteResult, now: float) -> RelayStep:
        """The destination's ``write`` of ``pending`` returned ``result``: ``READ`` on, or
        the last step."""
        if self.done:
            return RelayStep.STOP
        self._check_turn(RelayStep.WRITE, now)
        match result:
            case Ok(None):
                self._write_bytes += len(self._pending)
                self._write_ops += 1
                self._last = now
                self._pending = b""
                self._expect = RelayStep.READ
                return RelayStep.READ
            case Eof():
                self._finish(result, now)
                return RelayStep.SHUTDOWN_SRC
            case Error(error):
                self._finish(result, now, error)
                return RelayStep.ABORT_SRC
        raise TypeError(f"on_write() takes a write's result (Ok(None), Eof, Error), "
                        f"not {result!r}")

    def stop(self, error: FlowError, now: float) -> None:
        """End the direction from outside (an idle timeout): ``error`` is how it ended.
        Nothing changes once the direction ended."""
        if not isinstance(error, FlowError):
            raise TypeError(f"stop() takes a FlowError, not {type(error).__name__}")
        _check_now(now, self._last)
        if not self.done:
            self._finish(Error(error), now, error)

    def _check_turn(self, step: RelayStep, now: float) -> None:
        if self._expect is not step:
            raise FlowUsageError(f"the relay waits for on_{self._expect.name.lower()}(), "
                                 f"not on_{step.name.lower()}()")
        _check_now(now, self._last)

    def _finish(self, end: Eof | Error, now: float, error: FlowError | None = None) -> None:
        self._end = end
        self._ended = now
        self._pending = b""
        if error is not None:
            self._errors.append(error)

    def __repr__(self) -> str:
        return f"<Relay {self.stats!r}>"


class ProxyRelay:
    """Both directions of a proxy between flows a and b, and its optional idle timeout.

    The adapter runs one copy loop per direction (``a_to_b``, ``b_to_a``) and, with an idle
    timeout, a watcher that sleeps until ``deadline`` and then calls ``expire``: when that
    returns ``True``, the watcher aborts both flows.
    """

    __slots__ = ("_errors", "a_to_b", "b_to_a", "idle_timeout")

    def __init__(self, now: float, *, idle_timeout: float | None = None) -> None:
        if idle_timeout is not None:
            _check_seconds("idle_timeout", idle_timeout)
            if idle_timeout == 0:
                raise ValueError("idle_timeout must be more than 0 seconds (None: no timeout)")
        _check_now(now, None)
        self.idle_timeout = idle_timeout
        self._errors: list[FlowError] = []
        self.a_to_b = Relay(now, errors=self._errors)
        self.b_to_a = Relay(now, errors=self._errors)

    @property
    def done(self) -> bool:
        return self.a_to_b.done and self.b_to_a.done

    @property
    def deadline(self) -> float | None:
        """When the proxy times out unless data moves first; ``None`` without an idle
        timeout, or once both directions ended."""
        if self.idle_timeout is None or self.done:
            return None
        return max(self.a_to_b.last_active, self.b_to_a.last_active) + self.idle_timeout

    def expire(self, now: float) -> bool:
        """At ``now``, end every running direction with ``TIMED_OUT`` if the deadline has
        passed; ``True`` then (abort both flows), else ``False``."""
        _check_now(now, None)
        deadline = self.deadline
        if deadline is None or now < deadline:
            return False
        error = FlowError(ErrorKind.TIMED_OUT,
                          detail=f"no data moved either way for {self.idle_timeout:g} s")
        for relay in (self.a_to_b, self.b_to_a):
            relay.stop(error, now)
        return True

    @property
    def result(self) -> ProxyResult:
        return ProxyResult(self.a_to_b.stats, self.b_to_a.stats,
                           self._errors[0] if self._errors else None)

    def __repr__(self) -> str:
        return f"<ProxyRelay {self.result!r}>"


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not 0 <= value < math.inf:  # also refuses NaN
        raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")


def _check_now(now: object, last: float | None) -> None:
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise TypeError(f"now must be a number of seconds from the caller's clock, not {now!r}")
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, not {now!r}")
    if last is not None and now < last:
        raise ValueError(f"now went back in time: {now!r} after {last!r}")
