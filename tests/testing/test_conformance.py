"""The conformance kit, run on every adapter and on pairs of different adapters.

First the kit itself: it passes on the in-memory reference adapter under both anyio backends,
and each check fails on an adapter broken in the way that check is about. Then every adapter,
over loopback TCP and over ``socket.socketpair()``, and adapters talking to each other.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from sansflow import WOULD_WAIT, Eof, Error, ErrorKind, FlowState, Ok, ReadResult, Shutdown
from sansflow.testing import conformance as kit
from sansflow.testing._memory import MemoryFlow, memory_flow_pair
from sansflow.testing._pair import FlowPair
from sansflow.testing.conformance._runner import _fail
from sansflow.testing.conformance._tools import _tasks

if TYPE_CHECKING:
    from sansflow.adapters.asyncio import AsyncioFlow
    from sansflow.adapters.socket import SocketFlow
    from sansflow.adapters.trio import TrioFlow

    def adapters_fit_the_protocols(
        a: AsyncioFlow, t: TrioFlow, s: SocketFlow, m: MemoryFlow, loop: kit.LoopThread
    ) -> list[kit.AsyncFlowLike]:
        """mypy checks that every adapter's flow has the API the kit drives."""
        blocking: kit.BlockingFlowLike = s
        return [a, t, m, kit.threaded(blocking), kit.bridged(t, loop)]


Pair = tuple[kit.AsyncFlowLike, kit.AsyncFlowLike]
PairFactory = Callable[[], Awaitable[Pair]]

BACKENDS = ["asyncio", "trio"]
CHECK_TIMEOUT = 20.0

# Every check runs on every adapter over loopback TCP (asyncio, uvloop, whose transports are
# its own code, trio and socket; see SETUPS) and on the in-memory pair. Each variant of those
# changes one thing about the pair and runs the checks whose outcome that thing can change;
# the others take the same code path as the plain run, so running them again checks nothing
# more.
#
# Small limits change when a flow waits and pauses: the checks about waiting, limits and
# the queue (also what test_conformance_tls.py runs with limits below one TLS record).
LIMITED = ("duplex", "close_waits_for_peer", "state_half_closed_remote", "large_backlog",
           "water_marks", "write_returns_when_queued", "shutdown_during_write", "many_buffers",
           "abort_wakes_waiters", "cancelled_write", "writable_buffer_reuse")
# Another transport (a socketpair: AF_UNIX, with its own buffers, no reset, and no TCP_INFO
# for close() to wait on) changes what crosses the wire and when: data both ways, the FIN, the
# reset, the peer's reading pace, the close handshake. Left out are the checks that never
# reach the wire: arguments, busy guards, buffer types and ownership, the flow's own queue and
# vectored sends, cancelled reads and writes.
WIRE = ("round_trip", "duplex", "state_half_closed_local", "close_waits_for_peer",
        "state_half_closed_remote", "state_closed", "eof_is_sticky", "error_is_sticky",
        "writes_after_peer_eof", "large_backlog", "water_marks", "close_deadline",
        "close_deadline_while_flushing", "shutdown_during_write", "abort_ends_close",
        "abort_wakes_waiters", "peer_reset_wakes_waiters", "cancelled_close", "shutdown_read",
        "shutdown_both")
# Another adapter at the other end (a cross pair), whose own runs check it fully: what the two
# adapters do to each other through the wire, with each one as ``a``: data both ways under
# backpressure, one's FIN or reset waking the other, and close() waiting on the other's EOF.
INTERACTING = ("duplex", "close_waits_for_peer", "state_half_closed_remote", "large_backlog",
               "water_marks", "close_deadline", "abort_wakes_waiters", "peer_reset_wakes_waiters",
               "cancelled_close")


def run(check: kit.Check, make_pair: PairFactory, backend: str,
        options: dict[str, Any] | None = None, timeout: float = CHECK_TIMEOUT) -> None:
    anyio.run(partial(kit.run_check, check, make_pair, timeout=timeout),
              backend=backend, backend_options=options)


def by_name(checks: Iterable[kit.Check]) -> list[Any]:
    return [pytest.param(check, id=check.name) for check in checks]


# -- the kit on the in-memory adapter --------------------------------------------------------


@pytest.mark.parametrize("check", by_name(kit.CHECKS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_pair_passes(backend: str, check: kit.Check) -> None:
    run(check, memory_flow_pair, backend)


# A limit variant, like the adapters' small-limits runs below: the checks about waiting and
# limits (LIMITED), with a wire that carries at most 500 bytes at a time.
@pytest.mark.parametrize("check", by_name(kit.get_check(name) for name in LIMITED))
def test_memory_pair_with_small_limits_passes(check: kit.Check) -> None:
    run(check, partial(memory_flow_pair, high_water=2000, low_water=0, receive_limit=1000,
                       capacity=500), "trio")


def test_check_flow_pair_runs_every_check() -> None:
    ran: list[int] = []

    async def counting() -> Pair:
        ran.append(1)
        return await memory_flow_pair()

    anyio.run(kit.check_flow_pair, counting, backend="asyncio")
    assert len(ran) == len(kit.CHECKS)
    ran.clear()
    anyio.run(partial(kit.check_flow_pair, counting, supports_cancellation=False,
                      checks=["round_trip", kit.get_check("cancelled_read")]), backend="trio")
    assert len(ran) == 1


def test_checks_have_unique_names_and_a_contract_row() -> None:
    names = [check.name for check in kit.CHECKS]
    assert len(set(names)) == len(names)
    assert all(check.contract for check in kit.CHECKS)
    assert kit.get_check("round_trip") is kit.CHECKS[0]
    for name in LIMITED + WIRE + INTERACTING:
        kit.get_check(name)
    with pytest.raises(KeyError, match="no conformance check named 'nope'"):
        kit.get_check("nope")


def test_importing_sansflow_testing_does_not_import_anyio() -> None:
    code = ("import sys, sansflow.testing; "
            "print(sorted(m for m in ('anyio', 'hypothesis', 'trio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- the kit finds broken adapters -----------------------------------------------------------
#
# Each broken flow below breaks one promise of the contract; the check about that promise must
# fail on it, naming the contract row.


class LosesDataOnCancelledRead(MemoryFlow):
    async def read(self, max_bytes: int | None = None) -> ReadResult:
        while (result := self._core.read(max_bytes)) is WOULD_WAIT:
            await self._link.changed()
        self._link.pump()
        await anyio.sleep(0)  # a checkpoint after taking the data: cancelling here loses it
        return result


class QueuesPartOfAWrite(MemoryFlow):
    async def write(self, data: bytes | bytearray | memoryview) -> Any:
        data = bytes(data)
        half = len(data) // 2
        if half and self._core.queued > self._core.low_water:
            while self._core.write(data[:half]) is WOULD_WAIT:
                await self._link.changed()
            self._link.pump()
            data = data[half:]
        return await super().write(data)


class ClosesWithoutWaiting(MemoryFlow):
    async def close(self, timeout: float | None = None) -> None:
        self._core.close()
        self._link.pump()


class HasNoBusyGuard(MemoryFlow):
    async def read(self, max_bytes: int | None = None) -> ReadResult:
        while (result := self._core.read(max_bytes)) is WOULD_WAIT:
            await self._link.changed()
        self._link.pump()
        return result


class HasNoWriteBusyGuard(MemoryFlow):
    async def write(self, data: bytes | bytearray | memoryview) -> Any:
        while (result := self._core.write(data)) is WOULD_WAIT:
            await self._link.changed()
        self._link.pump()
        return result


class SharesWritableBuffers(MemoryFlow):
    async def write(self, data: bytes | bytearray | memoryview) -> Any:
        if not isinstance(data, bytes):
            data = memoryview(data).toreadonly()  # the core then keeps it without a copy
        return await super().write(data)


class LosesGeneratorOnRetry(MemoryFlow):
    async def writev(self, buffers: Iterable[bytes | bytearray | memoryview]) -> Any:
        while (result := self._core.writev(buffers)) is WOULD_WAIT:
            await self._link.changed()
        self._link.pump()
        return result


class IgnoresShutdownWrite(MemoryFlow):
    async def shutdown(self, how: Shutdown) -> None:
        if how is not Shutdown.WRITE:
            await super().shutdown(how)


class AbortsWithWrongKindAtDeadline(MemoryFlow):
    async def close(self, timeout: float | None = None) -> None:
        with anyio.move_on_after(timeout):
            await super().close()
        await self._abort(None)


class DoesNotAbortCancelledClose(MemoryFlow):
    async def close(self, timeout: float | None = None) -> None:
        self._core.close()
        self._link.pump()
        while self._core.state is not FlowState.CLOSED:
            await self._link.changed()


class ReportsErrorsAsEof(MemoryFlow):
    async def read(self, max_bytes: int | None = None) -> ReadResult:
        result = await super().read(max_bytes)
        return Eof() if isinstance(result, Error) else result


class AcceptsZeroMaxBytes(MemoryFlow):
    async def read(self, max_bytes: int | None = None) -> ReadResult:
        if max_bytes == 0:
            return Eof()
        return await super().read(max_bytes)


class FlushesBeforeTheDeadline(MemoryFlow):
    async def close(self, timeout: float | None = None) -> None:
        self._core.close()
        self._link.pump()
        while self._core.queued:  # the deadline should already be running here
            await self._link.changed()
        await super().close(timeout)


class DropsBuffersPastIovMax(MemoryFlow):
    async def writev(self, buffers: Iterable[bytes | bytearray | memoryview]) -> Any:
        return await super().writev(list(buffers)[:1024])


class AbortDoesNotWake(MemoryFlow):
    async def abort(self) -> None:
        self._core.abort()


class ReportsAnotherHighWater(MemoryFlow):
    @property
    def high_water(self) -> int:
        return 1024


def broken_pair(cls: type[MemoryFlow], *, high_water: int = 64 * 1024) -> PairFactory:
    async def make() -> Pair:
        a, b = await memory_flow_pair(high_water=high_water)
        broken = cls(a._core, a._link)
        return broken, b

    return make


BROKEN = [
    (LosesDataOnCancelledRead, "cancelled_read", "a cancelled read lost or repeated data"),
    (QueuesPartOfAWrite, "cancelled_write", "a write was queued in part"),
    (ClosesWithoutWaiting, "close_waits_for_peer", "should still be waiting"),
    (HasNoBusyGuard, "busy_read", "expected one BusyError"),
    (HasNoWriteBusyGuard, "busy_write", "expected one BusyError"),
    (SharesWritableBuffers, "writable_buffer_reuse", "b received: expected"),
    (LosesGeneratorOnRetry, "large_backlog", "not the 4194304 a wrote"),
    (IgnoresShutdownWrite, "state_half_closed_local", "HALF_CLOSED_LOCAL"),
    (AbortsWithWrongKindAtDeadline, "close_deadline", "expected kind TIMED_OUT"),
    (DoesNotAbortCancelledClose, "cancelled_close", "a.state: expected FlowState.CLOSED"),
    (ReportsErrorsAsEof, "error_is_sticky",
     "expected Error(error=FlowError(ErrorKind.ABORTED)), got Eof()"),
    (AcceptsZeroMaxBytes, "bad_arguments", "a.read(0) returned Eof()"),
    (FlushesBeforeTheDeadline, "close_deadline_while_flushing", "took more than 0.5 s"),
    (DropsBuffersPastIovMax, "many_buffers", "no progress after"),
    (AbortDoesNotWake, "abort_wakes_waiters", "after abort() took more than 0.2 s"),
    (ReportsAnotherHighWater, "water_marks", "above high_water (1024)"),
]


@pytest.mark.parametrize(("cls", "name", "message"), BROKEN,
                         ids=[cls.__name__ for cls, _, _ in BROKEN])
def test_kit_finds_a_broken_adapter(cls: type[MemoryFlow], name: str, message: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # What a working adapter does at once need not be waited for long here. Each module of
    # checks holds its own binding of the timings it reads.
    shortened = {"_BUSY_WAIT": 0.2, "_WAKE_WAIT": 0.2, "_CLOSE_WAIT": 0.5}
    for module in vars(kit).values():
        for timing, seconds in shortened.items():
            if isinstance(module, ModuleType) and hasattr(module, timing):
                monkeypatch.setattr(module, timing, seconds)
    check = kit.get_check(name)
    with pytest.raises(kit.ConformanceError) as caught:
        run(check, broken_pair(cls), "asyncio", timeout=1.5)
    text = str(caught.value)
    assert text.startswith(f"{name} failed (contract: {check.contract}): ")
    assert message in text
    assert caught.value.failures[0][0] is check


def test_check_flow_pair_reports_every_failure() -> None:
    with pytest.raises(kit.ConformanceError) as caught:
        anyio.run(partial(kit.check_flow_pair, broken_pair(ClosesWithoutWaiting),
                          checks=["round_trip", "close_waits_for_peer", "state_closed"]),
                  backend="asyncio")
    names = [check.name for check, _ in caught.value.failures]
    assert names == ["close_waits_for_peer", "state_closed"]
    assert len(str(caught.value).splitlines()) == 2


# -- the bridge: the in-memory pair living in another thread's event loop ----------------------


# The cross-adapter runs below bridge into trio threads; here every check also goes through
# an asyncio thread, driven from trio, and a few through a trio thread, driven from asyncio.
BRIDGED_RUNS = [
    pytest.param("trio", "asyncio", check, id=f"trio-to-asyncio-{check.name}")
    for check in kit.CHECKS if not check.needs_cancellation
] + [
    pytest.param("asyncio", "trio", kit.get_check(name), id=f"asyncio-to-trio-{name}")
    for name in ("round_trip", "close_waits_for_peer", "abort_wakes_waiters", "busy_write")
]


@pytest.mark.parametrize(("backend", "loop_kind", "check"), BRIDGED_RUNS)
def test_bridged_memory_pair_passes(backend: str, loop_kind: str, check: kit.Check) -> None:
    start = kit.trio_loop_thread if loop_kind == "trio" else kit.asyncio_loop_thread
    with start() as loop:
        async def make() -> Pair:
            a, b = loop.call(memory_flow_pair)
            return kit.bridged(a, loop), kit.bridged(b, loop)

        run(check, make, backend)


# -- every adapter -----------------------------------------------------------------------------


def adapter(name: str) -> ModuleType:
    module: ModuleType = pytest.importorskip(f"sansflow.adapters.{name}")
    return module


def tcp_sockets() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (client, server), made with the standard library."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        client = socket.create_connection(listener.getsockname()[:2], timeout=10)
        server, _ = listener.accept()
    for sock in (client, server):
        sock.setblocking(True)
        sock.settimeout(None)
    return client, server


def raw_pair(transport: str) -> tuple[socket.socket, socket.socket]:
    return tcp_sockets() if transport == "tcp" else socket.socketpair()


@dataclass
class Setup:
    """How to make a pair for one run: the caller's backend, and the two ends."""

    name: str
    backend: str
    make: Callable[[ExitStack], PairFactory]
    options: dict[str, Any] = field(default_factory=dict)
    cancellation: bool = True
    only: tuple[str, ...] | None = None  # the checks to run, if not all


def async_pair(name: str, transport: str, **limits: int) -> Callable[[ExitStack], PairFactory]:
    """Two flows of the async adapter ``name`` over loopback TCP or a socketpair."""
    def setup(stack: ExitStack) -> PairFactory:
        sf = adapter(name)

        async def make() -> Pair:
            if transport == "tcp":
                with socket.create_server(("127.0.0.1", 0)) as listener:
                    listener.settimeout(10)
                    a = await sf.connect("127.0.0.1", listener.getsockname()[1], **limits)
                    server, _ = listener.accept()
                return a, await sf.wrap(server, **limits)
            left, right = socket.socketpair()
            return await sf.wrap(left, **limits), await sf.wrap(right, **limits)

        return make

    return setup


def socket_pair(transport: str, **limits: int) -> Callable[[ExitStack], PairFactory]:
    def setup(stack: ExitStack) -> PairFactory:
        sf = adapter("socket")

        async def make() -> Pair:
            if transport == "tcp":
                with socket.create_server(("127.0.0.1", 0)) as listener:
                    listener.settimeout(10)
                    a = sf.connect("127.0.0.1", listener.getsockname()[1], **limits)
                    server, _ = listener.accept()
                return kit.threaded(a), kit.threaded(sf.wrap(server, **limits))
            left, right = socket.socketpair()
            return kit.threaded(sf.wrap(left, **limits)), kit.threaded(sf.wrap(right, **limits))

        return make

    return setup


def native(kind: str, sock: socket.socket) -> Callable[[], Awaitable[kit.AsyncFlowLike]]:
    """The end of a cross pair that lives in the caller's loop (or threads, for ``socket``)."""

    async def make() -> kit.AsyncFlowLike:
        sf = adapter(kind)
        if kind == "socket":
            return kit.threaded(sf.wrap(sock))
        flow: kit.AsyncFlowLike = await sf.wrap(sock)
        return flow

    return make


def cross(first: str, second: str, *, swap: bool = False) -> Callable[[ExitStack], PairFactory]:
    """``first`` (client, in the caller's loop) against ``second`` (server); ``second`` runs
    in a loop thread of its own when it is an event-loop adapter."""

    def setup(stack: ExitStack) -> PairFactory:
        adapter(first)
        other = adapter(second)
        loop = None
        if second == "trio":
            loop = stack.enter_context(kit.trio_loop_thread())
        elif second == "asyncio" and first != "socket":
            loop = stack.enter_context(kit.asyncio_loop_thread())

        async def make() -> Pair:
            client, server = tcp_sockets()
            a = await native(first, client)()
            if loop is None:
                b = await native(second, server)()
            else:
                b = kit.bridged(loop.call(other.wrap, server), loop)
            return (b, a) if swap else (a, b)

        return make

    return setup


UVLOOP = {"use_uvloop": True}
# Limits far below the defaults (and below the socket buffers): more waiting, more pausing.
SMALL = {"high_water": 4096, "low_water": 1024, "receive_limit": 4096}

SETUPS = [
    Setup("asyncio-tcp", "asyncio", async_pair("asyncio", "tcp")),
    Setup("uvloop-tcp", "asyncio", async_pair("asyncio", "tcp"), UVLOOP),
    Setup("trio-tcp", "trio", async_pair("trio", "tcp")),
    Setup("socket-tcp", "asyncio", socket_pair("tcp"), cancellation=False),
    Setup("asyncio-socketpair", "asyncio", async_pair("asyncio", "socketpair"), only=WIRE),
    Setup("uvloop-socketpair", "asyncio", async_pair("asyncio", "socketpair"), UVLOOP,
          only=WIRE),
    Setup("trio-socketpair", "trio", async_pair("trio", "socketpair"), only=WIRE),
    Setup("socket-socketpair", "trio", socket_pair("socketpair"), cancellation=False,
          only=WIRE),
    Setup("asyncio-small-limits", "asyncio", async_pair("asyncio", "tcp", **SMALL), only=LIMITED),
    Setup("trio-small-limits", "trio", async_pair("trio", "tcp", **SMALL), only=LIMITED),
    Setup("socket-small-limits", "asyncio", socket_pair("tcp", **SMALL), cancellation=False,
          only=LIMITED),
    # Cross-adapter pairs, each way round: ``a`` is the client, then the server.
    Setup("asyncio-client-trio-server", "asyncio", cross("asyncio", "trio"), only=INTERACTING),
    Setup("trio-server-asyncio-client", "asyncio", cross("asyncio", "trio", swap=True),
          cancellation=False, only=INTERACTING),
    Setup("socket-client-asyncio-server", "asyncio", cross("socket", "asyncio"),
          cancellation=False, only=INTERACTING),
    Setup("asyncio-server-socket-client", "asyncio", cross("socket", "asyncio", swap=True),
          only=INTERACTING),
    Setup("trio-client-socket-server", "trio", cross("trio", "socket"), only=INTERACTING),
    Setup("socket-server-trio-client", "trio", cross("trio", "socket", swap=True),
          cancellation=False, only=INTERACTING),
]

def adapter_runs() -> Iterator[Any]:
    for setup in SETUPS:
        for check in kit.CHECKS:
            if check.needs_cancellation and not setup.cancellation:
                continue
            if setup.only is not None and check.name not in setup.only:
                continue
            yield pytest.param(setup, check, id=f"{setup.name}-{check.name}")


@pytest.mark.parametrize(("setup", "check"), list(adapter_runs()))
def test_adapter_passes(setup: Setup, check: kit.Check) -> None:
    with ExitStack() as stack:
        make = setup.make(stack)
        run(check, make, setup.backend, setup.options)


# -- the pieces the kit is made of -------------------------------------------------------------


def threaded_socketpair() -> PairFactory:
    sf = adapter("socket")

    async def make() -> Pair:
        left, right = socket.socketpair()
        return kit.threaded(sf.wrap(left)), kit.threaded(sf.wrap(right))

    return make


def test_a_failing_check_ends_despite_a_read_stuck_in_a_thread() -> None:
    async def stuck_then_failing(ctx: kit.CheckContext) -> None:
        async with _tasks(ctx) as group:
            group.start_soon(ctx.a.read)  # blocks in a worker thread: cannot be cancelled
            await anyio.sleep(0.05)
            raise _fail("the first failure")

    check = kit.Check("stuck_then_failing", "a row", stuck_then_failing)
    with pytest.raises(kit.ConformanceError, match=r"the first failure$"):
        run(check, threaded_socketpair(), "asyncio", timeout=10)


def test_a_call_stuck_in_a_thread_times_out() -> None:
    async def stuck(ctx: kit.CheckContext) -> None:
        ctx.step = "reading what never comes"
        await ctx.a.read()

    check = kit.Check("stuck", "a row", stuck)
    with pytest.raises(kit.ConformanceError,
                       match=r"no progress after 0\.3 s while reading what never comes"):
        run(check, threaded_socketpair(), "trio", timeout=0.3)


def test_memory_pair_reports_its_options() -> None:
    async def main() -> None:
        a, b = await memory_flow_pair(high_water=100, low_water=10, receive_limit=50)
        assert (a.high_water, a.low_water, a.receive_limit) == (100, 10, 50)
        assert (a.state, a.error) == (FlowState.OPEN, None)
        assert repr(a).startswith("<sansflow.testing._memory.MemoryFlow <Flow OPEN")
        await a.abort()
        assert b.error is not None
        assert b.error.kind is ErrorKind.RESET

    anyio.run(main, backend="asyncio")


def test_threaded_forwards_to_the_blocking_flow() -> None:
    class Blocking:
        """A blocking flow over one side of a FlowPair whose other side echoes at once."""

        def __init__(self) -> None:
            self.pair = FlowPair()
            self.end = self.pair.a
            self.state = self.end.state

        def __getattr__(self, name: str) -> Any:  # the state view: queued, high_water, ...
            return getattr(self.end, name)

        def read(self, max_bytes: int | None = None) -> Any:
            self.pair.pump()
            return self.end.read(max_bytes)

        def write(self, data: bytes) -> Any:
            result = self.end.write(data)
            self.pair.pump()
            echo = self.pair.b.read()
            self.pair.b.write(echo.value)  # type: ignore[union-attr]
            return result

    async def main() -> None:
        flow = kit.threaded(Blocking())  # type: ignore[arg-type]
        assert await flow.write(b"echo") == Ok(None)
        assert flow.buffered == 0  # the echo waits at the peer until a read pumps the pair
        assert await flow.read(2) == Ok(b"ec")
        assert (flow.queued, flow.buffered) == (0, 2)  # a flow without a core shows its state
        assert flow.high_water == 64 * 1024
        assert repr(flow).startswith("threaded(")

    anyio.run(main, backend="trio")



# -- docs/conformance.md -----------------------------------------------------------------------

DOC = (Path(__file__).resolve().parents[2] / "docs" / "conformance.md").read_text()


def doc_block(name: str) -> str:
    match = re.search(rf"<!-- {name} -->\n```python\n(.*?)```\n<!-- end {name} -->", DOC,
                      re.DOTALL)
    assert match is not None, f"docs/conformance.md has no {name}"
    return match.group(1)


def test_doc_lists_every_check() -> None:
    rows = "".join(
        f"| `{c.name}` | {c.contract} | {'yes' if c.needs_cancellation else ''} |\n"
        for c in kit.CHECKS
    )
    table = "| check | contract row it covers | cancels |\n| --- | --- | --- |\n" + rows
    assert f"<!-- checks -->\n{table}<!-- end checks -->" in DOC


def test_doc_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    adapter("asyncio")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(doc_block("conformance example"), "conformance example", "exec"), namespace)
    assert capsys.readouterr().out == "the adapter keeps the contract\n"


def test_doc_bridge_example_runs() -> None:
    adapter("asyncio")
    adapter("trio")
    exec(compile(doc_block("bridge example"), "bridge example", "exec"), {})
