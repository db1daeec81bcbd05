"""The examples run and give the right answers: the selectors adapter (core only) and one
protocol written once over every adapter (examples/rpc.py)."""

from __future__ import annotations

import importlib.util
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
