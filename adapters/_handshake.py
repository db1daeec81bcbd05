"""What every adapter's TLS entry points share: the ``ssl`` argument, the layer's options, the
exception a failed handshake raises, and the log line of a server's failed handshake."""

from __future__ import annotations

import logging
import ssl as _ssl
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from sansflow import (
    AdapterFlow,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    Ok,
    ReceiveState,
    SendState,
    TlsLayer,
    error_message,
)
from sansflow._adapter import check_timeout
from sansflow._results import ReadResult

from ._connect import address_text

__all__ = [
    "ALERT_TIMEOUT", "HANDSHAKE_DEADLINE", "HANDSHAKE_FAILED", "HANDSHAKE_TIMEOUT",
    "check_wrap_tls", "handshake_failed", "handshaken", "held_by_reader", "held_by_wire",
    "log_failed_handshake", "new_layer",
    "peer_of", "step_layers", "tls_context", "unix_tls_context",
]

HANDSHAKE_FAILED = "sansflow: TLS handshake failed: %s"
"""What a server logs (at WARNING) for a connection whose handshake failed; the handler never
sees that connection."""

HANDSHAKE_TIMEOUT = 60.0
"""Seconds a server gives a connection's TLS handshake before it drops the connection."""

HANDSHAKE_DEADLINE = FlowError(ErrorKind.TIMED_OUT, detail="TLS handshake deadline passed")
"""The error a flow is aborted with when its handshake takes too long."""

ALERT_TIMEOUT = 1.0
"""Seconds a failed handshake's alert (and our FIN after it) may take to leave."""

_log = logging.getLogger("sansflow")
_DISCARDING = ReceiveState.DISCARDING
_CLOSED = FlowState.CLOSED

# What a failed handshake's exception keeps of the ssl module's own.
_SSL_ATTRIBUTES = ("library", "reason", "verify_code", "verify_message")


def tls_context(ssl: object, server_hostname: object = None, *, server: bool = False
                ) -> _ssl.SSLContext | None:
    """The context for ``connect(ssl=...)`` / ``serve(ssl=...)``: ``None`` for a plain flow,
    the caller's ``SSLContext``, or for ``True`` (clients only) ``ssl.create_default_context()``
    (the system's CAs, hostname checked). Refused now, with a precise error, if wrong."""
    if server_hostname is not None and not isinstance(server_hostname, str):
        raise TypeError(f"server_hostname must be a str or None, not {server_hostname!r}")
    if ssl is None or ssl is False:
        if server_hostname is not None:
            raise ValueError("server_hostname is only for TLS: pass ssl= as well")
        return None
    if ssl is True and not server:
        return _ssl.create_default_context()
    if not isinstance(ssl, _ssl.SSLContext):
        wanted = "an ssl.SSLContext" if server else "an ssl.SSLContext or True"
        raise TypeError(f"ssl must be {wanted}, not {ssl!r}")
    return ssl


def unix_tls_context(ssl: object, server_hostname: object) -> _ssl.SSLContext | None:
    """``tls_context`` for ``connect_unix``: a socket path names no host to check the
    certificate against, so a context that checks the server's name (``True``'s does) needs
    ``server_hostname``. Refused now, before any I/O."""
    context = tls_context(ssl, server_hostname)
    if context is not None and context.check_hostname and server_hostname is None:
        raise ValueError(
            "ssl checks the server's name (check_hostname) but a socket path names no host to "
            "default to: pass server_hostname (the name the certificate must show), or a "
            "context with check_hostname=False"
        )
    return context


def new_layer(inner: Flow, context: _ssl.SSLContext, *, server_side: bool = False,
              server_hostname: str | None = None, require_close_notify: bool = True
              ) -> TlsLayer:
    """A ``TlsLayer`` over ``inner`` whose plaintext flow takes ``inner``'s sizes."""
    return TlsLayer(inner, context, server_side=server_side, server_hostname=server_hostname,
                    require_close_notify=require_close_notify, high_water=inner.high_water,
                    low_water=inner.low_water, receive_limit=inner.receive_limit)


def handshake_failed(error: FlowError | None, where: str, timeout: float | None = None
                     ) -> OSError:
    """What ``connect`` and ``wrap_tls`` raise when the handshake failed with ``error``
    (``None``: ``timeout`` passed first): the class of its cause where that is an
    ``OSError`` (``ssl.SSLCertVerificationError`` for a certificate, ``ConnectionResetError``
    for a reset), ``TimeoutError`` at the deadline, else ``ConnectionError``; the text is
    ``where`` and ``error_message``, the cause is chained, and the ssl module's attributes
    (``verify_message``, ``reason``...) are kept."""
    if error is None:
        return TimeoutError(f"{where}: TLS handshake timed out after {timeout:g} s")
    text = f"{where}: {error_message(error)}"
    cause = error.cause
    exc: OSError
    if isinstance(cause, OSError):
        # The ssl module's errors show their second argument alone; other OSErrors their only
        # one (with two, "[Errno N]" would come first).
        exc = (type(cause)(cause.errno, text) if isinstance(cause, _ssl.SSLError)
               else type(cause)(text))
        exc.errno = cause.errno
        for name in _SSL_ATTRIBUTES:
            if hasattr(cause, name):
                setattr(exc, name, getattr(cause, name))
    else:  # ended by the application (an abort), or by a transport that gave no exception
        exc = ConnectionError(text)
    exc.__cause__ = cause
    return exc


def log_failed_handshake(exc: OSError) -> None:
    """A server's connection whose handshake failed (``exc``, from ``handshake_failed``): one
    line at WARNING, for a client that does not trust us or a port scanner is not the
    server's own failure."""
    _log.warning(HANDSHAKE_FAILED, exc)


def peer_of(flow: AdapterFlow) -> str:
    """How a handshake's exception names the peer: its address, where it has one."""
    return address_text(flow.peername, "the peer")


def step_layers(layers: list[TlsLayer]) -> None:
    """Let each TLS layer of a flow (innermost first) move what it can, until none moves.

    Once the innermost session has ended cleanly (both close_notifys through), the flow below
    takes the peer's end as arrived: nothing valid can follow a close_notify, and the peer's
    FIN comes only when its program acts on ours, which it may never do (an ``unwrap()``
    that keeps the socket, a flow nobody reads). So ``close()`` returns once our FIN is out,
    as it does without TLS once the peer's EOF has come."""
    if len(layers) == 1:
        layers[0].step()
    else:
        moved = True
        while moved:
            moved = False
            for layer in layers:
                moved = layer.step() or moved
    inner = layers[0].inner
    if inner.receive_state is _DISCARDING:  # the peer's close_notify came (or a failure)
        outer = layers[0].outer
        if outer.state is _CLOSED and outer.error is None:
            inner.receive_eof()


# A layer moves everything it can in one step, and stops only at a limit: encrypting at the
# wire's high-water mark (what waits then: plaintext, a close_notify), decrypting at the
# plaintext's receive limit. So a driver steps again only once such a limit gave way; a step
# after every send and every read found nothing to do almost every time.


def held_by_wire(wire: Flow) -> bool:
    """Before the wire's queue goes out, after a step: the layers stopped at its high-water
    mark, so they may have more to encrypt or hand over once it is sent."""
    return not wire.write_ready


def held_by_reader(app: Flow, result: ReadResult) -> bool:
    """After a read of ``app``: it took data while the plaintext was at its receive limit, so
    the layers may hold records (or decrypted data) that come in now."""
    return isinstance(result, Ok) and app.buffered + len(result.value) >= app.receive_limit


def check_wrap_tls(flow: object, flow_class: type[AdapterFlow], ssl_context: object,
                   handshake_timeout: object) -> None:
    """Refuse ``wrap_tls`` arguments of the wrong kind, before anything changes (the layer
    checks the rest when it is made)."""
    if not isinstance(flow, flow_class):
        raise TypeError(f"wrap_tls() takes a {flow_class.__name__}, not {type(flow).__name__}")
    if not isinstance(ssl_context, _ssl.SSLContext):
        raise TypeError(f"wrap_tls() takes an ssl.SSLContext, not {ssl_context!r}")
    check_timeout(handshake_timeout)


class _SenderTaskFlow(Protocol):
    """What ``handshaken`` uses of the flows whose sends a task of theirs makes (the trio
    and anyio adapters')."""

    _layers: list[TlsLayer]
    _wire: Flow
    _released: bool

    @property
    def error(self) -> FlowError | None: ...

    async def _handshake(self, timeout: float | None) -> bool: ...

    async def _wait_flushed_wire(self) -> None: ...

    async def _release(self, *, graceful: bool) -> None: ...

    async def _abort(self, error: FlowError | None) -> None: ...


async def handshaken(flow: _SenderTaskFlow, where: str, timeout: float | None,
                     move_on_after: Callable[[float], AbstractContextManager[Any]], *,
                     stated: float | None = None) -> None:
    """Return once ``flow``'s handshake is done, within ``timeout``; else end the connection
    (the alert goes out first, for at most ``ALERT_TIMEOUT`` seconds of the event loop's
    ``move_on_after``) and raise what ``handshake_failed`` says, with the timeout as the
    caller ``stated`` it (connect's covers the connection too)."""
    done = await flow._handshake(timeout)
    if done and flow._layers[-1].handshake_done:
        return
    error = flow.error if done else None
    if done:
        with move_on_after(ALERT_TIMEOUT):  # the alert, then our FIN
            while flow._wire.send_state is SendState.EOF_QUEUED and not flow._released:
                await flow._wait_flushed_wire()
        await flow._release(graceful=True)
    else:
        await flow._abort(HANDSHAKE_DEADLINE)
    raise handshake_failed(error, where, timeout if stated is None else stated)
