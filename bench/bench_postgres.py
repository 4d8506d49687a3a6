"""
Throughput of 1 vs 4 controller processes sharing one PostgreSQL store: quiesced VM
snapshots per second through ``Controller.create_vm_snapshot``, simulator without delays.

``run()`` returns a markdown section; ``python bench/bench_postgres.py`` prints it. The
server is $VMSNAP_BENCH_POSTGRES_URL (or $VMSNAP_TEST_POSTGRES_URL) when set, else a
throwaway cluster started with scripts/throwaway-postgres.sh and removed afterwards.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "throwaway-postgres.sh"
PER_PROCESS = 40  # snapshots each worker takes
VMS_PER_PROCESS = 4
WARMUP = 2  # untimed creates per worker (connections, caches)
PROCESS_COUNTS = (1, 4)
TIMEOUT_S = 600


def _config(folder: Path, vms: list[str]) -> Path:
    caps = "{ VOLUME_SNAPSHOT_QUIESCEVM = true, STORAGE_SYSTEM_SNAPSHOT = true }"
    parts = [
        "[limits]\nmax_vm_snapshots_per_vm = 100000\n",
        '[[hypervisors]]\nname = "esx1"\ntype = "simulator"\nprofile = "vmware"\n'
        'state = "world.db"\n',
        '[[pools]]\nid = "primary-1"\nname = "Primary"\ndriver = "default"\n',
        '[[pools]]\nid = "netapp-1"\nname = "NetApp"\ndriver = "simulator"\n'
        f'state = "world.db"\ncapabilities = {caps}\nneed_unquiesce = true\n',
    ]
    for vm in vms:
        parts.append(
            f'[[vms]]\nid = "{vm}"\nhypervisor = "esx1"\npower_state = "Running"\n'
            f'volumes = [{{ id = "{vm}-root", pool = "primary-1", type = "ROOT" }}, '
            f'{{ id = "{vm}-data", pool = "netapp-1", type = "DATADISK" }}]\n'
        )
    path = folder / "vmsnap.toml"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def worker(config: str, url: str, vms: str, count: int, go: str) -> None:
    """One controller process: warm up, wait for ``go`` to exist, take ``count`` snapshots."""
    from vmsnap import Controller

    names = vms.split(",")
    with Controller.from_config(config, url) as ctrl:
        for i in range(WARMUP):
            ctrl.create_vm_snapshot(names[i % len(names)], quiesce=True)
        print("ready", flush=True)
        while not Path(go).exists():
            time.sleep(0.001)
        start = time.time()
        for i in range(count):
            snap = ctrl.create_vm_snapshot(names[i % len(names)], quiesce=True)
            assert snap.state == "ready", snap
        end = time.time()
    print(json.dumps({"start": start, "end": end, "count": count}), flush=True)


def _admin(server: str) -> Any:
    import psycopg

    return psycopg.connect(urlunsplit(urlsplit(server)._replace(path="/postgres")), autocommit=True)


def _database(server: str) -> str:
    name = f"vmsnap_bench_{uuid.uuid4().hex[:10]}"
    with _admin(server) as c:
        c.execute(f"CREATE DATABASE {name}")
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


def _measure(server: str, processes: int) -> float:
    """Snapshots per second of ``processes`` controllers on a fresh store and world."""
    from vmsnap import Controller

    with tempfile.TemporaryDirectory(prefix="vmsnap-bench-") as tmp:
        folder = Path(tmp)
        groups = [[f"vm-{p}-{v}" for v in range(VMS_PER_PROCESS)] for p in range(processes)]
        config = _config(folder, [vm for group in groups for vm in group])
        url = _database(server)
        with Controller.from_config(config, url, migrate=True) as ctrl:
            ctrl.migrate()
        go = folder / "go"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(config),
                    url,
                    ",".join(group),
                    str(PER_PROCESS),
                    str(go),
                ],
                cwd=folder,
                stdout=subprocess.PIPE,
                text=True,
            )
            for group in groups
        ]
        try:
            for p in procs:
                assert p.stdout is not None
                assert p.stdout.readline().strip() == "ready", "a worker failed to start"
            go.touch()
            reports = []
            for p in procs:
                out, _ = p.communicate(timeout=TIMEOUT_S)
                assert p.returncode == 0, f"a worker failed ({p.returncode})"
                reports.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
        with Controller.from_config(config, url) as ctrl:
            listed = ctrl.list_vm_snapshots()
            taken = sum(r["count"] for r in reports) + WARMUP * processes
            assert len(listed) == len({s.id for s in listed}) == taken, "snapshots lost or doubled"
        with _admin(server) as c:
            c.execute(f"DROP DATABASE {urlsplit(url).path.lstrip('/')} WITH (FORCE)")
        elapsed = max(r["end"] for r in reports) - min(r["start"] for r in reports)
        return sum(r["count"] for r in reports) / elapsed


def _server() -> tuple[str, str | None]:
    url = os.environ.get("VMSNAP_BENCH_POSTGRES_URL") or os.environ.get("VMSNAP_TEST_POSTGRES_URL")
    if url:
        return url, None
    folder = tempfile.mkdtemp(prefix="vmsnap-pg.", dir="/tmp")
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", folder], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop", folder], check=False)
        raise RuntimeError(f"cannot start a throwaway PostgreSQL: {started.stderr.strip()}")
    return started.stdout.strip(), folder


def run() -> str:
    """Measure and return the markdown section."""
    server, own = _server()
    try:
        rates = {n: _measure(server, n) for n in PROCESS_COUNTS}
    finally:
        if own is not None:
            subprocess.run(["bash", str(SCRIPT), "stop", own], check=False)
    one, four = rates[1], rates[4]
    return "\n".join(
        [
            "## Several controllers on PostgreSQL (bench/bench_postgres.py)",
            "",
            "| controller processes | quiesced VM snapshots/s |",
            "|---:|---:|",
            *(f"| {n} | {rate:.1f} |" for n, rate in rates.items()),
            "",
            f"**Ratio 4 vs 1: {four / one:.2f}x** (the machine-independent figure: above 1, "
            "four controllers together take more snapshots per second than one alone).",
            "",
            "Method: one fresh PostgreSQL database and simulated world per run, migrated "
            "first. Each controller process opens a `Controller`, takes "
            f"{WARMUP} untimed snapshots, waits for a common start signal, then takes "
            f"{PER_PROCESS} storage-strategy, quiesced VM snapshots (VMware simulator, one "
            f"default and one vendor pool, no simulated delays) round-robin over its own "
            f"{VMS_PER_PROCESS} VMs. Throughput = all timed snapshots / (last end - first "
            "start). Every snapshot is checked to be listed exactly once. One create records "
            "about 11 events in about 11 write transactions and reads its view back; each "
            "insert locks the event table, so writes serialise in the database while the "
            "simulator, projection and Python work run in parallel. The simulated world is one "
            "SQLite "
            "file shared by all processes. "
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
            f"{platform.python_version()}; the throwaway cluster runs with fsync off.",
            "",
        ]
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, config, url, vms, count, go = sys.argv
        worker(config, url, vms, int(count), go)
    else:
        print(run())
