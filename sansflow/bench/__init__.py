"""Benchmarks: sansflow's adapters against the native stacks they stand in for.

``python -m sansflow.bench --help`` says how to run them. Four scenarios on 127.0.0.1 (bulk,
ping-pong, small writes, many connections), both ends on the stack under test, every byte count
verified; medians of interleaved repetitions, the ratio sansflow / peer per pair, peak RSS per
run and bytes per idle flow.
"""

from ._common import SCENARIOS, Measurement, Params
from ._harness import PROFILES, Profile, main, run_suite
from ._registry import PAIRS, STACKS, StackSpec

__all__ = [
    "PAIRS",
    "PROFILES",
    "SCENARIOS",
    "STACKS",
    "Measurement",
    "Params",
    "Profile",
    "StackSpec",
    "main",
    "run_suite",
]
