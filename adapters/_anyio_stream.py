"""``FlowByteStream``: an ``anyio.abc.ByteStream`` over any async sansflow flow.

Code written against anyio's streams (``BufferedByteReceiveStream``, ``TextStream``, a
protocol library's connection) then runs over a sansflow flow: the asyncio adapter's (on
asyncio or uvloop), the trio adapter's, the anyio adapter's, the memory pair's. It runs on the
event loop its flow belongs to, through anyio's API for that loop.

The facade follows anyio's contract where it differs from the seed's: the peer's EOF is
``anyio.EndOfStream``, a failure ``anyio.BrokenResourceError``, and ``aclose()`` lets go of
the connection without waiting for the peer's EOF (the seed's ``close`` waits for it).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, ParamSpec, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute

from sansflow import (
    AsyncFlow,
    BrokenFlowError,
    Eof,
    Error,
    ErrorKind,
    FlowError,
    Ok,
    SendState,
    Shutdown,
    error_message,
)
from sansflow._adapter import AdapterFlow, AsyncAdapterFlow

from ._asyncio_flow import AsyncioFlow

__all__ = ["FlowByteStream"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_BytesLike = bytes | bytearray | memoryview
_IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class FlowByteStream(anyio.abc.ByteStream):
    """An ``anyio.abc.ByteStream`` over ``flow``, an async sansflow flow, on its event loop.

    - ``receive(max_bytes)`` returns 1 to ``max_bytes`` bytes; at the peer's EOF it raises
      ``anyio.EndOfStream``, and again on every later call.
    - ``send(item)`` returns once ``item`` is queued in the flow (not yet on the wire).
    - ``send_eof()`` is ``flow.shutdown(WRITE)``: over TLS our close_notify, after which the
      peer may still send. Idempotent.
    - A flow that failed raises ``anyio.BrokenResourceError`` with the flow's error message,
      from a ``sansflow.BrokenFlowError`` that carries the ``FlowError`` (itself from the
      original exception, when there is one).
    - After our own ``aclose()`` (or ``flow.abort()``) every call raises
      ``anyio.ClosedResourceError``; ``send`` after ``send_eof`` raises it too.
    - A second task receiving (or sending, or sending EOF) while another does gets
      ``anyio.BusyResourceError`` and changes nothing.
    - ``aclose()`` lets what is queued go out, then our EOF (close_notify over TLS), and lets
      go of the connection without waiting for the peer's EOF; a task blocked in ``receive``
      or ``send`` wakes with ``ClosedResourceError``. If it is cancelled (as by
      ``anyio.aclose_forcefully``), the connection is reset instead (an RST for TCP), so
      that the peer never takes the end for a clean one.
    - ``receive`` and ``send`` are checkpoints, as anyio's socket streams' are: a call in a
      cancelled scope raises the cancellation and takes or sends nothing.
    - ``extra_attributes``: ``SocketAttribute`` for a flow over a socket, and
      ``TLSAttribute`` over TLS (``standard_compatible`` is ``False``: the end of a TLS flow
      needs a close_notify).
    """

    __slots__ = ("_closed", "_flow", "_receiving", "_sending", "_waits")

    def __init__(self, flow: AsyncFlow) -> None:
        # Every async adapter's flow is one; the protocol alone would not carry the TLS state.
        if not isinstance(flow, AsyncAdapterFlow):
            raise TypeError(f"FlowByteStream() takes an async sansflow flow, not "
                            f"{type(flow).__name__}")
        self._flow = flow
        self._closed = False
        self._receiving = False
        self._sending = False  # send and send_eof
        # The calls waiting in the flow: aclose() cancels them, and they raise
        # ClosedResourceError.
        self._waits: set[anyio.CancelScope] = set()

    @property
    def flow(self) -> AsyncFlow:
        """The flow underneath (let the stream drive it)."""
        return self._flow

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an int, not {type(max_bytes).__name__}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        self._receiving = True
        try:
            result = await self._call(self._flow.read, max_bytes)
        finally:
            self._receiving = False
        if isinstance(result, Ok):
            return result.value
        if isinstance(result, Eof):
            raise anyio.EndOfStream
        self._raise(result)

    async def send(self, item: _BytesLike) -> None:
        self._claim_send()
        try:
            result = await self._call(self._flow.write, item)
        finally:
            self._sending = False
        if not isinstance(result, Ok):
            self._raise(result)

    async def send_eof(self) -> None:
        self._claim_send()
        try:
            await self._call(self._flow.shutdown, Shutdown.WRITE)
        finally:
            self._sending = False
        error = self._flow.error
        if self._flow.send_state is SendState.FAILED and error is not None:
            self._raise(Error(error))

    async def aclose(self) -> None:
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return
        self._closed = True
        for scope in self._waits:
            scope.cancel()
        flow = self._flow
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
            await _let_go(flow)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await flow.abort()
            raise

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {**_socket_attributes(self._flow), **_tls_attributes(self._flow)}

    # -- internals -------------------------------------------------------------------------

    def _claim_send(self) -> None:
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        self._sending = True

    async def _call(self, operation: Callable[_P, Awaitable[_R]], *args: _P.args,
                    **kwargs: _P.kwargs) -> _R:
        """``operation(*args)`` on the flow, after a checkpoint; ``ClosedResourceError`` if
        the stream is closed, before or while it waits."""
        await anyio.lowlevel.checkpoint()
        if not self._closed:
            with anyio.CancelScope() as scope:
                self._waits.add(scope)
                try:
                    return await operation(*args, **kwargs)
                finally:
                    self._waits.discard(scope)
        raise anyio.ClosedResourceError

    def _raise(self, result: Eof | Error) -> NoReturn:
        """anyio's exception for a result that is not ``Ok``."""
        if isinstance(result, Eof):  # only writes answer Eof: after our own EOF
            raise anyio.ClosedResourceError("cannot send after send_eof()")
        error = result.error
        if self._closed or (error.kind is ErrorKind.ABORTED and error.cause is None):
            # Ended by us (aclose, or the flow's abort()): anyio calls that closed, not broken.
            raise anyio.ClosedResourceError(error_message(error))
        raise anyio.BrokenResourceError(error_message(error)) from _broken(error)


def _broken(error: FlowError) -> BrokenFlowError:
    """The cause of a ``BrokenResourceError``: the flow's error, from what caused it."""
    broken = BrokenFlowError(error)
    broken.__cause__ = error.cause
    return broken


async def _let_go(flow: AsyncFlow) -> None:
    """Send what is queued and our EOF, then release the connection without waiting for the
    peer's EOF: what ``close()`` does, less the wait (so the flow does not end cleanly)."""
    detach: Callable[[], Awaitable[None]] | None = getattr(flow, "_detach", None)
    if detach is not None:  # the flow knows how (every adapter's)
        await detach()
        return
    # Nothing to release but the flow (the memory pair): the peer's later sends, and what it
    # had not taken in yet, meet a reset, as a closed socket answers.
    await flow.shutdown(Shutdown.BOTH)
    await flow.abort()


def _socket_attributes(flow: AsyncFlow) -> dict[Any, Callable[[], Any]]:
    """anyio's ``SocketAttribute`` for the socket under ``flow``, if there is one."""
    local = flow.sockname
    if local is None:
        return {}
    family = _family(local)
    ip = family in _IP_FAMILIES
    attributes: dict[Any, Callable[[], Any]] = {
        SocketAttribute.family: lambda: family,
        SocketAttribute.local_address: lambda: _address(local),
    }
    if ip:
        attributes[SocketAttribute.local_port] = lambda: local[1]
    remote = flow.peername  # None also for a connection that had ended before the flow
    if remote is not None:
        attributes[SocketAttribute.remote_address] = lambda: _address(remote)
        if ip:
            attributes[SocketAttribute.remote_port] = lambda: remote[1]
    if isinstance(flow, AsyncioFlow) and flow.transport is not None:
        # Only while the flow holds its transport. The trio adapter's flow has a trio socket,
        # which does not show its stdlib socket.
        raw = flow.transport.get_extra_info("socket")
        attributes[SocketAttribute.raw_socket] = lambda: raw
    return attributes


def _tls_attributes(flow: AsyncFlow) -> dict[Any, Callable[[], Any]]:
    """anyio's ``TLSAttribute`` for the TLS session ``flow`` carries, if any."""
    tls = flow.tls
    if tls is None:
        return {}
    assert isinstance(flow, AdapterFlow)  # FlowByteStream takes no other
    ssl_object = flow._layers[-1].ssl_object  # the session the application talks through
    return {
        TLSAttribute.alpn_protocol: lambda: tls.alpn_protocol,
        TLSAttribute.channel_binding_tls_unique:
            lambda: ssl_object.get_channel_binding("tls-unique"),
        TLSAttribute.cipher: ssl_object.cipher,
        TLSAttribute.peer_certificate: lambda: ssl_object.getpeercert(False),
        TLSAttribute.peer_certificate_binary: lambda: tls.peer_certificate,
        TLSAttribute.server_side: lambda: ssl_object.server_side,
        TLSAttribute.shared_ciphers:
            lambda: ssl_object.shared_ciphers() if ssl_object.server_side else None,
        TLSAttribute.ssl_object: lambda: ssl_object,
        # The end of a TLS flow is a close_notify: a cut connection is an error.
        TLSAttribute.standard_compatible: lambda: False,
        TLSAttribute.tls_version: lambda: tls.version,
    }


def _family(address: Any) -> socket.AddressFamily:
    """The address family of a socket whose own address is ``address``."""
    if isinstance(address, tuple):
        return socket.AF_INET6 if len(address) == 4 else socket.AF_INET
    return socket.AF_UNIX


def _address(address: Any) -> Any:
    """``address`` as anyio gives it: an IPv6 address as ``(host, port)``, the scope (if
    any) in the host as ``%scope``; the others as they are."""
    if isinstance(address, tuple) and len(address) == 4:
        host, port, _flowinfo, scope = address
        return (f"{host}%{scope}" if scope else host, port)
    return address
