"""Draw the state diagram of docs/images/states.svg from the transition tables of the core.

Run ``python scripts/state_diagram.py`` after changing ``sansflow/_state.py``; with ``--check``
it only says whether the committed drawing is still the tables' (tests/test_site.py checks
that too). Everything in the picture comes from ``SEND_TRANSITIONS`` and
``RECEIVE_TRANSITIONS``: a state is a box, in the order its enum defines, an event that moves
to a later state an arc above the boxes (to an earlier one, an arc below), and the events
that leave a state as it is are listed under its box. An event missing from a state's row is
a misuse (``FlowUsageError``) and has no mark.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from sansflow._state import RECEIVE_TRANSITIONS, SEND_TRANSITIONS

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "states.svg"

# Keys are Any: Mapping's key type is invariant, and each table has its own enums.
Table = Mapping[Any, Mapping[Any, enum.Enum]]

# Sizes in pixels. Text is monospace, so a name's width follows from its length.
CHAR = 7.8  # width of one character at FONT
FONT = 13
BOX_HEIGHT = 34
GAP = 70  # between two boxes
ARC_STEP = 34  # how much higher an arc rises for each state it passes over
LINE = 17  # one line of text
MARGIN = 16


def _arcs(table: Table) -> dict[tuple[int, int], list[str]]:
    """The events of each move between two different states, by (from, to) position."""
    order = {state: i for i, state in enumerate(table)}
    arcs: dict[tuple[int, int], list[str]] = {}
    for state, row in table.items():
        for event, target in row.items():
            if target is not state:
                arcs.setdefault((order[state], order[target]), []).append(event.name)
    return arcs


def _panel(title: str, table: Table, top: float, box_width: float) -> tuple[list[str], float]:
    """The SVG elements of one direction's machine, and the height they take."""
    states = list(table)
    arcs = _arcs(table)
    rise = max((abs(b - a) for a, b in arcs if b > a), default=0) * ARC_STEP + LINE
    fall = max((abs(b - a) for a, b in arcs if b < a), default=0) * ARC_STEP
    stays = [[e.name for e, target in table[s].items() if target is s] for s in states]
    box_top = top + LINE + rise
    below = box_top + BOX_HEIGHT + fall
    height = below - top + max(len(names) for names in stays) * LINE + LINE

    def center(i: int) -> float:
        return MARGIN + i * (box_width + GAP) + box_width / 2

    out = [f'<text class="title" x="{MARGIN}" y="{top + FONT}">{escape(title)}</text>']
    for (a, b), events in sorted(arcs.items()):
        span = abs(b - a)
        up = b > a
        y = box_top if up else box_top + BOX_HEIGHT
        # Leave and arrive a little off centre, by span, so that arcs sharing a box part.
        x0 = center(a) + (10 * span if up else -10 * span)
        x1 = center(b) - (10 * span if up else -10 * span)
        peak = y - span * ARC_STEP * 2 if up else y + span * ARC_STEP * 2
        label_y = (y + peak) / 2 - 5 if up else (y + peak) / 2 + FONT + 2
        out.append(f'<path class="arc" d="M {x0:g} {y:g} Q {(x0 + x1) / 2:g} {peak:g} '
                   f'{x1:g} {y:g}" marker-end="url(#arrow)"/>')
        out.append(f'<text class="event" x="{(x0 + x1) / 2:g}" y="{label_y:g}" '
                   f'text-anchor="middle">{escape(" / ".join(events))}</text>')
    for i, state in enumerate(states):
        x = center(i) - box_width / 2
        out.append(f'<rect class="state" x="{x:g}" y="{box_top:g}" width="{box_width:g}" '
                   f'height="{BOX_HEIGHT}" rx="6"/>')
        out.append(f'<text class="name" x="{center(i):g}" y="{box_top + BOX_HEIGHT / 2 + 4.5:g}" '
                   f'text-anchor="middle">{escape(state.name)}</text>')
        for line, name in enumerate(stays[i]):
            out.append(f'<text class="stay" x="{center(i):g}" '
                       f'y="{below + FONT + 4 + line * LINE:g}" text-anchor="middle">'
                       f'\u21bb {escape(name)}</text>')
    return out, height


def render(send: Table, receive: Table) -> str:
    """The whole drawing: the send machine above the receive machine."""
    panels = [("send_state (events: SendEvent)", send),
              ("receive_state (events: ReceiveEvent)", receive)]
    names = [state.name for _, table in panels for state in table]
    events = [event.name for _, table in panels for row in table.values() for event in row]
    box_width = CHAR * max(map(len, names + events)) + 24
    columns = max(len(table) for _, table in panels)
    width = 2 * MARGIN + columns * box_width + (columns - 1) * GAP
    body: list[str] = []
    top = float(MARGIN)
    for title, table in panels:
        elements, height = _panel(title, table, top, box_width)
        body += elements
        top += height + MARGIN
    style = (
        f"text {{ font-family: monospace; font-size: {FONT}px; fill: #1f2328; }} "
        ".title { font-weight: bold; } .event { fill: #0b5394; } .stay { fill: #57606a; } "
        ".state { fill: #eef3fb; stroke: #0b5394; stroke-width: 1.5; } "
        ".arc { fill: none; stroke: #0b5394; stroke-width: 1.3; }"
    )
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{top:g}" '
        f'viewBox="0 0 {width:g} {top:g}" role="img" '
        'aria-label="The state machines of a flow\'s two directions">',
        "<!-- Generated by scripts/state_diagram.py from sansflow/_state.py: do not edit. -->",
        f"<style>{style}</style>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#0b5394"/></marker></defs>',
        f'<rect width="{width:g}" height="{top:g}" fill="#ffffff"/>',
        *body,
        "</svg>",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if {OUTPUT.name} is not what the tables draw")
    drawing = render(SEND_TRANSITIONS, RECEIVE_TRANSITIONS)
    if parser.parse_args().check:
        if OUTPUT.read_text() != drawing:
            print(f"{OUTPUT} is out of date: run python scripts/state_diagram.py",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(drawing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
