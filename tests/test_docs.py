"""The docs' transition tables are the code's tables, and every code block of the docs runs
as pasted or says why it cannot."""

from __future__ import annotations

import enum
import importlib
import inspect
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


ROOT = Path(__file__).resolve().parent.parent
# The pages whose code blocks are checked: the site's (docs/, and CHANGELOG.md, which the site
# includes) and the README, which the site's performance page includes in part.
PAGES = [*sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")),
         "README.md", "CHANGELOG.md"]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```\n", re.MULTILINE | re.DOTALL)
COMMENT = re.compile(r"<!-- (.*?) -->")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    before: str  # the HTML comment on the line above the fence, if any
    after: str  # the HTML comment on the line below the closing fence, if any

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text()
    found = []
    for match in FENCE.finditer(text):
        above = text[:match.start()].rstrip("\n").rpartition("\n")[2]
        below = text[match.end():].partition("\n")[0]
        found.append(Block(
            page, text.count("\n", 0, match.start()) + 1, match["lang"], match["code"],
            *(m[1] if (m := COMMENT.fullmatch(line.strip())) else "" for line in (above, below))))
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
# Blocks run by other tests, by the comment above them: "example: PATH" shows a file word for
# word (test_readme.py and test_examples.py check that, and run the files); "NAME example"
# is a block that a test finds by that name (test_conformance.py and test_pytest_example_*
# below). The sh blocks of the command's guide, and of the README's "Try it" section, are
# run by test_cli.py.
CLI_RUNS = {"docs/cli.md": (0, None), "README.md": ("## Try it", "## Install and test")}
# A python block that is just `--8<-- "PATH"` shows that file on the site: a test must run it.
INCLUDED = re.compile(r'--8<-- "(\S+)"\n')


def run_by_cli_tests(block: Block) -> bool:
    if block.lang != "sh" or block.page not in CLI_RUNS:
        return False
    start, end = CLI_RUNS[block.page]
    text = (ROOT / block.page).read_text()
    lines = text.splitlines()
    first = 0 if start == 0 else text[:text.index(str(start))].count("\n")
    last = len(lines) if end is None else text[:text.index(str(end))].count("\n")
    return first < block.line <= last


def mentioned_by_a_test(name: str) -> bool:
    return any(name in test.read_text() for test in (ROOT / "tests").rglob("test_*.py"))


def run_elsewhere(block: Block) -> str | None:
    """Who else runs ``block``, or why nobody does; ``None``: a python block is run here."""
    if block.lang == "text":
        return "text: output or a listing, not code"
    if "not runnable: " in f"{block.before} | {block.after}":
        return "marked not runnable"
    if example := re.fullmatch(r"example: (\S+)", block.before):
        return example[1]
    if included := INCLUDED.fullmatch(block.code):
        return included[1]
    if re.fullmatch(r"[\w ]+ example", block.before):
        return block.before
    if run_by_cli_tests(block):
        return "tests/test_cli.py"
    return None


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_every_block_runs_or_says_why_not(block: Block) -> None:
    who = run_elsewhere(block)
    if who is None:
        assert block.lang == "python", (
            f"{block.id}: a {block.lang or 'plain'} block that no test runs; say why on the "
            "line above it: <!-- not runnable: why -->")
    elif re.fullmatch(r"example: (\S+)", block.before):
        assert (ROOT / who).read_text() == block.code, f"{block.id} is not {who} word for word"
    if who is not None and who.startswith("examples/"):
        assert mentioned_by_a_test(Path(who).stem), f"{block.id}: no test runs {who}"
    if who is not None and who.endswith(" example"):
        assert mentioned_by_a_test(who), f"{block.id}: no test runs the {who}"


def with_outputs(page: str) -> list[tuple[Block, str | None]]:
    """The page's python blocks that no other test runs, each with the text block that shows
    its output (the line above that one says <!-- output -->), if one follows it."""
    found = blocks(page)
    following: list[Block | None] = [*found[1:], None]
    return [(block, after.code if after is not None and after.before == "output" else None)
            for block, after in zip(found, following[:len(found)], strict=True)
            if block.lang == "python" and run_elsewhere(block) is None]


RUN_HERE = [pair for page in PAGES for pair in with_outputs(page)]


def test_every_output_follows_a_block_run_here() -> None:
    shown = [block for block in ALL_BLOCKS if block.before == "output"]
    assert len(shown) == sum(output is not None for _, output in RUN_HERE)
    assert len(RUN_HERE) >= 10  # the tutorial and the how-to guides


@pytest.mark.parametrize(("block", "output"), RUN_HERE, ids=[b.id for b, _ in RUN_HERE])
def test_block_runs_as_pasted(block: Block, output: str | None, tmp_path: Path) -> None:
    """As a user would: the block alone in a file, run by Python in an empty folder."""
    script = tmp_path / "snippet.py"
    script.write_text(block.code)
    done = subprocess.run([sys.executable, "-W", "error", str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    if output is not None:
        assert done.stdout == output


def test_pytest_example_runs_every_check_once(tmp_path: Path) -> None:
    """docs/conformance.md's test module, run by pytest as a user's test file would be."""
    (example,) = re.findall(r"<!-- pytest example -->\n```python\n(.*?)```\n"
                            r"<!-- end pytest example -->",
                            (ROOT / "docs" / "conformance.md").read_text(), re.DOTALL)
    (tmp_path / "test_my_adapter.py").write_text(example)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-W", "error",
                           "-p", "no:cacheprovider", "test_my_adapter.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          check=False)
    from sansflow.testing.conformance import CHECKS

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(CHECKS)} passed" in done.stdout.splitlines()[-1]


# -- the code blocks of the docstrings, which the API reference shows -------------------------

API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))
API_MODULES = [name for page in API_PAGES
               for name in re.findall(r"^::: (\S+)$", page.read_text(), re.MULTILINE)]
# A literal block: a paragraph ending in "::", a blank line, the indented block.
LITERAL = re.compile(r"(?P<intro>(?:.+\n)*.*)::\n\n(?P<code>(?:(?: {4}.*)?\n)+)")


def docstring_blocks() -> list[Any]:
    """Every literal block of the docstrings of the modules the API pages show, and of their
    public classes, functions and methods: ``(where, intro, code)``."""
    blocks = []
    for name in API_MODULES:
        module = importlib.import_module(name)
        objects: list[tuple[str, object]] = [(name, module)]
        for member in getattr(module, "__all__", []):
            value = getattr(module, member)
            if inspect.isclass(value) or inspect.isfunction(value):
                objects.append((f"{name}.{member}", value))
            if inspect.isclass(value):
                objects += [(f"{name}.{member}.{attr}", item) for attr, item in vars(value).items()
                            if not attr.startswith("_") and callable(item)]
        for where, value in objects:
            doc = inspect.getdoc(value) or ""
            for found in LITERAL.finditer(doc + "\n"):
                blocks.append(pytest.param(found["intro"], textwrap.dedent(found["code"]),
                                           id=f"{where}:{doc[:found.start('code')].count(chr(10))}"))
    return blocks


DOCSTRING_BLOCKS = docstring_blocks()


def test_the_api_pages_show_docstring_blocks() -> None:
    assert len(DOCSTRING_BLOCKS) >= 8  # the adapters' programs, the testing tools' examples


@pytest.mark.parametrize(("intro", "code"), DOCSTRING_BLOCKS)
def test_docstring_block_runs_as_pasted_or_says_it_is_a_sketch(intro: str, code: str,
                                                               tmp_path: Path) -> None:
    """A block of a docstring runs as a user would paste it, unless the sentence that shows
    it says that it is a sketch."""
    if "a sketch" in intro.split("\n\n")[-1]:
        return
    script = tmp_path / "snippet.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, "-W", "error", str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    if "echo" in intro:
        assert done.stdout == "b'hello'\n"
