"""
What a running QEMU guest needs beyond libvirt's public API (ADR 0016): its guest agent
(ping, freeze status) and its monitor (internal snapshots of an image it holds open).
Both go through ``libvirt_qemu``, which libvirt-python ships.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import libvirt
import libvirt_qemu

from vmsnap.domain.exceptions import DriverError
from vmsnap.domain.ports import LiveImage

#: DriverError codes of this module (not libvirt codes).
AGENT_UNAVAILABLE = "agent-unavailable"
STILL_FROZEN = "still-frozen"
QMP_ERROR = "qmp-error"

#: Runs ``fn(domain)`` on a VM's domain, mapping libvirt errors to DriverError.
DomainCall = Callable[[str, Callable[[Any], Any]], Any]


def agent_command(
    dom: Any, command: str, arguments: dict[str, Any] | None = None, *, timeout_s: int = 5
) -> Any:
    """
    Send one command to the domain's QEMU guest agent and return its ``return`` value.

    Raises:
        libvirt.libvirtError: no agent connected, no answer within ``timeout_s``, or the
            agent answered an error.
    """
    request: dict[str, Any] = {"execute": command}
    if arguments:
        request["arguments"] = arguments
    answer = libvirt_qemu.qemuAgentCommand(dom, json.dumps(request), timeout_s, 0)
    return json.loads(answer).get("return")


def agent_problem(dom: Any, timeout_s: int) -> str | None:
    """
    Return why the guest agent cannot be used now (``guest-ping`` failed or timed out),
    or None when it answered.
    """
    try:
        agent_command(dom, "guest-ping", timeout_s=timeout_s)
    except libvirt.libvirtError as e:
        message = e.get_error_message() or str(e)
        return f"the QEMU guest agent did not answer guest-ping within {timeout_s}s: {message}"
    return None


def freeze_status(dom: Any, timeout_s: int) -> str:
    """
    Return the agent's ``guest-fsfreeze-status`` ("frozen" or "thawed"), or
    ``unknown (...)`` when it cannot be asked.
    """
    try:
        return str(agent_command(dom, "guest-fsfreeze-status", timeout_s=timeout_s))
    except libvirt.libvirtError as e:
        return f"unknown ({e.get_error_message() or e})"


def monitor_command(dom: Any, command: str, arguments: dict[str, Any]) -> Any:
    """
    Run one QMP command in the domain's QEMU and return its ``return`` value.

    Raises:
        DriverError: QEMU answered an error (code ``qmp-error``, QEMU's message).
        libvirt.libvirtError: the monitor could not be reached.
    """
    request = json.dumps({"execute": command, "arguments": arguments})
    answer = json.loads(libvirt_qemu.qemuMonitorCommand(dom, request, 0))
    if "error" in answer:
        raise DriverError(f"QEMU {command}: {answer['error'].get('desc', answer)}", QMP_ERROR)
    return answer.get("return")


def node_for_file(dom: Any, file: str) -> str | None:
    """
    Return the block node name under which the running domain holds ``file`` open as a
    disk's top image, or None when it does not.
    """
    wanted = os.path.realpath(file)
    for device in monitor_command(dom, "query-block", {}) or []:
        inserted = device.get("inserted") or {}
        path = inserted.get("file")
        if path and os.path.realpath(path) == wanted and inserted.get("node-name"):
            return str(inserted["node-name"])
    return None


class QemuInternalImage(LiveImage):
    """
    An image a running QEMU holds open: its internal snapshots are taken and deleted by
    that QEMU (QMP ``blockdev-snapshot-internal-sync`` / ``-delete-internal-sync``), the
    qcow2 format qemu-img would write, without qemu-img's image lock conflict.

    Args:
        call: runs a function on the VM's domain (the hypervisor's connection handling).
        domain: the domain's name, for messages.
        node: the block node holding the image.
        file: the image's path.
    """

    def __init__(self, call: DomainCall, domain: str, node: str, file: str) -> None:
        self._call = call
        self.domain = domain
        self.node = node
        self.file = file

    def __repr__(self) -> str:
        return f"QemuInternalImage({self.domain!r}, {self.node!r}, {self.file!r})"

    def create_snapshot(self, name: str) -> str:
        self._qmp("blockdev-snapshot-internal-sync", name)
        return f"internal snapshot {name} taken by the running QEMU of {self.domain} ({self.node})"

    def delete_snapshot(self, name: str) -> str:
        self._qmp("blockdev-snapshot-delete-internal-sync", name)
        return f"internal snapshot {name} deleted by the running QEMU of {self.domain}"

    def _qmp(self, command: str, name: str) -> None:
        arguments = {"device": self.node, "name": name}
        self._call(f"{command} {name}", lambda dom: monitor_command(dom, command, arguments))
