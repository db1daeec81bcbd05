"""Test tools for sansflow and for protocols built on it.

``FlowPair`` joins two flows in memory through a deterministic wire. ``ReferenceModel`` is the
contract as plain bookkeeping, and ``CheckedFlow`` a ``Flow`` that checks every call against
it. They need nothing but sansflow; the hypothesis strategies and the state-machine base
class live in ``sansflow.testing.stateful`` (it needs the ``hypothesis`` extra).
``check_anyio_byte_stream`` checks a pair of ``anyio.abc.ByteStream`` against anyio's contract;
it is loaded (with anyio) on first use, so that importing this package needs no anyio.
"""

from typing import TYPE_CHECKING, Any

from ._model import CheckedFlow, ModelMismatch, ReferenceModel, check_state_move, check_stream
from ._pair import FlowPair, Wire

__all__ = [
    "CheckedFlow",
    "FlowPair",
    "ModelMismatch",
    "ReferenceModel",
    "Wire",
    "check_anyio_byte_stream",
    "check_state_move",
    "check_stream",
]

if TYPE_CHECKING:
    from .conformance._anyio_stream import check_anyio_byte_stream


def __getattr__(name: str) -> Any:
    if name == "check_anyio_byte_stream":
        from .conformance._anyio_stream import check_anyio_byte_stream

        return check_anyio_byte_stream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
