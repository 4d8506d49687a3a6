"""
Host hooks (issue 19): a hook with ``where = "host"`` runs on the controller's host, in
its own process group, with ``VMSNAP_VM_ID``, ``VMSNAP_SNAPSHOT_ID`` and ``VMSNAP_HOOK``
in its environment. Past its timeout the whole group is killed (a shell script's children
too), and the hook counts as timed out. Its output (stdout and stderr together) is read
as it comes, and only the first 4 KiB is kept: a chatty hook cannot fill the pipe and
hang, nor the log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence

from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.values import HOOK_OUTPUT_LIMIT, HookResult, cap_output

CHUNK = 65536
PIPE_GRACE_S = 2.0


def run_host_hook(argv: Sequence[str], timeout_s: float, env: Mapping[str, str]) -> HookResult:
    """
    Run ``argv`` with the controller's environment plus ``env``; wait at most
    ``timeout_s`` seconds.

    Raises:
        DriverError: the program cannot be started (missing, not executable).
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group, killed as one at the timeout
        )
    except OSError as e:
        raise DriverError(f"host hook {argv[0]} cannot be started: {e}", "HOOK_START") from None
    kept = bytearray()
    assert proc.stdout is not None
    pipe = proc.stdout
    fd = pipe.fileno()

    def drain() -> None:
        # Read to the end (so the hook never blocks on a full pipe), keeping the start.
        with contextlib.suppress(OSError, ValueError):  # closed under it: done anyway
            while chunk := os.read(fd, CHUNK):
                if len(kept) < HOOK_OUTPUT_LIMIT:
                    kept.extend(chunk[: HOOK_OUTPUT_LIMIT - len(kept)])

    reader = threading.Thread(target=drain, name="vmsnap-host-hook", daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        proc.wait()
    # A process the hook left running (a backup session holder, say: it is not killed
    # when the hook exits) may still hold the pipe: do not wait for its end.
    reader.join(PIPE_GRACE_S)
    if not reader.is_alive():
        pipe.close()  # else the reader thread owns it until the leftover process ends
    output = cap_output(bytes(kept))
    if timed_out:
        return HookResult(None, output, timed_out=True)
    return HookResult(proc.returncode, output)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
