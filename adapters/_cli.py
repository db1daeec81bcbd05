"""The ``sansflow`` command (``python -m sansflow``): connect, listen, relay and demo.

``connect`` and ``listen`` are a proxy between stdin/stdout and one connection, ``relay`` a
proxy per accepted connection to an upstream: the rules of ``sansflow.Relay`` (an EOF passed
on as a FIN with no timer after it, a reset passed on as a reset), so that a truncation is
never reported as a clean end. Exit status: 0 when both directions ended cleanly, 1 with one
line on stderr when the connection failed (a reset, a timeout, a refused connect), 2 for a
usage error. Data goes to stdout only; everything else to stderr, each line prefixed with
``sansflow:``. argparse and the standard library only. With TLS (``--tls``, ``--tls-in``,
``--tls-out``) the same rules hold: an EOF is a close_notify, and a peer that ends without one
is a truncation.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import select
import signal
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any, NoReturn, TypeVar

from sansflow import (
    CopyStats,
    Eof,
    Error,
    ErrorKind,
    FlowError,
    FlowState,
    Ok,
    ProxyResult,
    ReadResult,
    Shutdown,
    WriteResult,
    error_message,
)

from . import _copy
from ._connect import address_text

__all__ = ["main"]

PROG = "sansflow"
LOOPS = ("socket", "asyncio", "uvloop", "trio")
CLOSE_TIMEOUT = 10.0
MAX_CONNECTIONS = 100
LOCALHOST = "127.0.0.1"
_CHUNK = 64 * 1024
_T = TypeVar("_T")


# -- what the command says ------------------------------------------------------------------


class _Output:
    """Lines on stderr (``sansflow: ...``), from any thread; ``-v`` lines only when asked."""

    def __init__(self, verbose: bool, stream: Any = None, prefix: str = f"{PROG}: ") -> None:
        self.verbose = verbose
        self._stream = stream
        self._prefix = prefix
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(f"{self._prefix}{text}\n")
            stream.flush()

    def detail(self, text: str) -> None:
        if self.verbose:
            self.say(text)

    def raw(self, text: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(text)
            stream.flush()


def describe_end(end: Eof | Error | None) -> str:
    if end is None:
        return "still running"
    if isinstance(end, Eof):
        return "EOF"
    return error_message(end.error)


def describe_stats(name: str, stats: CopyStats) -> str:
    """One direction's ``CopyStats`` on one line; the rate only where the duration allows."""
    duration = stats.duration
    rate = f", {_size(stats.write_bytes / duration)}/s" if duration > 0 else ""
    return (f"{name}: {stats.read_bytes} bytes read in {stats.read_ops} reads, "
            f"{stats.write_bytes} written in {stats.write_ops} writes, "
            f"{duration:.3f} s{rate}, ended: {describe_end(stats.end)}")


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def _failure_text(exc: OSError) -> str:
    """One line for an exception a connect or a listen raised (it names the address)."""
    text = exc.strerror or str(exc) or type(exc).__name__
    code = exc.errno
    # An ssl error's errno is the ssl library's own code, which is no errno.
    if (not isinstance(exc, ssl.SSLError) and isinstance(code, int) and code in errno.errorcode
            and errno.errorcode[code] not in text):
        text += f" ({errno.errorcode[code]})"
    return text


# -- stdin and stdout as one end of a proxy --------------------------------------------------


class Stdio:
    """stdin (read) and stdout (write) as one end of a proxy, with ``BlockingEnd``'s API.

    A read waits in ``poll`` beside a wake-up pipe, so that ``abort()`` from another thread
    ends it (a thread blocked in ``read(2)`` could not be woken). ``shutdown(WRITE)`` leaves
    stdout open: the process ends soon after, and a kept-open ``listen`` writes the next
    connection's data there.
    """

    high_water = _CHUNK

    def __init__(self, stdin: int = 0, stdout: int = 1) -> None:
        self._stdin, self._stdout = stdin, stdout
        self._wake_read, self._wake_write = os.pipe()
        self._read_end: Eof | Error | None = None
        self._write_end: Eof | Error | None = None

    def read(self, max_bytes: int | None = None) -> ReadResult:
        if self._read_end is None:
            poller = select.poll()
            poller.register(self._stdin, select.POLLIN)
            poller.register(self._wake_read, select.POLLIN)
            ready = dict(poller.poll())
            if self._read_end is None and self._stdin in ready:
                try:
                    data = os.read(self._stdin, max_bytes or _CHUNK)
                except OSError as exc:
                    self._read_end = Error(FlowError.from_exception(exc))
                else:
                    if data:
                        return Ok(data)
                    self._read_end = Eof()
        assert self._read_end is not None  # the wake-up pipe is written to only after an end
        return self._read_end

    def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        if self._write_end is not None:
            return self._write_end
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._stdout, view):]
        except OSError as exc:  # EPIPE: whoever read our stdout went away
            self._write_end = Error(FlowError.from_exception(exc))
            return self._write_end
        return Ok(None)

    def shutdown(self, how: Shutdown) -> None:
        if how is not Shutdown.WRITE and self._read_end is None:
            self._read_end = Eof()
            os.write(self._wake_write, b"x")
        if how is not Shutdown.READ and self._write_end is None:
            self._write_end = Eof()

    def abort(self) -> None:
        aborted = Error(FlowError(ErrorKind.ABORTED))
        if self._write_end is None:
            self._write_end = aborted
        if self._read_end is None:
            self._read_end = aborted
            os.write(self._wake_write, b"x")

    def release(self) -> None:
        """Close the wake-up pipe; call once nothing reads any more."""
        os.close(self._wake_read)
        os.close(self._wake_write)


class AsyncStdio:
    """``Stdio`` with ``AsyncEnd``'s API: its reads and writes run in a thread."""

    def __init__(self, stdio: Stdio, in_thread: Callable[[Callable[[], Any]], Awaitable[Any]]
                 ) -> None:
        self._stdio, self._in_thread = stdio, in_thread
        self.high_water = stdio.high_water

    async def read(self, max_bytes: int | None = None) -> ReadResult:
        result: ReadResult = await self._in_thread(partial(self._stdio.read, max_bytes))
        return result

    async def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        result: WriteResult = await self._in_thread(partial(self._stdio.write, data))
        return result

    async def shutdown(self, how: Shutdown) -> None:
        self._stdio.shutdown(how)

    async def abort(self) -> None:
        self._stdio.abort()


# -- flows that report what happens to them (-v, --progress, demo) ---------------------------


class _Watch:
    """A flow's events and state transitions, told as they happen, and the bytes it moved."""

    def __init__(self, flow: Any, name: str, output: _Output) -> None:
        self.flow, self.name, self.output = flow, name, output
        self.high_water: int = flow.high_water
        self.received = self.sent = 0
        self._state = flow.state

    def tell_tls(self) -> None:
        """What the handshake settled on (``-v``), for a TLS flow."""
        tls = self.flow.tls
        if tls is not None:
            version = tls.version.replace("TLSv", "TLS ")
            alpn = f"ALPN {tls.alpn_protocol}" if tls.alpn_protocol else "no ALPN"
            self.output.detail(f"{self.name}: {version}, cipher {tls.cipher}, {alpn}")

    def _tell(self, event: str | None) -> None:
        state = self.flow.state
        moved = f" ({self._state.name} -> {state.name})" if state is not self._state else ""
        self._state = state
        if event is not None or moved:
            self.output.detail(f"{self.name}: {event or 'state'}{moved}")

    def _read(self, result: ReadResult) -> ReadResult:
        if isinstance(result, Ok):
            self.received += len(result.value)
            self._tell(None)
        elif isinstance(result, Eof):
            self._tell("peer sent EOF")
        else:
            self._tell(f"failed: {error_message(result.error)}")
        return result

    def _wrote(self, size: int, result: WriteResult) -> WriteResult:
        if isinstance(result, Ok):
            self.sent += size
            self._tell(None)
        else:
            self._tell(f"write refused: {describe_end(result)}")
        return result

    def _shut(self, how: Shutdown) -> None:
        self._tell({Shutdown.WRITE: "sent EOF", Shutdown.READ: "stopped reading",
                    Shutdown.BOTH: "sent EOF and stopped reading"}[how])


class AsyncWatched(_Watch):
    async def read(self, max_bytes: int | None = None) -> ReadResult:
        return self._read(await self.flow.read(max_bytes))

    async def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        return self._wrote(len(data), await self.flow.write(data))

    async def shutdown(self, how: Shutdown) -> None:
        await self.flow.shutdown(how)
        self._shut(how)

    async def abort(self) -> None:
        await self.flow.abort()
        self._tell("aborted: the peer sees a reset")

    async def close(self, timeout: float | None = None) -> None:
        await self.flow.close(timeout)
        self._tell("closed")

    async def read_to_end(self) -> bytes:
        data = bytearray()
        while isinstance(result := await self.read(), Ok):
            data += result.value
        return bytes(data)


class BlockingWatched(_Watch):
    def read(self, max_bytes: int | None = None) -> ReadResult:
        return self._read(self.flow.read(max_bytes))

    def write(self, data: bytes | bytearray | memoryview) -> WriteResult:
        return self._wrote(len(data), self.flow.write(data))

    def shutdown(self, how: Shutdown) -> None:
        self.flow.shutdown(how)
        self._shut(how)

    def abort(self) -> None:
        self.flow.abort()
        self._tell("aborted: the peer sees a reset")

    def close(self, timeout: float | None = None) -> None:
        self.flow.close(timeout)
        self._tell("closed")

    def read_to_end(self) -> bytes:
        data = bytearray()
        while isinstance(result := self.read(), Ok):
            data += result.value
        return bytes(data)


class _Progress:
    """``--progress``: a bytes/s line on stderr, rewritten each second, while a flow runs."""

    INTERVAL = 1.0

    def __init__(self, watched: _Watch, output: _Output) -> None:
        self._watched, self._output = watched, output
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sansflow progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = last_time = time.monotonic()
        last = 0
        while not self._stop.wait(self.INTERVAL):
            now = time.monotonic()
            moved = self._watched.received + self._watched.sent
            self._output.raw(
                f"\r{PROG}: {_size(self._watched.received)} received, "
                f"{_size(self._watched.sent)} sent, {_size((moved - last) / (now - last_time))}/s"
                f" ({now - start:.0f} s)   ")
            last, last_time = moved, now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._output.raw("\n")


def _progress(args: argparse.Namespace, watched: _Watch, output: _Output) -> _Progress | None:
    # Only on a terminal: a log file would fill with carriage returns.
    return _Progress(watched, output) if args.progress and sys.stderr.isatty() else None


# -- the outcome ------------------------------------------------------------------------------


def _outcome(args: argparse.Namespace, result: ProxyResult, flow: _Watch,
             output: _Output) -> int:
    """Report one stdin/stdout connection: 0 when both directions ended cleanly."""
    if args.stats:
        output.say(describe_stats(f"stdin -> {flow.name}", result.a_to_b))
        output.say(describe_stats(f"{flow.name} -> stdout", result.b_to_a))
    error = result.error or flow.flow.error
    if error is None:
        return 0
    output.say(f"{error_message(error)} after {result.b_to_a.read_bytes} bytes received")
    return 1


def _relay_line(peer: str, upstream: str, result: ProxyResult, down: _Watch,
                up: _Watch) -> str:
    ends = [describe_end(result.a_to_b.end), describe_end(result.b_to_a.end)]
    for flow in (down, up):
        if result.error is None and flow.flow.error is not None:  # the close failed
            ends.append(f"{flow.name} close: {error_message(flow.flow.error)}")
    return (f"{peer} -> {upstream}: {result.a_to_b.write_bytes} bytes up, {ends[0]}; "
            f"{result.b_to_a.write_bytes} bytes down, {'; '.join(ends[1:])}")


# -- the event loops ----------------------------------------------------------------------


@dataclass(frozen=True)
class _AsyncLoop:
    """What the async commands need of asyncio (uvloop) or trio, in one place."""

    sf: ModuleType
    proxy: Callable[..., Awaitable[ProxyResult]]
    in_thread: Callable[[Callable[[], Any]], Awaitable[Any]]
    lock: Callable[[], Any]
    event: Callable[[], Any]
    # run(main) runs main to its end, stopped by a signal as ``_Stops`` says.
    run: Callable[[Callable[[], Awaitable[Any]]], Any]
    # await until_stopped(wait): what a stop signal ends first, in main (a server's wait).
    until_stopped: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
    cancelled: type[BaseException]  # what a cancelled task gets


def _async_loop(name: str) -> _AsyncLoop:
    stops = _Stops()
    if name == "trio":
        import trio

        from . import trio as sf_trio

        async def trio_thread(call: Callable[[], _T]) -> _T:
            return await trio.to_thread.run_sync(call, abandon_on_cancel=True)

        return _AsyncLoop(sf_trio, _copy.proxy_trio, trio_thread, trio.Lock, trio.Event,
                          stops.run_trio, stops.until_stopped_trio, trio.Cancelled)
    import asyncio

    from . import asyncio as sf_asyncio

    if name == "uvloop":
        import uvloop

        runner: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run
    else:
        runner = asyncio.run
    return _AsyncLoop(sf_asyncio, _copy.proxy_asyncio, _asyncio_thread, asyncio.Lock,
                      asyncio.Event, partial(stops.run_asyncio, runner),
                      stops.until_stopped_asyncio, asyncio.CancelledError)


class _Stops:
    """The stop signals during an event loop's run: SIGTERM, and SIGINT unless it is ignored
    (a shell starts its background jobs so, and they must stay deaf to the terminal's
    Ctrl-C). Each signal cancels the innermost of what is running: the wait given to
    ``until_stopped`` (a server's, whose block is then left normally: its connections get
    their grace), else main, and then the run raises KeyboardInterrupt, as the socket loop's
    main thread gets it. A KeyboardInterrupt raised from the signal handler instead would land
    wherever the loop is, and leave it broken."""

    def __init__(self) -> None:
        self._cancels: list[_Cancel] = []  # outermost first

    def _stop(self) -> None:
        if self._cancels:
            self._cancels.pop().cancel()

    @contextmanager
    def _cancelling(self, cancel: _Cancel) -> Iterator[_Cancel]:
        self._cancels.append(cancel)
        try:
            yield cancel
        finally:
            if cancel in self._cancels:
                self._cancels.remove(cancel)

    def run_trio(self, main: Callable[[], Awaitable[Any]]) -> Any:
        import trio

        async def stoppable() -> Any:
            token = trio.lowlevel.current_trio_token()
            signals = _stop_signals()
            with _restoring(signals):
                for number in signals:
                    # run_sync_soon is the one trio call a signal handler may make
                    signal.signal(number, lambda *_: token.run_sync_soon(self._stop))
                return await self.until_stopped_trio(main)

        result = trio.run(stoppable)
        return _unless_stopped(result)

    async def until_stopped_trio(self, wait: Callable[[], Awaitable[_T]]) -> _T | _Stopped:
        import trio

        with trio.CancelScope() as scope, self._cancelling(_Cancel(scope.cancel)):
            return await wait()
        return _STOPPED

    def run_asyncio(self, runner: Callable[[Coroutine[Any, Any, Any]], Any],
                    main: Callable[[], Awaitable[Any]]) -> Any:
        import asyncio

        async def stoppable() -> Any:
            loop = asyncio.get_running_loop()
            signals = _stop_signals()
            with _restoring(signals):
                for number in signals:
                    loop.add_signal_handler(number, self._stop)
                try:
                    return await self.until_stopped_asyncio(main)
                finally:
                    for number in signals:
                        loop.remove_signal_handler(number)

        return _unless_stopped(runner(stoppable()))

    async def until_stopped_asyncio(self, wait: Callable[[], Awaitable[_T]]
                                    ) -> _T | _Stopped:
        import asyncio

        task = asyncio.current_task()
        assert task is not None
        with self._cancelling(_Cancel(task.cancel)) as cancel:
            try:
                return await wait()
            except asyncio.CancelledError:
                if not cancel.called:
                    raise
        return _STOPPED


class _Cancel:
    """A cancellation a stop signal may call, which remembers that it was called."""

    def __init__(self, call: Callable[[], object]) -> None:
        self._call = call
        self.called = False

    def cancel(self) -> None:
        self.called = True
        self._call()


class _Stopped:
    """What ``until_stopped`` returns when a stop signal ended the wait."""


_STOPPED = _Stopped()


def _unless_stopped(result: Any) -> Any:
    if isinstance(result, _Stopped):
        raise KeyboardInterrupt
    return result


def _stop_signals() -> list[signal.Signals]:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return [signal.SIGTERM]
    return [signal.SIGTERM, signal.SIGINT]


@contextmanager
def _restoring(signals: list[signal.Signals]) -> Iterator[None]:
    """Put the handlers of ``signals`` back on leaving: asyncio's remove_signal_handler
    would leave SIGTERM at its default, which kills the process without a word."""
    saved = [(number, signal.getsignal(number)) for number in signals]
    try:
        yield
    finally:
        for number, handler in saved:
            signal.signal(number, handler)


async def _asyncio_thread(call: Callable[[], _T]) -> _T:
    """``call()`` on a daemon thread: unlike the default executor's, it does not hold up the
    end of ``asyncio.run`` when it is still blocked (in a read of stdin, say)."""
    import asyncio

    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def run() -> None:
        try:
            value, exc = call(), None
        except BaseException as failure:
            value, exc = None, failure
        # The run may have ended meanwhile (a stop does not wait for stdin): then nobody
        # waits for the outcome, and the closed loop refuses it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, done, value, exc)

    threading.Thread(target=run, name="sansflow stdio", daemon=True).start()
    return await done


def _settle(future: Any, value: Any, exc: BaseException | None) -> None:
    if not future.done():
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)


# -- connect and listen ---------------------------------------------------------------------


def cmd_connect(args: argparse.Namespace, output: _Output) -> int:
    if args.loop == "socket":
        from . import socket as sf

        flow = BlockingWatched(sf.connect(args.host, args.port, **_reaching(args)), "server",
                               output)
        return _stdio_blocking(args, flow, output)
    loop = _async_loop(args.loop)

    async def main() -> int:
        flow = AsyncWatched(await loop.sf.connect(args.host, args.port, **_reaching(args)),
                            "server", output)
        return await _stdio_async(args, loop, flow, output)

    status: int = loop.run(main)
    return status


def _reaching(args: argparse.Namespace) -> dict[str, Any]:
    """``connect``'s options for a server (connect's, a relay's upstream): TLS when asked for,
    and ``--idle-timeout`` bounds the connect and the handshake too: a server that never
    answers them is idle as well."""
    return {"timeout": args.idle_timeout, "ssl": args.client_tls, "server_hostname": args.sni}


def _stdio_blocking(args: argparse.Namespace, flow: BlockingWatched, output: _Output) -> int:
    output.detail(f"{flow.name}: connected, {address_text(flow.flow.sockname)} -> "
                  f"{address_text(flow.flow.peername)}")
    flow.tell_tls()
    stdio = Stdio()
    progress = _progress(args, flow, output)
    try:
        result = _copy.proxy_blocking(stdio, flow, idle_timeout=args.idle_timeout)
        flow.close(args.close_timeout)
    finally:
        if flow.flow.state is not FlowState.CLOSED:  # interrupted: reset the connection
            flow.abort()
        stdio.abort()
        stdio.release()
        if progress is not None:
            progress.stop()
    return _outcome(args, result, flow, output)


async def _stdio_async(args: argparse.Namespace, loop: _AsyncLoop, flow: AsyncWatched,
                       output: _Output) -> int:
    output.detail(f"{flow.name}: connected, {address_text(flow.flow.sockname)} -> "
                  f"{address_text(flow.flow.peername)}")
    flow.tell_tls()
    stdio = Stdio()
    progress = _progress(args, flow, output)
    try:
        result = await loop.proxy(AsyncStdio(stdio, loop.in_thread), flow,
                                  idle_timeout=args.idle_timeout)
        await flow.close(args.close_timeout)
    finally:
        if flow.flow.state is not FlowState.CLOSED:  # interrupted: reset the connection
            await flow.abort()
        stdio.abort()
        stdio.release()
        if progress is not None:
            progress.stop()
    return _outcome(args, result, flow, output)


def cmd_listen(args: argparse.Namespace, output: _Output) -> int:
    """Serve one connection at a time with stdin/stdout; the first only, without
    ``--keep-open`` (which Ctrl-C or SIGTERM stop). The exit status is the last
    connection's."""
    status = [0]
    if args.loop == "socket":
        from . import socket as sf

        turn = threading.Lock()
        served = threading.Event()

        def handle(flow: Any) -> None:
            with turn:
                if served.is_set() and not args.keep_open:
                    flow.abort()
                    return
                status[0] = _stdio_blocking(args, BlockingWatched(flow, "client", output),
                                            output)
                served.set()

        def serve() -> None:
            with sf.serve(handle, args.host, args.port, ssl=args.server_tls) as server:
                output.say(f"listening on {address_text((args.host, server.port))}")
                if args.keep_open:
                    server.serve_forever()
                else:
                    served.wait()

        if args.keep_open:  # stopped normally also before serve_forever waits: a client
            _until_stopped(serve)  # may be served before this thread gets there
        else:
            serve()
        return status[0]
    loop = _async_loop(args.loop)

    async def main() -> int:
        turn = loop.lock()
        served = loop.event()

        async def handle(flow: Any) -> None:
            async with turn:
                if served.is_set() and not args.keep_open:
                    await flow.abort()
                    return
                watched = AsyncWatched(flow, "client", output)
                try:
                    status[0] = await _stdio_async(args, loop, watched, output)
                except loop.cancelled:
                    # The server stopped, and its grace passed: the connection was reset, a
                    # failure, reported as the socket loop's stop, which aborts it, reports it.
                    status[0] = 1
                    output.say(f"{error_message(FlowError(ErrorKind.ABORTED))} after "
                               f"{watched.received} bytes received")
                    raise
                served.set()

        async with loop.sf.serve(handle, args.host, args.port, ssl=args.server_tls) as server:
            output.say(f"listening on {address_text((args.host, server.port))}")
            if args.keep_open:
                await loop.until_stopped(server.serve_forever)
            else:
                await served.wait()
        return status[0]

    if args.keep_open:  # Ctrl-C or SIGTERM stop it normally
        _until_stopped(partial(loop.run, main))
        return status[0]
    last: int = loop.run(main)
    return last


# -- relay --------------------------------------------------------------------------------


class _Admission:
    """``--max-connections``: how many proxies run, and the refusal beyond the limit."""

    def __init__(self, limit: int, output: _Output) -> None:
        self.limit, self.output = limit, output
        self.running = 0
        self._lock = threading.Lock()

    def enter(self, peer: str) -> bool:
        with self._lock:
            if self.running >= self.limit:
                refused = True
            else:
                refused = False
                self.running += 1
        if refused:
            self.output.say(f"refusing {peer}: {self.limit} connections already "
                            f"(--max-connections)")
        return not refused

    def leave(self) -> None:
        with self._lock:
            self.running -= 1


def cmd_relay(args: argparse.Namespace, output: _Output) -> int:
    upstream = address_text((args.upstream_host, args.upstream_port))
    admission = _Admission(args.max_connections, output)
    if args.loop == "socket":
        from . import socket as sf

        def handle(flow: Any) -> None:
            peer = address_text(flow.peername)
            if not admission.enter(peer):
                flow.abort()
                return
            try:
                _relay_blocking(sf, BlockingWatched(flow, "client", output), peer)
            finally:
                admission.leave()

        def _relay_blocking(sf: ModuleType, down: BlockingWatched, peer: str) -> None:
            try:
                up = BlockingWatched(sf.connect(args.upstream_host, args.upstream_port,
                                                **_reaching(args)), "upstream", output)
            except OSError as exc:
                output.say(f"{peer} -> {upstream}: {_failure_text(exc)}")
                down.abort()
                return
            down.tell_tls()
            up.tell_tls()
            result = _copy.proxy_blocking(down, up, idle_timeout=args.idle_timeout)
            down.close(args.close_timeout)
            up.close(args.close_timeout)
            _report_relay(args, output, peer, upstream, result, down, up)

        def serve() -> None:
            with sf.serve(handle, args.bind, args.port, ssl=args.server_tls) as server:
                output.say(f"relaying {address_text((args.bind, server.port))} to {upstream}")
                server.serve_forever()

        _until_stopped(serve)
        return 0
    loop = _async_loop(args.loop)

    async def handle_async(flow: Any) -> None:
        peer = address_text(flow.peername)
        if not admission.enter(peer):
            await flow.abort()
            return
        try:
            down = AsyncWatched(flow, "client", output)
            try:
                up = AsyncWatched(await loop.sf.connect(args.upstream_host, args.upstream_port,
                                                        **_reaching(args)), "upstream", output)
            except OSError as exc:
                output.say(f"{peer} -> {upstream}: {_failure_text(exc)}")
                await down.abort()
                return
            down.tell_tls()
            up.tell_tls()
            result = await loop.proxy(down, up, idle_timeout=args.idle_timeout)
            await down.close(args.close_timeout)
            await up.close(args.close_timeout)
            _report_relay(args, output, peer, upstream, result, down, up)
        finally:
            admission.leave()

    async def main() -> int:
        async with loop.sf.serve(handle_async, args.bind, args.port,
                                 ssl=args.server_tls) as server:
            output.say(f"relaying {address_text((args.bind, server.port))} to {upstream}")
            await loop.until_stopped(server.serve_forever)
        return 0

    return _until_stopped(partial(loop.run, main)) or 0


def _report_relay(args: argparse.Namespace, output: _Output, peer: str, upstream: str,
                  result: ProxyResult, down: _Watch, up: _Watch) -> None:
    output.say(_relay_line(peer, upstream, result, down, up))
    if args.stats:
        output.say(describe_stats(f"{peer} -> {upstream}", result.a_to_b))
        output.say(describe_stats(f"{upstream} -> {peer}", result.b_to_a))


def _until_stopped(serve: Callable[[], _T]) -> _T | None:
    """Run ``serve`` until Ctrl-C or SIGTERM, which stop a relay normally (status 0)."""
    try:
        return serve()
    except KeyboardInterrupt:
        return None


# -- demo ---------------------------------------------------------------------------------


REQUEST = b"hello, half-closed world"


def cmd_demo(args: argparse.Namespace, output: _Output) -> int:
    """A server and a client on loopback, on each adapter that can run here: a request, the
    client's EOF, a reply after it, a clean close; every event on stdout."""
    shown = _Output(verbose=True, stream=sys.stdout, prefix="")
    failed = 0
    for name in LOOPS:
        try:
            if name == "socket":
                __import__("sansflow.adapters.socket")
            else:
                _async_loop(name)
        except ImportError as exc:
            shown.say(f"== {name}: not installed here ({exc.name})")
            continue
        shown.say(f"== {name} adapter")
        reply = _demo_blocking(shown) if name == "socket" else _demo_async(name, shown)
        ok = reply == REQUEST.upper()
        failed += not ok
        shown.say(f"client: read {reply!r}{'' if ok else ': WRONG'}")
    return 1 if failed else 0


def _demo_blocking(shown: _Output) -> bytes:
    from . import socket as sf

    def handler(flow: Any) -> None:
        server = BlockingWatched(flow, "  server", shown)
        request = server.read_to_end()
        shown.say(f"  server: read {request!r}, then EOF; now the reply")
        server.write(request.upper())
        server.close(CLOSE_TIMEOUT)

    with sf.serve(handler, LOCALHOST, 0) as listening:
        client = BlockingWatched(sf.connect(LOCALHOST, listening.port), "client", shown)
        client.write(REQUEST)
        shown.say(f"client: wrote {REQUEST!r}")
        client.shutdown(Shutdown.WRITE)
        reply = client.read_to_end()
        client.close(CLOSE_TIMEOUT)
    return reply


def _demo_async(name: str, shown: _Output) -> bytes:
    loop = _async_loop(name)

    async def handler(flow: Any) -> None:
        server = AsyncWatched(flow, "  server", shown)
        request = await server.read_to_end()
        shown.say(f"  server: read {request!r}, then EOF; now the reply")
        await server.write(request.upper())
        await server.close(CLOSE_TIMEOUT)

    async def main() -> bytes:
        async with loop.sf.serve(handler, LOCALHOST, 0) as listening:
            client = AsyncWatched(await loop.sf.connect(LOCALHOST, listening.port), "client",
                                  shown)
            await client.write(REQUEST)
            shown.say(f"client: wrote {REQUEST!r}")
            await client.shutdown(Shutdown.WRITE)
            reply = await client.read_to_end()
            await client.close(CLOSE_TIMEOUT)
        return reply

    reply: bytes = loop.run(main)
    return reply


# -- the arguments -------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def _alpn(text: str) -> list[str]:
    protocols = text.split(",")
    if not all(0 < len(p.encode()) < 256 for p in protocols):
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of protocol names (1-255 bytes each): {text!r}")
    return protocols


@dataclass(frozen=True)
class _TlsSide:
    """One side of a command that may speak TLS: the switch that turns it on (an
    ``argparse`` dest: ``tls``, ``tls_in``, ``tls_out``), the options that mean something
    only with it, and whether the command is the server there."""

    switch: str
    options: tuple[str, ...]
    server: bool


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _tls_contexts(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  output: _Output) -> None:
    """Check the command's TLS options and make its contexts: ``args.client_tls`` (to a
    server) and ``args.server_tls`` (for clients), ``None`` for plain TCP. A file that cannot
    be loaded is a usage error, as a malformed argument is."""
    args.client_tls = args.server_tls = None
    for side in args.tls_sides:
        # Only this side's options: a relay's --cert is its own, never shown to the upstream.
        given = {dest: getattr(args, dest) for dest in side.options
                 if getattr(args, dest) not in (None, False)}
        if not getattr(args, side.switch):
            if given:
                parser.error(f"{_flag(next(iter(given)))} needs {_flag(side.switch)}")
            continue
        if ("cert" in given) != ("key" in given):
            parser.error("--cert and --key go together")
        if side.server:
            if "cert" not in given:
                parser.error(f"{_flag(side.switch)} needs --cert and --key")
            args.server_tls = _server_context(parser.error, given)
        else:
            args.client_tls = _client_context(parser.error, given, output)


def _client_context(fail: Callable[[str], NoReturn], given: dict[str, Any],
                    output: _Output) -> ssl.SSLContext:
    """The server's certificate checked against the system's CAs or ``--cafile``, and its
    name (``--sni``, else HOST) unless ``--no-verify``; ``--cert``: ours, for a server that
    asks."""
    cafile = given.get("cafile")
    context = _loaded(fail, f"--cafile {cafile}",
                      lambda: ssl.create_default_context(cafile=cafile))
    if given.get("no_verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        output.say("warning: --no-verify: the server's certificate is not checked, anyone "
                   "on the way can read and change the data")
    return _common_context(fail, context, given)


def _server_context(fail: Callable[[str], NoReturn], given: dict[str, Any]) -> ssl.SSLContext:
    """``--cert`` and ``--key``; with ``--cafile``, a client certificate from one of its CAs
    is required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if "cafile" in given:
        _loaded(fail, f"--cafile {given['cafile']}",
                lambda: context.load_verify_locations(given["cafile"]))
        context.verify_mode = ssl.CERT_REQUIRED
    return _common_context(fail, context, given)


def _common_context(fail: Callable[[str], NoReturn], context: ssl.SSLContext,
                    given: dict[str, Any]) -> ssl.SSLContext:
    """What a client's and a server's context share: a certificate, ALPN."""
    if "cert" in given:
        _loaded(fail, f"--cert {given['cert']} --key {given['key']}",
                lambda: context.load_cert_chain(given["cert"], given["key"]))
    if "alpn" in given:
        context.set_alpn_protocols(given["alpn"])
    return context


def _loaded(fail: Callable[[str], NoReturn], what: str, load: Callable[[], _T]) -> _T:
    """``load()``, or a usage error that names the options and files (``what``)."""
    try:
        return load()
    except OSError as exc:  # a missing file, or one that is not PEM (ssl.SSLError)
        fail(f"{what}: {exc.strerror or exc}")


def _common_options() -> argparse.ArgumentParser:
    """The options every connection-carrying command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="tell each flow's events and state transitions on stderr")
    common.add_argument("--stats", action="store_true",
                        help="print both directions' byte and operation counts at the end")
    common.add_argument("--progress", action="store_true",
                        help="a live bytes/s line on stderr (only when it is a terminal)")
    common.add_argument("--idle-timeout", type=_seconds, metavar="S",
                        help="abort both sides when no byte moved either way for S seconds; "
                             "connecting to a server (its TLS handshake included) gets as "
                             "long (reported: connect and listen exit 1; default: none)")
    common.add_argument("--close-timeout", type=_seconds, metavar="S", default=CLOSE_TIMEOUT,
                        help="how long closing waits for the peer's EOF before aborting "
                             f"(reported, exit 1; default: {CLOSE_TIMEOUT:g})")
    common.add_argument("--loop", choices=LOOPS, default="socket",
                        help="the adapter: socket (blocking, the default), asyncio, uvloop "
                             "or trio")
    return common


def _verify_options(group: Any, whose: str) -> None:
    """How a client checks the server: ``--cafile``, ``--sni``, ``--no-verify``."""
    group.add_argument("--cafile", metavar="FILE",
                       help=f"trust the CAs in FILE (PEM) for {whose}'s certificate, instead of "
                            "the system's")
    group.add_argument("--sni", metavar="NAME",
                       help=f"the name {whose}'s certificate must have, sent as SNI "
                            "(default: HOST)")
    group.add_argument("--no-verify", action="store_true",
                       help=f"do not check {whose}'s certificate (says so on stderr): "
                            "for tests only")


def _certificate_options(group: Any, whose: str) -> None:
    group.add_argument("--cert", metavar="FILE",
                       help=f"{whose} certificate chain (PEM), with --key")
    group.add_argument("--key", metavar="FILE", help="its private key (PEM)")


def _alpn_option(group: Any, what: str) -> None:
    group.add_argument("--alpn", type=_alpn, metavar="P[,P...]",
                       help=f"the ALPN protocols {what}, in order of preference")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="A byte stream that never hides a truncation: connect, "
        "listen and relay with half-close, and resets passed on as resets.",
        epilog="Exit status: 0 both directions ended cleanly, 1 the connection failed "
        "(one line on stderr), 2 usage.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()

    connect = commands.add_parser(
        "connect", parents=[common], help="stdin to a TCP connection, the connection to stdout",
        description="Send stdin to HOST PORT and the replies to stdout. The end of stdin "
        "sends EOF (a FIN) and the replies keep coming until the peer ends.")
    connect.add_argument("host", metavar="HOST")
    connect.add_argument("port", metavar="PORT", type=_port)
    tls = connect.add_argument_group("TLS")
    tls.add_argument("--tls", action="store_true",
                     help="TLS to the server; the end of stdin sends close_notify")
    _verify_options(tls, "the server")
    _alpn_option(tls, "to offer")
    _certificate_options(tls, "a client")
    connect.set_defaults(run=cmd_connect, tls_sides=(_TlsSide(
        "tls", ("cafile", "sni", "no_verify", "alpn", "cert", "key"), server=False),))

    listen = commands.add_parser(
        "listen", parents=[common], help="connect's counterpart: accept a connection",
        description="Accept a TCP connection on HOST (127.0.0.1 unless given) PORT and "
        "carry it as connect does; then exit, or with --keep-open accept the next.")
    listen.add_argument("address", metavar="[HOST] PORT", nargs="+")
    listen.add_argument("-k", "--keep-open", action="store_true",
                        help="serve each connection in turn, one at a time, until stopped")
    tls = listen.add_argument_group("TLS")
    tls.add_argument("--tls", action="store_true",
                     help="TLS with each client, with --cert and --key")
    _certificate_options(tls, "the server's")
    tls.add_argument("--cafile", metavar="FILE",
                     help="require a client certificate from one of the CAs in FILE (PEM)")
    _alpn_option(tls, "to accept")
    listen.set_defaults(run=cmd_listen, tls_sides=(_TlsSide(
        "tls", ("cert", "key", "cafile", "alpn"), server=True),))

    relay = commands.add_parser(
        "relay", parents=[common], help="a proxy from a local port to HOST PORT",
        description="Accept TCP connections on LISTEN_PORT and proxy each to HOST PORT: an "
        "EOF is passed on as an EOF, a reset as a reset; one line per connection on stderr.")
    relay.add_argument("port", metavar="LISTEN_PORT", type=_port)
    relay.add_argument("upstream_host", metavar="HOST")
    relay.add_argument("upstream_port", metavar="PORT", type=_port)
    relay.add_argument("--bind", metavar="ADDRESS", default=LOCALHOST,
                       help=f"the address to listen on (default: {LOCALHOST})")
    relay.add_argument("--max-connections", type=_positive, metavar="N",
                       default=MAX_CONNECTIONS,
                       help="proxy at most N connections at once; refuse (reset) the others "
                            f"and say so (default: {MAX_CONNECTIONS})")
    tls = relay.add_argument_group("TLS")
    tls.add_argument("--tls-in", action="store_true",
                     help="TLS with each client, with --cert and --key")
    _certificate_options(tls, "the relay's")
    tls.add_argument("--tls-out", action="store_true", help="TLS to the upstream HOST PORT")
    _verify_options(tls, "the upstream")
    relay.set_defaults(run=cmd_relay, tls_sides=(
        _TlsSide("tls_in", ("cert", "key"), server=True),
        _TlsSide("tls_out", ("cafile", "sni", "no_verify"), server=False)))

    demo = commands.add_parser(
        "demo", help="see a half-close on every adapter, in seconds",
        description="In one process, a server and a client on loopback on each adapter "
        "installed: a request, the client's EOF, a reply after it, a clean close.")
    demo.set_defaults(run=cmd_demo, verbose=True, tls_sides=())
    return parser


def _stop(*_: object) -> None:
    """SIGTERM stops the command as Ctrl-C does: a KeyboardInterrupt, which the socket loop's
    main thread takes where it waits. An event loop is stopped in its own way while it runs
    (``_Stops``)."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "listen":
        if len(args.address) > 2:
            parser.error("listen takes [HOST] PORT")
        host = args.address[0] if len(args.address) == 2 else LOCALHOST
        try:
            args.host, args.port = host, _port(args.address[-1])
        except argparse.ArgumentTypeError as exc:
            parser.error(f"listen: {exc}")
    output = _Output(args.verbose)
    _tls_contexts(parser, args, output)
    signal.signal(signal.SIGTERM, _stop)
    try:
        status: int = args.run(args, output)
    except OSError as exc:  # a connect or a listen failed: it names the address
        output.say(_failure_text(exc))
        return 1
    except KeyboardInterrupt:
        output.say("interrupted")
        return 1
    return status
