"""The values an I/O operation returns: ``Ok``, ``Eof``, ``Error``, and the core's ``WOULD_WAIT``.

I/O outcomes are values, programming mistakes are exceptions: a peer reset is an ``Error``
result, a ``str`` passed to ``write`` is a ``TypeError``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from ._errors import FlowError

__all__ = ["WOULD_WAIT", "Eof", "Error", "Ok", "ReadResult", "WouldWait", "WriteResult"]

T_co = TypeVar("T_co", covariant=True)


class Ok(Generic[T_co]):
    """The operation succeeded: ``Ok(data)`` from ``read``, ``Ok(None)`` from ``write``.

    Immutable like the frozen dataclasses beside it, but written by hand: every ``read``
    builds one, and a frozen dataclass's ``__init__`` costs about twice as much.
    """

    __slots__ = ("value",)
    __match_args__ = ("value",)
    value: T_co

    def __init__(self, value: T_co) -> None:
        _set_value(self, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Ok is immutable; cannot assign to {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Ok is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Ok:
            return NotImplemented
        return bool(self.value == other.value)

    def __hash__(self) -> int:
        return hash((Ok, self.value))

    def __repr__(self) -> str:
        return f"Ok({self.value!r})"

    def __reduce__(self) -> tuple[type[Ok[Any]], tuple[T_co]]:
        # copy, deepcopy and pickle would otherwise restore the slot through __setattr__.
        return (Ok, (self.value,))


# The slot's own setter, which ``Ok.__setattr__`` does not stand in front of.
_set_value: Callable[[Ok[Any], Any], None] = vars(Ok)["value"].__set__


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
