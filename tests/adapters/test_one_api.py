"""One program, every adapter: the same code, written against ``sansflow.AsyncFlow``, runs on
asyncio, uvloop and trio with only the adapter module changed, and its blocking twin (the same
steps without ``await``) runs on the socket adapter.

Each step asserts what the API promises and says what it observed into a transcript; every
adapter's transcript of a step must equal the one expected below, so that a program sees the
same outcomes (failures included) whichever adapter it runs on. Ports change from run to run, so
the transcripts say ``PORT`` where a message names one.
"""

from __future__ import annotations

import ast
import errno
import inspect
import logging
import logging.handlers
import math
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import anyio
import pytest
from loopback import full_backlog_port, has_ipv6_loopback, refusing_port, reset

from sansflow import (
    HIGH_WATER,
    LOW_WATER,
    RECEIVE_LIMIT,
    AsyncFlow,
    BlockingFlow,
    BrokenFlowError,
    Error,
    Ok,
    ReadResult,
    Shutdown,
    error_message,
)
from sansflow.adapters import anyio as sf_anyio
from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio
from sansflow.adapters._connect import BACKLOG
from sansflow.adapters._handshake import HANDSHAKE_TIMEOUT
from sansflow.adapters._server import GRACE

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop does not exist on Windows
    uvloop = None

HOST = "127.0.0.1"
PEER_TIMEOUT = 10.0  # hang protection for the plain sockets that watch a flow
CONNECT_TIMEOUT = 0.1  # given to a connect that can never finish
HANDSHAKE_WAIT = 0.25  # a loopback handshake not done by then waits on a full listen queue
pytestmark = pytest.mark.timeout(30)  # a hung adapter fails its case, not the whole run

Say = Callable[[str], None]


class Boom(Exception):
    """Raised inside ``async with flow:`` / ``with flow:`` to see the flow aborted."""


@runtime_checkable
class Addresses(Protocol):
    """Every adapter's flow also tells the socket's addresses (not part of ``AsyncFlow``)."""

    @property
    def peername(self) -> Any: ...

    @property
    def sockname(self) -> Any: ...


def addresses(flow: object) -> tuple[Any, Any]:
    assert isinstance(flow, Addresses), f"{type(flow).__name__} has no peername/sockname"
    return flow.peername, flow.sockname


def described(result: ReadResult) -> str:
    """A result as the transcript shows it: an ``Error`` by its kind alone (its cause and detail
    are the transport's own words)."""
    if isinstance(result, Error):
        return f"Error({result.error.kind.name})"
    return repr(result)


def error_kind(flow: AsyncFlow | BlockingFlow) -> str:
    return flow.error.kind.name if flow.error is not None else "no error"


def without_port(message: object, port: int) -> str:
    return str(message).replace(f":{port}", ":PORT")


# -- plain sockets around the flows --------------------------------------------------------


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback pair: ours (blocking, for ``wrap``) and theirs, a plain socket
    that watches what the flow does."""
    with socket.create_server((HOST, 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=PEER_TIMEOUT)
        theirs, _ = listener.accept()
    ours.settimeout(None)
    theirs.settimeout(PEER_TIMEOUT)
    return ours, theirs


def received(peer: socket.socket) -> str:
    """Everything ``peer`` receives, then how its stream ended."""
    data = b""
    try:
        while chunk := peer.recv(65536):
            data += chunk
    except OSError as exc:
        return f"{data!r} then {type(exc).__name__}"
    return f"{data!r} then EOF"


@contextmanager
def errors_logged(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records at ERROR and above that reach logger ``name``, from any thread."""
    handler = logging.handlers.BufferingHandler(capacity=1000)  # keeps them, unformatted
    handler.setLevel(logging.ERROR)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield handler.buffer
    finally:
        logger.removeHandler(handler)


def logged(records: list[logging.LogRecord]) -> str:
    """Each record's level and the exception logged with it."""
    return ", ".join(f"{r.levelname} {r.exc_info[1]!r}" if r.exc_info else r.levelname
                     for r in records)


@contextmanager
def socket_path() -> Iterator[str]:
    """A path for an AF_UNIX server, short enough for sun_path."""
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no AF_UNIX sockets")
    with tempfile.TemporaryDirectory() as directory:
        yield str(Path(directory) / "flow.sock")


def bad_connects(sf: ModuleType, port: int) -> list[tuple[str, Callable[[], Any]]]:
    """Connects to a refusing ``port`` with one bad argument each: refused before any I/O,
    none gets as far as the refusal."""
    return [
        ("a str port", partial(sf.connect, HOST, str(port))),
        ("high_water=0", partial(sf.connect, HOST, port, high_water=0)),
        ("low_water above high_water", partial(sf.connect, HOST, port, low_water=HIGH_WATER + 1)),
        ("timeout=-1", partial(sf.connect, HOST, port, timeout=-1)),
    ]


# -- the program, once for every async adapter ---------------------------------------------
# ``sf`` is the adapter module: ``sansflow.adapters.asyncio`` (on asyncio or uvloop) or
# ``sansflow.adapters.trio``. Nothing below knows which.


async def echo(flow: AsyncFlow) -> None:
    async for data in flow:
        await flow.write(data)


async def step_echo(sf: ModuleType, say: Say) -> None:
    flow: AsyncFlow
    async with sf.serve(echo, HOST, 0) as server, await sf.connect(HOST, server.port) as flow:
        assert isinstance(flow, AsyncFlow)
        options = (flow.high_water, flow.low_water, flow.receive_limit)
        assert options == (HIGH_WATER, LOW_WATER, RECEIVE_LIMIT)
        say(f"writev: {await flow.writev([b'one ', b'two '])!r}")
        say(f"write: {await flow.write(b'three')!r}")
        await flow.shutdown(Shutdown.WRITE)
        echoed = b"".join([data async for data in flow])
        assert echoed == b"one two three"
        say(f"echoed until Eof: {echoed!r}")
        say(f"read after Eof: {await flow.read()!r}")
    say(f"after the block: {flow.state.name}")


async def step_names(sf: ModuleType, say: Say) -> None:
    async def tell_names(flow: AsyncFlow) -> None:
        await flow.write(repr(addresses(flow)).encode())

    flow: AsyncFlow
    async with sf.serve(tell_names, HOST, 0) as server:
        async with await sf.connect(HOST, server.port) as flow:
            peername, sockname = addresses(flow)
            told = b"".join([data async for data in flow])
        say(f"peername is (host, port): {peername == (HOST, server.port)}")
        assert sockname[0] == HOST
        server_saw = ast.literal_eval(told.decode())
        say(f"server's peername is the client's sockname: {server_saw == (sockname, peername)}")
    say(f"names after close: {addresses(flow) == (peername, sockname)}")
    say(f"the server's port after it stopped: {server.port == peername[1]}")


async def step_wrap_close(sf: ModuleType, say: Say) -> None:
    ours, theirs = tcp_pair()
    with theirs:
        names = (ours.getpeername(), ours.getsockname())
        theirs.sendall(b"wrapped")
        theirs.shutdown(socket.SHUT_WR)
        flow: AsyncFlow
        async with await sf.wrap(ours) as flow:
            say(f"peername and sockname are the socket's: {addresses(flow) == names}")
            data = b"".join([data async for data in flow])
            say(f"read until Eof: {data!r}")
            await flow.write(data.upper())
        say(f"after the block: {flow.state.name}")
        say(f"the peer got: {received(theirs)}")
        say(f"names after close: {addresses(flow) == names}")


async def step_abort(sf: ModuleType, say: Say) -> None:
    ours, theirs = tcp_pair()
    with theirs:
        # The peer's EOF, read first: a close() in place of the abort would not wait for it,
        # and the peer would see an EOF rather than a reset.
        theirs.shutdown(socket.SHUT_WR)
        flow: AsyncFlow = await sf.wrap(ours)
        say(f"read before the block: {await flow.read()!r}")
        with pytest.raises(Boom):
            async with flow:
                raise Boom
        say(f"after the block raised: {flow.state.name}, {error_kind(flow)}")
        say(f"read: {described(await flow.read())}")
        say(f"the peer got: {received(theirs)}")


async def step_broken(sf: ModuleType, say: Say) -> None:
    ours, theirs = tcp_pair()
    reset(theirs)
    flow: AsyncFlow
    async with await sf.wrap(ours) as flow:
        with pytest.raises(BrokenFlowError) as caught:
            say(f"unexpected data: {[data async for data in flow]}")
    broken = caught.value
    assert isinstance(broken, ConnectionError)
    assert str(broken) == error_message(broken.error)
    say(f"iterating raised: {type(broken).__name__}({broken.error.kind.name})")
    say(f"read: {described(await flow.read())}")


async def step_handler_raises(sf: ModuleType, say: Say) -> None:
    handled = 0

    async def fails_first(flow: AsyncFlow) -> None:
        nonlocal handled
        handled += 1
        if handled == 1:
            raise Boom("the first handler fails")
        await echo(flow)

    first: AsyncFlow
    second: AsyncFlow
    with errors_logged("sansflow") as records:
        async with sf.serve(fails_first, HOST, 0) as server:
            async with await sf.connect(HOST, server.port) as first:
                say(f"first connection reads: {described(await first.read())}")
            async with await sf.connect(HOST, server.port) as second:
                await second.write(b"still serving")
                await second.shutdown(Shutdown.WRITE)
                say(f"second connection echoed: {b''.join([d async for d in second])!r}")
    say(f"logged on sansflow: {logged(records)}")


async def step_refused(sf: ModuleType, say: Say) -> None:
    with refusing_port() as port, pytest.raises(ConnectionRefusedError) as caught:
        await sf.connect(HOST, port)
    assert f"{HOST}:{port}" in str(caught.value)
    say(f"refused: {type(caught.value).__name__}: {without_port(caught.value, port)}")


async def step_unresolvable(sf: ModuleType, say: Say) -> None:
    with pytest.raises(socket.gaierror) as caught:
        await sf.connect("nowhere.invalid", 80)
    assert "nowhere.invalid:80" in str(caught.value)
    say(f"unresolvable: {type(caught.value).__name__}")


async def step_timeout(sf: ModuleType, say: Say) -> None:
    with full_backlog_port() as port, pytest.raises(TimeoutError) as caught:
        await sf.connect(HOST, port, timeout=CONNECT_TIMEOUT)
    assert f"{HOST}:{port}" in str(caught.value)
    say(f"timed out: {type(caught.value).__name__}: {without_port(caught.value, port)}")


async def step_bad_arguments(sf: ModuleType, say: Say) -> None:
    with refusing_port() as port:
        for label, connect in bad_connects(sf, port):
            with pytest.raises((TypeError, ValueError)) as caught:
                await connect()
            say(f"connect with {label}: {type(caught.value).__name__}")
        with pytest.raises(TypeError):
            async with sf.serve(echo, HOST, str(port)):
                pass
        say("serve with a str port: TypeError")


async def step_ipv6(sf: ModuleType, say: Say) -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    flow: AsyncFlow
    async with sf.serve(echo, "::1", 0) as server, await sf.connect("::1", server.port) as flow:
        peername, sockname = addresses(flow)
        assert (peername[:2], sockname[0]) == (("::1", server.port), "::1")
        await flow.write(b"over IPv6")
        await flow.shutdown(Shutdown.WRITE)
        say(f"echoed: {b''.join([data async for data in flow])!r}")
    with refusing_port("::1") as port, pytest.raises(ConnectionRefusedError) as caught:
        await sf.connect("::1", port)
    say(f"refused: {without_port(caught.value, port)}")


async def step_unix(sf: ModuleType, say: Say) -> None:
    flow: AsyncFlow
    with socket_path() as path:
        async with sf.serve_unix(echo, path) as server:
            say(f"server.path is the path: {server.path == path}")
            async with await sf.connect_unix(path) as flow:
                say(f"peername is the path: {addresses(flow)[0] == path}")
                await flow.writev([b"over ", b"AF_UNIX"])
                await flow.shutdown(Shutdown.WRITE)
                say(f"echoed: {b''.join([data async for data in flow])!r}")
            say(f"after the block: {flow.state.name}")
    with pytest.raises(TypeError):
        await sf.connect_unix(3)
    say("connect_unix with a path of 3: TypeError")


async def step_serve_forever(sf: ModuleType, say: Say) -> None:
    ended: list[str] = []

    async def serve_forever(server: Any) -> None:
        await server.serve_forever()
        ended.append("serve_forever returned")

    flow: AsyncFlow
    async with sf.serve(echo, HOST, 0) as server, anyio.create_task_group() as tasks:
        tasks.start_soon(serve_forever, server)
        async with await sf.connect(HOST, server.port) as flow:
            await flow.write(b"served")
            await flow.shutdown(Shutdown.WRITE)
            say(f"echoed: {b''.join([data async for data in flow])!r}")
        say(f"still serving: {not ended}")
        tasks.cancel_scope.cancel()


async def step_grace(sf: ModuleType, say: Say) -> None:
    """Leaving a server block gives running handlers ``grace`` seconds, then ends them."""
    servers: list[Any] = []

    async def answers_once_stopping(flow: AsyncFlow) -> None:
        await servers[-1].serve_forever()  # returns once the server is stopping
        await flow.write(b"answered while stopping")

    async def waits_for_input(flow: AsyncFlow) -> None:
        await flow.read()  # nothing comes

    async def read_all(flow: AsyncFlow, seen: list[str]) -> None:
        async with flow:
            while type(result := await flow.read()) is Ok:
                seen.append(described(result))
            seen.append(described(result))

    for handler, grace in ((answers_once_stopping, math.inf), (waits_for_input, 0.05)):
        seen: list[str] = []
        async with anyio.create_task_group() as tasks, sf.serve(
                handler, HOST, 0, grace=grace) as server:
            servers.append(server)
            tasks.start_soon(read_all, await sf.connect(HOST, server.port), seen)
            await anyio.wait_all_tasks_blocked()  # the handler runs
        say(f"{handler.__name__}, grace={grace}: {', '.join(seen)}")


# -- the same program without await, for the socket adapter --------------------------------


def blocking_echo(flow: BlockingFlow) -> None:
    for data in flow:
        flow.write(data)


def step_echo_blocking(sf: ModuleType, say: Say) -> None:
    flow: BlockingFlow
    with sf.serve(blocking_echo, HOST, 0) as server, sf.connect(HOST, server.port) as flow:
        assert isinstance(flow, BlockingFlow)
        options = (flow.high_water, flow.low_water, flow.receive_limit)
        assert options == (HIGH_WATER, LOW_WATER, RECEIVE_LIMIT)
        say(f"writev: {flow.writev([b'one ', b'two '])!r}")
        say(f"write: {flow.write(b'three')!r}")
        flow.shutdown(Shutdown.WRITE)
        echoed = b"".join(list(flow))
        assert echoed == b"one two three"
        say(f"echoed until Eof: {echoed!r}")
        say(f"read after Eof: {flow.read()!r}")
    say(f"after the block: {flow.state.name}")


def step_names_blocking(sf: ModuleType, say: Say) -> None:
    def tell_names(flow: BlockingFlow) -> None:
        flow.write(repr(addresses(flow)).encode())

    flow: BlockingFlow
    with sf.serve(tell_names, HOST, 0) as server:
        with sf.connect(HOST, server.port) as flow:
            peername, sockname = addresses(flow)
            told = b"".join(list(flow))
        say(f"peername is (host, port): {peername == (HOST, server.port)}")
        assert sockname[0] == HOST
        server_saw = ast.literal_eval(told.decode())
        say(f"server's peername is the client's sockname: {server_saw == (sockname, peername)}")
    say(f"names after close: {addresses(flow) == (peername, sockname)}")
    say(f"the server's port after it stopped: {server.port == peername[1]}")


def step_wrap_close_blocking(sf: ModuleType, say: Say) -> None:
    ours, theirs = tcp_pair()
    with theirs:
        names = (ours.getpeername(), ours.getsockname())
        theirs.sendall(b"wrapped")
        theirs.shutdown(socket.SHUT_WR)
        flow: BlockingFlow
        with sf.wrap(ours) as flow:
            say(f"peername and sockname are the socket's: {addresses(flow) == names}")
            data = b"".join(list(flow))
            say(f"read until Eof: {data!r}")
            flow.write(data.upper())
        say(f"after the block: {flow.state.name}")
        say(f"the peer got: {received(theirs)}")
        say(f"names after close: {addresses(flow) == names}")


def step_abort_blocking(sf: ModuleType, say: Say) -> None:
    ours, theirs = tcp_pair()
    with theirs:
        theirs.shutdown(socket.SHUT_WR)
        flow: BlockingFlow = sf.wrap(ours)
        say(f"read before the block: {flow.read()!r}")
        with pytest.raises(Boom), flow:
            raise Boom
        say(f"after the block raised: {flow.state.name}, {error_kind(flow)}")
        say(f"read: {described(flow.read())}")
        say(f"the peer got: {received(theirs)}")


def step_broken_blocking(sf: ModuleType, say: Say) -> None:
    ours, theirs = tcp_pair()
    reset(theirs)
    flow: BlockingFlow
    with sf.wrap(ours) as flow, pytest.raises(BrokenFlowError) as caught:
        say(f"unexpected data: {list(flow)}")
    broken = caught.value
    assert isinstance(broken, ConnectionError)
    assert str(broken) == error_message(broken.error)
    say(f"iterating raised: {type(broken).__name__}({broken.error.kind.name})")
    say(f"read: {described(flow.read())}")


def step_handler_raises_blocking(sf: ModuleType, say: Say) -> None:
    handled = 0

    def fails_first(flow: BlockingFlow) -> None:
        nonlocal handled
        handled += 1
        if handled == 1:
            raise Boom("the first handler fails")
        blocking_echo(flow)

    first: BlockingFlow
    second: BlockingFlow
    with errors_logged("sansflow") as records, sf.serve(fails_first, HOST, 0) as server:
        with sf.connect(HOST, server.port) as first:
            say(f"first connection reads: {described(first.read())}")
        with sf.connect(HOST, server.port) as second:
            second.write(b"still serving")
            second.shutdown(Shutdown.WRITE)
            say(f"second connection echoed: {b''.join(list(second))!r}")
    say(f"logged on sansflow: {logged(records)}")


def step_grace_blocking(sf: ModuleType, say: Say) -> None:
    servers: list[Any] = []
    running = threading.Event()

    def answers_once_stopping(flow: BlockingFlow) -> None:
        running.set()
        servers[-1].serve_forever()  # returns once the server is stopping
        flow.write(b"answered while stopping")

    def waits_for_input(flow: BlockingFlow) -> None:
        running.set()
        flow.read()  # nothing comes

    def read_all(flow: BlockingFlow, seen: list[str]) -> None:
        with flow:
            while type(result := flow.read()) is Ok:
                seen.append(described(result))
            seen.append(described(result))

    for handler, grace in ((answers_once_stopping, math.inf), (waits_for_input, 0.05)):
        seen: list[str] = []
        running.clear()
        with sf.serve(handler, HOST, 0, grace=grace) as server:
            servers.append(server)
            reader = threading.Thread(target=read_all, args=(sf.connect(HOST, server.port), seen))
            reader.start()
            running.wait()
        reader.join()
        say(f"{handler.__name__}, grace={grace}: {', '.join(seen)}")


def step_refused_blocking(sf: ModuleType, say: Say) -> None:
    with refusing_port() as port, pytest.raises(ConnectionRefusedError) as caught:
        sf.connect(HOST, port)
    assert f"{HOST}:{port}" in str(caught.value)
    say(f"refused: {type(caught.value).__name__}: {without_port(caught.value, port)}")


def step_unresolvable_blocking(sf: ModuleType, say: Say) -> None:
    with pytest.raises(socket.gaierror) as caught:
        sf.connect("nowhere.invalid", 80)
    assert "nowhere.invalid:80" in str(caught.value)
    say(f"unresolvable: {type(caught.value).__name__}")


def step_timeout_blocking(sf: ModuleType, say: Say) -> None:
    with full_backlog_port() as port, pytest.raises(TimeoutError) as caught:
        sf.connect(HOST, port, timeout=CONNECT_TIMEOUT)
    assert f"{HOST}:{port}" in str(caught.value)
    say(f"timed out: {type(caught.value).__name__}: {without_port(caught.value, port)}")


def step_bad_arguments_blocking(sf: ModuleType, say: Say) -> None:
    with refusing_port() as port:
        for label, connect in bad_connects(sf, port):
            with pytest.raises((TypeError, ValueError)) as caught:
                connect()
            say(f"connect with {label}: {type(caught.value).__name__}")
        with pytest.raises(TypeError), sf.serve(blocking_echo, HOST, str(port)):
            pass
        say("serve with a str port: TypeError")


def step_ipv6_blocking(sf: ModuleType, say: Say) -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    flow: BlockingFlow
    with sf.serve(blocking_echo, "::1", 0) as server, sf.connect("::1", server.port) as flow:
        peername, sockname = addresses(flow)
        assert (peername[:2], sockname[0]) == (("::1", server.port), "::1")
        flow.write(b"over IPv6")
        flow.shutdown(Shutdown.WRITE)
        say(f"echoed: {b''.join(list(flow))!r}")
    with refusing_port("::1") as port, pytest.raises(ConnectionRefusedError) as caught:
        sf.connect("::1", port)
    say(f"refused: {without_port(caught.value, port)}")


def step_unix_blocking(sf: ModuleType, say: Say) -> None:
    flow: BlockingFlow
    with socket_path() as path, sf.serve_unix(blocking_echo, path) as server:
        say(f"server.path is the path: {server.path == path}")
        with sf.connect_unix(path) as flow:
            say(f"peername is the path: {addresses(flow)[0] == path}")
            flow.writev([b"over ", b"AF_UNIX"])
            flow.shutdown(Shutdown.WRITE)
            say(f"echoed: {b''.join(list(flow))!r}")
        say(f"after the block: {flow.state.name}")
    with pytest.raises(TypeError):
        sf.connect_unix(3)
    say("connect_unix with a path of 3: TypeError")


# -- every adapter, one expectation --------------------------------------------------------

Step = Callable[[ModuleType, Say], Coroutine[Any, Any, None]]
BlockingStep = Callable[[ModuleType, Say], None]
STEPS: dict[str, tuple[Step, BlockingStep | None]] = {
    "echo": (step_echo, step_echo_blocking),
    "names": (step_names, step_names_blocking),
    "wrap_close": (step_wrap_close, step_wrap_close_blocking),
    "abort": (step_abort, step_abort_blocking),
    "broken": (step_broken, step_broken_blocking),
    "handler_raises": (step_handler_raises, step_handler_raises_blocking),
    "refused": (step_refused, step_refused_blocking),
    "unresolvable": (step_unresolvable, step_unresolvable_blocking),
    "timeout": (step_timeout, step_timeout_blocking),
    "bad_arguments": (step_bad_arguments, step_bad_arguments_blocking),
    "ipv6": (step_ipv6, step_ipv6_blocking),
    "unix": (step_unix, step_unix_blocking),
    "serve_forever": (step_serve_forever, None),  # the socket adapter serves on its own threads
    "grace": (step_grace, step_grace_blocking),
}
REFUSED = f"[Errno {errno.ECONNREFUSED}] connection refused by"
EXPECTED: dict[str, list[str]] = {
    "echo": [
        "writev: Ok(None)",
        "write: Ok(None)",
        "echoed until Eof: b'one two three'",
        "read after Eof: Eof()",
        "after the block: CLOSED",
    ],
    "names": [
        "peername is (host, port): True",
        "server's peername is the client's sockname: True",
        "names after close: True",
        "the server's port after it stopped: True",
    ],
    "wrap_close": [
        "peername and sockname are the socket's: True",
        "read until Eof: b'wrapped'",
        "after the block: CLOSED",
        "the peer got: b'WRAPPED' then EOF",
        "names after close: True",
    ],
    "abort": [
        "read before the block: Eof()",
        "after the block raised: CLOSED, ABORTED",
        "read: Eof()",
        "the peer got: b'' then ConnectionResetError",
    ],
    "broken": [
        "iterating raised: BrokenFlowError(RESET)",
        "read: Error(RESET)",
    ],
    "handler_raises": [
        "first connection reads: Error(RESET)",
        "second connection echoed: b'still serving'",
        "logged on sansflow: ERROR Boom('the first handler fails')",
    ],
    "refused": [f"refused: ConnectionRefusedError: {REFUSED} {HOST}:PORT"],
    "unresolvable": ["unresolvable: gaierror"],
    "timeout": [
        f"timed out: TimeoutError: [Errno {errno.ETIMEDOUT}] connect to {HOST}:PORT timed out "
        f"after {CONNECT_TIMEOUT:g} s",
    ],
    "bad_arguments": [
        "connect with a str port: TypeError",
        "connect with high_water=0: ValueError",
        "connect with low_water above high_water: ValueError",
        "connect with timeout=-1: ValueError",
        "serve with a str port: TypeError",
    ],
    "ipv6": [
        "echoed: b'over IPv6'",
        f"refused: {REFUSED} [::1]:PORT",
    ],
    "unix": [
        "server.path is the path: True",
        "peername is the path: True",
        "echoed: b'over AF_UNIX'",
        "after the block: CLOSED",
        "connect_unix with a path of 3: TypeError",
    ],
    "serve_forever": [
        "echoed: b'served'",
        "still serving: True",
    ],
    "grace": [
        "answers_once_stopping, grace=inf: Ok(b'answered while stopping'), Eof()",
        "waits_for_input, grace=0.05: Error(RESET)",
    ],
}

# adapter: (module, how the async program runs there; None: the blocking twin)
ADAPTERS: dict[str, tuple[ModuleType, dict[str, Any] | None]] = {
    "asyncio": (sf_asyncio, {"backend": "asyncio"}),
    **({"uvloop": (sf_asyncio, {"backend": "asyncio",
                                "backend_options": {"loop_factory": uvloop.new_event_loop}})}
       if uvloop is not None else {}),
    "trio": (sf_trio, {"backend": "trio"}),
    "anyio-asyncio": (sf_anyio, {"backend": "asyncio"}),
    "anyio-trio": (sf_anyio, {"backend": "trio"}),
    "socket": (sf_socket, None),
}


def run(adapter: str, step: str) -> list[str]:
    """What the program's ``step`` says on ``adapter``."""
    transcript: list[str] = []
    module, runner = ADAPTERS[adapter]
    program, blocking_program = STEPS[step]
    if runner is None:
        assert blocking_program is not None
        blocking_program(module, transcript.append)
    else:
        anyio.run(program, module, transcript.append, **runner)
    return transcript


# A handler that raises is logged at ERROR on "sansflow" (every adapter words it its own way).
EXPECTED_LOGS = {"handler_raises": [pytest.mark.expect_log("sansflow", "handler")]}
CASES = [
    pytest.param(adapter, step, marks=EXPECTED_LOGS.get(step, []), id=f"{step}-{adapter}")
    for step, (_, blocking_program) in STEPS.items()
    for adapter, (_, runner) in ADAPTERS.items()
    if runner is not None or blocking_program is not None
]


@pytest.mark.parametrize(("adapter", "step"), CASES)
def test_the_program_sees_the_same_on_every_adapter(adapter: str, step: str) -> None:
    assert run(adapter, step) == EXPECTED[step]


API = {  # function: its parameters before the options
    "connect": ["host", "port"],
    "connect_unix": ["path"],
    "wrap": ["sock"],
    "serve": ["handler", "host", "port"],
    "serve_unix": ["handler", "path"],
}
OPTIONS = {"high_water": HIGH_WATER, "low_water": LOW_WATER, "receive_limit": RECEIVE_LIMIT}
DEFAULTS: dict[str, dict[str, Any]] = {  # function: its keyword-only parameters and defaults
    "connect": {"timeout": None, **OPTIONS},
    "connect_unix": {"timeout": None, **OPTIONS},
    "wrap": OPTIONS,
    "serve": {"backlog": BACKLOG, "grace": GRACE, **OPTIONS},
    "serve_unix": {"backlog": BACKLOG, "grace": GRACE, **OPTIONS},
}
MODULES = {"asyncio": sf_asyncio, "trio": sf_trio, "anyio": sf_anyio, "socket": sf_socket}
# TLS options: the same on TCP and on AF_UNIX.
CLIENT_TLS = {"ssl": None, "server_hostname": None}
SERVER_TLS = {"ssl": None, "handshake_timeout": HANDSHAKE_TIMEOUT}
TLS: dict[str, dict[str, Any]] = {"connect": CLIENT_TLS, "connect_unix": CLIENT_TLS,
                                  "serve": SERVER_TLS, "serve_unix": SERVER_TLS}


def parameters(function: Callable[..., Any]) -> tuple[list[str], dict[str, Any]]:
    """The names of ``function``'s leading parameters, and its keyword-only ones with their
    defaults. trio's ``task_status`` is not an option: it is how ``nursery.start`` runs
    ``serve``."""
    signature = inspect.signature(function)
    leading = [p.name for p in signature.parameters.values() if p.kind is not p.KEYWORD_ONLY]
    options = {p.name: p.default for p in signature.parameters.values()
               if p.kind is p.KEYWORD_ONLY and p.name != "task_status"}
    return leading, options


@pytest.mark.parametrize("name", API)
def test_every_adapter_takes_the_same_arguments(name: str) -> None:
    seen = {adapter: parameters(getattr(module, name)) for adapter, module in MODULES.items()}
    assert seen == dict.fromkeys(MODULES, (API[name], {**DEFAULTS[name], **TLS.get(name, {})}))


@pytest.mark.parametrize("name", ["connect", "connect_unix", "wrap"])
def test_the_async_adapters_make_flows_with_await(name: str) -> None:
    awaited = {adapter: inspect.iscoroutinefunction(getattr(module, name))
               for adapter, module in MODULES.items()}
    assert awaited == {"asyncio": True, "trio": True, "anyio": True, "socket": False}
