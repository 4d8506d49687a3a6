"""
The commands vmsnap serves, their parameters as CloudStack names them, and what
``listApis`` answers about them (CloudMonkey's ``sync`` reads it).

A parameter that is not listed for its command is dropped before anything else sees it:
it is never stored with a job (ADR 0022).
"""

from __future__ import annotations

from typing import Any

import attrs

#: Parameters that sign or frame a request rather than say what it asks.
SIGNING = frozenset({"apikey", "signature", "signatureversion", "expires", "response", "command"})
#: Paging and scope parameters every list command takes.
LIST_PARAMS = (
    ("keyword", "string", "List by keyword"),
    ("page", "integer", "the page to answer, from 1"),
    ("pagesize", "integer", "items per page (at most 500; -1: all)"),
    ("listall", "boolean", "admins: all accounts (they see all already)"),
    ("account", "string", "list only the resources of this account"),
    ("domainid", "uuid", "list only the resources of this domain"),
    ("projectid", "uuid", "vmsnap has no projects: refused"),
)


@attrs.frozen
class Command:
    name: str
    description: str
    isasync: bool
    params: tuple[tuple[str, str, str], ...]  # (name, type, description)
    required: tuple[str, ...] = ()
    admin: bool = False
    response: str = ""

    def names(self) -> frozenset[str]:
        return frozenset(p[0] for p in self.params)


def _list(name: str, description: str, *own: tuple[str, str, str], **kw: Any) -> Command:
    return Command(name, description, False, (*own, *LIST_PARAMS), **kw)


COMMANDS: tuple[Command, ...] = (
    Command(
        "createVMSnapshot",
        "Creates a snapshot of a VM, quiesced when asked",
        True,
        (
            ("virtualmachineid", "uuid", "the VM"),
            ("name", "string", "the snapshot's name"),
            ("description", "string", "the snapshot's description"),
            ("snapshotmemory", "boolean", "a snapshot of memory too"),
            ("quiescevm", "boolean", "quiesce the VM first"),
        ),
        ("virtualmachineid",),
        response="vmsnapshot",
    ),
    Command(
        "revertToVMSnapshot",
        "Reverts a VM to a VM snapshot",
        True,
        (("vmsnapshotid", "uuid", "the VM snapshot"),),
        ("vmsnapshotid",),
        response="virtualmachine",
    ),
    Command(
        "deleteVMSnapshot",
        "Deletes a VM snapshot",
        True,
        (("vmsnapshotid", "uuid", "the VM snapshot"),),
        ("vmsnapshotid",),
        response="success",
    ),
    Command(
        "createSnapshot",
        "Creates a snapshot of a volume, quiesced when its pool allows",
        True,
        (("volumeid", "uuid", "the volume"), ("quiescevm", "boolean", "quiesce the VM first")),
        ("volumeid",),
        response="snapshot",
    ),
    Command(
        "deleteSnapshot",
        "Deletes a volume snapshot",
        True,
        (("id", "uuid", "the volume snapshot"),),
        ("id",),
        response="success",
    ),
    _list(
        "listVMSnapshot",
        "Lists VM snapshots",
        ("vmsnapshotid", "uuid", "one VM snapshot"),
        ("vmsnapshotids", "list", "these VM snapshots"),
        ("virtualmachineid", "uuid", "the snapshots of this VM"),
        ("state", "string", "Creating, Ready, Reverting, Expunging, Removed or Error"),
        ("name", "string", "by name"),
        response="vmSnapshot",
    ),
    _list(
        "listSnapshots",
        "Lists volume snapshots",
        ("id", "uuid", "one snapshot"),
        ("ids", "list", "these snapshots"),
        ("volumeid", "uuid", "the snapshots of this volume"),
        ("name", "string", "by name"),
        response="snapshot",
    ),
    _list(
        "listStoragePools",
        "Lists storage pools and what their drivers advertise",
        ("id", "uuid", "one pool"),
        ("name", "string", "by name"),
        admin=True,
        response="storagepool",
    ),
    _list(
        "listVolumes",
        "Lists volumes",
        ("id", "uuid", "one volume"),
        ("ids", "list", "these volumes"),
        ("virtualmachineid", "uuid", "the volumes of this VM"),
        ("name", "string", "by name"),
        response="volume",
    ),
    _list(
        "listVirtualMachines",
        "Lists virtual machines",
        ("id", "uuid", "one VM"),
        ("ids", "list", "these VMs"),
        ("name", "string", "by name"),
        response="virtualmachine",
    ),
    _list("listZones", "Lists zones", ("id", "uuid", "one zone"), response="zone"),
    _list("listAsyncJobs", "Lists this server's async jobs", response="asyncjobs"),
    Command(
        "queryAsyncJobResult",
        "Retrieves the current status of an async job",
        False,
        (("jobid", "uuid", "the job"),),
        ("jobid",),
        response="asyncjobs",
    ),
    Command("listCapabilities", "Lists capabilities", False, (), response="capability"),
    Command(
        "listApis",
        "Lists the APIs this user may call",
        False,
        (("name", "string", "one API"),),
        response="api",
    ),
)
BY_NAME = {c.name.lower(): c for c in COMMANDS}


def known_params(command: Command, params: dict[str, str]) -> dict[str, str]:
    """``params`` (lower-case names) without the ones ``command`` does not take."""
    names = command.names()
    return {k: v for k, v in params.items() if k in names}


def api_doc(command: Command) -> dict[str, Any]:
    """One item of ``listApis``, in CloudStack's shape."""
    return {
        "name": command.name,
        "description": command.description,
        "isasync": command.isasync,
        "since": "4.0.0",
        "related": "",
        "params": [
            {
                "name": name,
                "type": kind,
                "description": text,
                "required": name in command.required,
                "length": 255,
            }
            for name, kind, text in command.params
        ],
        "response": [{"name": command.response, "type": "object", "description": ""}],
    }
