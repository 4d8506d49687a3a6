"""
The config file's schema (CONTRACT.md "Config file"): one attrs class per TOML table.

Every key a table may hold is a field of its class; a key that is not is refused (cattrs,
``forbid_extra_keys``). ``Annotated`` marks carry the rules of a value (a choice, a range);
:mod:`vmsnap.config_structure` enforces them. Pools and hypervisors have one class per
``driver`` / ``type``, so a key of another kind is refused too.

The module does not use ``from __future__ import annotations``: cattrs reads these
annotations, ``Annotated`` marks included, at run time.
"""

from typing import Annotated, ClassVar

import attrs

from vmsnap.domain.values import (
    CAPABILITY_NAMES,
    HOOK_WHERE,
    POWER_STATES,
    PRE_FREEZE_FAILURE_POLICIES,
)

HYPERVISOR_TYPES = ("simulator", "libvirt")
PROFILES = ("vmware", "xenserver", "kvm")
DRIVERS = ("default", "simulator", "qcow2")
VOLUME_TYPES = ("ROOT", "DATADISK")
HYPERVISOR_OPS = (
    "quiesce",
    "unquiesce",
    "take_vm_snapshot",
    "revert_vm_snapshot",
    "delete_vm_snapshot",
    "take_volume_snapshot",
    "delete_volume_snapshot",
    "guest_exec",
)
STORAGE_OPS = (
    "take_vm_snapshot",
    "revert_vm_snapshot",
    "delete_vm_snapshot",
    "take_snapshot",
    "delete_snapshot",
)
FAULTS = ("fail",)
DEFAULT_STORE = "sqlite:///vmsnap.db"
ROLES = ("admin", "user")
CIPHERS = ("aes",)
ROLES = ("admin", "user")
MAX_BODY_BYTES = 1 << 30
# The longest wait vmsnap accepts: a thread join or a sleep longer than about 9.2e9 s
# overflows the platform's clock (threading.TIMEOUT_MAX).
MAX_SECONDS = 1e9


@attrs.frozen
class OneOf:
    """The value is one of ``choices``."""

    choices: tuple[str, ...]


@attrs.frozen
class KeyOf:
    """A mapping key that must be one of ``names`` (an operation or a capability)."""

    names: tuple[str, ...]


@attrs.frozen
class AtLeast:
    """A whole number (not a boolean) >= ``minimum`` (and <= ``maximum`` when given)."""

    minimum: int
    maximum: int | None = None


@attrs.frozen
class Seconds:
    """A finite number of seconds, > 0 (``zero_ok``: >= 0), at most :data:`MAX_SECONDS`."""

    zero_ok: bool = False


@attrs.frozen
class NonBlank:
    """A string with something in it besides whitespace."""


@attrs.frozen
class Argv:
    """
    A hook's command: a non-empty array of strings whose first is an absolute path. For
    host hooks too: the controller runs under the CLI, ``serve`` or systemd, each with its
    own PATH and working folder; an absolute program is the same program under all.
    """


Text = Annotated[str, NonBlank()]
Count = Annotated[int, AtLeast(1)]
Timeout = Annotated[float, Seconds()]
Delay = Annotated[float, Seconds(zero_ok=True)]
HypervisorFaults = dict[Annotated[str, KeyOf(HYPERVISOR_OPS)], Annotated[str, OneOf(FAULTS)]]
HypervisorDelays = dict[Annotated[str, KeyOf(HYPERVISOR_OPS)], Delay]
StorageFaults = dict[Annotated[str, KeyOf(STORAGE_OPS)], Annotated[str, OneOf(FAULTS)]]
StorageDelays = dict[Annotated[str, KeyOf(STORAGE_OPS)], Delay]
CapabilityMap = dict[Annotated[str, KeyOf(CAPABILITY_NAMES)], bool]


@attrs.frozen
class StoreTable:
    # Keys refused with their own message rather than as unknown ones.
    FORBIDDEN: ClassVar[dict[str, str]] = {
        "cipher_key": "the cipher key never goes in the config; set VMSNAP_CIPHER_KEY",
        "key": "the cipher key never goes in the config; set VMSNAP_CIPHER_KEY",
    }

    url: str = DEFAULT_STORE
    cipher: Annotated[str, OneOf(CIPHERS)] | None = None
    compress: bool = False


@attrs.frozen
class LimitsTable:
    max_vm_snapshots_per_vm: Count = 10
    quiesce_deadline_s: Timeout = 60.0
    operation_timeout_s: Timeout = 3600.0
    quiesce_requires_agent: bool = True
    max_parallel_driver_calls: Count = 8


@attrs.frozen
class SimulatorHypervisorTable:
    name: Text
    type: str
    profile: Annotated[str, OneOf(PROFILES)]
    state: Text
    faults: HypervisorFaults = attrs.field(factory=dict)
    delay_s: HypervisorDelays = attrs.field(factory=dict)


@attrs.frozen
class LibvirtHypervisorTable:
    name: Text
    type: str
    uri: str = "qemu:///system"


HypervisorTable = SimulatorHypervisorTable | LibvirtHypervisorTable


@attrs.frozen
class DefaultPoolTable:
    id: Text
    driver: str
    name: str | None = None


@attrs.frozen
class SimulatorPoolTable:
    id: Text
    driver: str
    state: Text
    name: str | None = None
    capabilities: CapabilityMap = attrs.field(factory=dict)
    need_unquiesce: bool = True
    faults: StorageFaults = attrs.field(factory=dict)
    delay_s: StorageDelays = attrs.field(factory=dict)


@attrs.frozen
class Qcow2PoolTable:
    id: Text
    driver: str
    path: Text
    name: str | None = None


PoolTable = DefaultPoolTable | SimulatorPoolTable | Qcow2PoolTable

# The key that tells a pool's or a hypervisor's kind, and the table class of each kind.
KINDS: dict[object, tuple[str, dict[str, type]]] = {
    HypervisorTable: (
        "type",
        {"simulator": SimulatorHypervisorTable, "libvirt": LibvirtHypervisorTable},
    ),
    PoolTable: (
        "driver",
        {"default": DefaultPoolTable, "simulator": SimulatorPoolTable, "qcow2": Qcow2PoolTable},
    ),
}


@attrs.frozen
class VolumeTable:
    id: Text
    pool: Text
    type: Annotated[str, OneOf(VOLUME_TYPES)] = "DATADISK"


@attrs.frozen
class HookTable:
    """One hook (issue 19): ``where`` it runs is required, a wrong guess is costly."""

    run: Annotated[list[str], Argv()]
    where: Annotated[str, OneOf(HOOK_WHERE)]
    timeout_s: Timeout = 30.0
    idempotent: bool = False


@attrs.frozen
class HooksTable:
    pre_freeze: HookTable | None = None
    post_thaw: HookTable | None = None
    on_pre_freeze_failure: Annotated[str, OneOf(PRE_FREEZE_FAILURE_POLICIES)] = "fail"
    count_in_deadline: bool = False


@attrs.frozen
class VmTable:
    id: Text
    hypervisor: Text
    power_state: Annotated[str, OneOf(POWER_STATES)] = "Running"
    volumes: list[VolumeTable] = attrs.field(factory=list)
    domain: str | None = None
    account: Text | None = None
    hooks: HooksTable | None = None


@attrs.frozen
class ApiKeyTable:
    FORBIDDEN: ClassVar[dict[str, str]] = {
        "secret": "secrets never go in the config; use secret_env or secret_file",
    }

    user: Text
    api_key: Text
    secret_env: Text | None = None
    secret_file: Text | None = None
    account: Text | None = None
    role: Annotated[str, OneOf(ROLES)] = "admin"


@attrs.frozen
class ApiTable:
    keys: list[ApiKeyTable] = attrs.field(factory=list)
    # Request bodies longer than this are refused (413) while they are read.
    max_body_bytes: Annotated[int, AtLeast(1024, MAX_BODY_BYTES)] = 1 << 20
    # How long a client may take to send a request's headers, or its body.
    read_timeout_s: Annotated[float, Seconds()] = 10.0
    # The most connections served at once; more are answered 503 (uvicorn).
    max_connections: Annotated[int, AtLeast(1, 100_000)] = 200
    # Peers whose X-Forwarded-For is believed (addresses or networks, e.g. "10.0.0.0/8").
    trusted_proxies: list[Text] = attrs.field(factory=list)


@attrs.frozen
class Document:
    """The whole file."""

    store: StoreTable = StoreTable()
    limits: LimitsTable = LimitsTable()
    hypervisors: list[HypervisorTable] = attrs.field(factory=list)
    pools: list[PoolTable] = attrs.field(factory=list)
    vms: list[VmTable] = attrs.field(factory=list)
    api: ApiTable = ApiTable()
