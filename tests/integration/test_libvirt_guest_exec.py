"""
Guest hooks on libvirt (issue #19), the quick path: the polling, the output cap and the kill
at the timeout against a model of qemu-ga's ``guest-exec`` on a clock that the pauses
advance (nothing waits); the real agent is exercised in tests/realguest/test_hooks.py.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.support import NOT_INSTALLED

pytest.importorskip("libvirt", reason=NOT_INSTALLED["libvirt"])

import libvirt

from tests.integration.libvirt_fixtures import node_with_vm
from vmsnap.adapters.libvirt_guest_exec import (
    FIRST_POLL_S,
    KILL_TREE,
    LONGEST_POLL_S,
    Poller,
    run_in_guest,
)
from vmsnap.adapters.libvirt_hypervisor import LibvirtHypervisor
from vmsnap.adapters.libvirt_live import AGENT_UNAVAILABLE
from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.values import HOOK_OUTPUT_LIMIT, HookResult


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@attrs.define
class FakeAgent:
    """
    qemu-ga's guest-exec as a model: a command exits after ``runs_for`` seconds of the
    clock (None: never, until killed); a command's status is dropped once read exited.
    """

    runs_for: float | None
    out: bytes = b""
    err: bytes = b""
    refuse: frozenset[str] = frozenset()
    now: float = 0.0
    pauses: list[float] = attrs.Factory(list)
    commands: list[tuple[str, dict[str, Any]]] = attrs.Factory(list)
    started: dict[int, tuple[list[str], float]] = attrs.Factory(dict)
    killed: set[int] = attrs.Factory(set)
    final: dict[int, dict[str, Any]] = attrs.Factory(dict)

    def __call__(self, command: str, arguments: dict[str, Any]) -> Any:
        self.commands.append((command, arguments))
        if command == "guest-exec":
            return self._exec(arguments)
        return self._status(arguments["pid"])

    def _exec(self, arguments: dict[str, Any]) -> dict[str, int]:
        argv = [arguments["path"], *arguments["arg"]]
        if arguments["path"] in self.refuse:
            raise libvirt.libvirtError(f"Failed to execute child process {argv[0]}")
        pid = 100 + len(self.started)
        self.started[pid] = (argv, self.now)
        if argv[0] == "/bin/sh" and argv[2].startswith(KILL_TREE):
            self.killed.add(int(argv[2].removeprefix(KILL_TREE)))
        elif argv[0] == "/bin/kill":
            self.killed.add(int(argv[2]))
        return {"pid": pid}

    def _status(self, pid: int) -> dict[str, Any]:
        _, since = self.started[pid]
        hook = pid == 100
        if hook and pid in self.killed:
            status = {"exited": True, "signal": 9}
        elif hook and (self.runs_for is None or self.now - since < self.runs_for):
            return {"exited": False}
        else:
            status = {"exited": True, "exitcode": 0 if not hook else 3}
        if hook:
            status.update({"out-data": b64(self.out), "err-data": b64(self.err)})
        assert pid not in self.final, "qemu-ga forgets a status once read exited"
        self.final[pid] = status
        return status

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    def poller(self) -> Poller:
        return Poller(self, clock=lambda: self.now, sleep=self.sleep)


def test_a_command_that_exits_answers_its_exit_code_and_its_output_after_growing_pauses() -> None:
    agent = FakeAgent(runs_for=3.0, out=b"flushed\n", err=b"warning\n")
    result = run_in_guest(agent.poller(), ["/usr/bin/db-quiesce", "--all"], 30)
    assert result == HookResult(3, "flushed\nwarning\n")
    assert agent.commands[0] == (
        "guest-exec",
        {"path": "/usr/bin/db-quiesce", "arg": ["--all"], "capture-output": True},
    )
    assert agent.pauses[0] == FIRST_POLL_S and max(agent.pauses) == LONGEST_POLL_S
    assert agent.pauses == sorted(agent.pauses)  # a backoff, not a busy loop
    assert len(agent.pauses) < 15


def test_the_output_kept_is_the_first_4_kib_of_stdout_then_stderr() -> None:
    agent = FakeAgent(runs_for=0.0, out=b"a" * 4000, err=b"b" * 4000)
    result = run_in_guest(agent.poller(), ["/bin/true"], 30)
    assert len(result.output) == HOOK_OUTPUT_LIMIT == 4096
    assert result.output == "a" * 4000 + "b" * 96


def test_a_command_past_its_timeout_is_killed_in_the_guest_with_its_descendants() -> None:
    agent = FakeAgent(runs_for=None, out=b"started\n")
    result = run_in_guest(agent.poller(), ["/bin/sh", "-c", "sleep 600"], 2)
    assert result == HookResult(None, "started\n", timed_out=True)
    assert not result.ok
    assert agent.killed == {100}
    killer = agent.started[101][0]
    assert killer[:2] == ["/bin/sh", "-c"] and killer[2].endswith(" 100")
    assert set(agent.final) == {100, 101}  # the hook's and the killer's status were read
    assert agent.now == pytest.approx(2.0)  # the last pause is cut at the timeout


def test_without_a_shell_in_the_guest_the_kill_is_bin_kill() -> None:
    agent = FakeAgent(runs_for=None, refuse=frozenset({"/bin/sh"}))
    result = run_in_guest(agent.poller(), ["/usr/bin/stuck"], 1)
    assert result.timed_out and result.exit_code is None
    assert agent.started[101][0] == ["/bin/kill", "-KILL", "100"]


def test_a_command_ended_by_a_signal_answers_128_plus_the_signal() -> None:
    agent = FakeAgent(runs_for=None)
    agent.killed.add(100)  # killed by someone else inside the guest
    result = run_in_guest(agent.poller(), ["/usr/bin/db-quiesce"], 30)
    assert result == HookResult(128 + 9, "")


def test_a_program_the_agent_cannot_start_is_a_libvirt_error() -> None:
    agent = FakeAgent(runs_for=0.0, refuse=frozenset({"/nope"}))
    with pytest.raises(libvirt.libvirtError, match="/nope"):
        run_in_guest(agent.poller(), ["/nope"], 30)


def test_the_test_driver_has_no_guest_agent(tmp_path: Path) -> None:
    node = node_with_vm(tmp_path)
    with (
        LibvirtHypervisor("kvm-1", node.uri) as hv,
        pytest.raises(DriverError, match="no guest agent") as raised,
    ):
        hv.guest_exec(node.vm, ["/bin/true"], timeout_s=5)
    assert raised.value.code == AGENT_UNAVAILABLE
