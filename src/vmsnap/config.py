"""The TOML config file (CONTRACT.md), read and validated before anything runs."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from vmsnap.domain.exceptions import ConfigError
from vmsnap.domain.values import (
    CAPABILITY_NAMES,
    POWER_STATES,
    Capabilities,
    PoolInfo,
    VmInfo,
    VolumeInfo,
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
)
STORAGE_OPS = (
    "take_vm_snapshot",
    "revert_vm_snapshot",
    "delete_vm_snapshot",
    "take_snapshot",
    "delete_snapshot",
)
DEFAULT_STORE = "sqlite:///vmsnap.db"
CIPHERS = ("aes",)


@attrs.frozen
class Limits:
    max_vm_snapshots_per_vm: int = 10
    quiesce_deadline_s: float = 60.0
    # A claim by a controller on another host (whose pid cannot be checked) counts as dead
    # once its operation has run this long.
    operation_timeout_s: float = 3600.0
    # A quiesce asked of a guest whose agent does not answer: refused (True) or taken
    # crash-consistent with the reason recorded (False).
    quiesce_requires_agent: bool = True


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
    """
    store = _table(raw, "store")
    store_url = str(store.get("url", DEFAULT_STORE))
    limits_raw = _table(raw, "limits")
    limits = Limits(
        max_vm_snapshots_per_vm=_int(limits_raw, "max_vm_snapshots_per_vm", 10, "limits"),
        quiesce_deadline_s=_number(limits_raw, "quiesce_deadline_s", 60.0, "limits"),
        operation_timeout_s=_number(limits_raw, "operation_timeout_s", 3600.0, "limits"),
        quiesce_requires_agent=_requires_agent(limits_raw),
    )
    hypervisors = tuple(_hypervisor(h, folder) for h in _array(raw, "hypervisors"))
    _unique("hypervisor name", [h.name for h in hypervisors])
    pools = tuple(_pool(p, folder) for p in _array(raw, "pools"))
    _unique("pool id", [p.info.id for p in pools])
    pool_ids = {p.info.id for p in pools}
    hv_names = {h.name for h in hypervisors}
    vms = tuple(_vm(v, pool_ids, hv_names) for v in _array(raw, "vms"))
    _unique("vm id", [v.id for v in vms])
    _unique("volume id", [vol.id for vm in vms for vol in vm.volumes])
    cipher, compress = _at_rest(store)
    return Config(
        folder,
        store_url,
        limits,
        hypervisors,
        pools,
        vms,
        api_keys(raw, folder),
        path,
        store_cipher=cipher,
        store_compress=compress,
    )


def _at_rest(store: Mapping[str, Any]) -> tuple[str | None, bool]:
    if "cipher_key" in store or "key" in store:
        raise ConfigError("[store]: the cipher key never goes in the config; set VMSNAP_CIPHER_KEY")
    cipher = store.get("cipher")
    if cipher is not None and cipher not in CIPHERS:
        raise ConfigError(f"[store] cipher must be one of {', '.join(CIPHERS)} (got {cipher!r})")
    compress = store.get("compress", False)
    if not isinstance(compress, bool):
        raise ConfigError("[store] compress must be true or false")
    return cipher, compress


def _hypervisor(raw: Any, folder: Path) -> HypervisorConfig:
    where = "[[hypervisors]]"
    t = _mapping(raw, where)
    name = _str(t, "name", where)
    where = f"hypervisor {name!r}"
    kind = _choice(t, "type", HYPERVISOR_TYPES, where)
    if kind == "libvirt":
        return HypervisorConfig(name, kind, "kvm", uri=str(t.get("uri", "qemu:///system")))
    return HypervisorConfig(
        name,
        kind,
        profile=_choice(t, "profile", PROFILES, where),
        state=_path(t, "state", folder, where, required=True),
        faults=_faults(t, HYPERVISOR_OPS, where),
        delay_s=_delays(t, HYPERVISOR_OPS, where),
    )


def _pool(raw: Any, folder: Path) -> PoolConfig:
    t = _mapping(raw, "[[pools]]")
    pool_id = _str(t, "id", "[[pools]]")
    where = f"pool {pool_id!r}"
    info = PoolInfo(pool_id, str(t.get("name", pool_id)), _choice(t, "driver", DRIVERS, where))
    if info.driver == "default":
        return PoolConfig(info)
    if info.driver == "qcow2":
        caps = Capabilities(volume_snapshot_quiescevm=True, storage_system_snapshot=True)
        return PoolConfig(info, caps, path=_path(t, "path", folder, where, required=True))
    caps_raw = _mapping(t.get("capabilities", {}), f"{where} capabilities")
    unknown = sorted(set(caps_raw) - set(CAPABILITY_NAMES))
    if unknown:
        raise ConfigError(f"{where}: unknown capabilities {', '.join(unknown)}")
    for key, value in caps_raw.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: capability {key} must be true or false")
    need = t.get("need_unquiesce", True)
    if not isinstance(need, bool):
        raise ConfigError(f"{where}: need_unquiesce must be true or false")
    return PoolConfig(
        info,
        Capabilities.from_dict(caps_raw),
        need_unquiesce=need,
        state=_path(t, "state", folder, where, required=True),
        faults=_faults(t, STORAGE_OPS, where),
        delay_s=_delays(t, STORAGE_OPS, where),
    )


def _vm(raw: Any, pool_ids: set[str], hv_names: set[str]) -> VmInfo:
    t = _mapping(raw, "[[vms]]")
    vm_id = _str(t, "id", "[[vms]]")
    where = f"vm {vm_id!r}"
    hypervisor = _str(t, "hypervisor", where)
    if hypervisor not in hv_names:
        raise ConfigError(f"{where}: unknown hypervisor {hypervisor!r}")
    power = str(t.get("power_state", "Running"))
    if power not in POWER_STATES:
        raise ConfigError(f"{where}: power_state must be one of {', '.join(POWER_STATES)}")
    volumes = []
    for v in _list(t, "volumes", where):
        vt = _mapping(v, f"{where} volume")
        vol_id = _str(vt, "id", f"{where} volume")
        pool = _str(vt, "pool", f"volume {vol_id!r}")
        if pool not in pool_ids:
            raise ConfigError(f"volume {vol_id!r}: unknown pool {pool!r}")
        vtype = str(vt.get("type", "DATADISK"))
        if vtype not in VOLUME_TYPES:
            raise ConfigError(f"volume {vol_id!r}: type must be one of {', '.join(VOLUME_TYPES)}")
        volumes.append(VolumeInfo(vol_id, vm_id, pool, vtype))
    domain = t.get("domain")
    return VmInfo(vm_id, hypervisor, power, volumes, None if domain is None else str(domain))


API_KEY_FIELDS = ("user", "api_key", "secret_env", "secret_file")


def api_keys(raw: Mapping[str, Any], folder: Path) -> tuple[ApiKey, ...]:
    """
    The ``[[api.keys]]`` of the HTTP API (CONTRACT.md "API users"): each names where its
    secret is (``secret_env`` or ``secret_file``, exactly one); the secret itself never
    sits in the config.
    """
    api = _table(raw, "api")
    unknown = sorted(set(api) - {"keys"})
    if unknown:
        raise ConfigError(f"[api]: unknown keys {', '.join(unknown)}")
    keys = tuple(_api_key(k, folder) for k in _list(api, "keys", "[api]"))
    _unique("api_key", [k.api_key for k in keys])
    return keys


def _api_key(raw: Any, folder: Path) -> ApiKey:
    t = _mapping(raw, "[[api.keys]]")
    user = _str(t, "user", "[[api.keys]]")
    where = f"[[api.keys]] of user {user!r}"
    if "secret" in t:
        raise ConfigError(f"{where}: secrets never go in the config; use secret_env or secret_file")
    unknown = sorted(set(t) - set(API_KEY_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)}")
    env = t.get("secret_env")
    if env is not None and (not isinstance(env, str) or not env.strip()):
        raise ConfigError(f"{where}: secret_env must name an environment variable")
    file = _path(t, "secret_file", folder, where, required=False)
    if (env is None) == (file is None):
        raise ConfigError(f"{where}: give exactly one of secret_env or secret_file")
    return ApiKey(user, _str(t, "api_key", where), env, file)


def _faults(t: Mapping[str, Any], ops: tuple[str, ...], where: str) -> dict[str, str]:
    faults = _mapping(t.get("faults", {}), f"{where} faults")
    for op, what in faults.items():
        if op not in ops:
            raise ConfigError(f"{where}: unknown operation {op!r} in faults")
        if what != "fail":
            raise ConfigError(f'{where}: fault for {op!r} must be "fail"')
    return dict(faults)


def _delays(t: Mapping[str, Any], ops: tuple[str, ...], where: str) -> dict[str, float]:
    delays = _mapping(t.get("delay_s", {}), f"{where} delay_s")
    out = {}
    for op, seconds in delays.items():
        if op not in ops:
            raise ConfigError(f"{where}: unknown operation {op!r} in delay_s")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ConfigError(f"{where}: delay for {op!r} must be a number of seconds >= 0")
        out[op] = float(seconds)
    return out


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    return _mapping(raw.get(key, {}), f"[{key}]")


def _array(raw: Mapping[str, Any], key: str) -> list[Any]:
    return _list(raw, key, f"[[{key}]]")


def _list(t: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = t.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key} must be a list")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table")
    return value


def _str(t: Mapping[str, Any], key: str, where: str) -> str:
    value = t.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} is required (a non-empty string)")
    return value


def _choice(t: Mapping[str, Any], key: str, choices: tuple[str, ...], where: str) -> str:
    value = t.get(key)
    if value not in choices:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(choices)} (got {value!r})")
    return str(value)


def _int(t: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = t.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"[{where}] {key} must be a whole number >= 1")
    return value


def _number(t: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = t.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"[{where}] {key} must be a number > 0")
    return float(value)


def _path(
    t: Mapping[str, Any], key: str, folder: Path, where: str, *, required: bool
) -> Path | None:
    value = t.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: {key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a path")
    return folder / value


def _unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"duplicate {what} {v!r}")
        seen.add(v)


def _requires_agent(limits: Mapping[str, Any]) -> bool:
    value = limits.get("quiesce_requires_agent", True)
    if not isinstance(value, bool):
        raise ConfigError(f"limits: quiesce_requires_agent must be true or false, not {value!r}")
    return value
