"""
The TOML config file (CONTRACT.md), read and validated before anything runs.

cattrs structures the file into the schema of :mod:`vmsnap.config_schema` (unknown keys,
types and ranges: :mod:`vmsnap.config_structure`); this module checks what spans tables
(unique ids, a VM's hypervisor and pools exist) and builds the :class:`Config` the rest of
vmsnap uses, relative paths resolved against the config file's folder (ADR 0017).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from vmsnap import config_schema as schema
from vmsnap.config_schema import (
    CIPHERS,
    DEFAULT_STORE,
    DRIVERS,
    HYPERVISOR_OPS,
    HYPERVISOR_TYPES,
    PROFILES,
    STORAGE_OPS,
    VOLUME_TYPES,
)
from vmsnap.config_structure import structure
from vmsnap.domain.exceptions import ConfigError
from vmsnap.domain.values import Capabilities, HookSpec, PoolInfo, VmHooks, VmInfo, VolumeInfo

__all__ = [
    "CIPHERS",
    "DEFAULT_STORE",
    "DRIVERS",
    "HYPERVISOR_OPS",
    "HYPERVISOR_TYPES",
    "PROFILES",
    "STORAGE_OPS",
    "VOLUME_TYPES",
    "ApiKey",
    "ApiSettings",
    "Config",
    "HypervisorConfig",
    "Limits",
    "PoolConfig",
    "load",
    "parse",
]


@attrs.frozen
class Limits:
    max_vm_snapshots_per_vm: int = 10
    quiesce_deadline_s: float = 60.0
    # A claim by a controller on another host (whose pid cannot be checked) counts as dead
    # once its operation has run this long.
    operation_timeout_s: float = 3600.0
    # Whether a quiesce needs the guest agent (CONTRACT.md, second round).
    quiesce_requires_agent: bool = True
    # The most driver calls of one operation in flight at once (CONTRACT.md, second round).
    max_parallel_driver_calls: int = 8


@attrs.frozen
class HypervisorConfig:
    name: str
    type: str
    profile: str = "kvm"
    state: Path | None = None
    faults: Mapping[str, str] = attrs.field(factory=dict)
    delay_s: Mapping[str, float] = attrs.field(factory=dict)
    uri: str | None = None


@attrs.frozen
class PoolConfig:
    info: PoolInfo
    capabilities: Capabilities = attrs.field(factory=Capabilities)
    need_unquiesce: bool = True
    state: Path | None = None
    faults: Mapping[str, str] = attrs.field(factory=dict)
    delay_s: Mapping[str, float] = attrs.field(factory=dict)
    path: Path | None = None


@attrs.frozen
class ApiKey:
    user: str
    api_key: str
    secret_env: str | None = None
    secret_file: Path | None = None
    # The account whose VMs a "user" key sees and acts on (default: the user's name).
    account: str | None = None
    role: str = "admin"  # "admin" | "user"; a key without a role stays admin

    @property
    def account_name(self) -> str:
        return self.account or self.user


@attrs.frozen
class ApiSettings:
    """``[api]``: the bounds of ``serve`` (CONTRACT.md, second round; ADR 0022)."""

    max_body_bytes: int = 1 << 20
    read_timeout_s: float = 10.0
    max_connections: int = 200
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@attrs.frozen
class Config:
    """
    A validated configuration. ``folder`` is where relative paths in it resolve.
    """

    folder: Path
    store_url: str
    limits: Limits
    hypervisors: tuple[HypervisorConfig, ...]
    pools: tuple[PoolConfig, ...]
    vms: tuple[VmInfo, ...]
    api_keys: tuple[ApiKey, ...] = ()
    path: Path | None = None
    store_cipher: str | None = None  # "aes": events encrypted at rest (key from the env)
    store_compress: bool = False
    api: ApiSettings = ApiSettings()
    # VM id -> the account that owns it ([[vms]] account); VMs without one: admins only.
    vm_accounts: Mapping[str, str] = attrs.field(factory=dict)

    def hypervisor(self, name: str) -> HypervisorConfig:
        return next(h for h in self.hypervisors if h.name == name)


def load(path: str | Path) -> Config:
    """
    Read and validate the config file at ``path``.

    Raises:
        ConfigError: the file is missing, is not TOML, or says something vmsnap cannot use.
    """
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {file}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {file} is not valid TOML: {e}") from None
    return parse(raw, folder=file.resolve().parent, path=file)


def parse(raw: Mapping[str, Any], folder: Path, path: Path | None = None) -> Config:
    """
    Validate a config already read into a mapping; relative paths resolve against ``folder``.

    Raises:
        ConfigError: one line naming the first problem's key, e.g. ``config: unknown key
            [[pools]][1].fault (did you mean 'faults'?)``.
    """
    doc = structure(raw)
    hypervisors = tuple(_hypervisor(h, folder) for h in doc.hypervisors)
    pools = tuple(_pool(p, folder) for p in doc.pools)
    vms = tuple(_vm(v) for v in doc.vms)
    keys = tuple(_api_key(i, k, folder) for i, k in enumerate(doc.api.keys))
    _unique("hypervisor name", _indexed("hypervisors", [h.name for h in hypervisors]))
    _unique("pool id", _indexed("pools", [p.info.id for p in pools]))
    _unique("vm id", _indexed("vms", [v.id for v in vms]))
    _unique(
        "volume id",
        [
            (f"[[vms]][{i}].volumes[{j}]", vol.id)
            for i, vm in enumerate(vms)
            for j, vol in enumerate(vm.volumes)
        ],
    )
    _unique("api_key", _indexed("api.keys", [k.api_key for k in keys]))
    _references(doc.vms, {h.name for h in hypervisors}, {p.info.id for p in pools})
    limits = Limits(**attrs.asdict(doc.limits))
    return Config(
        folder,
        doc.store.url,
        limits,
        hypervisors,
        pools,
        vms,
        keys,
        path,
        store_cipher=doc.store.cipher,
        store_compress=doc.store.compress,
        api=_api(doc.api),
        vm_accounts={v.id: v.account for v in doc.vms if v.account is not None},
    )


def _hypervisor(t: schema.HypervisorTable, folder: Path) -> HypervisorConfig:
    if isinstance(t, schema.LibvirtHypervisorTable):
        return HypervisorConfig(t.name, t.type, "kvm", uri=t.uri)
    return HypervisorConfig(
        t.name,
        t.type,
        profile=t.profile,
        state=folder / t.state,
        faults=dict(t.faults),
        delay_s=dict(t.delay_s),
    )


def _pool(t: schema.PoolTable, folder: Path) -> PoolConfig:
    info = PoolInfo(t.id, t.id if t.name is None else t.name, t.driver)
    if isinstance(t, schema.DefaultPoolTable):
        return PoolConfig(info)
    if isinstance(t, schema.Qcow2PoolTable):
        caps = Capabilities(volume_snapshot_quiescevm=True, storage_system_snapshot=True)
        return PoolConfig(info, caps, path=folder / t.path)
    return PoolConfig(
        info,
        Capabilities.from_dict(t.capabilities),
        need_unquiesce=t.need_unquiesce,
        state=folder / t.state,
        faults=dict(t.faults),
        delay_s=dict(t.delay_s),
    )


def _vm(t: schema.VmTable) -> VmInfo:
    volumes = [VolumeInfo(v.id, t.id, v.pool, v.type) for v in t.volumes]
    return VmInfo(t.id, t.hypervisor, t.power_state, volumes, t.domain, _hooks(t.hooks))


def _hooks(t: schema.HooksTable | None) -> VmHooks | None:
    if t is None:
        return None

    def spec(h: schema.HookTable | None) -> HookSpec | None:
        return None if h is None else HookSpec(h.run, h.where, h.timeout_s, h.idempotent)

    return VmHooks(
        spec(t.pre_freeze), spec(t.post_thaw), t.on_pre_freeze_failure, t.count_in_deadline
    )


def _references(vms: list[schema.VmTable], hypervisors: set[str], pools: set[str]) -> None:
    for i, vm in enumerate(vms):
        if vm.hypervisor not in hypervisors:
            raise ConfigError(
                f"config: [[vms]][{i}].hypervisor names an unknown hypervisor {vm.hypervisor!r}"
            )
        for j, vol in enumerate(vm.volumes):
            if vol.pool not in pools:
                raise ConfigError(
                    f"config: [[vms]][{i}].volumes[{j}].pool names an unknown pool {vol.pool!r}"
                )


def _api_key(index: int, t: schema.ApiKeyTable, folder: Path) -> ApiKey:
    """
    A key of the HTTP API (CONTRACT.md "API users"): it names where its secret is
    (``secret_env`` or ``secret_file``, exactly one); the secret never sits in the config.
    """
    if (t.secret_env is None) == (t.secret_file is None):
        raise ConfigError(
            f"config: [[api.keys]][{index}] (user {t.user!r}): "
            "give exactly one of secret_env or secret_file"
        )
    file = None if t.secret_file is None else folder / t.secret_file
    return ApiKey(t.user, t.api_key, t.secret_env, file, t.account, t.role)


def _api(t: schema.ApiTable) -> ApiSettings:
    proxies = []
    for i, text in enumerate(t.trusted_proxies):
        try:
            proxies.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"config: [api] trusted_proxies[{i}] must be an address or a network "
                f"(got {text[:40]!r})"
            ) from None
    return ApiSettings(t.max_body_bytes, t.read_timeout_s, t.max_connections, tuple(proxies))


def _indexed(table: str, values: list[str]) -> list[tuple[str, str]]:
    return [(f"[[{table}]][{i}]", v) for i, v in enumerate(values)]


def _unique(what: str, found: list[tuple[str, str]]) -> None:
    """Refuse a value seen twice, naming where it is seen again."""
    seen: set[str] = set()
    for where, value in found:
        if value in seen:
            raise ConfigError(f"config: duplicate {what} {value!r} at {where}")
        seen.add(value)
