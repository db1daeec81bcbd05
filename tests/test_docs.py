"""The docs' transition tables are the code's tables."""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pytest

from sansflow._state import (
    RECEIVE_TRANSITIONS,
    SEND_TRANSITIONS,
    ReceiveEvent,
    SendEvent,
)

CONTRACT = (Path(__file__).resolve().parent.parent / "docs" / "contract.md").read_text()


def render(table: dict[enum.Enum, dict[enum.Enum, enum.Enum]], events: list[enum.Enum]) -> str:
    lines = ["| state | " + " | ".join(e.name for e in events) + " |",
             "| --- |" + " --- |" * len(events)]
    for state, row in table.items():
        cells = [row[e].name if e in row else "rejected" for e in events]
        lines.append(f"| {state.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("name", "table", "events"),
    [("send", SEND_TRANSITIONS, list(SendEvent)),
     ("receive", RECEIVE_TRANSITIONS, list(ReceiveEvent))],
)
def test_contract_shows_the_code_table(
    name: str, table: dict[enum.Enum, dict[enum.Enum, enum.Enum]], events: list[enum.Enum]
) -> None:
    match = re.search(rf"<!-- table: {name} -->\n(.*?)<!-- end table -->", CONTRACT, re.DOTALL)
    assert match is not None, f"docs/contract.md has no {name} table"
    assert match.group(1) == render(table, events)


def test_testing_guide_example_runs() -> None:
    guide = (Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/testing.md", "exec"), {})
