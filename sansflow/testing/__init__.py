"""Test tools for sansflow and for protocols built on it.

``FlowPair`` joins two flows in memory through a deterministic wire. It needs nothing but
sansflow; the hypothesis strategies and state-machine base class live in
``sansflow.testing.stateful`` (it needs the ``hypothesis`` extra).
"""

from ._pair import FlowPair, Wire

__all__ = ["FlowPair", "Wire"]
