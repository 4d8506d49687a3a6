"""
Benchmark of the audit: ``audit export`` and ``audit verify`` against reading the same
notification log raw, and the peak memory of verify as the log grows.

``run() -> str`` returns a markdown section; ``python bench/bench_audit.py`` prints it
(``--sizes 10000,100000`` to choose the log sizes; the default goes up to 1M events).
Each measurement runs in a fresh subprocess, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import result_line

SIZES = (10_000, 100_000, 1_000_000)
EXPORT_TARGET = 0.8  # export events/s, as a share of the read + decode rate (#18)
VERIFY_TARGET = 0.5  # verify events/s, as a share of the read + decode rate (#18)
VMS = 500
PER_SNAPSHOT = 11  # events per generated create (see _snapshot_batch)


def _open(path: Path) -> Any:
    from vmsnap.adapters.store import StoreUrl, open_log

    return open_log(StoreUrl.parse(f"sqlite:///{path}", path.parent))


def generate(path: Path, events: int) -> int:
    """
    Write a log of about ``events`` events: quiesced storage-strategy creates (Vm claim,
    Requested, quiesce, two driver answers, decision, unquiesce, completion, Vm end and
    current), saved straight through the EventLog in large batches; then project and seal.
    """
    from vmsnap.adapters.view_store import SqliteViews
    from vmsnap.domain.vm import Vm
    from vmsnap.projections.projector import project

    log = _open(path)
    vms = [Vm(f"vm-{i}") for i in range(VMS)]
    log.save(*vms)
    written = VMS
    while written < events:
        batch = _snapshot_batch(vms)
        log.save(*batch)
        written += len(vms) * PER_SNAPSHOT
    SqliteViews(log, project).catch_up()
    total = int(log.max_position())
    log.close()
    return total


def _snapshot_batch(vms: list[Any]) -> list[Any]:
    from vmsnap.domain.values import DriverGroup, QuiesceResult, VolumeRef
    from vmsnap.domain.vm_snapshot import VmSnapshot

    out: list[Any] = []
    for vm in vms:
        snap = VmSnapshot(
            vm_id=vm.vm_id,
            name=f"s-{len(vm.live)}",
            description=None,
            memory=False,
            quiesce_requested=True,
            strategy="storage",
            strategy_reason="pools netapp-1 advertise STORAGE_SYSTEM_SNAPSHOT",
            hypervisor="kvm1",
            profile="kvm",
            volumes=[VolumeRef("root", "primary-1"), VolumeRef("data", "netapp-1")],
            groups=[
                DriverGroup("netapp-1", "simulator", ["data"]),
                DriverGroup("primary-1", "default", ["root"]),
            ],
            caps={},
            parent_id=vm.current,
        )
        sid = str(snap.id)
        vm.start("create", sid, "bench:1:x", snap.name, vm.current)
        snap.start_quiesce()
        snap.record_quiesced(QuiesceResult(frozen=True, quiesced=True))
        snap.record_driver_snapshot(
            DriverGroup("netapp-1", "simulator", ["data"]), need_unquiesce=True
        )
        snap.record_driver_snapshot(
            DriverGroup("primary-1", "default", ["root"]), need_unquiesce=False
        )
        snap.record_unquiesce_decision(
            answers={"netapp-1": True, "primary-1": False},
            need_unquiesce=False,
            thaw=True,
            release=None,
            reason="thaw: frozen",
        )
        snap.record_unquiesced(thawed=True, released=None, reason="mandatory", detail="")
        snap.complete(quiesced=True, consistency="filesystem")
        vm.end(sid, "ready")
        vm.set_current(sid)
        vm.live.clear()  # keep the generator's Vm objects small; the log is what counts
        out += [vm, snap]
    return out


def _measure(what: str, path: Path) -> dict[str, float]:
    """Run one measurement in this process (called in a fresh subprocess)."""
    log = _open(path)
    # The readers' modules are imported before the clock starts, as the mapper is for the
    # raw reads: start-up is benchmark 6's, not a cost per event.
    from vmsnap.adapters.log_reader import LogReader
    from vmsnap.audit import Audit
    from vmsnap.verify import verify

    start = time.perf_counter()
    if what == "raw":
        events = sum(len(page) for page in log.pages())
    elif what == "raw-decoded":
        events = 0
        for page in log.pages():
            for n in page:
                log.mapper.to_domain_event(n)
                events += 1
    elif what == "export":
        events = 0
        with open(os.devnull, "w") as out:  # the CLI's own work: one JSON line per event
            for events, e in enumerate(Audit(LogReader.over(log)).export(), start=1):  # noqa: B007
                out.write(e.json_line())  # what the CLI writes
    else:
        report = verify(LogReader.over(log))
        assert report.ok, report.problems[:3]
        events = report.events
    seconds = time.perf_counter() - start
    log.close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "events": events,
        "seconds": seconds,
        "rate": events / seconds,
        "rss_mib": peak_kib / 1024,
    }


def _child(what: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", what, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def run(sizes: tuple[int, ...] = SIZES) -> str:
    """
    Measure at each size; return the markdown section.
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"log-{size}.db"
            t = time.perf_counter()
            total = generate(path, size)
            gen_s = time.perf_counter() - t
            m = {w: _child(w, path) for w in ("raw", "raw-decoded", "export", "verify")}
            rows.append((size, total, gen_s, m))
            path.unlink()
    lines = [
        "## Audit: export and verify",
        "",
        "Method: a SQLite log of quiesced storage-strategy creates (11 events each, 500 VMs),",
        "written straight through the EventLog in batches, then projected and sealed. Each",
        "reader runs alone in a fresh subprocess: *raw* pages the notification log (1000",
        "per page) without decoding; *raw+decode* also maps each to its domain event;",
        "*export* is `audit export` (decode, JSON line); *verify* is `audit verify` (decode,",
        "rules, projection rebuilt into a temporary database, views and chain compared).",
        "Each reader's modules are imported before its clock starts (start-up is",
        f"benchmark 6). Targets (#18): export >= {EXPORT_TARGET} and verify >= {VERIFY_TARGET}",
        "of the raw+decode rate; verify's peak RSS flat.",
        "",
        "| events | raw ev/s | raw+decode ev/s | export ev/s | verify ev/s "
        "| export/raw+decode | verify/raw+decode | export/raw | verify/raw "
        "| verify peak RSS MiB | export peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _size, total, _gen_s, m in rows:
        raw, dec, exp, ver = m["raw"], m["raw-decoded"], m["export"], m["verify"]
        lines.append(
            f"| {total:,} | {raw['rate']:,.0f} | {dec['rate']:,.0f} | {exp['rate']:,.0f} "
            f"| {ver['rate']:,.0f} | {exp['rate'] / dec['rate']:.2f} "
            f"| {ver['rate'] / dec['rate']:.2f} | {exp['rate'] / raw['rate']:.2f} "
            f"| {ver['rate'] / raw['rate']:.2f} | {ver['rss_mib']:.0f} | {exp['rss_mib']:.0f} |"
        )
    rss = [m["verify"]["rss_mib"] for *_, m in rows]
    flat = "flat" if rss[-1] <= rss[0] * 1.25 + 8 else "GROWS"
    exports = [m["export"]["rate"] / m["raw-decoded"]["rate"] for *_, m in rows]
    verifies = [m["verify"]["rate"] / m["raw-decoded"]["rate"] for *_, m in rows]
    lines.insert(
        2,
        result_line(
            "3. Audit read (export and verify vs read + decode; verify's memory)",
            f"export >= {EXPORT_TARGET} x, verify >= {VERIFY_TARGET} x read + decode; "
            "memory flat from 10k to 1M events",
            f"export {min(exports):.2f}-{max(exports):.2f} x, "
            f"verify {min(verifies):.2f}-{max(verifies):.2f} x; "
            f"RSS {rss[0]:.0f} -> {rss[-1]:.0f} MiB ({flat})",
            min(exports) >= EXPORT_TARGET and min(verifies) >= VERIFY_TARGET and flat == "flat",
        ),
    )
    lines += [
        "",
        f"Verify's peak RSS from {rows[0][1]:,} to {rows[-1][1]:,} events: "
        f"{rss[0]:.0f} -> {rss[-1]:.0f} MiB ({flat}).",
        "Generation time (not a target): "
        + ", ".join(f"{total:,} events in {gen_s:.0f} s" for _s, total, gen_s, _m in rows)
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--measure", nargs=2, metavar=("WHAT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(args.measure[0], Path(args.measure[1]))))
        return
    print(run(tuple(int(s) for s in args.sizes.split(","))))


if __name__ == "__main__":
    main()
