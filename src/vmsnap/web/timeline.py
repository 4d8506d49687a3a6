"""
A snapshot's audit timeline drawn as an SVG picture on a time axis (server-rendered):
the freeze window, each hypervisor or driver call as a bar with its answer, the hooks
around the freeze (issue #19) in a lane of their own, the AND-rule decision, failures and
compensations in their own colour.

Each event is one answer; a call's bar runs from the step that started it (the latest
``*Started``, ``Quiesced`` or decision event, or the lane's previous answer) to its answer.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape
from typing import Any

import attrs

from vmsnap.domain.snapshot_base import SnapshotAggregate
from vmsnap.domain.values import HOOK_OK, PRE_FREEZE
from vmsnap.domain.vm_snapshot import VmSnapshot
from vmsnap.domain.volume_snapshot import VolumeSnapshot
from vmsnap.views import EventView
from vmsnap.web.hooks import visible

WIDTH, LEFT, RIGHT, TOP, LANE_H = 960, 170, 20, 34, 30
CHAR_W = 6.6  # the width of a label's character, about (12px sans-serif)
NOTE_H = 16
NOTE_CHAR_W = 7.4  # the notes under the axis are in the page's larger font
S, V, Vol = SnapshotAggregate, VmSnapshot, VolumeSnapshot
#: the events after which the next calls start
PHASES = (
    S.QuiesceStarted,
    S.Quiesced,
    V.SnapshottingStarted,
    Vol.SnapshottingStarted,
    V.RevertStarted,
    S.DeleteStarted,
    S.UnquiesceDecided,
    S.HookStarted,
)
FAILURES = (S.Failed, S.DeadlineExceeded, S.AlertRaised, V.RevertFailed)
#: the events that end a quiesce window (a frozen VM's ends at its thaw)
WINDOW_ENDS = (S.Unquiesced, S.Completed, S.Failed)
#: how the hypervisor's unquiesce is drawn, by its reason
UNQUIESCE_KIND = {"failure": "compensation", "recovery": "compensation", "deadline": "failure"}
#: the hooks' lane, drawn right under the freeze window that they bracket
HOOKS = "hooks"


@attrs.frozen
class Bar:
    lane: str
    start: float  # ms since the first event
    end: float
    label: str
    kind: str  # call | compensation | failure | decision | freeze
    note: str | None = None  # the whole text of a marker, written under the axis


def _ms(ts: str, t0: datetime) -> float:
    return (datetime.fromisoformat(ts) - t0).total_seconds() * 1000.0


def _yes(value: bool) -> str:
    return "true" if value else "false"


def _undone(compensation: bool) -> str:
    return "compensation" if compensation else "call"


def _hook(e: SnapshotAggregate.HookEnded) -> str:
    name = "pre-freeze hook" if e.hook == PRE_FREEZE else "post-thaw hook"
    if e.error is not None and e.exit_code is None and not e.timed_out:
        return visible(f"{name} ✗ {e.error}")
    code = "" if e.exit_code is None else f", exit {e.exit_code}"
    return f"{name} → {e.status}{code}, {e.duration_ms} ms"


Call = tuple[str | None, str, str]  # lane (None: the hypervisor's), label, kind
CALLS: dict[type, Callable[[Any], Call]] = {
    S.Quiesced: lambda e: (
        None,
        f"quiesce → quiesced={_yes(e.result.quiesced)}, frozen={_yes(e.result.frozen)}",
        "call",
    ),
    S.Unquiesced: lambda e: (
        None,
        f"unquiesce → thawed={_yes(e.thawed)}, released={e.released or '-'} ({e.reason})",
        UNQUIESCE_KIND.get(e.reason, "call"),
    ),
    S.CallFailed: lambda e: (e.target, f"{e.op} ✗ {e.error}", "failure"),
    V.HypervisorSnapshotTaken: lambda e: (None, f"take_vm_snapshot → {e.name}", "call"),
    V.DriverSnapshotTaken: lambda e: (
        e.pool_id,
        f"take_vm_snapshot → {_yes(e.need_unquiesce)}",
        "call",
    ),
    V.HypervisorSnapshotReverted: lambda e: (None, "revert_vm_snapshot → done", "call"),
    V.DriverSnapshotReverted: lambda e: (
        e.pool_id,
        f"revert_vm_snapshot → {_yes(e.result)}",
        "call",
    ),
    V.HypervisorSnapshotDeleted: lambda e: (
        None,
        "delete_vm_snapshot → done",
        _undone(e.compensation),
    ),
    V.DriverSnapshotDeleted: lambda e: (
        e.pool_id,
        "delete_vm_snapshot → done",
        _undone(e.compensation),
    ),
    S.HookEnded: lambda e: (HOOKS, _hook(e), "call" if e.status == HOOK_OK else "failure"),
    Vol.VolumeSnapshotTaken: lambda e: (e.pool_id, f"take_snapshot → {e.name}", "call"),
    Vol.VolumeSnapshotDeleted: lambda e: (
        e.pool_id,
        "delete_snapshot → done",
        _undone(e.compensation),
    ),
}


def _lanes(first: object) -> tuple[str, list[str]]:
    """The hypervisor's name and the lanes a snapshot's request names."""
    if isinstance(first, V.Requested):
        return first.hypervisor, [g.pool_id for g in first.groups]
    if isinstance(first, Vol.Requested):
        return first.hypervisor, [first.pool_id]
    return "hypervisor", []


def _failure(event: object) -> str:
    if isinstance(event, S.AlertRaised):
        return f"alert: {event.message}"
    if isinstance(event, S.DeadlineExceeded):
        return f"deadline of {event.deadline_s:g} s exceeded during {event.op}"
    assert isinstance(event, S.Failed | V.RevertFailed)
    return f"failed: {event.error}"


def _decision(e: SnapshotAggregate.UnquiesceDecided) -> str:
    answers = ", ".join(f"{pool}={_yes(a)}" for pool, a in e.answers.items())
    return f"AND rule: {answers} → need_unquiesce={_yes(e.need_unquiesce)}: {e.reason}"


class _Drawing:
    """Walks a timeline once, collecting its bars."""

    def __init__(self, events: Sequence[EventView]) -> None:
        self.t0 = datetime.fromisoformat(events[0].timestamp)
        self.hypervisor, pools = _lanes(events[0].event)
        self.lanes = ["freeze window", self.hypervisor, *dict.fromkeys(pools)]
        self.bars: list[Bar] = []
        self.phase = 0.0
        self.last_on: dict[str, float] = {}
        self.window: tuple[float, bool] | None = None  # (since, frozen)

    def add(self, view: EventView) -> None:
        at, event = _ms(view.timestamp, self.t0), view.event
        draw = CALLS.get(type(event))
        if draw is not None:
            lane, label, kind = draw(event)
            lane = lane or self.hypervisor
            if lane not in self.lanes:
                self.lanes.insert(1 if lane == HOOKS else len(self.lanes), lane)
            start = max(self.phase, self.last_on.get(lane, 0.0))
            self.bars.append(Bar(lane, start, at, label, kind))
            self.last_on[lane] = at
        if isinstance(event, S.UnquiesceDecided):
            short = f"need_unquiesce={_yes(event.need_unquiesce)}"
            self.bars.append(Bar("decision", at, at, short, "decision", _decision(event)))
        elif isinstance(event, FAILURES):
            short = _failure(event).split(":", 1)[0]
            self.bars.append(Bar("failures", at, at, short, "failure", _failure(event)))
        self._window(event, at)
        if isinstance(event, PHASES):
            self.phase = at

    def _window(self, event: object, at: float) -> None:
        change = event.freeze_change() if isinstance(event, S.Event) else None
        if isinstance(event, S.Quiesced):
            self.window = (at, change is True)
        elif self.window is not None and isinstance(event, WINDOW_ENDS):
            since, frozen = self.window
            if frozen and change is not False and not isinstance(event, S.Failed):
                return  # a frozen VM's window ends at its thaw
            what = "frozen" if frozen else "quiesced"
            self.bars.append(Bar(self.lanes[0], since, at, f"{what} {at - since:.1f} ms", "freeze"))
            self.window = None


def bars(events: Sequence[EventView]) -> tuple[list[Bar], list[str], float]:
    """The bars of ``events``, the lanes in order, and the length of the axis in ms."""
    if not events:
        return [], [], 1.0
    drawing = _Drawing(events)
    for e in events:
        drawing.add(e)
    found, lanes = drawing.bars, drawing.lanes
    lanes += [lane for lane in ("decision", "failures") if any(b.lane == lane for b in found)]
    return found, lanes, max(_ms(events[-1].timestamp, drawing.t0), 1.0)


def _label_at(left: float, width: float, chars: int) -> tuple[float, str]:
    """Where a bar's label fits: after the bar, else before it, else inside it."""
    needed = chars * CHAR_W
    if left + width + 4 + needed <= WIDTH:
        return left + width + 4, "start"
    if left - 4 - needed >= LEFT:
        return left - 4, "end"
    return max(left, LEFT) + 4, "start"


def svg(events: Sequence[EventView], actor: str | None = None) -> str:
    """The picture as SVG markup (every text escaped)."""
    found, lanes, span = bars(events)
    notes = [b for b in found if b.note]
    axis_y = TOP + LANE_H * len(lanes) + 16
    height = axis_y + 14 + NOTE_H * sum(len(_wrap(b.note or "")) for b in notes)
    scale = (WIDTH - LEFT - RIGHT) / span

    def x(ms: float) -> float:
        return LEFT + ms * scale

    title = "Timeline of the snapshot's events" + (f" (actor: {actor})" if actor else "")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" role="img" aria-labelledby="timeline-title" class="timeline">',
        f'<title id="timeline-title">{escape(title)}</title>',
        f'<text x="4" y="16" class="axis-label">{escape(title)}</text>',
    ]
    for i, lane in enumerate(lanes):
        y = TOP + i * LANE_H
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y + LANE_H}" '
            f'y2="{y + LANE_H}" class="lane-line"/>'
            f'<text x="4" y="{y + 19}" class="lane">{escape(lane)}</text>'
        )
    for b in found:
        parts.append(_bar(b, TOP + lanes.index(b.lane) * LANE_H, x(b.start), x(b.end)))
    for i in range(6):
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        parts.append(
            f'<text x="{x(span * i / 5):.1f}" y="{axis_y}" text-anchor="{anchor}" '
            f'class="tick">{span * i / 5:.1f} ms</text>'
        )
    y = axis_y + 6
    for b in notes:
        for line in _wrap(f"◆ {b.note}"):
            y += NOTE_H
            parts.append(f'<text x="4" y="{y}" class="note {b.kind}">{escape(line)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bar(b: Bar, y: float, left: float, right: float) -> str:
    width = max(right - left, 3.0)
    if b.start == b.end and b.kind in {"decision", "failure"}:  # a marker: a diamond
        shape = f'<path d="M{left:.1f},{y + 6} l8,9 l-8,9 l-8,-9 z"/>'
        left, width = left - 8, 16
    else:
        shape = f'<rect x="{left:.1f}" y="{y + 6}" width="{width:.1f}" height="18"/>'
    tx, anchor = _label_at(left, width, len(b.label))
    return (
        f'<g class="bar {b.kind}"><title>{escape(b.note or b.label)}</title>{shape}'
        f'<text x="{tx:.1f}" y="{y + 19}" text-anchor="{anchor}">{escape(b.label)}</text></g>'
    )


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, int((WIDTH - 8) / NOTE_CHAR_W)) or [""]


def offsets(events: Sequence[EventView]) -> list[str]:
    """Each event's time since the one before, for the table under the picture."""
    out, before = [], None
    for e in events:
        at = datetime.fromisoformat(e.timestamp)
        out.append("" if before is None else f"+{(at - before).total_seconds() * 1000:.1f} ms")
        before = at
    return out


def row_kinds(events: Sequence[EventView]) -> list[str]:
    """The class of each event's row in the table: failure, compensation or nothing."""
    kinds = []
    for view in events:
        draw = CALLS.get(type(view.event))
        kind = draw(view.event)[2] if draw is not None else ""
        kinds.append("failure" if isinstance(view.event, FAILURES) else kind)
    return kinds
