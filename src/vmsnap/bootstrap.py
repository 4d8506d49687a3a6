"""The composition root: adapters built from a validated config."""

from __future__ import annotations

from pathlib import Path

import attrs

from vmsnap.adapters.default_driver import DefaultStorageDriver
from vmsnap.adapters.inventory import StaticInventory
from vmsnap.adapters.simulator import SimulatorHypervisor, SimulatorStorage, SimulatorWorld
from vmsnap.config import Config, HypervisorConfig, PoolConfig
from vmsnap.domain.exceptions import ConfigError
from vmsnap.domain.ports import Hypervisor, StorageDriver
from vmsnap.domain.values import VmInfo, VolumeInfo


@attrs.define
class Wiring:
    """
    Everything the Controller talks to, built once per Controller.
    """

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


def simulator_worlds(config: Config) -> dict[Path, SimulatorWorld]:
    """
    The simulated worlds a config names (one per state file, shared by its users).
    """
    paths = [h.state for h in config.hypervisors if h.type == "simulator"]
    paths += [p.state for p in config.pools if p.info.driver == "simulator"]
    return {path: SimulatorWorld(path) for path in dict.fromkeys(p for p in paths if p)}


def wire(config: Config) -> Wiring:
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
    return Wiring(inventory, hypervisors, drivers, worlds)


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
