"""Benchmarks: sansflow's adapters against the native stacks they stand in for.

``python -m bench --help``, from the root of a clone, says how to run them. Four scenarios on
127.0.0.1 (bulk, ping-pong, small writes, many connections), both ends on the stack under test,
every byte count verified; each run in a process of its own, warmed as a long-running one;
medians of interleaved repetitions, the ratio sansflow / peer per pair in two groups of peer
(the same programming model; raw callbacks, the limit), peak RSS per run and bytes per idle
flow. ``--tls``: the TLS variants of the same scenarios (TLS 1.3, a test CA made at run time
with trustme) and the goals they aim at. ``--scale``: instead, 10,000 connections at once on
each event loop's stacks (``_scale``), idle, then each echoing 4 KiB: memory per connection and
the time to establish and to finish. Not part of the wheel: it ships the library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._common import PROFILES, SCENARIOS, Measurement, Params, Profile
from ._registry import GROUPS, PAIRS, STACKS, TLS_GOALS, Goal, StackSpec

if TYPE_CHECKING:
    from ._harness import run_suite

__all__ = [
    "GROUPS",
    "PAIRS",
    "PROFILES",
    "SCENARIOS",
    "STACKS",
    "TLS_GOALS",
    "Goal",
    "Measurement",
    "Params",
    "Profile",
    "StackSpec",
    "main",
    "run_suite",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench``: run the suite, print the tables, return the exit status."""
    # The harness is imported on use: each run's worker process imports this package too, and
    # should carry as little as possible into its peak RSS and its start-up time.
    from ._harness import main as harness_main

    return harness_main(argv)


def __getattr__(name: str) -> Any:
    if name == "run_suite":
        from ._harness import run_suite

        return run_suite
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
