"""README.md's examples are the files the tests run, word for word."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EMBEDDED = re.findall(
    r"<!-- example: (\S+) -->\n```python\n(.*?)```\n<!-- end example -->", README, re.DOTALL
)


def test_readme_embeds_examples() -> None:
    assert EMBEDDED, "README.md shows no example file"


@pytest.mark.parametrize(("path", "shown"), EMBEDDED, ids=[p for p, _ in EMBEDDED])
def test_readme_example_is_the_file(path: str, shown: str) -> None:
    assert (ROOT / path).read_text() == shown


def test_core_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(ROOT / "examples" / "core_by_hand.py"), run_name="__main__")
    assert capsys.readouterr().out == "HALF_CLOSED_LOCAL HALF_CLOSED_REMOTE\n"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
def test_any_adapter_example_runs(loop: str, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.argv", ["any_adapter.py", loop])
    runpy.run_path(str(ROOT / "examples" / "any_adapter.py"), run_name="__main__")
    assert capsys.readouterr().out == "HELLO, HALF-CLOSED WORLD from 127.0.0.1\n"
