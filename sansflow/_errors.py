"""How a flow fails (``FlowError``), its one-line text, and the exceptions for caller mistakes."""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass

__all__ = ["BusyError", "ErrorKind", "FlowError", "FlowUsageError", "error_message"]


class ErrorKind(enum.Enum):
    """Why a flow ended in error."""

    RESET = "connection reset by peer"
    BROKEN_PIPE = "broken pipe: the peer is no longer reading"
    ABORTED = "connection aborted locally"
    TIMED_OUT = "timed out"
    TRANSPORT = "transport failure"
    CERTIFICATE = "TLS certificate verification failed"
    TLS = "TLS failure"
    TRUNCATED = "the peer closed the connection without TLS close_notify: data may be truncated"

    def __repr__(self) -> str:
        return f"ErrorKind.{self.name}"


# Their cause is an ssl.SSLError, whose errno is OpenSSL's error code, not an OS error's.
_TLS_KINDS = frozenset({ErrorKind.CERTIFICATE, ErrorKind.TLS, ErrorKind.TRUNCATED})

# Checked in order: the first errno or exception class that matches names the kind.
_KIND_BY_ERRNO = {
    errno.ECONNRESET: ErrorKind.RESET,
    errno.EPIPE: ErrorKind.BROKEN_PIPE,
    errno.ETIMEDOUT: ErrorKind.TIMED_OUT,
}
_KIND_BY_CLASS: tuple[tuple[type[BaseException], ErrorKind], ...] = (
    (ConnectionResetError, ErrorKind.RESET),
    (BrokenPipeError, ErrorKind.BROKEN_PIPE),
    (TimeoutError, ErrorKind.TIMED_OUT),
)


@dataclass(frozen=True, slots=True, repr=False)
class FlowError:
    """The error that ended a flow: its ``kind``, the exception that caused it, and a detail.

    ``cause`` keeps the original exception (usually an ``OSError``) so that nothing the
    operating system said is lost.
    """

    kind: ErrorKind
    cause: BaseException | None = None
    detail: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> FlowError:
        """The ``FlowError`` for a transport exception, classified by errno then by class."""
        if not isinstance(exc, BaseException):
            raise TypeError(f"from_exception() takes an exception, not {type(exc).__name__}")
        code = getattr(exc, "errno", None)
        kind = _KIND_BY_ERRNO.get(code) if isinstance(code, int) else None
        if kind is None:
            kind = next((k for c, k in _KIND_BY_CLASS if isinstance(exc, c)), ErrorKind.TRANSPORT)
        return cls(kind, exc)

    def __repr__(self) -> str:
        parts = [repr(self.kind)]
        if self.cause is not None:
            parts.append(f"cause={self.cause!r}")
        if self.detail:
            parts.append(f"detail={self.detail!r}")
        return f"FlowError({', '.join(parts)})"


def error_message(error: FlowError) -> str:
    """A one-line, human-readable text for ``error``, with the OS error name where there is one.

    >>> error_message(FlowError.from_exception(ConnectionResetError(errno.ECONNRESET, "x")))
    'connection reset by peer (ECONNRESET)'
    """
    if not isinstance(error, FlowError):
        raise TypeError(f"error_message() takes a FlowError, not {type(error).__name__}")
    text = error.kind.value
    if error.detail:
        text += f": {error.detail}"
    cause = error.cause
    if error.kind is ErrorKind.TRANSPORT and cause is not None:
        described = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        text += f": {described}"
    code = getattr(cause, "errno", None)
    if isinstance(code, int) and code in errno.errorcode and error.kind not in _TLS_KINDS:
        text += f" ({errno.errorcode[code]})"
    return " ".join(text.split())


class FlowUsageError(RuntimeError):
    """A call that the flow's state does not allow, such as data fed in after the peer's EOF.

    The flow is unchanged when this is raised.
    """


class BusyError(FlowUsageError):
    """Two tasks (or threads) used the same direction of a flow at once."""
