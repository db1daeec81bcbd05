"""One job (one scenario on one stack, or one idle-memory count), run where it is called.

The harness runs each job as ``python -m bench._worker JOB_JSON`` in a fresh process so
that ``ru_maxrss`` is that job's peak alone; the last line of stdout is the JSON result.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import tracemalloc
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, TypedDict

from ._common import READ_SIZE, Measurement, Params
from ._registry import Unavailable, by_name, load_stack

if TYPE_CHECKING:
    # Imported where used: a trio or blocking job should not carry asyncio in its peak RSS.
    import asyncio

__all__ = [
    "IDLE_SUBJECTS",
    "WARMING",
    "JobResult",
    "current_rss_kib",
    "idle_bytes",
    "main",
    "peak_rss_kib",
    "run_scenario",
    "warm",
]

WARM_BYTES = 1024 * 1024
WARMING = "warmed: 1 MiB allocated and freed before the scenario, as a long-running process has"
"""What ``warm`` did, as the report says it."""


class JobResult(TypedDict):
    measurement: Measurement | None
    error: str | None
    rss_base_kib: int | None
    rss_peak_kib: int | None
    warmed: bool


def warm() -> None:
    """Leave the allocator as a process that has run a while would have it.

    glibc serves a block above its mmap threshold (128 KiB at start) with its own mmap, and
    raises the threshold to the size of such a block once it is freed. In a fresh process every
    256 KiB buffer asyncio's loop hands to recv would cost mmap, mremap and munmap; any server
    that has once freed a large block never pays that. One such block, freed, settles it.
    """
    block = bytearray(WARM_BYTES)
    del block


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss_kib() -> int | None:
    return _proc_status_kib("VmRSS")


def peak_rss_kib() -> int:
    """This process's peak resident set, in KiB.

    Linux folds the parent's high-water mark into ``ru_maxrss`` across fork and exec, so a worker
    started by a large harness would report the harness's peak; ``VmHWM`` belongs to this
    process's own address space. Elsewhere ``ru_maxrss`` is the best there is.
    """
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux counts KiB, macOS bytes.
    return peak // 1024 if sys.platform == "darwin" else peak


def run_scenario(
    stack_name: str, scenario: str, params: Params, *, fresh: bool, warmed: bool = True
) -> JobResult:
    """Run one scenario; ``fresh`` says this process is the job's own, so RSS means something;
    ``warmed``, that the allocator is warmed first (``warm``)."""
    stack = load_stack(by_name(stack_name))
    fn = stack[scenario]
    if warmed:
        warm()
    gc.collect()
    base = (current_rss_kib() or peak_rss_kib()) if fresh else None
    try:
        measurement: Measurement | None = fn(params)
        error = None
    except Exception as exc:
        measurement, error = None, _describe_failure(exc, params)
    peak = peak_rss_kib() if fresh else None
    return {"measurement": measurement, "error": error, "rss_base_kib": base,
            "rss_peak_kib": peak, "warmed": warmed}


def _describe_failure(exc: Exception, params: Params) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    # asyncio's and trio's deadline errors carry no message of their own.
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "TooSlowError":
        text += f" (deadline {params.timeout:g} s)"
    return text


# -- bytes per idle flow ----------------------------------------------------------------------


Maker = Callable[[ExitStack], Callable[[], object]]
"""Returns the constructor to count; registers on the stack whatever must be released after."""


def _sansflow_flow(resources: ExitStack) -> Callable[[], object]:
    try:
        from sansflow import Flow
    except ImportError as exc:
        raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
    return Flow


def _loop(resources: ExitStack) -> asyncio.AbstractEventLoop:
    import asyncio

    # The objects only need a loop to point at, not a running one.
    loop = asyncio.new_event_loop()
    resources.callback(loop.close)
    return loop


def _stream_reader(resources: ExitStack) -> Callable[[], object]:
    import asyncio

    loop = _loop(resources)
    return lambda: asyncio.StreamReader(limit=READ_SIZE, loop=loop)


def _stream_reader_protocol(resources: ExitStack) -> Callable[[], object]:
    import asyncio

    loop = _loop(resources)

    def make() -> object:
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        return asyncio.StreamReaderProtocol(reader, loop=loop)

    return make


IDLE_SUBJECTS: dict[str, tuple[str, Maker]] = {
    "sansflow.Flow": ("sansflow core: Flow() with defaults", _sansflow_flow),
    "asyncio.StreamReader": ("reference: an asyncio StreamReader alone", _stream_reader),
    "asyncio.StreamReaderProtocol": (
        "reference: StreamReader + StreamReaderProtocol, no transport, no writer",
        _stream_reader_protocol,
    ),
}


def idle_bytes(subject: str, count: int) -> float:
    """Bytes traced per object while ``count`` of them are alive at once."""
    with ExitStack() as resources:
        make = IDLE_SUBJECTS[subject][1](resources)
        holder: list[object] = [None] * count  # allocated before tracing: not the objects' cost
        make()  # a first call may fill caches or import lazily: not a per-object cost either
        gc.collect()
        # Someone else's tracing (``python -X tracemalloc``) is left running as it was.
        ours = not tracemalloc.is_tracing()
        if ours:
            tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(count):
                holder[i] = make()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            if ours:
                tracemalloc.stop()
        del holder
        return (after - before) / count


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    if job["job"] == "scenario":
        return dict(
            run_scenario(job["stack"], job["scenario"], Params.from_json(job["params"]),
                         fresh=True, warmed=job["warmed"])
        )
    if job["job"] == "idle":
        try:
            return {"bytes_per_flow": idle_bytes(job["subject"], job["count"]), "error": None}
        except Unavailable as exc:
            return {"bytes_per_flow": None, "error": f"unavailable: {exc}"}
    raise ValueError(f"unknown job {job['job']!r}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench._worker JOB_JSON", file=sys.stderr)
        return 2
    result = _run_job(json.loads(args[0]))
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
