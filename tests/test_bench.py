"""The benchmark suite runs, verifies its byte counts and writes the JSON it promises.

No figure is ever asserted: a timed assertion fails on a busy machine and proves nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# The benchmark is not installed: it lives at the root of the clone, which python -m pytest puts
# on sys.path and a bare pytest does not.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import bench  # noqa: E402
from bench import _harness  # noqa: E402

RUN_KEYS = {"stack", "scenario", "rep", "ok", "error", "measurement", "rss_base_kib",
            "rss_peak_kib", "warmed", "wall_s"}
MEASUREMENT_KEYS = {"value", "unit", "elapsed_s", "ops", "bytes_expected", "bytes_verified",
                    "p50_us", "p99_us"}
SUMMARY_KEYS = {"unit", "median", "min", "max", "values", "runs", "failures", "errors", "p50_us",
                "p99_us", "elapsed_s", "rss_base_kib", "rss_peak_kib", "bytes_expected",
                "verified"}
UNITS = {"bulk": "MiB/s", "pingpong": "round trips/s", "small_writes": "writes/s",
         "connections": "connections/s"}

SANSFLOW_MODULES = ("sansflow.adapters.asyncio", "sansflow.adapters.trio",
                    "sansflow.adapters.anyio", "sansflow.adapters.socket", "sansflow.testing")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One in-process run of every stack on the tiny profile.

    In-process so that an unclosed socket or loop in any stack fails here as a ResourceWarning.
    """
    path = tmp_path_factory.mktemp("bench") / "report.json"
    bench.main(["--tiny", "--in-process", "--quiet", "--json", str(path)])
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _check_stack(report: dict[str, Any], name: str) -> None:
    row = next(s for s in report["stacks"] if s["name"] == name)
    assert row["available"], row["reason"]
    runs = [r for r in report["runs"] if r["stack"] == name]
    assert runs
    for run in runs:
        assert run["ok"], run["error"]
        m = run["measurement"]
        assert set(m) == MEASUREMENT_KEYS
        assert m["bytes_verified"] == m["bytes_expected"] > 0
        assert m["value"] > 0
        assert m["unit"] == UNITS[run["scenario"]]
        if run["scenario"] == "pingpong":
            assert 0 < m["p50_us"] <= m["p99_us"]
    for scenario, summary in report["results"][name].items():
        assert summary["verified"], (scenario, summary["errors"])


@pytest.mark.parametrize("name", [s.name for s in bench.STACKS if s.kind == "native"])
def test_native_peer_runs_and_verifies(report: dict[str, Any], name: str) -> None:
    _check_stack(report, name)
    assert set(report["results"][name]) == set(bench.SCENARIOS)


@pytest.mark.parametrize("name", [s.name for s in bench.STACKS if s.kind != "native"])
def test_sansflow_stack_runs_and_verifies(report: dict[str, Any], name: str) -> None:
    _check_stack(report, name)


def test_report_shape(report: dict[str, Any]) -> None:
    assert report["schema"] == "sansflow.bench/2"
    assert report["process"].startswith("warmed: 1 MiB allocated and freed")
    assert report["profile"] == "tiny"
    assert report["reps"] == 1
    assert report["scenarios"] == list(bench.SCENARIOS)
    assert report["params"] == bench.PROFILES["tiny"].params.to_json()
    assert report["ok"] is True
    assert report["problems"] == []
    assert {"python", "platform", "cpu_count", "versions"} <= set(report["environment"])
    for run in report["runs"]:
        assert set(run) == RUN_KEYS
        assert run["warmed"] is True
        # In-process: this process's peak says nothing about one run.
        assert run["rss_peak_kib"] is None
    for per_stack in report["results"].values():
        for summary in per_stack.values():
            assert set(summary) == SUMMARY_KEYS
            assert summary["min"] <= summary["median"] <= summary["max"]
    available = {s["name"] for s in report["stacks"] if s["available"]}
    for ratio in report["ratios"]:
        assert {ratio["sansflow"], ratio["peer"]} <= available
        assert (ratio["sansflow"], ratio["peer"]) in bench.PAIRS
        assert ratio["ratio"] > 0


def test_idle_memory(report: dict[str, Any]) -> None:
    idle = report["idle_memory"]
    assert set(idle) == {"sansflow.Flow", "asyncio.StreamReader",
                         "asyncio.StreamReaderProtocol"}
    for row in idle.values():
        assert row["count"] == bench.PROFILES["tiny"].idle_count
        assert row["error"] is None
        assert row["bytes_per_flow"] > 0


def test_table_names_every_stack_that_ran(report: dict[str, Any]) -> None:
    table = _harness.format_report(report)
    for name in report["results"]:
        assert name in table
    assert "processes warmed: 1 MiB allocated and freed" in table
    assert "all byte counts verified" in table


def test_ratios_print_in_two_groups(report: dict[str, Any]) -> None:
    table = _harness.format_report(report)
    model = table.index("ratio sansflow / peer, same programming model")
    limit = table.index("ratio sansflow / peer, raw callbacks and syscalls, the limit")
    assert model < limit
    for ours, peer in bench.PAIRS:
        row = next(line for line in table.splitlines()
                   if line.split()[:2] == [ours, peer])
        at = table.index(row)
        in_model = model < at < limit
        assert in_model == (bench._registry.by_name(peer).group == "model"), row
        assert in_model or at > limit
    groups = {s.group for s in bench.STACKS if s.kind == "native"}
    assert groups == set(bench.GROUPS)
    assert all(s.group is None for s in bench.STACKS if s.kind != "native")


def test_protocol_ping_pong_client_pings_from_its_callback() -> None:
    from bench import _asyncio_native as native

    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

    async def main() -> None:
        for ping in (native._PingPlain, native._PingBuffered):
            transport = Transport()
            client = ping([], b"ping", 3)
            client.connection_made(transport)  # type: ignore[arg-type]
            client.start()
            for trip in range(3):
                assert transport.written == [b"ping"] * (trip + 1)
                if isinstance(client, native._PingBuffered):
                    client.get_buffer(-1)[:2] = b"pi"
                    client.buffer_updated(2)
                    client.get_buffer(-1)[:2] = b"ng"
                    client.buffer_updated(2)
                else:
                    client.data_received(b"pi")
                    client.data_received(b"ng")
            # No task ran in between: each completed echo sent the next ping itself.
            assert transport.written == [b"ping"] * 3
            assert client.done.done()
            assert client.received == 12
            assert all(sample > 0 for sample in client.samples)

    asyncio.run(main())


def test_subprocess_runs_measure_peak_rss(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--quiet", "--no-idle",
         "--only", "blocking-sendall,asyncio-protocol", "--only", "bulk,pingpong",
         "--json", str(path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(path.read_text())
    assert report["isolation"] == "subprocess per run"
    assert {(r["stack"], r["scenario"]) for r in report["runs"]} == {
        (stack, scenario)
        for stack in ("asyncio-protocol", "blocking-sendall")
        for scenario in ("bulk", "pingpong")
    }
    for run in report["runs"]:
        assert run["ok"], run["error"]
        assert run["warmed"] is True
        assert 0 < run["rss_base_kib"] <= run["rss_peak_kib"]
    assert "ping-pong" in proc.stdout
    assert "processes warmed:" in proc.stdout


def test_cold_runs_are_labelled_cold(capsys: pytest.CaptureFixture[str]) -> None:
    status = bench.main(["--tiny", "--in-process", "--no-idle", "--cold", "--only",
                         "blocking-sendall", "--only", "bulk"])
    captured = capsys.readouterr()
    assert status == 0, captured.out
    assert "processes cold:" in captured.out
    assert "bulk" in captured.err  # the progress lines, on stderr
    report = _harness.run_suite(bench.PROFILES["tiny"], [bench._registry.by_name(
        "blocking-sendall")], ["bulk"], isolate=False, warmed=False, idle=False)
    assert report["process"].startswith("cold:")
    assert [run["warmed"] for run in report["runs"]] == [False]


def _unimportable(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    # A None entry in sys.modules makes importing that module raise ImportError, as it does
    # when ``import sansflow`` finds something other than this package.
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_sansflow_stacks_that_cannot_run_fail_the_benchmark(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _unimportable(monkeypatch, *SANSFLOW_MODULES)
    status = bench.main(["--tiny", "--in-process", "--quiet", "--no-idle", "--only",
                         "sansflow,core", "--with-peers", "--only", "pingpong"])
    out = capsys.readouterr().out
    assert status != 0
    last = out.splitlines()[-1]
    # With its optional library installed (uvloop, trio), a sansflow stack must run.
    sansflow_stacks = [s.name for s in bench.STACKS if s.kind != "native"
                       and all(importlib.util.find_spec(lib) for lib in s.optional)]
    assert "sansflow-asyncio" in sansflow_stacks
    for name in sansflow_stacks:
        assert f"could not run {name}:" in out
        assert name in last
    assert "all byte counts verified" not in out
    # The peers still ran: the failure is about what is missing, not a crash.
    assert "blocking-sendall" in out.split("ping-pong", 1)[1]


def test_a_missing_optional_library_skips_its_stacks_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _unimportable(monkeypatch, "uvloop")
    status = bench.main(["--tiny", "--in-process", "--quiet", "--no-idle", "--only",
                         "*uvloop*,blocking-sendall", "--only", "pingpong"])
    out = capsys.readouterr().out
    assert status == 0, out
    for name in ("sansflow-asyncio-uvloop", "uvloop-protocol", "uvloop-streams"):
        assert f"skipped {name}: not installed (optional): uvloop" in out
    assert out.splitlines()[-1] == "all byte counts verified"


def test_a_benchmark_that_measured_nothing_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _unimportable(monkeypatch, "uvloop")
    status = bench.main(["--tiny", "--in-process", "--quiet", "--no-idle", "--only", "uvloop-*"])
    out = capsys.readouterr().out
    assert status != 0
    assert "nothing was measured" in out.splitlines()[-1]


def test_idle_memory_not_measured_fails_the_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    _unimportable(monkeypatch, "sansflow")
    report = _harness.run_suite(bench.PROFILES["tiny"], [], [], isolate=False)
    assert report["idle_memory"]["sansflow.Flow"]["error"]
    assert report["ok"] is False
    assert any("sansflow.Flow" in problem for problem in report["problems"])


def test_only_selects_stacks_and_scenarios() -> None:
    stacks, scenarios = _harness._select(["uvloop-*", "small-writes,connections"])
    assert [s.name for s in stacks] == ["uvloop-protocol", "uvloop-streams"]
    assert scenarios == ["small_writes", "connections"]
    stacks, scenarios = _harness._select(["native"])
    assert all(s.kind == "native" for s in stacks)
    assert scenarios == list(bench.SCENARIOS)
    with pytest.raises(SystemExit):
        _harness._select(["no-such-stack"])


def test_with_peers_adds_ratio_partners() -> None:
    stacks, _ = _harness._select(["sansflow-trio"])
    names = [s.name for s in _harness._with_peers(stacks)]
    assert names == ["sansflow-trio", "trio-socketstream"]


def test_a_byte_count_mismatch_fails_the_run() -> None:
    spec = bench.STACKS[0]
    measurement = {"value": 1.0, "unit": "MiB/s", "elapsed_s": 1.0, "ops": 1,
                   "bytes_expected": 10, "bytes_verified": 9, "p50_us": None, "p99_us": None}
    record = _harness._run_record(spec, "bulk", 0, {"measurement": measurement, "error": None},
                                  0.0)
    assert not record["ok"]
    assert "mismatch" in record["error"]


def test_ratios_are_sansflow_over_peer() -> None:
    summary = {"median": 50.0, "rss_peak_kib": 2048.0}
    peer = {"median": 100.0, "rss_peak_kib": 1024.0}
    ratios = _harness._ratios({"sansflow-trio": {"bulk": summary},
                               "trio-socketstream": {"bulk": peer}})
    assert ratios == [{"sansflow": "sansflow-trio", "peer": "trio-socketstream",
                       "scenario": "bulk", "ratio": 0.5, "rss_ratio": 2.0}]


def test_core_alone_comparison_runs_and_verifies_its_bytes() -> None:
    from bench import core

    rows = core.run(small_count=640, large_count=64, reps=1)
    assert {row["name"] for row in rows} == set(core.CONTENDERS)
    assert {row["write_size"] for row in rows} == {100, 64 * 1024}
    assert all(row["writes_per_s"] > 0 for row in rows)


def test_core_measure_refuses_a_wrong_byte_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import core

    monkeypatch.setitem(core.CONTENDERS, "broken", lambda count, payload: 1)
    with pytest.raises(AssertionError, match="received 1 bytes"):
        core.measure("broken", 10, core.SMALL)


# -- the TLS variants --------------------------------------------------------------------------

TLS_STACKS = [s.name for s in bench.STACKS if s.tls is not None]
# Smaller than the tiny profile: only structure and byte counts are checked.
TLS_PROFILE = bench.Profile(
    "tls-test",
    bench.Params(bulk_bytes=256 * 1024, pingpong_trips=20, small_writes=200, connections=3,
                 timeout=30.0),
    1, 0, "the TLS variants at their smallest",
)


@pytest.fixture(scope="module")
def tls_report() -> tuple[dict[str, Any], list[str]]:
    """One in-process run of every TLS variant; and the name each TLS handshake asked for."""
    from bench import _tls

    # The server's context sees every handshake's SNI: proof that each stack ran over TLS,
    # on these contexts, rather than in plaintext with matching byte counts.
    names: list[str] = []
    server = _tls.contexts()[1]
    server.sni_callback = lambda obj, name, context: names.append(name)
    try:
        report = _harness.run_suite(TLS_PROFILE, bench.STACKS, isolate=False, tls=True,
                                    idle=False)
    finally:
        server.sni_callback = None
    return report, names


def test_tls_variants_run_verify_and_handshake(
    tls_report: tuple[dict[str, Any], list[str]],
) -> None:
    report, names = tls_report
    assert report["ok"] is True, report["problems"]
    assert report["tls"].startswith("TLSv1.3 TLS_")
    assert report["params"]["tls"] is True
    assert [s["name"] for s in report["stacks"]] == TLS_STACKS
    assert "sansflow-core" not in TLS_STACKS
    for row in report["stacks"]:
        assert row["description"] == bench._registry.by_name(row["name"]).tls
    for name in TLS_STACKS:
        _check_stack(report, name)
        assert set(report["results"][name]) == set(bench.SCENARIOS)
    # One handshake per connection: bulk, ping-pong and small writes one each, connections N;
    # and the harness's own, in memory, which tells the version and cipher negotiated.
    per_stack = 3 + TLS_PROFILE.params.connections
    assert names == ["localhost"] * (per_stack * len(TLS_STACKS) + 1)


def test_tls_goals_are_judged_and_printed(
    tls_report: tuple[dict[str, Any], list[str]],
) -> None:
    report, _ = tls_report
    assert [g["goal"] for g in report["goals"]] == [g.text for g in bench.TLS_GOALS]
    for goal in report["goals"]:
        assert goal["measured"] == goal["wanted"] > 0
        assert goal["holds"] is (goal["lowest"]["ratio"] >= goal["at_least"])
    table = _harness.format_report(report)
    assert "TLS variants: TLSv1.3 TLS_" in table
    assert "goals (ratios of this run)" in table
    for goal in report["goals"]:
        line = next(line for line in table.splitlines() if goal["goal"] in line)
        verdict = "holds" if goal["holds"] else "DOES NOT HOLD"
        assert line.strip().startswith(verdict + " ")


def test_a_goal_holds_only_when_every_ratio_it_names_was_measured_and_reached() -> None:
    goal = bench.TLS_GOALS[0]  # asyncio adapter over asyncio-protocol, bulk and connections

    def ratio(scenario: str, value: float) -> dict[str, Any]:
        return {"sansflow": "sansflow-asyncio", "peer": "asyncio-protocol",
                "scenario": scenario, "ratio": value}

    judged = _harness._judge(goal, [ratio("bulk", 1.3), ratio("connections", 1.0)])
    assert judged["holds"] is True
    assert judged["lowest"]["scenario"] == "connections"
    judged = _harness._judge(goal, [ratio("bulk", 1.3), ratio("connections", 0.99)])
    assert judged["holds"] is False
    judged = _harness._judge(goal, [ratio("bulk", 1.3), ratio("pingpong", 9.0)])
    assert judged["holds"] is None
    assert (judged["measured"], judged["wanted"]) == (1, 2)
    every_peer = next(g for g in bench.TLS_GOALS if not g.sansflow and not g.peers)
    wanted = _harness._judge(every_peer, [])["wanted"]
    assert wanted == len(bench._registry.TLS_PAIRS) == 6


def test_tls_without_trustme_fails_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _unimportable(monkeypatch, "trustme")
    status = bench.main(["--tiny", "--in-process", "--quiet", "--tls", "--only",
                         "blocking-sendall"])
    out = capsys.readouterr().out
    assert status != 0
    assert "the TLS variants need trustme" in out.splitlines()[-1]


# -- the scale scenario ------------------------------------------------------------------------

SCALE_N = 50  # the scenario's shape at its smallest: structure and byte counts, no figures
SCALE_KEYS = MEASUREMENT_KEYS | {
    "connections", "connections_wanted", "nofile_limit", "nofile_hard", "established_s",
    "finished_s", "rss_base_kib", "rss_idle_kib", "rss_peak_kib", "echoes_verified"}


@pytest.fixture(scope="module")
def scale_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One in-process scale run of every stack that has the scenario; and its table."""
    path = tmp_path_factory.mktemp("scale") / "report.json"
    status = bench.main(["--scale", str(SCALE_N), "--in-process", "--quiet", "--reps", "1",
                         "--json", str(path)])
    assert status == 0
    data: dict[str, Any] = json.loads(path.read_text())
    return data, _harness.format_report(data)


def test_scale_runs_every_event_loop_stack_and_checks_every_echo(
    scale_report: tuple[dict[str, Any], str],
) -> None:
    from bench import _scale

    report, table = scale_report
    assert report["ok"] is True, report["problems"]
    assert report["scenarios"] == [_scale.SCALE]
    assert report["idle_memory"] == {}
    names = [s.name for s in bench._registry.SCALE_STACKS]
    assert [s["name"] for s in report["stacks"]] == names
    assert {ours for ours, _ in bench._registry.SCALE_PAIRS} == {
        "sansflow-asyncio", "sansflow-asyncio-uvloop", "sansflow-trio",
        "sansflow-anyio-asyncio", "sansflow-anyio-trio"}
    assert {(r["stack"], r["scenario"]) for r in report["runs"]} == {
        (name, _scale.SCALE) for name in names}
    for run in report["runs"]:
        assert run["ok"], run["error"]
        m = run["measurement"]
        assert set(m) == SCALE_KEYS
        assert m["connections"] == m["connections_wanted"] == m["ops"] == SCALE_N
        assert m["echoes_verified"] == SCALE_N
        assert m["bytes_verified"] == m["bytes_expected"] == 2 * SCALE_N * 4096
        assert m["unit"] == "connections/s"
    for name in names:
        summary = report["results"][name][_scale.SCALE]
        assert summary["verified"]
        assert summary["echoes_verified"] == SCALE_N
        # In-process, memory says nothing about one run: none is reported.
        assert summary["idle_kib_per_connection"] is None
        assert summary["peak_kib_per_connection"] is None
        assert any(line.split()[:1] == [name] for line in table.splitlines())
    assert [(r["sansflow"], r["peer"]) for r in report["scale"]["ratios"]] == list(
        bench._registry.SCALE_PAIRS)
    assert report["scale"]["goal"]["holds"] is None
    assert f"scale: {SCALE_N} connections at once ({SCALE_N} asked)" in table
    assert "client and server in one process, on one event loop" in table
    assert "not measured   peak memory per connection at most 1.5x" in table
    assert table.splitlines()[-1] == "all byte counts verified"


def test_scale_in_processes_of_their_own_measures_memory_per_connection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--scale", str(SCALE_N), "--reps", "1", "--quiet",
         "--only", "sansflow-asyncio", "--with-peers", "--json", str(path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(path.read_text())
    assert [s["name"] for s in report["stacks"]] == [
        "sansflow-asyncio", "asyncio-protocol", "asyncio-streams"]
    for per in report["results"].values():
        summary = per["scale"]
        assert summary["peak_kib_per_connection"] is not None
        assert summary["idle_kib_per_connection"] is not None
    ratios = report["scale"]["ratios"]
    assert [r["peer"] for r in ratios] == ["asyncio-protocol", "asyncio-streams"]
    assert all(r["peak_memory"] > 0 for r in ratios)
    goal = report["scale"]["goal"]
    # The asyncio pair was measured; uvloop's protocol pair was not selected.
    assert (goal["measured"], goal["wanted"]) == (1, 2)
    assert goal["holds"] is None
    assert goal["highest"]["peer"] == "asyncio-protocol"


def test_scale_runs_as_many_connections_as_the_descriptor_limit_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench import _scale

    monkeypatch.setattr(_scale, "raise_nofile", lambda wanted: (200, 200))
    profile = bench.Profile("scale-test", bench.Params(scale_connections=1000), 1, 0, "")
    report = _harness.run_suite(profile, [bench._registry.by_name("asyncio-protocol")],
                                [_scale.SCALE], isolate=False, idle=False)
    assert report["ok"] is True, report["problems"]
    fit = (200 - _scale.FD_MARGIN) // 2
    m = report["runs"][0]["measurement"]
    assert (m["connections"], m["connections_wanted"]) == (fit, 1000)
    assert (m["nofile_limit"], m["nofile_hard"]) == (200, 200)
    assert m["echoes_verified"] == fit
    assert m["bytes_verified"] == m["bytes_expected"] == 2 * fit * 4096
    table = _harness.format_report(report)
    assert f"scale: {fit} connections at once (1,000 asked)" in table
    assert ("RLIMIT_NOFILE in the run, raised as far as allowed: 200 (hard limit 200): 1,000 "
            "would need 2,064") in table
    monkeypatch.setattr(_scale, "raise_nofile", lambda wanted: (65, 65))
    with pytest.raises(OSError, match="RLIMIT_NOFILE 65 leaves room for no connection"):
        _scale.ScaleRun(bench.Params(scale_connections=10))


def test_raise_nofile_raises_the_soft_limit_up_to_the_hard_one() -> None:
    # In a process of its own: the test run's limits stay as they are.
    code = (
        "import resource\n"
        "from bench._scale import raise_nofile\n"
        "limit = resource.RLIMIT_NOFILE\n"
        "hard = resource.getrlimit(limit)[1]\n"
        "resource.setrlimit(limit, (64, hard))\n"
        "print(raise_nofile(32), resource.getrlimit(limit)[0])\n"
        "print(raise_nofile(1000), resource.getrlimit(limit)[0])\n"
        "print(None if hard == resource.RLIM_INFINITY else hard)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    first, second, hard = proc.stdout.splitlines()
    assert first == f"(64, {hard}) 64"  # never lowered
    soft = 1000 if hard == "None" else min(1000, int(hard))
    assert second == f"({soft}, {hard}) {soft}"


def test_scale_run_checks_every_byte_and_counts_every_connection() -> None:
    from bench import _common, _scale

    run = _scale.ScaleRun(bench.Params(scale_connections=3, scale_bytes=100))
    run.start()
    run.established()
    data = _common.payload(100)
    assert run.echoed(0, data[:40]) == 40
    assert run.echoed(40, memoryview(data)[40:]) == 100
    with pytest.raises(_common.VerificationError, match="differs"):
        run.echoed(40, data[:60])  # the right length, the wrong bytes
    with pytest.raises(_common.VerificationError, match="differs"):
        run.echoed(90, data[90:] + b"!")  # more than was sent
    with pytest.raises(_common.VerificationError, match="1 of 3 server ends did not see EOF"):
        run.finished([100, 100], [100, 100, 100])
    with pytest.raises(_common.VerificationError, match="1 of 3 clients did not finish"):
        run.finished([100, 100, 100], [100, 100])
    with pytest.raises(_common.VerificationError, match="1 of 3 echoes came back short"):
        run.finished([100, 100, 100], [100, 99, 100])
    m = run.finished([100, 100, 100], [100, 100, 100])
    assert (m["echoes_verified"], m["bytes_verified"], m["bytes_expected"]) == (3, 600, 600)


def test_scale_goal_holds_only_when_every_protocol_pair_is_within_it() -> None:
    def ratio(ours: str, peer: str, peak: float) -> dict[str, Any]:
        return {"sansflow": ours, "peer": peer, "peak_memory": peak}

    asyncio_pair = ratio("sansflow-asyncio", "asyncio-protocol", 1.5)
    uvloop_pair = ratio("sansflow-asyncio-uvloop", "uvloop-protocol", 1.2)
    streams_pair = ratio("sansflow-asyncio", "asyncio-streams", 9.0)  # not a protocol: no goal
    judged = _harness._judge_scale([asyncio_pair, uvloop_pair, streams_pair])
    assert judged["holds"] is True
    assert judged["highest"] == {"sansflow": "sansflow-asyncio", "peer": "asyncio-protocol",
                                 "ratio": 1.5}
    judged = _harness._judge_scale([{**asyncio_pair, "peak_memory": 1.51}, uvloop_pair])
    assert judged["holds"] is False
    judged = _harness._judge_scale([asyncio_pair, {**uvloop_pair, "peak_memory": None}])
    assert judged["holds"] is None
    assert (judged["measured"], judged["wanted"]) == (1, 2)


def test_scale_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="--scale has no TLS variant"):
        bench.main(["--scale", "5", "--tls", "--in-process"])
    with pytest.raises(SystemExit):
        bench.main(["--scale", "0"])
    assert "must be at least 1, not 0" in capsys.readouterr().err
    from bench import _scale

    with pytest.raises(ValueError, match="scale_connections must be at least 1, not 0"):
        _scale.ScaleRun(bench.Params(scale_connections=0))
    stacks, _ = _harness._select(["sansflow-anyio-trio"])
    names = [s.name for s in _harness._with_peers(stacks, bench._registry.SCALE_PAIRS)]
    assert names == ["sansflow-anyio-trio", "anyio-trio"]
