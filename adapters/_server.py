"""What every adapter's ``serve`` and ``Server`` share: the argument checks, the handler policy
(close the flow the handler leaves open, log and abort when it raises), and the ``Server``
state that does not depend on the transport (the handler, the flows' options, the AF_UNIX
path and its socket file, ``port``).

Listening, accepting and running handlers (tasks or threads) stay in each adapter."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import ClassVar, Generic, Protocol, TypeVar

from sansflow import AsyncAdapterFlow, BlockingAdapterFlow, Flow, FlowState

from ._common import SocketLike
from ._connect import UnixPath, remove_socket_file, socket_file_inode

__all__ = [
    "GRACE", "HANDLER_CLOSE_TIMEOUT", "HANDLER_FAILED", "AsyncServerBase", "ServerBase",
    "run_async_handler", "run_blocking_handler", "server_options",
]

logger = logging.getLogger("sansflow")

HANDLER_CLOSE_TIMEOUT = 10.0
"""Seconds a server's ``close()`` gives a flow that its handler returned from still open."""

HANDLER_FAILED = "sansflow: connection handler raised; aborting its flow"
"""What a server logs (with the traceback) when a handler raises."""

_CLOSED = FlowState.CLOSED

HandlerT = TypeVar("HandlerT", bound=Callable[..., object])
AsyncFlowT = TypeVar("AsyncFlowT", bound=AsyncAdapterFlow)
BlockingFlowT = TypeVar("BlockingFlowT", bound=BlockingAdapterFlow)


GRACE = 5.0
"""Seconds a stopping server lets running handlers finish before it ends their flows."""


def server_options(handler: object, high_water: int, low_water: int, receive_limit: int,
                   grace: object, *, blocking: bool = False) -> dict[str, int]:
    """The flow options of a server's flows, refused now if bad rather than on the first
    connection, like a handler that cannot be called or a bad ``grace``."""
    if not callable(handler):
        wanted = (f"a callable handler, not {type(handler).__name__}" if blocking
                  else f"an async handler function, not {handler!r}")
        raise TypeError(f"serve() takes {wanted}")
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"grace must be a number of seconds, not {grace!r}")
    if not grace >= 0:  # also refuses NaN
        raise ValueError(f"grace must be at least 0 seconds, not {grace!r}")
    options = {"high_water": high_water, "low_water": low_water, "receive_limit": receive_limit}
    Flow(**options)
    return options


async def run_async_handler(handler: Callable[[AsyncFlowT], Awaitable[object]], flow: AsyncFlowT,
                            interrupted: Callable[[AsyncFlowT], Awaitable[None]]) -> None:
    """Run ``handler(flow)`` as an async server does: close the flow it leaves; log what
    it raises and abort the flow, so that one handler's bug does not stop the server. A
    ``BaseException`` that is not an ``Exception`` (a cancellation: the server stops; or the
    program is interrupted) goes on after ``interrupted(flow)``, which ends the flow the way
    the adapter can while cancelled."""
    try:
        await handler(flow)
    except Exception:
        logger.exception(HANDLER_FAILED)
        await flow.abort()
        return
    except BaseException:
        await interrupted(flow)
        raise
    # Also when the flow is CLOSED: its transport may still be ending (under TLS, the FIN
    # after both close_notifys), and close() returns once it has.
    await flow.close(timeout=HANDLER_CLOSE_TIMEOUT)


def run_blocking_handler(handler: Callable[[BlockingFlowT], object], flow: BlockingFlowT
                         ) -> None:
    """``run_async_handler`` for a handler on its own thread: whatever it raises is logged
    and aborts its flow, a ``BaseException`` too, since nothing above the thread could take
    it."""
    try:
        handler(flow)
    except BaseException:
        logger.exception(HANDLER_FAILED)
        flow.abort()
    else:
        flow.close(timeout=HANDLER_CLOSE_TIMEOUT)  # also when CLOSED: see run_async_handler


class ServerBase(Generic[HandlerT]):
    """The transport-free part of every adapter's ``Server``.

    The subclass calls ``_bound`` with its first listening socket once it listens, and
    ``_unbound`` once its sockets are closed, so that ``port`` answers from then on (also
    after the server stopped: where it listened) and an AF_UNIX server removes the socket file
    it made and no other.
    """

    __slots__ = ("_grace", "_handler", "_listened", "_options", "_path", "_port", "_unix_inode")

    _NOT_LISTENING: ClassVar[str] = (
        "the server is not listening; use it as `async with serve(...)`")

    def __init__(self, handler: HandlerT, options: dict[str, int], path: UnixPath | None, *,
                 grace: float) -> None:
        self._handler = handler
        self._options = options
        self._grace = grace  # how long stopping waits for running handlers
        self._path = path
        self._listened = False
        self._port = 0
        self._unix_inode: int | None = None  # the socket file we made, to remove on exit

    @property
    def port(self) -> int:
        """The bound port (useful after asking for port 0), the same on every listening
        socket; once the server stopped, the port it listened on."""
        if not self._listened:
            raise RuntimeError(self._NOT_LISTENING)
        if self._path is not None:
            raise RuntimeError("a serve_unix() server has a path, not a port")
        return self._port

    @property
    def path(self) -> UnixPath | None:
        """The AF_UNIX path of a ``serve_unix`` server; ``None`` for TCP."""
        return self._path

    def _new_core(self) -> Flow:
        """The core of an accepted connection's flow."""
        return Flow(**self._options)

    def _bound(self, first: SocketLike) -> None:
        """Once listening on ``first`` (and maybe more sockets, on the same port): note the
        port, or the socket file made at an AF_UNIX path."""
        self._listened = True
        if self._path is None:
            self._port = int(first.getsockname()[1])
        else:
            self._unix_inode = socket_file_inode(self._path)

    def _unbound(self) -> None:
        """Once the listening sockets are closed: remove the socket file ``_bound`` saw."""
        if self._path is not None:
            remove_socket_file(self._path, self._unix_inode)


class _Event(Protocol):
    """What ``AsyncServerBase`` needs of ``asyncio.Event`` and ``trio.Event``."""

    def set(self) -> None: ...
    async def wait(self) -> object: ...


class AsyncServerBase(ServerBase[HandlerT]):
    """``ServerBase`` for an async adapter, whose ``__aenter__`` starts with ``_enter_once``
    and whose ``__aexit__`` sets ``_stopped``."""

    __slots__ = ("_stopped",)

    _RUNS_ONCE: ClassVar[str]  # what entering the server a second time raises

    def __init__(self, handler: HandlerT, options: dict[str, int], path: UnixPath | None, *,
                 grace: float) -> None:
        super().__init__(handler, options, path, grace=grace)
        self._stopped: _Event | None = None

    async def serve_forever(self) -> None:
        """Wait until the server stops: its ``async with`` block is left (cancel this task
        to leave it from here)."""
        if self._stopped is None:
            raise RuntimeError(self._NOT_LISTENING)
        await self._stopped.wait()

    def _enter_once(self, stopped: _Event) -> None:
        """Refuse a server entered before (it runs once); else take the event that
        ``serve_forever`` waits for."""
        if self._stopped is not None:
            raise RuntimeError(self._RUNS_ONCE)
        self._stopped = stopped
