"""
A snapshot's audit timeline drawn as an SVG picture on a time axis (server-rendered):
the freeze window, each hypervisor or driver call as a bar with its answer, the AND-rule
decision, failures and compensations in their own colour.

Each event is one answer; a call's bar runs from the step that started it (the latest
``*Started``, ``Quiesced`` or decision event, or the lane's previous answer) to its answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

import attrs

from vmsnap.views import EventView

WIDTH, LEFT, RIGHT, TOP, LANE_H = 960, 170, 20, 34, 30
CHAR_W = 6.6  # the width of a label's character, about (12px sans-serif)
#: the events after which the next calls start
PHASES = {
    "Snapshot.QuiesceStarted",
    "Snapshot.Quiesced",
    "VmSnapshot.SnapshottingStarted",
    "VolumeSnapshot.SnapshottingStarted",
    "VmSnapshot.RevertStarted",
    "Snapshot.DeleteStarted",
    "Snapshot.UnquiesceDecided",
}
FAILURES = {"Snapshot.Failed", "Snapshot.DeadlineExceeded", "Snapshot.AlertRaised"}
FAILURES |= {"VmSnapshot.RevertFailed"}


@attrs.frozen
class Bar:
    lane: str
    start: float  # ms since the first event
    end: float
    label: str
    kind: str  # call | compensation | failure | decision | freeze | mark


def _ms(ts: str, t0: datetime) -> float:
    return (datetime.fromisoformat(ts) - t0).total_seconds() * 1000.0


def _yes(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _call(e: EventView, hypervisor: str) -> tuple[str, str, str] | None:
    """(lane, label, kind) of an event that answers a call; None for other events."""
    d, kind = e.data, "compensation" if e.data.get("compensation") else "call"
    name = e.type.split(".", 1)[1]
    if e.type == "Snapshot.Quiesced":
        r = d.get("result") or {}
        return hypervisor, f"quiesce → quiesced={_yes(r.get('quiesced'))}", "call"
    if e.type == "Snapshot.Unquiesced":
        what = f"thawed={_yes(d.get('thawed'))}, released={d.get('released') or '-'}"
        return hypervisor, f"unquiesce → {what} ({d.get('reason')})", kind
    if e.type == "VmSnapshot.DriverSnapshotTaken":
        label = f"take_vm_snapshot → {_yes(d.get('need_unquiesce'))}"
        return str(d.get("pool_id")), label, "call"
    if name.startswith("Driver") or name.startswith("VolumeSnapshot"):
        return str(d.get("pool_id")), name, kind
    if name.startswith("Hypervisor"):
        return hypervisor, name, kind
    if e.type == "Snapshot.CallFailed":
        return str(d.get("target")), f"{d.get('op')} ✗ {d.get('error')}", "failure"
    return None


def bars(events: Sequence[EventView]) -> tuple[list[Bar], list[str], float]:
    """The bars of ``events``, the lanes in order, and the length of the axis in ms."""
    if not events:
        return [], [], 1.0
    t0 = datetime.fromisoformat(events[0].timestamp)
    first = events[0].data
    hypervisor = str(first.get("hypervisor") or "hypervisor")
    lanes = ["freeze window", hypervisor]
    for pool in [g.get("pool_id") for g in first.get("groups") or []] or [first.get("pool_id")]:
        if pool and str(pool) not in lanes:
            lanes.append(str(pool))
    out: list[Bar] = []
    phase = 0.0
    last_on: dict[str, float] = {}
    freeze_from: float | None = None
    for e in events:
        at = _ms(e.timestamp, t0)
        call = _call(e, hypervisor)
        if call is not None:
            lane, label, kind = call
            if lane not in lanes:
                lanes.append(lane)
            start = max(phase, last_on.get(lane, 0.0))
            out.append(Bar(lane, start, at, label, kind))
            last_on[lane] = at
        if e.type == "Snapshot.Quiesced":
            freeze_from = at
        elif e.type == "Snapshot.UnquiesceDecided":
            answers = ", ".join(f"{p}={_yes(a)}" for p, a in (e.data.get("answers") or {}).items())
            need = _yes(e.data.get("need_unquiesce"))
            label = f"AND rule: {answers} → need_unquiesce={need}: {e.data.get('reason')}"
            out.append(Bar("decision", at, at, label, "decision"))
        elif e.type in FAILURES:
            text = e.data.get("error") or e.data.get("message") or e.data.get("op") or ""
            out.append(Bar("failures", at, at, f"{e.type}: {text}", "failure"))
        if freeze_from is not None and e.type in {
            "Snapshot.Unquiesced",
            "Snapshot.Completed",
            "Snapshot.Failed",
        }:
            out.append(
                Bar("freeze window", freeze_from, at, f"{at - freeze_from:.1f} ms", "freeze")
            )
            freeze_from = None
        if e.type in PHASES:
            phase = at
    lanes += [lane for lane in ("decision", "failures") if any(b.lane == lane for b in out)]
    return out, lanes, max(_ms(events[-1].timestamp, t0), 1.0)


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
    height = TOP + LANE_H * len(lanes) + 30
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
        )
        parts.append(f'<text x="4" y="{y + 19}" class="lane">{escape(lane)}</text>')
    for b in found:
        y = TOP + lanes.index(b.lane) * LANE_H
        left, width = x(b.start), max(x(b.end) - x(b.start), 3.0)
        parts.append(f'<g class="bar {b.kind}"><title>{escape(b.label)}</title>')
        if b.kind in {"decision", "failure"} and b.start == b.end:
            cx = x(b.start)
            parts.append(f'<path d="M{cx:.1f},{y + 6} l8,9 l-8,9 l-8,-9 z"/>')
        else:
            parts.append(f'<rect x="{left:.1f}" y="{y + 6}" width="{width:.1f}" height="18"/>')
        tx, anchor = _label_at(left, width, len(b.label))
        parts.append(
            f'<text x="{tx:.1f}" y="{y + 19}" text-anchor="{anchor}">{escape(b.label)}</text></g>'
        )
    axis_y = TOP + LANE_H * len(lanes) + 16
    for i in range(6):
        ms = span * i / 5
        parts.append(
            f'<text x="{x(ms):.1f}" y="{axis_y}" text-anchor="middle" '
            f'class="tick">{ms:.1f} ms</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def offsets(events: Sequence[EventView]) -> list[str]:
    """Each event's time since the one before, for the table under the picture."""
    out, before = [], None
    for e in events:
        at = datetime.fromisoformat(e.timestamp)
        out.append("" if before is None else f"+{(at - before).total_seconds() * 1000:.1f} ms")
        before = at
    return out
