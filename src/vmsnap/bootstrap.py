"""
The composition root: from a validated config, the adapters (hypervisors, drivers,
inventory, simulated worlds), the event log and its views. Nothing else builds them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import attrs
from eventsourcing.persistence import PersistenceError

from vmsnap.adapters.at_rest import CIPHER_KEY_ENV, at_rest_env, check_readable
from vmsnap.adapters.default_driver import DefaultStorageDriver
from vmsnap.adapters.inventory import StaticInventory
from vmsnap.adapters.simulator import SimulatorHypervisor, SimulatorStorage, SimulatorWorld
from vmsnap.adapters.store import EventLog, StoreUrl, open_log
from vmsnap.adapters.view_store import ViewStore, open_views
from vmsnap.config import Config, HypervisorConfig, PoolConfig
from vmsnap.domain.exceptions import ConfigError, StoreError
from vmsnap.domain.ports import Hypervisor, StorageDriver
from vmsnap.domain.values import VmInfo, VolumeInfo
from vmsnap.projections.projector import project


@attrs.define
class Adapters:
    """The hypervisors and drivers a config names, and the inventory they serve."""

    inventory: StaticInventory
    hypervisors: dict[str, Hypervisor]
    drivers: dict[str, StorageDriver]
    worlds: dict[Path, SimulatorWorld]

    def hypervisor_of(self, vm: VmInfo) -> Hypervisor:
        return self.hypervisors[vm.hypervisor]

    def close(self) -> None:
        for hv in self.hypervisors.values():
            close = getattr(hv, "close", None)
            if close is not None:
                close()
        for world in self.worlds.values():
            world.close()


@attrs.define
class Wiring(Adapters):
    """Everything a Controller talks to, built once per Controller."""

    log: EventLog
    views: ViewStore

    def close(self) -> None:
        super().close()
        self.log.close()


def wire(
    config: Config,
    store_url: str | None = None,
    *,
    migrate: bool = False,
    cipher_key: str | None = None,
) -> Wiring:
    """
    Build the adapters and open the store (``store_url`` overrides the config's; a
    relative one is relative to the working folder). ``migrate`` creates or upgrades the
    store's schema; ``cipher_key`` is the key of ``[store] cipher`` (default: the
    environment). Whatever was opened is closed again if a later part fails.

    Raises:
        ConfigError, StoreError: the config or the store cannot be used.
    """
    url = (
        StoreUrl.parse(store_url, Path.cwd())
        if store_url
        else StoreUrl.parse(config.store_url, config.folder)
    )
    environ: Mapping[str, str] = os.environ if cipher_key is None else {CIPHER_KEY_ENV: cipher_key}
    with contextlib.ExitStack() as undo:
        adapters = wire_adapters(config)
        undo.callback(adapters.close)
        at_rest = at_rest_env(config.store_cipher, config.store_compress, environ)
        log = open_log(url, at_rest, migrate=migrate)
        undo.callback(log.close)
        try:
            check_readable(log)
            views = open_views(log, project, migrate=migrate)
        except PersistenceError as e:
            raise StoreError(f"cannot open store: {e}") from None
        undo.pop_all()
    return Wiring(
        adapters.inventory, adapters.hypervisors, adapters.drivers, adapters.worlds, log, views
    )


def simulator_worlds(config: Config) -> dict[Path, SimulatorWorld]:
    """
    The simulated worlds a config names (one per state file, shared by its users).
    """
    paths = [h.state for h in config.hypervisors if h.type == "simulator"]
    paths += [p.state for p in config.pools if p.info.driver == "simulator"]
    return {path: SimulatorWorld(path) for path in dict.fromkeys(p for p in paths if p)}


def wire_adapters(config: Config) -> Adapters:
    worlds = simulator_worlds(config)
    # Pools whose driver snapshots its volumes itself (a quiesce snapshot leaves them out).
    captured = frozenset(p.info.id for p in config.pools if p.info.driver != "default")
    hypervisors = {
        h.name: _hypervisor(h, worlds, captured, config.limits.quiesce_requires_agent)
        for h in config.hypervisors
    }
    inventory = StaticInventory(config.vms, [p.info for p in config.pools])

    def hypervisor_for(volume: VolumeInfo) -> tuple[Hypervisor, VmInfo]:
        vm = inventory.vm(volume.vm_id)
        assert vm is not None
        return hypervisors[vm.hypervisor], vm

    drivers = {p.info.id: _driver(p, worlds, hypervisor_for) for p in config.pools}
    return Adapters(inventory, hypervisors, drivers, worlds)


def _hypervisor(
    h: HypervisorConfig,
    worlds: dict[Path, SimulatorWorld],
    captured: frozenset[str],
    require_agent: bool = True,
) -> Hypervisor:
    if h.type == "libvirt":
        try:
            from vmsnap.adapters.libvirt_hypervisor import LibvirtHypervisor
        except ImportError as e:
            raise ConfigError(
                f"hypervisor {h.name!r} needs libvirt-python (pip install 'vmsnap[libvirt]'): {e}"
            ) from None
        return LibvirtHypervisor(
            h.name,
            h.uri or "qemu:///system",
            require_agent=require_agent,
            captured_by_pool=lambda v: v.pool_id in captured,
        )
    assert h.state is not None
    return SimulatorHypervisor(h.name, h.profile, worlds[h.state], h.faults, h.delay_s)


def _driver(
    p: PoolConfig, worlds: dict[Path, SimulatorWorld], hypervisor_for: object
) -> StorageDriver:
    if p.info.driver == "default":
        return DefaultStorageDriver(p.info, hypervisor_for)  # type: ignore[arg-type]
    if p.info.driver == "qcow2":
        from vmsnap.adapters.qcow2_driver import Qcow2Driver

        assert p.path is not None
        return Qcow2Driver(p.info, p.path, hypervisor_for=hypervisor_for)  # type: ignore[arg-type]
    assert p.state is not None
    return SimulatorStorage(
        p.info, worlds[p.state], p.capabilities, p.need_unquiesce, p.faults, p.delay_s
    )
