"""
Hooks inside a running QEMU guest (issue #19, ADR 0016): the guest agent's ``guest-exec``
starts the command with its output captured, ``guest-exec-status`` is polled until it
exits or its timeout passes, and a command past its timeout is killed inside the guest.

qemu-ga has no kill command: the kill is a second ``guest-exec`` of ``/bin/sh`` that stops
the process, kills its descendants (found through ``/proc/<pid>/status``) and then the
process itself with SIGKILL; should ``/bin/sh`` not start, ``/bin/kill -KILL <pid>``.
That assumes a Linux guest with a POSIX shell, ``grep`` and ``kill`` (busybox will do).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import libvirt

from vmsnap.adapters.libvirt_connection import LibvirtConnection, domain_name
from vmsnap.adapters.libvirt_live import AGENT_UNAVAILABLE, agent_command
from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.values import HookResult, VmInfo, cap_output

#: DriverError codes of this module (not libvirt codes).
NOT_RUNNING = "not-running"
EXEC_FAILED = "guest-exec-failed"
KILL_FAILED = "guest-kill-failed"

#: The first pause between two ``guest-exec-status`` polls, and the longest one.
FIRST_POLL_S, LONGEST_POLL_S = 0.02, 0.5
#: How long one agent command may take to answer, at least.
AGENT_CALL_S = 5
#: How long a killed command may take to be reported exited before that is an error.
KILL_GRACE_S = 10.0

#: libvirt's codes for an agent that is not there or does not answer.
_UNANSWERED = frozenset(
    str(c) for c in (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNSYNCED)
)

#: Stop the process (no new children), kill its descendants depth first, then itself.
KILL_TREE = (
    "t() { kill -STOP $1 2>/dev/null;"
    ' for f in $(grep -l "^PPid:[[:space:]]*$1\\$" /proc/[0-9]*/status 2>/dev/null);'
    " do c=${f#/proc/}; t ${c%/status}; done; kill -KILL $1 2>/dev/null; }; t "
)

#: Sends one agent command (name, arguments) and returns its ``return`` value; raises
#: ``libvirt.libvirtError``.
Agent = Callable[[str, dict[str, Any]], Any]


@attrs.define
class Poller:
    """
    Polls ``guest-exec-status`` with a growing pause (no busy loop), bounded by a clock.
    ``clock`` and ``sleep`` are injectable so the logic is tested without waiting.
    """

    agent: Agent
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def until_exited(self, pid: int, deadline: float) -> dict[str, Any] | None:
        """
        The command's final status, or None when ``deadline`` (on ``clock``) passed first.
        """
        pause = FIRST_POLL_S
        while True:
            status = dict(self.agent("guest-exec-status", {"pid": pid}))
            if status.get("exited"):
                return status
            left = deadline - self.clock()
            if left <= 0:
                return None
            self.sleep(min(pause, left))
            pause = min(pause * 2, LONGEST_POLL_S)


def output_of(status: dict[str, Any]) -> str:
    """
    A finished command's stdout followed by its stderr, capped as recorded.
    """
    out = base64.b64decode(status.get("out-data", ""))
    err = base64.b64decode(status.get("err-data", ""))
    return cap_output(out + err)


def _exit_code(status: dict[str, Any]) -> int:
    # Ended by a signal inside the guest (not by us): 128 + the signal, as shells say.
    code = status.get("exitcode")
    return 128 + int(status.get("signal", 0)) if code is None else int(code)


def run_in_guest(poller: Poller, argv: Sequence[str], timeout_s: float) -> HookResult:
    """
    Run ``argv`` in the guest and wait for it, at most ``timeout_s``; past it, kill it
    (and its descendants) inside the guest and wait until the agent reports it exited.

    Raises:
        libvirt.libvirtError: ``guest-exec`` was refused or not answered (nothing runs).
        DriverError: the command started but the agent then failed, or it survived the kill.
    """
    agent, start = poller.agent, poller.clock()
    request = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
    pid = int(agent("guest-exec", request)["pid"])
    try:
        status = poller.until_exited(pid, start + timeout_s)
        if status is not None:
            return HookResult(_exit_code(status), output_of(status))
        _wait_quietly(poller, kill(agent, pid))
        killed = poller.until_exited(pid, poller.clock() + KILL_GRACE_S)
    except libvirt.libvirtError as e:
        raise DriverError(
            f"{argv[0]} started in the guest (pid {pid}), then the guest agent failed:"
            f" {e.get_error_message() or e}; the command may still be running there",
            _code(e),
        ) from None
    if killed is None:
        raise DriverError(
            f"{argv[0]} (guest pid {pid}) passed its timeout of {timeout_s:g}s and was"
            f" still running {KILL_GRACE_S:g}s after SIGKILL",
            KILL_FAILED,
        )
    return HookResult(None, output_of(killed), timed_out=True)


def kill(agent: Agent, pid: int) -> int | None:
    """
    Kill the guest process ``pid`` and its descendants (see the module's docstring);
    return the pid of the killing command, when it was ``/bin/sh``.
    """
    try:
        return int(
            agent("guest-exec", {"path": "/bin/sh", "arg": ["-c", f"{KILL_TREE}{pid}"]})["pid"]
        )
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_AGENT_UNRESPONSIVE:
            raise
    agent("guest-exec", {"path": "/bin/kill", "arg": ["-KILL", str(pid)]})
    return None


def _wait_quietly(poller: Poller, pid: int | None) -> None:
    # qemu-ga keeps a command's status until it is read once: read the killer's too.
    if pid is not None:
        poller.until_exited(pid, poller.clock() + KILL_GRACE_S)


def _code(e: libvirt.libvirtError) -> str:
    return AGENT_UNAVAILABLE if str(e.get_error_code()) in _UNANSWERED else EXEC_FAILED


class LibvirtGuestExec(LibvirtConnection):
    """
    :meth:`Hypervisor.guest_exec` for libvirt: commands run inside a running QEMU guest
    through its guest agent (mixed into :class:`LibvirtHypervisor`).
    """

    agent_timeout_s: int

    def guest_exec(self, vm: VmInfo, argv: Sequence[str], *, timeout_s: float) -> HookResult:
        """
        Run ``argv`` in the guest of ``vm`` with ``guest-exec`` and wait for it; past
        ``timeout_s`` it is killed inside the guest (``timed_out=True``, exit code None).
        A command ended by a signal answers 128 + the signal, as a shell would.

        Raises:
            DriverError: the domain is not running, its agent does not answer or refuses
                the command (e.g. no such program), or the command survived the kill.
        """
        each_s = max(self.agent_timeout_s, AGENT_CALL_S)
        sent: list[str] = []  # the agent commands sent, across a reconnection

        def run(dom: Any, retried: bool) -> HookResult:
            if retried and sent:
                raise DriverError(
                    f"the connection to {self.uri} was lost while running {argv[0]} in the"
                    " guest: it may have started, so it is not started again",
                    AGENT_UNAVAILABLE,
                )
            if not self._disk_only:
                raise DriverError("libvirt's test driver has no guest agent", AGENT_UNAVAILABLE)
            if not dom.isActive():
                raise DriverError(
                    f"domain {domain_name(vm)} is not running: no guest to run {argv[0]} in",
                    NOT_RUNNING,
                )

            def agent(command: str, arguments: dict[str, Any]) -> Any:
                sent.append(command)
                return agent_command(dom, command, arguments, timeout_s=each_s)

            return run_in_guest(Poller(agent), argv, timeout_s)

        try:
            return self._call(f"guest-exec {argv[0]}", vm, run)
        except DriverError as e:
            if e.code in _UNANSWERED:
                raise DriverError(
                    f"cannot run {argv[0]} in vm {vm.id}: the QEMU guest agent did not answer"
                    f" ({e.message})",
                    AGENT_UNAVAILABLE,
                ) from None
            if e.code is not None and e.code.isdigit():  # libvirt's: refused, nothing ran
                raise DriverError(
                    f"cannot run {argv[0]} in vm {vm.id}: {e.message}", EXEC_FAILED
                ) from None
            raise
