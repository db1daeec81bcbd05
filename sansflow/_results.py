"""The values an I/O operation returns: ``Ok``, ``Eof``, ``Error``, and the core's ``WOULD_WAIT``.

I/O outcomes are values, programming mistakes are exceptions: a peer reset is an ``Error``
result, a ``str`` passed to ``write`` is a ``TypeError``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from ._errors import FlowError

__all__ = ["WOULD_WAIT", "Eof", "Error", "Ok", "ReadResult", "WouldWait", "WriteResult"]

T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Ok(Generic[T_co]):
    """The operation succeeded: ``Ok(data)`` from ``read``, ``Ok(None)`` from ``write``."""

    value: T_co


@dataclass(frozen=True, slots=True)
class Eof:
    """The direction is over: the peer sent EOF (``read``), or this side can no longer write."""


@dataclass(frozen=True, slots=True)
class Error:
    """The flow failed; ``error`` says how (see ``sansflow.error_message``)."""

    error: FlowError


class WouldWait(enum.Enum):
    """The core's answer when an adapter would have to wait (h11's ``NEED_DATA``)."""

    WOULD_WAIT = "WOULD_WAIT"

    def __repr__(self) -> str:
        return "WOULD_WAIT"


WOULD_WAIT: Literal[WouldWait.WOULD_WAIT] = WouldWait.WOULD_WAIT

ReadResult = Ok[bytes] | Eof | Error
WriteResult = Ok[None] | Eof | Error
