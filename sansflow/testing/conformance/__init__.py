"""The conformance kit: does an adapter's flow keep the contract (docs/contract.md)?

``check_flow_pair(make_pair)`` runs every check against connected pairs of flows that
``make_pair`` creates, one fresh pair per check, and raises ``ConformanceError`` naming each
failed check, the contract row it covers, and what went wrong. It needs no test framework and
is written against anyio, so the same checks run under asyncio and under trio (a sketch:
``make_pair`` is yours; docs/conformance.md has a test module that runs as it is)::

    anyio.run(check_flow_pair, make_pair, backend="trio")

Blocking adapters are checked through ``threaded(flow)``; flows whose event loop runs in
another thread through ``bridged(flow, loop)``. This package needs anyio (the ``test``
extra); ``sansflow.testing`` itself does not import it.

It is laid out like the contract: ``_runner`` declares, registers and runs checks, ``_tools``
holds what the checks share, ``_wrappers`` the flow protocols and the ``threaded`` and
``bridged`` flows, and each section of docs/contract.md has its module of checks
(``_results``, ``_states``, ``_writing``, ``_reading``, ``_closing``, ``_errors``,
``_cancellation``).
"""

from __future__ import annotations

from .._memory import MemoryFlow, memory_flow_pair
from . import (  # noqa: F401  (importing a section's module registers its checks)
    _cancellation,
    _closing,
    _errors,
    _reading,
    _results,
    _states,
    _writing,
)
from ._runner import (
    _REGISTRY,
    Check,
    CheckContext,
    ConformanceError,
    check_flow_pair,
    get_check,
    run_check,
)
from ._wrappers import (
    AsyncFlowLike,
    BlockingFlowLike,
    BridgedFlow,
    LoopThread,
    PairFactory,
    ThreadedFlow,
    asyncio_loop_thread,
    bridged,
    swapped,
    threaded,
    trio_loop_thread,
)

__all__ = [
    "CHECKS",
    "AsyncFlowLike",
    "BlockingFlowLike",
    "BridgedFlow",
    "Check",
    "CheckContext",
    "ConformanceError",
    "LoopThread",
    "MemoryFlow",
    "PairFactory",
    "ThreadedFlow",
    "asyncio_loop_thread",
    "bridged",
    "check_flow_pair",
    "get_check",
    "memory_flow_pair",
    "run_check",
    "swapped",
    "threaded",
    "trio_loop_thread",
]

# The sections register their checks one module after another; the run order interleaves
# them, quick round trips first. A check missing here fails the import (not in the tuple).
_RUN_ORDER = (
    "round_trip",
    "writev_and_buffer_types",
    "writable_buffer_reuse",
    "duplex",
    "state_open",
    "state_half_closed_local",
    "close_waits_for_peer",
    "state_half_closed_remote",
    "state_closed",
    "eof_is_sticky",
    "error_is_sticky",
    "writes_after_peer_eof",
    "large_backlog",
    "water_marks",
    "close_deadline",
    "close_deadline_while_flushing",
    "shutdown_during_write",
    "write_returns_when_queued",
    "abort_ends_close",
    "many_buffers",
    "abort_wakes_waiters",
    "peer_reset_wakes_waiters",
    "busy_read",
    "busy_write",
    "cancelled_read",
    "cancelled_write",
    "cancelled_close",
    "bad_arguments",
    "shutdown_read",
    "shutdown_both",
)
_REGISTRY.sort(key=lambda check: _RUN_ORDER.index(check.name))

CHECKS: tuple[Check, ...] = tuple(_REGISTRY)
"""Every check, in the order ``check_flow_pair`` runs them."""
