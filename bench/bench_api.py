"""
The HTTP API under load (#16): signed ``listVolumes`` requests per second against a real
``vmsnap serve`` on 127.0.0.1, alone and with hostile connections alongside (idle and
half-sent connections, oversized bodies), and the server's peak memory meanwhile.

Only 127.0.0.1; every phase is bounded in requests and in time.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, percentile, quick, result_line, table, write_config

KEY, SECRET = "AK-bench", "bench-secret-0123456789"
CLIENTS = 2
HOSTILE = 150  # idle / half-header connections kept open
LIMIT_S = 30.0  # no phase runs longer
TARGET_RATIO = 0.5  # with hostile connections: at least half the requests per second
CREATES, CREATE_S = 45, 1.0  # one client's creates, each holding a job worker this long
TARGET_READ_S = 1.0  # the slowest read while they queue


def _creates(port: int) -> tuple[list[float], list[float]]:
    """
    ``CREATES`` creates sent at once (one per VM), and ``listVolumes`` read meanwhile:
    (how long each create took to answer, how long each read took).
    """
    answers: list[float] = []
    reads: list[float] = []
    done = threading.Event()

    def create(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LIMIT_S)
        query = _signed_query({"command": "createVMSnapshot", "virtualmachineid": f"vm-{i}"})
        start = time.perf_counter()
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn.request("GET", f"/client/api?{query}")
            conn.getresponse().read()
            answers.append(time.perf_counter() - start)
        conn.close()

    def read() -> None:
        while not done.is_set():
            reads.extend(_requests(port, 1))

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=create, args=(i,)) for i in range(CREATES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Keep reading while the queued jobs run (bounded by LIMIT_S).
    done.wait(min(LIMIT_S, CREATES * CREATE_S / 4))
    done.set()
    reader.join()
    return answers, reads


def _signed_query(params: dict[str, str]) -> str:
    from vmsnap.api.auth import sign, string_to_sign

    request = {**params, "apiKey": KEY, "response": "json"}
    request["signature"] = sign(SECRET, string_to_sign(request)[0])
    return urlencode(request)


def _serve(folder: Path, port: int) -> subprocess.Popen[bytes]:
    config = write_config(folder, CREATES + 1)
    text = config.read_text(encoding="utf-8")
    # Each storage snapshot of a VM takes a second: the creates occupy the job workers.
    slow = f"need_unquiesce = true\ndelay_s = {{ take_vm_snapshot = {CREATE_S} }}\n"
    config.write_text(text.replace("need_unquiesce = true\n", slow), encoding="utf-8")
    with config.open("a", encoding="utf-8") as f:
        f.write(
            "\n[api]\nread_timeout_s = 2.0\nmax_connections = 400\n"
            f'[[api.keys]]\nuser = "bench"\napi_key = "{KEY}"\nsecret_env = "BENCH_SECRET"\n'
        )
    env = {**os.environ, "BENCH_SECRET": SECRET}
    cmd = [sys.executable, "-m", "vmsnap", "--config", str(config), "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if b"serving on" not in line:
        raise RuntimeError(f"serve did not start: {line!r}")
    return proc


def _requests(port: int, count: int) -> list[float]:
    """``count`` signed requests over one keep-alive connection; their latencies."""
    latencies = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LIMIT_S)
    deadline = time.monotonic() + LIMIT_S
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        query = _signed_query({"command": "listVolumes", "virtualmachineid": "vm-0"})
        start = time.perf_counter()
        try:
            conn.request("GET", f"/client/api?{query}")
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LIMIT_S)
            continue
        if response.status == 200:
            latencies.append(time.perf_counter() - start)
    conn.close()
    return latencies


def _phase(port: int, count: int) -> tuple[float, list[float]]:
    """(requests/s, latencies) of ``CLIENTS`` clients sending ``count`` requests each."""
    results: list[list[float]] = [[] for _ in range(CLIENTS)]

    def client(i: int) -> None:
        results[i] = _requests(port, count)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    latencies = [x for r in results for x in r]
    return len(latencies) / took, latencies


def _hostile(port: int, stop: threading.Event) -> None:
    """Keep ``HOSTILE`` connections half-sent, and send oversized bodies, until ``stop``."""
    socks: list[socket.socket] = []
    big = b"x" * 65536
    while not stop.is_set():
        socks = [s for s in socks if s.fileno() != -1]
        while len(socks) < HOSTILE and not stop.is_set():
            with contextlib.suppress(OSError):
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                s.sendall(b"GET /client/api?command=listVolumes HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(2)
            s.sendall(
                b"POST /client/api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
            )
            for _ in range(64):  # 4 MiB offered, 1 MiB accepted
                s.sendall(b"%x\r\n%s\r\n" % (len(big), big))
            s.recv(1024)
        stop.wait(0.2)
    for s in socks:
        s.close()


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run() -> str:
    count = 100 if quick() else 1000
    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = _serve(Path(tmp), port)
        try:
            _phase(port, 20)  # warm up
            alone, lat_alone = _phase(port, count)
            rss_alone = _peak_rss_mib(proc.pid)
            stop = threading.Event()
            attacker = threading.Thread(target=_hostile, args=(port, stop))
            attacker.start()
            try:
                beside, lat_beside = _phase(port, count)
            finally:
                stop.set()
                attacker.join()
            rss_beside = _peak_rss_mib(proc.pid)
            answers, reads = _creates(port)
        finally:
            proc.terminate()
            proc.wait(timeout=LIMIT_S)
    ratio = beside / alone if alone else 0.0
    hostile = f"beside {HOSTILE} half-sent connections + 4 MiB bodies"
    rows = [
        (
            name,
            f"{rate:.0f}",
            f"{median(lat) * 1000:.1f}" if lat else "-",
            f"{percentile(lat, 0.99) * 1000:.1f}" if lat else "-",
            f"{rss:.0f}",
        )
        for name, rate, lat, rss in (
            ("alone", alone, lat_alone, rss_alone),
            (hostile, beside, lat_beside, rss_beside),
        )
    ]
    return "\n".join(
        [
            "## The HTTP API under hostile load (bench/bench_api.py)",
            "",
            f"`vmsnap serve` on 127.0.0.1 (SQLite store, {CREATES + 1} VMs), {CLIENTS} "
            f"clients sending {count} signed `listVolumes` each over keep-alive connections; "
            "then the same "
            f"while another thread keeps {HOSTILE} connections half-sent (headers never "
            "finished; `read_timeout_s = 2`) and posts 4 MiB chunked bodies "
            "(`max_body_bytes` 1 MiB: 413). Peak RSS is the server's high-water mark. (Before "
            "#16 every answer also waited ~40 ms for a delayed ACK: the listening socket was "
            "made without its protocol number, so asyncio did not set TCP_NODELAY.)",
            "",
            table(["phase", "requests/s", "median ms", "p99 ms", "peak RSS MiB"], rows),
            "",
            f"Then one client sends {CREATES} `createVMSnapshot` at once (one per VM; each "
            f"holds one of the 4 job workers for {CREATE_S:g} s) while another reads "
            "`listVolumes` in a loop until the queued jobs have run:",
            "",
            table(
                ["", "count", "median ms", "max ms"],
                [
                    (name, len(xs), f"{median(xs) * 1000:.1f}", f"{max(xs) * 1000:.1f}")
                    for name, xs in (("create answered", answers), ("read beside", reads))
                    if xs
                ],
            ),
            "",
            result_line(
                f"API read beside {CREATES} queued creates (max)",
                f"< {TARGET_READ_S:g} s",
                f"{max(reads, default=0):.3f} s",
                bool(reads) and max(reads) < TARGET_READ_S,
            ),
            result_line(
                "API beside hostile connections",
                f">= {TARGET_RATIO:.0%} of alone",
                f"{ratio:.0%} ({beside:.0f} vs {alone:.0f} req/s)",
                ratio >= TARGET_RATIO,
            ),
        ]
    )
