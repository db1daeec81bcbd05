"""Checks, their registry, how they run and how they fail.

A check is an async function of a ``CheckContext``, registered with the contract row it covers
by ``@_check(row)``. It fails by raising what ``_fail`` makes; ``run_check`` runs it on a fresh
pair of flows under a watchdog and turns any failure into a ``ConformanceError``.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

import anyio

from ._wrappers import AsyncFlowLike, PairFactory


@dataclass(slots=True)
class CheckContext:
    """What a check works on: flow ``a`` (the one under test) and its peer ``b``.

    ``step`` says what the check is doing; a timeout reports it.
    """

    a: AsyncFlowLike
    b: AsyncFlowLike
    step: str = "starting"


CheckFunction = Callable[[CheckContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Check:
    """One conformance check: its ``name``, the ``contract`` row it covers, and its code."""

    name: str
    contract: str
    function: CheckFunction = field(repr=False)
    needs_cancellation: bool = False

    async def run(self, make_pair: PairFactory, *, timeout: float = 30.0) -> None:
        """Run this check on a fresh pair; raise ``ConformanceError`` if it fails."""
        await run_check(self, make_pair, timeout=timeout)


class ConformanceError(AssertionError):
    """One or more checks failed. ``failures`` holds ``(check, what went wrong)`` pairs."""

    def __init__(self, failures: Sequence[tuple[Check, str]]) -> None:
        self.failures = list(failures)
        lines = [
            f"{check.name} failed (contract: {check.contract}): {detail}"
            for check, detail in self.failures
        ]
        super().__init__("\n".join(lines))


class _Violation(AssertionError):
    """Raised inside a check; the runner adds the check's name and contract row."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        # When a failure aborts the flows, the tasks still running fail too; the first
        # failure is the one to report.
        self.order = next(_VIOLATIONS)


_VIOLATIONS = itertools.count()


def _fail(detail: str) -> _Violation:
    return _Violation(detail)


_REGISTRY: list[Check] = []
"""Every check, in the order ``check_flow_pair`` runs them: each section's module adds its
checks as it loads, and the package's ``__init__`` then puts them in run order."""


def _check(contract: str, *, cancellation: bool = False
           ) -> Callable[[CheckFunction], CheckFunction]:
    def register(function: CheckFunction) -> CheckFunction:
        name = function.__name__.removeprefix("_")
        _REGISTRY.append(Check(name, contract, function, cancellation))
        return function

    return register


async def run_check(check: Check, make_pair: PairFactory, *, timeout: float = 30.0) -> None:
    """Run ``check`` on a fresh pair from ``make_pair``, bounded by ``timeout`` seconds.

    Both flows are aborted afterwards, whatever happened. A failure raises
    ``ConformanceError`` naming the check and its contract row.
    """
    with anyio.fail_after(timeout):
        a, b = await make_pair()
    context = CheckContext(a, b)
    timed_out = False

    async def watchdog(scope: anyio.CancelScope) -> None:
        nonlocal timed_out
        await anyio.sleep(timeout)
        timed_out = True
        # Abort first: a call stuck in a worker thread cannot be cancelled, but the abort
        # wakes it, and only then can the check's tasks end.
        await _release(a, b)
        scope.cancel()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(watchdog, group.cancel_scope)
            try:
                await check.function(context)
            finally:
                group.cancel_scope.cancel()
    except Exception as exc:
        if timed_out:
            raise ConformanceError(
                [(check, f"no progress after {timeout:g} s while {context.step}")]
            ) from None
        violation = _find_violation(exc)
        if violation is None:
            detail = f"unexpected {type(exc).__name__}: {exc} (while {context.step})"
            raise ConformanceError([(check, detail)]) from exc
        raise ConformanceError([(check, str(violation))]) from None
    finally:
        await _release(a, b)
    if timed_out:
        raise ConformanceError([(check, f"no progress after {timeout:g} s while {context.step}")])


async def _release(*flows: AsyncFlowLike) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(10):
        for flow in flows:
            with suppress(Exception):  # releasing must reach the second flow
                await flow.abort()


def _find_violation(exc: BaseException) -> _Violation | None:
    """The check's first failure, even from inside a task group's exception group."""
    if isinstance(exc, _Violation):
        return exc
    found = [_find_violation(inner) for inner in getattr(exc, "exceptions", ())
             if isinstance(inner, BaseException)]
    return min((v for v in found if v is not None), key=lambda v: v.order, default=None)


def get_check(name: str) -> Check:
    """The check called ``name`` (see ``CHECKS``)."""
    for check in _REGISTRY:
        if check.name == name:
            return check
    raise KeyError(f"no conformance check named {name!r}; known: {[c.name for c in _REGISTRY]}")


async def check_flow_pair(make_pair: PairFactory, *, supports_cancellation: bool = True,
                          checks: Iterable[Check | str] | None = None,
                          timeout: float = 30.0) -> None:
    """Run the conformance checks on flows from ``make_pair`` and report every failure.

    ``make_pair`` is an async callable returning a connected ``(a, b)`` pair with the async
    adapter API (``AsyncFlowLike``); it is called once per check, and both flows are aborted
    after each check. ``supports_cancellation=False`` skips the checks that cancel an
    operation (for ``threaded`` and ``bridged`` flows). ``checks`` picks checks by ``Check``
    or by name (default: all of ``CHECKS``). Each check must finish within ``timeout``
    seconds.

    Raises ``ConformanceError`` listing each failed check with its contract row.
    """
    selected = _REGISTRY if checks is None else [
        get_check(c) if isinstance(c, str) else c for c in checks
    ]
    failures: list[tuple[Check, str]] = []
    for check in selected:
        if check.needs_cancellation and not supports_cancellation:
            continue
        try:
            await run_check(check, make_pair, timeout=timeout)
        except ConformanceError as exc:
            failures.extend(exc.failures)
    if failures:
        raise ConformanceError(failures)
