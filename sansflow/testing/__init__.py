"""Test tools for sansflow and for protocols built on it.

``FlowPair`` joins two flows in memory through a deterministic wire. ``ReferenceModel`` is the
contract as plain bookkeeping, and ``CheckedFlow`` a ``Flow`` that checks every call against
it. They need nothing but sansflow; the hypothesis strategies and the state-machine base
class live in ``sansflow.testing.stateful`` (it needs the ``hypothesis`` extra).
"""

from ._model import CheckedFlow, ModelMismatch, ReferenceModel, check_state_move, check_stream
from ._pair import FlowPair, Wire

__all__ = [
    "CheckedFlow",
    "FlowPair",
    "ModelMismatch",
    "ReferenceModel",
    "Wire",
    "check_state_move",
    "check_stream",
]
