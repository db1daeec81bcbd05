"""Constructor options, and the core's purity: no I/O, no clock, no threads, no hypothesis."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sansflow
from sansflow import Flow

ROOT = Path(sansflow.__file__).resolve().parent
FORBIDDEN = ("socket", "asyncio", "trio", "anyio", "threading", "time", "select", "ssl",
             "selectors")


def test_options_are_kept() -> None:
    flow = Flow(high_water=10, low_water=3, receive_limit=7)
    assert (flow.high_water, flow.low_water, flow.receive_limit) == (10, 3, 7)


def test_smallest_options() -> None:
    flow = Flow(high_water=1, low_water=0, receive_limit=1)
    assert (flow.high_water, flow.low_water, flow.receive_limit) == (1, 0, 1)
    assert Flow(high_water=5, low_water=5).low_water == 5


@pytest.mark.parametrize(("options", "exception", "message"), [
    ({"high_water": 0}, ValueError, "high_water must be at least 1, not 0"),
    ({"high_water": -1}, ValueError, "high_water must be at least 1, not -1"),
    ({"high_water": 1.5}, TypeError, r"high_water must be an int, not float \(1.5\)"),
    ({"high_water": True}, TypeError, r"high_water must be an int, not bool \(True\)"),
    ({"high_water": None}, TypeError, "high_water must be an int, not NoneType"),
    ({"low_water": -1}, ValueError, "low_water must be at least 0, not -1"),
    ({"low_water": "1"}, TypeError, r"low_water must be an int, not str \('1'\)"),
    ({"low_water": False}, TypeError, "low_water must be an int, not bool"),
    ({"receive_limit": 0}, ValueError, "receive_limit must be at least 1, not 0"),
    ({"receive_limit": 2.0}, TypeError, "receive_limit must be an int, not float"),
    ({"high_water": 4, "low_water": 5}, ValueError,
     r"low_water \(5\) must not exceed high_water \(4\)"),
    ({"low_water": 64 * 1024 + 1}, ValueError,
     r"low_water \(65537\) must not exceed high_water \(65536\)"),
])
def test_bad_options_are_refused(options: dict[str, object], exception: type[Exception],
                                 message: str) -> None:
    with pytest.raises(exception, match=message):
        Flow(**options)  # type: ignore[arg-type]


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Flow(10, 3)  # type: ignore[call-arg]


def test_flow_has_no_instance_dict() -> None:
    flow = Flow()
    assert not hasattr(flow, "__dict__")
    with pytest.raises(AttributeError):
        flow.extra = 1  # type: ignore[attr-defined]


def _imports(path: Path) -> set[str]:
    """The top-level module names ``path`` imports, wherever in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


CORE_FILES = [*sorted(ROOT.glob("*.py")), *(ROOT / "testing" / name for name in
                                            ("__init__.py", "_model.py", "_pair.py",
                                             "stateful.py"))]


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_source_imports_no_io(path: Path) -> None:
    # ssl's MemoryBIO and SSLObject do no I/O: the TLS layer, and it alone, uses them.
    allowed = {"ssl"} if path.name == "_tls.py" else set()
    assert not _imports(path) & (set(FORBIDDEN) - allowed)


def test_importing_the_core_loads_no_io_and_no_hypothesis() -> None:
    """Run in a fresh interpreter: what ``import sansflow, sansflow.testing`` adds."""
    code = (
        "import sys; before = set(sys.modules)\n"
        "import sansflow, sansflow.testing\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    loaded = {name.split(".")[0] for name in result.stdout.split()}
    assert "sansflow" in loaded
    assert not loaded & {*FORBIDDEN, "hypothesis"}, sorted(loaded)


def test_the_interpreter_itself_loaded_only_time() -> None:
    """The check above subtracts what the interpreter loads on its own; make sure that is not
    hiding anything but ``time`` (imported by the import system at startup)."""
    code = "import sys; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    preloaded = {name.split(".")[0] for name in result.stdout.split()}
    assert preloaded & set(FORBIDDEN) <= {"time"}
