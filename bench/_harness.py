"""The suite: profiles, interleaved repetitions, one process per run, medians, ratios, output."""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from ._common import PROFILES, SCENARIOS, Params, Profile
from ._registry import (
    GROUPS,
    PAIRS,
    SCALE_GOAL,
    SCALE_PAIRS,
    SCALE_STACKS,
    STACKS,
    TLS_GOALS,
    TLS_PAIRS,
    Goal,
    NotInstalled,
    StackSpec,
    Unavailable,
    by_name,
    load_stack,
)
from ._scale import FD_MARGIN, SCALE
from ._worker import IDLE_SUBJECTS, WARMING, JobResult, idle_bytes, run_scenario

__all__ = ["PROFILES", "Profile", "format_report", "main", "run_suite"]

SCHEMA = "sansflow.bench/2"
COLD = "cold: a fresh process, its allocator as it starts"
MiB = 1024 * 1024


SCENARIO_TITLES = {
    "bulk": "bulk: {bulk_mib:g} MiB in {bulk_kib:g} KiB writes, half-close, the server reads "
            "to EOF and closes",
    "pingpong": "ping-pong: {pingpong_trips:,} round trips of {pingpong_size} bytes on one "
                "connection",
    "small_writes": "small writes: {small_writes:,} writes of {small_size} bytes, half-close, "
                    "wait for the close",
    "connections": "connections: {connections:,} at once, each sends {conn_kib:g} KiB, "
                   "half-closes, reads the echo to EOF",
}


# -- running ----------------------------------------------------------------------------------


def _source_root() -> Path:
    # The clone's root, which holds this package: the benchmark is not installed with sansflow.
    return Path(__file__).resolve().parents[1]


def _run_in_child(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_source_root()), env.get("PYTHONPATH", "")) if p
    )
    command = [sys.executable, "-m", "bench._worker", json.dumps(job)]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"the worker process did not finish within {timeout:g} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"worker exited with {proc.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _execute(
    spec: StackSpec, scenario: str, params: Params, isolate: bool, warmed: bool
) -> dict[str, Any]:
    if isolate:
        job = {"job": "scenario", "stack": spec.name, "scenario": scenario,
               "params": params.to_json(), "warmed": warmed}
        # The child bounds its own run; this bound is for a child that hangs regardless.
        return _run_in_child(job, params.timeout + 60.0)
    result: JobResult = run_scenario(spec.name, scenario, params, fresh=False, warmed=warmed)
    return dict(result)


def _run_record(
    spec: StackSpec, scenario: str, rep: int, result: dict[str, Any], wall_s: float
) -> dict[str, Any]:
    measurement = result.get("measurement")
    error = result.get("error")
    if error is None and measurement is not None:
        if measurement["bytes_verified"] != measurement["bytes_expected"]:
            error = (f"byte count mismatch: {measurement['bytes_verified']} verified, "
                     f"{measurement['bytes_expected']} expected")
    elif error is None:
        error = "no measurement"
    return {
        "stack": spec.name,
        "scenario": scenario,
        "rep": rep,
        "ok": error is None,
        "error": error,
        "measurement": measurement,
        "rss_base_kib": result.get("rss_base_kib"),
        "rss_peak_kib": result.get("rss_peak_kib"),
        "warmed": result.get("warmed"),
        "wall_s": wall_s,
    }


def _median(values: Iterable[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if r["ok"]]
    values = [r["measurement"]["value"] for r in good]
    measured = [r["measurement"] for r in runs if r["measurement"] is not None]
    return {
        "unit": measured[0]["unit"] if measured else None,
        "median": _median(values),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "values": values,
        "runs": len(runs),
        "failures": len(runs) - len(good),
        "errors": sorted({r["error"] for r in runs if r["error"]}),
        "p50_us": _median(r["measurement"]["p50_us"] for r in good),
        "p99_us": _median(r["measurement"]["p99_us"] for r in good),
        "elapsed_s": _median(r["measurement"]["elapsed_s"] for r in good),
        "rss_base_kib": _median(r["rss_base_kib"] for r in runs),
        "rss_peak_kib": _median(r["rss_peak_kib"] for r in runs),
        "bytes_expected": measured[0]["bytes_expected"] if measured else None,
        "verified": bool(runs) and len(good) == len(runs),
    }


def _per_connection(kib: float | None, base: float | None, connections: int) -> float | None:
    return None if kib is None or base is None else (kib - base) / connections


def _summarise_scale(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the scale scenario adds to a summary: medians of its phases and of the memory one
    connection (both of its ends) holds. Memory only from runs in a process of their own:
    in-process, the high-water mark is the whole suite's, and the allocator reuses what
    earlier runs freed."""
    good = [r for r in runs if r["ok"]]
    ms = [r["measurement"] for r in good]
    own = [m for r, m in zip(good, ms, strict=True) if r["rss_peak_kib"] is not None]
    return {
        "connections": min((m["connections"] for m in ms), default=None),
        "connections_wanted": next((m["connections_wanted"] for m in ms), None),
        "nofile_limit": next((m["nofile_limit"] for m in ms), None),
        "nofile_hard": next((m["nofile_hard"] for m in ms), None),
        "established_s": _median(m["established_s"] for m in ms),
        "finished_s": _median(m["finished_s"] for m in ms),
        "idle_kib_per_connection": _median(
            _per_connection(m["rss_idle_kib"], m["rss_base_kib"], m["connections"])
            for m in own),
        "peak_kib_per_connection": _median(
            _per_connection(m["rss_peak_kib"], m["rss_base_kib"], m["connections"])
            for m in own),
        "echoes_verified": sum(m["echoes_verified"] for m in ms),
    }


def _quotient(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _scale_ratios(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per ``SCALE_PAIRS``: memory per connection, sansflow's over the peer's (below 1: sansflow
    holds less); the phases' times, the peer's over sansflow's (above 1: sansflow is faster)."""
    ratios = []
    for ours, peer in SCALE_PAIRS:
        a = results.get(ours, {}).get(SCALE)
        b = results.get(peer, {}).get(SCALE)
        if a is None or b is None:
            continue
        ratios.append({
            "sansflow": ours, "peer": peer,
            "peak_memory": _quotient(a["peak_kib_per_connection"], b["peak_kib_per_connection"]),
            "idle_memory": _quotient(a["idle_kib_per_connection"], b["idle_kib_per_connection"]),
            "establish": _quotient(b["established_s"], a["established_s"]),
            "finish": _quotient(b["finished_s"], a["finished_s"]),
        })
    return ratios


def _judge_scale(ratios: list[dict[str, Any]]) -> dict[str, Any]:
    """``SCALE_GOAL`` over the pairs whose peer is a protocol (the limit group): it holds when
    each was measured and none is above it."""
    wanted = [(ours, peer) for ours, peer in SCALE_PAIRS if by_name(peer).group == "limit"]
    found = {(r["sansflow"], r["peer"]): r["peak_memory"] for r in ratios}
    measured = [(pair, found[pair]) for pair in wanted if found.get(pair) is not None]
    highest = max(measured, key=lambda item: item[1], default=None)
    complete = bool(measured) and len(measured) == len(wanted)
    return {
        "goal": f"peak memory per connection at most {SCALE_GOAL:g}x the native protocol's",
        "at_most": SCALE_GOAL,
        "holds": (highest is not None and highest[1] <= SCALE_GOAL) if complete else None,
        "highest": None if highest is None else {
            "sansflow": highest[0][0], "peer": highest[0][1], "ratio": highest[1]},
        "measured": len(measured),
        "wanted": len(wanted),
    }


def _ratios(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    ratios = []
    for ours, peer in PAIRS:
        for scenario in SCENARIOS:
            a = results.get(ours, {}).get(scenario)
            b = results.get(peer, {}).get(scenario)
            if a is None or b is None:
                continue
            ratio = (a["median"] / b["median"]
                     if a["median"] is not None and b["median"] else None)
            rss = (a["rss_peak_kib"] / b["rss_peak_kib"]
                   if a["rss_peak_kib"] is not None and b["rss_peak_kib"] else None)
            ratios.append({"sansflow": ours, "peer": peer, "scenario": scenario,
                           "ratio": ratio, "rss_ratio": rss})
    return ratios


def _judge(goal: Goal, ratios: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether ``goal`` holds in these ratios: ``None`` when one it needs was not measured."""
    pairs = [(ours, peer) for ours, peer in TLS_PAIRS
             if (not goal.sansflow or ours in goal.sansflow)
             and (not goal.peers or peer in goal.peers)]
    wanted = [(ours, peer, scenario) for ours, peer in pairs for scenario in goal.scenarios]
    found = {(r["sansflow"], r["peer"], r["scenario"]): r["ratio"] for r in ratios}
    measured = [(key, found[key]) for key in wanted if found.get(key) is not None]
    lowest = min(measured, key=lambda item: item[1], default=None)
    complete = bool(measured) and len(measured) == len(wanted)
    return {
        "goal": goal.text,
        "at_least": goal.at_least,
        "holds": (lowest is not None and lowest[1] >= goal.at_least) if complete else None,
        "lowest": None if lowest is None else {
            "sansflow": lowest[0][0], "peer": lowest[0][1], "scenario": lowest[0][2],
            "ratio": lowest[1]},
        "measured": len(measured),
        "wanted": len(wanted),
    }


def _environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("sansflow", "trio", "anyio", "uvloop"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def _log(log: TextIO | None, message: str) -> None:
    if log is not None:
        print(message, file=log, flush=True)


def run_suite(
    profile: Profile,
    stacks: Sequence[StackSpec] = STACKS,
    scenarios: Sequence[str] = SCENARIOS,
    *,
    reps: int | None = None,
    isolate: bool = True,
    warmed: bool = True,
    tls: bool = False,
    idle: bool = True,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Run the suite and return the report (the JSON document); nothing is printed but ``log``.

    ``warmed``: each run's process warms its allocator first (``_worker.warm``), so that the
    figures are those of a long-running process; without it, those of a fresh one. ``tls``: the
    TLS variants, on the stacks that have one (``StackSpec.tls``), with ``TLS_GOALS`` judged.

    Runs are interleaved: each repetition runs every stack once per scenario, and every other
    repetition reverses the order, so that drift and position weigh on every stack alike.
    """
    started = time.monotonic()
    reps = profile.reps if reps is None else reps
    params = replace(profile.params, tls=tls)
    stack_rows: list[dict[str, Any]] = []
    runnable: list[tuple[StackSpec, list[str]]] = []
    setup_problems: list[str] = []
    negotiated: str | None = None
    if tls:
        stacks = [spec for spec in stacks if spec.tls is not None]
        # trustme is a test dependency, not an optional extra: a TLS run without it fails.
        if importlib.util.find_spec("trustme") is None:
            setup_problems.append("the TLS variants need trustme (pip install trustme)")
            stacks = []
        else:
            from ._tls import negotiated as handshake

            negotiated = handshake()
    for spec in stacks:
        # Only a missing optional library excuses a stack (its peers go with it); a sansflow
        # stack that cannot run for any other reason is a failure (leave it out with --only to
        # skip it on purpose).
        note: str | None = None
        failure: str | None = None
        try:
            loaded = load_stack(spec)
        except NotInstalled as exc:
            note = str(exc)
        except Unavailable as exc:
            failure = str(exc)
        except Exception as exc:  # a module half-written elsewhere must not stop the rest
            failure = f"{type(exc).__name__}: {exc}"
        else:
            runnable.append((spec, [s for s in scenarios if s in loaded]))
        reason = note or failure
        stack_rows.append({"name": spec.name, "kind": spec.kind, "group": spec.group,
                           "description": spec.tls if tls else spec.description,
                           "available": reason is None, "reason": reason,
                           "failed": failure is not None})
        if note is not None:
            _log(log, f"skip {spec.name}: {note}")
        if failure is not None:
            _log(log, f"could not run {spec.name}: {failure}")

    jobs = [(spec, scenario) for scenario in scenarios for spec, own in runnable
            if scenario in own]
    total = len(jobs) * reps
    runs: list[dict[str, Any]] = []
    for rep in range(reps):
        ordered = jobs if rep % 2 == 0 else _reverse_within_scenarios(jobs)
        for spec, scenario in ordered:
            t0 = time.monotonic()
            result = _execute(spec, scenario, params, isolate, warmed)
            record = _run_record(spec, scenario, rep, result, time.monotonic() - t0)
            runs.append(record)
            _log(log, f"[{len(runs)}/{total}] {_describe(record)}")

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for spec, own in runnable:
        for scenario in own:
            mine = [r for r in runs if r["stack"] == spec.name and r["scenario"] == scenario]
            if mine:
                summary = _summarise(mine)
                if scenario == SCALE:
                    summary.update(_summarise_scale(mine))
                results.setdefault(spec.name, {})[scenario] = summary

    idle_memory: dict[str, Any] = {}
    if idle:
        for subject, (description, _maker) in IDLE_SUBJECTS.items():
            idle_memory[subject] = _idle(subject, description, profile.idle_count, isolate)
            _log(log, f"idle {subject}: {idle_memory[subject]['bytes_per_flow']}")

    problems = setup_problems + _problems(stack_rows, runs, idle_memory)
    ratios = _ratios(results)
    scale: dict[str, Any] = {}
    if SCALE in scenarios:
        scale_ratios = _scale_ratios(results)
        scale = {"connections_wanted": params.scale_connections,
                 "bytes": params.scale_bytes,
                 "fd_margin": FD_MARGIN,
                 "process": "client and server in one process, on one event loop",
                 "ratios": scale_ratios,
                 "goal": _judge_scale(scale_ratios)}
    return {
        "schema": SCHEMA,
        "profile": profile.name,
        "params": params.to_json(),
        "reps": reps,
        "isolation": "subprocess per run" if isolate else "in-process",
        "process": WARMING if warmed else COLD,
        "tls": negotiated,
        "environment": _environment(),
        "stacks": stack_rows,
        "scenarios": list(scenarios),
        "runs": runs,
        "results": results,
        "ratios": ratios,
        "goals": [_judge(goal, ratios) for goal in TLS_GOALS] if tls else [],
        "scale": scale,
        "idle_memory": idle_memory,
        "ok": not problems,
        "problems": problems,
        "duration_s": time.monotonic() - started,
    }


def _problems(
    stack_rows: list[dict[str, Any]], runs: list[dict[str, Any]],
    idle_memory: dict[str, dict[str, Any]],
) -> list[str]:
    """What the suite should have measured and did not: the benchmark fails unless empty."""
    problems = []
    unrun = [row["name"] for row in stack_rows if row["failed"]]
    if unrun:
        problems.append(f"could not run {', '.join(unrun)}")
    if not runs:
        problems.append("nothing was measured")
    failed = list(dict.fromkeys(r["stack"] for r in runs if not r["ok"]))
    if failed:
        problems.append(f"runs failed on {', '.join(failed)}")
    idle_failed = [subject for subject, row in idle_memory.items() if row["error"] is not None]
    if idle_failed:
        problems.append(f"bytes per idle flow not measured for {', '.join(idle_failed)}")
    return problems


def _reverse_within_scenarios(
    jobs: list[tuple[StackSpec, str]],
) -> list[tuple[StackSpec, str]]:
    # Scenarios keep their order (so like runs stay close in time); stacks run backwards.
    out: list[tuple[StackSpec, str]] = []
    for scenario in dict.fromkeys(s for _, s in jobs):
        out.extend(reversed([j for j in jobs if j[1] == scenario]))
    return out


def _idle(subject: str, description: str, count: int, isolate: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"description": description, "count": count}
    if isolate:
        result = _run_in_child({"job": "idle", "subject": subject, "count": count}, 120.0)
        row["bytes_per_flow"] = result.get("bytes_per_flow")
        row["error"] = result.get("error")
        return row
    try:
        row["bytes_per_flow"], row["error"] = idle_bytes(subject, count), None
    except Unavailable as exc:
        row["bytes_per_flow"], row["error"] = None, f"unavailable: {exc}"
    return row


def _describe(record: dict[str, Any]) -> str:
    head = f"{record['scenario']:<12} {record['stack']:<24} rep {record['rep'] + 1}"
    if not record["ok"]:
        return f"{head}: FAILED {record['error']}"
    m = record["measurement"]
    return f"{head}: {_fmt(m['value'])} {m['unit']}"


# -- output -----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def _title(scenario: str, params: dict[str, Any]) -> str:
    return SCENARIO_TITLES[scenario].format(
        bulk_mib=params["bulk_bytes"] / MiB, bulk_kib=params["bulk_write"] / 1024,
        conn_kib=params["connection_bytes"] / 1024, **params,
    )


def _scenario_rows(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for name, s in rows:
        spread = ("-" if s["median"] is None or not s["median"] or len(s["values"]) < 2
                  else f"±{50 * (s['max'] - s['min']) / s['median']:.0f}%")
        grown = (None if s["rss_peak_kib"] is None or s["rss_base_kib"] is None
                 else s["rss_peak_kib"] - s["rss_base_kib"])
        lines.append(
            f"  {name:<24} {_fmt(s['median']):>12} {s['unit'] or '':<14} {spread:>7} "
            f"{_fmt(s['p50_us']):>8} {_fmt(s['p99_us']):>8} "
            f"{_mib(s['rss_peak_kib']):>9} {_mib(grown):>6} "
            f"{s['runs'] - s['failures']:>3}/{s['runs']}"
        )
        lines += [f"      error: {error}" for error in s["errors"]]
    return lines


def _count(value: int | None) -> str:
    return "unlimited" if value is None else f"{value:,}"


def _scale_lines(
    report: dict[str, Any], group_of: dict[str, str | None],
    sections: Sequence[tuple[str | None, str]],
) -> list[str]:
    scale = report["scale"]
    rows = [(name, per[SCALE]) for name, per in report["results"].items() if SCALE in per]
    ran = [s for _, s in rows if s["connections"] is not None]
    counts = sorted({s["connections"] for s in ran})
    wanted = scale["connections_wanted"]
    lines = ["", f"scale: {' or '.join(f'{n:,}' for n in counts) or 'no'} connections at once "
             f"({wanted:,} asked), all open and idle, then each sends "
             f"{scale['bytes'] / 1024:g} KiB, half-closes and reads the echo to EOF; "
             f"{scale['process']}"]
    if ran:
        limit, hard = ran[0]["nofile_limit"], ran[0]["nofile_hard"]
        fits = "" if counts[0] >= wanted else (
            f": {wanted:,} would need {2 * wanted + scale['fd_margin']:,} (two per connection, "
            f"{scale['fd_margin']} kept for the rest), so as many ran as fit")
        lines.append(f"RLIMIT_NOFILE in the run, raised as far as allowed: {_count(limit)} "
                     f"(hard limit {_count(hard)}){fits}")
    lines.append(f"  {'stack':<24} {'establish s':>11} {'finish s':>9} {'idle KiB':>9} "
                 f"{'peak KiB':>9} {'peak RSS':>9} {'echoes':>9} {'ok':>5}")
    for group, heading in sections:
        mine = [(name, s) for name, s in rows if group_of.get(name) == group]
        if not mine:
            continue
        lines.append(f"  -- {heading}")
        for name, s in mine:
            lines.append(
                f"  {name:<24} {_fmt(s['established_s'], 2):>11} {_fmt(s['finished_s'], 2):>9} "
                f"{_fmt(s['idle_kib_per_connection']):>9} "
                f"{_fmt(s['peak_kib_per_connection']):>9} {_mib(s['rss_peak_kib']):>9} "
                f"{s['echoes_verified']:>9,} {s['runs'] - s['failures']:>3}/{s['runs']}")
            lines += [f"      error: {error}" for error in s["errors"]]
    if scale["ratios"]:
        lines += ["", "ratio sansflow / peer at scale (memory per connection: below 1, sansflow "
                  "holds less; establish and finish: the peer's time over sansflow's, above 1, "
                  "sansflow is faster)",
                  f"  {'sansflow':<24} {'peer':<20} {'peak mem':>9} {'idle mem':>9} "
                  f"{'establish':>10} {'finish':>8}"]
        for r in scale["ratios"]:
            lines.append(f"  {r['sansflow']:<24} {r['peer']:<20} {_fmt(r['peak_memory'], 2):>9} "
                         f"{_fmt(r['idle_memory'], 2):>9} {_fmt(r['establish'], 2):>10} "
                         f"{_fmt(r['finish'], 2):>8}")
    goal = scale["goal"]
    verdict = {True: "holds", False: "DOES NOT HOLD", None: "not measured"}[goal["holds"]]
    highest = goal["highest"]
    where = ("" if highest is None else f": highest {highest['ratio']:.3f} "
             f"({highest['sansflow']} / {highest['peer']})")
    lines += ["", "goal (ratios of this run)", f"  {verdict:<14} {goal['goal']}{where}",
              "idle KiB, peak KiB: resident memory per connection (both of its ends), once all "
              "are open and at the high-water mark after the echoes, over the RSS before the "
              "first connect; only with a process per run. echoes: every byte checked, "
              "over all runs."]
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report as tables for a person to read."""
    env = report["environment"]
    lines = [
        f"sansflow.bench: profile {report['profile']}, {report['reps']} rep(s), "
        f"{report['isolation']}; Python {env['python']} on {env['platform']}, "
        f"{env['cpu_count']} CPUs; {report['duration_s']:.0f} s",
        f"processes {report['process']}",
    ]
    if report["params"]["tls"]:
        lines.append(f"TLS variants: {report['tls'] or 'no handshake made'} at both ends of "
                     "every connection (a test CA made at run time with trustme); a connection "
                     "is a handshake; where an API cannot half-close TLS, it closes")
    group_of = {row["name"]: row["group"] for row in report["stacks"]}
    sections = [(None, "sansflow"), *GROUPS.items()]
    for row in report["stacks"]:
        if row["failed"]:
            lines.append(f"  could not run {row['name']}: {row['reason']}")
        elif not row["available"]:
            lines.append(f"  skipped {row['name']}: {row['reason']}")
    header = (f"  {'stack':<24} {'median':>12} {'unit':<14} {'spread':>7} {'p50 µs':>8} "
              f"{'p99 µs':>8} {'peak RSS':>9} {'+RSS':>6} {'ok':>5}")
    for scenario in report["scenarios"]:
        rows = [(name, per[scenario]) for name, per in report["results"].items()
                if scenario in per]
        if not rows or scenario == SCALE:
            continue
        lines += ["", _title(scenario, report["params"]), header]
        for group, heading in sections:
            mine = [(name, s) for name, s in rows if group_of.get(name) == group]
            if mine:
                lines.append(f"  -- {heading}")
                lines += _scenario_rows(mine)
    for group, heading in GROUPS.items():
        ratios = [r for r in report["ratios"] if group_of.get(r["peer"]) == group]
        if not ratios:
            continue
        lines += ["", f"ratio sansflow / peer, {heading} (median rates; above 1: sansflow "
                  "is faster)"]
        lines.append(f"  {'sansflow':<24} {'peer':<20} "
                     + " ".join(f"{s:>12}" for s in report["scenarios"]))
        pairs = dict.fromkeys((r["sansflow"], r["peer"]) for r in ratios)
        for ours, peer in pairs:
            cells = {r["scenario"]: r["ratio"] for r in ratios
                     if r["sansflow"] == ours and r["peer"] == peer}
            lines.append(f"  {ours:<24} {peer:<20} " + " ".join(
                f"{_fmt(cells.get(s), 2):>12}" for s in report["scenarios"]))
    if report["goals"]:
        lines += ["", "goals (ratios of this run)"]
        for goal in report["goals"]:
            lowest = goal["lowest"]
            where = ("" if lowest is None else
                     f": lowest {lowest['ratio']:.3f} ({lowest['sansflow']} / {lowest['peer']}, "
                     f"{lowest['scenario']})")
            verdict = {True: "holds", False: "DOES NOT HOLD", None: "not measured"}[goal["holds"]]
            lines.append(f"  {verdict:<14} {goal['goal']}{where}")
    if report["scale"]:
        lines += _scale_lines(report, group_of, sections)
    if report["idle_memory"]:
        count = next(iter(report["idle_memory"].values()))["count"]
        lines += ["", f"bytes per idle flow ({count:,} alive at once, tracemalloc)"]
        for subject, row in report["idle_memory"].items():
            value = row["error"] if row["bytes_per_flow"] is None else _fmt(row["bytes_per_flow"])
            lines.append(f"  {subject:<30} {value:>10}  {row['description']}")
    lines += ["", "spread: (max - min) / 2 / median. peak RSS: MiB, high-water mark of the "
              "run's own process (VmHWM); +RSS: how far the scenario raised it."]
    lines.append("all byte counts verified" if report["ok"]
                 else "FAILED: " + "; ".join(report["problems"]) + " (see above)")
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------


def _select(only: Sequence[str]) -> tuple[list[StackSpec], list[str]]:
    stack_patterns: list[str] = []
    scenario_patterns: list[str] = []
    kinds = {spec.kind for spec in STACKS}
    for token in (t.strip() for item in only for t in item.split(",")):
        if not token:
            continue
        as_scenario = token.replace("-", "_")
        if any(fnmatch.fnmatchcase(s, as_scenario) for s in SCENARIOS):
            scenario_patterns.append(as_scenario)
        elif token in kinds or any(fnmatch.fnmatchcase(s.name, token) for s in STACKS):
            stack_patterns.append(token)
        else:
            raise SystemExit(f"--only: {token!r} names no stack, kind or scenario")
    stacks = [s for s in STACKS if not stack_patterns or any(
        s.kind == p or fnmatch.fnmatchcase(s.name, p) for p in stack_patterns)]
    scenarios = [s for s in SCENARIOS if not scenario_patterns or any(
        fnmatch.fnmatchcase(s, p) for p in scenario_patterns)]
    return stacks, scenarios


def _with_peers(
    stacks: list[StackSpec], pairs: Sequence[tuple[str, str]] = PAIRS
) -> list[StackSpec]:
    names = {s.name for s in stacks}
    for ours, peer in pairs:
        if ours in names or peer in names:
            names |= {ours, peer}
    return [s for s in STACKS if s.name in names]


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="sansflow's adapters against native asyncio, uvloop, trio, anyio and "
                    "blocking sockets, on 127.0.0.1.",
        epilog="Each run has a process of its own, warmed first: 1 MiB allocated and freed, so "
               "that glibc serves large reads from its heap as in a long-running process (--cold "
               "to leave it as it starts). The exit status is 1 when a run fails or a selected "
               "stack cannot run; only a stack whose optional library (uvloop, trio, anyio) is "
               "not installed is skipped, with a note, and its peers with it (leave a sansflow "
               "stack out with --only).",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="profile", const="quick",
                      help=PROFILES["quick"].description)
    size.add_argument("--tiny", action="store_const", dest="profile", const="tiny",
                      help=PROFILES["tiny"].description)
    parser.set_defaults(profile="full")
    parser.add_argument("--only", action="append", default=[], metavar="NAMES",
                        help="comma-separated stack names, kinds (sansflow, native, core) or "
                             "scenarios, shell patterns allowed; repeatable")
    parser.add_argument("--with-peers", action="store_true",
                        help="add the ratio partners of the stacks --only selects")
    parser.add_argument("--reps", type=int, help="repetitions (default: the profile's)")
    parser.add_argument("--timeout", type=float, help="seconds allowed for one run")
    parser.add_argument("--scale", nargs="?", type=_at_least_one, metavar="N",
                        const=Params().scale_connections,
                        help="instead of the four scenarios, the scale scenario on the event "
                             "loops' stacks: N connections at once (default %(const)s, fewer if "
                             "RLIMIT_NOFILE cannot be raised that far), idle, then each echoes "
                             f"{Params().scale_bytes // 1024} KiB; memory per connection and the "
                             "time to establish and to finish")
    parser.add_argument("--tls", action="store_true",
                        help="the TLS variants (TLS 1.3, a test CA made with trustme, which they "
                             "need) of the stacks that have one, and the goals they aim at")
    parser.add_argument("--cold", action="store_true",
                        help="leave each run's process cold (its allocator as it starts) instead "
                             "of warming it as a long-running process is; labelled as such")
    parser.add_argument("--in-process", action="store_true",
                        help="run everything in this process: faster, but no RSS figures")
    parser.add_argument("--no-idle", action="store_true", help="skip bytes per idle flow")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the report here")
    parser.add_argument("--list", action="store_true", help="list stacks and pairs, and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for spec in STACKS:
            print(f"{spec.name:<26} {spec.kind:<9} {spec.description}")
        print()
        for ours, peer in PAIRS:
            print(f"{ours} / {peer}")
        return 0
    profile = PROFILES[args.profile]
    if args.timeout is not None:
        profile = replace(profile, params=replace(profile.params, timeout=args.timeout))
    if args.reps is not None and args.reps < 1:
        raise SystemExit("--reps must be at least 1")
    stacks, scenarios = _select(args.only)
    if args.scale is not None:
        if args.tls:
            raise SystemExit("--scale has no TLS variant: leave out --tls")
        profile = replace(profile, params=replace(profile.params,
                                                  scale_connections=args.scale))
        scenarios = [SCALE]
        stacks = [s for s in SCALE_STACKS if s in stacks]
        if args.with_peers:
            stacks = _with_peers(stacks, SCALE_PAIRS)
    elif args.with_peers:
        stacks = _with_peers(stacks)
    report = run_suite(
        profile, stacks, scenarios, reps=args.reps, isolate=not args.in_process,
        warmed=not args.cold, tls=args.tls,
        # Bytes per idle flow are the same with or without TLS, and at scale: the plain run
        # measures them.
        idle=not args.no_idle and not args.tls and args.scale is None,
        log=None if args.quiet else sys.stderr,
    )
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1
