"""sansflow: a byte stream that behaves correctly (half-close, backpressure, clean shutdown,
errors that never lose data), as a sans-IO state machine with adapters for any event loop.

The core is ``Flow``; ``sansflow.adapters`` carries it over asyncio, trio and blocking sockets,
and ``sansflow.testing`` joins two flows in memory for tests.
"""

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
