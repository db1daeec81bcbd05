"""sansflow: a byte stream that behaves correctly (half-close, backpressure, clean shutdown,
errors that never lose data), as a sans-IO state machine with adapters for any event loop.

The core is ``Flow``; ``sansflow.adapters`` carries it over asyncio, trio and blocking sockets,
and ``sansflow.testing`` joins two flows in memory for tests.
"""

from typing import TYPE_CHECKING, Any

from ._adapter import (
    AdapterFlow,
    AsyncAdapterFlow,
    AsyncDriverFlow,
    BlockingAdapterFlow,
    BlockingDriverFlow,
)
from ._api import AsyncFlow, BlockingFlow, BrokenFlowError, FlowView
from ._errors import BusyError, ErrorKind, FlowError, FlowUsageError, error_message
from ._flow import HIGH_WATER, LOW_WATER, RECEIVE_LIMIT, Buffer, Flow
from ._relay import CopyStats, ProxyRelay, ProxyResult, Relay, RelayStep
from ._results import WOULD_WAIT, Eof, Error, Ok, ReadResult, WouldWait, WriteResult
from ._state import FlowState, ReceiveState, SendState, Shutdown

if TYPE_CHECKING:
    from ._tls import TlsInfo, TlsLayer

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "RECEIVE_LIMIT",
    "WOULD_WAIT",
    "AdapterFlow",
    "AsyncAdapterFlow",
    "AsyncDriverFlow",
    "AsyncFlow",
    "BlockingAdapterFlow",
    "BlockingDriverFlow",
    "BlockingFlow",
    "BrokenFlowError",
    "Buffer",
    "BusyError",
    "CopyStats",
    "Eof",
    "Error",
    "ErrorKind",
    "Flow",
    "FlowError",
    "FlowState",
    "FlowUsageError",
    "FlowView",
    "Ok",
    "ProxyRelay",
    "ProxyResult",
    "ReadResult",
    "ReceiveState",
    "Relay",
    "RelayStep",
    "SendState",
    "Shutdown",
    "TlsInfo",
    "TlsLayer",
    "WouldWait",
    "WriteResult",
    "error_message",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The TLS layer loads the ssl module, which loads socket and select: only when used, so
    # that importing the core alone brings in no I/O module.
    if name in ("TlsInfo", "TlsLayer"):
        from . import _tls

        return getattr(_tls, name)
    raise AttributeError(f"module 'sansflow' has no attribute {name!r}")
