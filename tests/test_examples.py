"""The examples run and give the right answers: the selectors adapter (core only) and one
protocol written once over every adapter (examples/rpc.py)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rpc = load("rpc")
REQUESTS = [b"ping", b"", b"x" * 300_000, b"\x00\x01 binary \xff", b"sansflow"]


def test_selectors_adapter_echoes_and_closes() -> None:
    assert load("selectors_adapter").main() == b"hello from selectors"


@pytest.mark.parametrize("adapter", sorted(rpc.RUNS))
def test_every_request_gets_its_answer(adapter: str) -> None:
    assert rpc.RUNS[adapter](REQUESTS) == [request.upper() for request in REQUESTS]


def test_the_framer_reassembles_any_chunking() -> None:
    stream = b"".join(b"".join(rpc.Framer.encode(r)) for r in REQUESTS)
    for size in (1, 3, 4, 5, 1000):
        framer = rpc.Framer()
        frames = []
        for start in range(0, len(stream), size):
            frames += framer.feed(stream[start:start + size])
        framer.check_complete()
        assert frames == REQUESTS


def test_eof_inside_a_frame_is_an_error() -> None:
    framer = rpc.Framer()
    assert framer.feed(b"\x00\x00\x00\x05abc") == []
    with pytest.raises(rpc.ProtocolError, match="7 bytes left"):
        framer.check_complete()


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_the_tls_example_half_closes_and_starts_tls(loop: str) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "tls.py"), loop],
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "got 5 bytes over TLSv1.3", "220 ready, say STARTTLS", "got 6 bytes over TLSv1.3"]


TLS_DOC = (EXAMPLES.parent / "docs" / "tls.md").read_text()


@pytest.mark.parametrize(("path", "shown"), re.findall(
    r"<!-- example: (\S+) -->\n```python\n(.*?)```\n<!-- end example -->", TLS_DOC, re.DOTALL))
def test_the_tls_page_shows_the_files_the_tests_run(path: str, shown: str) -> None:
    assert (EXAMPLES.parent / path).read_text() == shown


def test_the_tls_pages_excerpt_is_in_its_example() -> None:
    excerpt = TLS_DOC.split("```python\n")[2].split("```\n<!-- not runnable")[0]
    assert excerpt.startswith("async def starttls")
    assert excerpt in (EXAMPLES / "tls.py").read_text()


def run_example(name: str) -> list[str]:
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    return result.stdout.splitlines()


def test_the_blocking_tls_example_half_closes_and_sees_the_truncation() -> None:
    assert run_example("tls_blocking.py") == [
        "TLSv1.3 with localhost", "HELLO OVER TLS", "Ok(b'the first half of a reply')",
        "the peer closed the connection without TLS close_notify: data may be truncated"]


def test_the_tls_layers_by_hand_close_both_ways() -> None:
    lines = run_example("tls_by_hand.py")
    assert lines[0].startswith("TLSv1.3 TLS_")
    assert lines[1:] == ["both close_notifys went through; inner flows: CLOSED CLOSED"]


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_the_anyio_stream_example_runs_anyios_helpers_over_flows(loop: str) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "anyio_stream.py"), loop],
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "hello, anyio!\n"


def test_the_adapters_page_shows_the_anyio_stream_example_as_it_is() -> None:
    page = (EXAMPLES.parent / "docs" / "adapters.md").read_text()
    shown = re.findall(r"<!-- example: examples/anyio_stream.py -->\n```python\n(.*?)```\n"
                       r"<!-- end example -->", page, re.DOTALL)
    assert shown == [(EXAMPLES / "anyio_stream.py").read_text()]
