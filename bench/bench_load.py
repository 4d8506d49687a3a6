"""
Benchmark 2, aggregate load: ``repository.get`` of a completed quiesced ``VmSnapshot``
against a bare eventsourcing aggregate holding the same number of events with the same
data (plain JSON, no transcodings, no state machine), from the same SQLite file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import best, median, quick, result_line, table, write_config

TARGET = 1.2


def _loads(n: int, get: Any, ident: Any) -> None:
    for _ in range(n):
        get(ident)


def run() -> str:
    from _bare import Bare

    from vmsnap import Controller
    from vmsnap.projections.events import event_data

    loops, repeats = (50, 2) if quick() else (1000, 9)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with Controller.from_config(write_config(folder, 1)) as ctrl:
            snap = ctrl.create_vm_snapshot("vm-0", quiesce=True)
            log = ctrl.event_log
            from uuid import UUID

            sid = UUID(snap.id)
            events = [log.mapper.to_domain_event(n) for n in log.notifications_of([sid])]
            bare = Bare(event_data(events[0]))
            for e in events[1:]:
                bare.happen(event_data(e))
            log.save(bare)
            stored = {
                "VmSnapshot": log.notifications_of([sid]),
                "bare": log.notifications_of([bare.id]),
            }
            get = log.repository.get
            pairs = []
            for _ in range(repeats):
                ours = best(lambda: _loads(loops, get, sid), 3) / loops
                base = best(lambda: _loads(loops, get, bare.id), 3) / loops
                pairs.append((ours, base))
            # Decoding alone (mapper), to tell it from replaying (mutate).
            mapper = log.mapper
            dec = {
                k: best(lambda v=v: [mapper.to_domain_event(n) for n in v], 50)  # type: ignore[misc]
                for k, v in stored.items()
            }
            sizes = {k: sum(len(n.state) for n in v) for k, v in stored.items()}
    # Noise on a shared machine only adds time: compare the best of each.
    ratio = min(o for o, _ in pairs) / min(b for _, b in pairs)
    ok = ratio <= TARGET
    count = len(events)
    return "\n".join(
        [
            "## 2. Aggregate load",
            "",
            result_line(
                "2. Aggregate load (VmSnapshot vs bare aggregate)",
                f"≤ {TARGET} x baseline",
                f"{ratio:.2f} x ({min(o for o, _ in pairs) * 1e6:.0f} µs vs "
                f"{min(b for _, b in pairs) * 1e6:.0f} µs)",
                ok,
            ),
            f"Method: `EventLog.repository.get` of a completed quiesced storage-strategy "
            f"`VmSnapshot` ({count} events, {sizes['VmSnapshot']} bytes stored) against a bare "
            f"`Aggregate` with {count} events carrying the same data as plain JSON "
            f"({sizes['bare']} bytes), both in the same SQLite file and read by the same "
            f"application; best of 3 x {loops} loads per repeat, {repeats} repeats alternating; "
            f"ratio of the best of each (median of the per-repeat ratios: "
            f"{median(o / b for o, b in pairs):.2f}).",
            "",
            table(
                ["repeat", "VmSnapshot µs/load", "bare µs/load", "ratio"],
                [
                    (i + 1, f"{o * 1e6:.0f}", f"{b * 1e6:.0f}", f"{o / b:.2f}")
                    for i, (o, b) in enumerate(pairs)
                ],
            ),
            "",
            f"Decoding the stored events alone (mapper, no replay): VmSnapshot "
            f"{dec['VmSnapshot'] * 1e6:.0f} µs, bare {dec['bare'] * 1e6:.0f} µs.",
            "",
            f"**Ratio {ratio:.2f}, target ≤ {TARGET}: {'met' if ok else 'NOT met'}.**",
        ]
    )


if __name__ == "__main__":
    print(run())
