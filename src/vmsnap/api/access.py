"""
Who may see and act on which VM (ADR 0022): the one authorization rule of the HTTP API,
and of anything else served beside it (the web UI).

An ``admin`` principal sees every VM. A ``user`` principal sees the VMs whose
``[[vms]] account`` is its account, and nothing else: another account's VM, or a VM
without an account, is to a user as if it did not exist (CloudStack answers 431 "unknown
id" for it, not 401). Volumes, snapshots and jobs follow their VM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from vmsnap.config import Config

ADMIN, USER = "admin", "user"


@attrs.frozen
class Principal:
    """
    The user a request was signed for, its ``account`` and ``role``. ``request`` is a
    keyed digest of the signed request (ADR 0014); ``guarded`` says whether it is unique
    (it carried ``expires``), so a second copy is a replay.
    """

    user: str
    api_key: str
    request: str
    account: str = ""
    role: str = ADMIN
    guarded: bool = True

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


@attrs.frozen
class Inventory:
    """
    What the authorization rule needs to know about VMs: their accounts, and the type
    of each VM's hypervisor (CloudStack's ``KVM``, ``VMware``, ``XenServer``).
    """

    accounts: Mapping[str, str] = attrs.field(factory=dict)  # VM id -> account
    hypervisor_types: Mapping[str, str] = attrs.field(factory=dict)  # VM id -> type

    @classmethod
    def from_config(cls, config: Config) -> Inventory:
        names = {"vmware": "VMware", "xenserver": "XenServer", "kvm": "KVM"}
        types = {
            vm.id: names.get(config.hypervisor(vm.hypervisor).profile, "KVM") for vm in config.vms
        }
        return cls(dict(config.vm_accounts), types)

    def account_of(self, vm_id: str) -> str | None:
        return self.accounts.get(vm_id)


def can_act(principal: Principal, vm_id: str, inventory: Inventory) -> bool:
    """
    Whether ``principal`` may see and act on the VM ``vm_id`` (and its volumes,
    snapshots and jobs).
    """
    if principal.is_admin:
        return True
    return inventory.account_of(vm_id) == principal.account


def visible_vms(principal: Principal, inventory: Inventory, vm_ids: Iterable[str]) -> list[str]:
    """The VMs of ``vm_ids`` that ``principal`` may see, in their order."""
    return [v for v in vm_ids if can_act(principal, v, inventory)]


def account_filter(principal: Principal, account: str | None) -> frozenset[str] | None:
    """
    The accounts a list shows, ``None`` for all. A user sees its own account whatever it
    asks (naming another account is a 431, see :func:`check_account`); an admin sees all,
    or the one ``account`` it names. ``listall`` changes nothing for either: an admin's
    lists are already all, a user's never are.
    """
    if not principal.is_admin:
        return frozenset({principal.account})
    return None if account is None else frozenset({account})


def shown(vm_id: str, accounts: frozenset[str] | None, inventory: Inventory) -> bool:
    """Whether a list scoped to ``accounts`` (:func:`account_filter`) shows ``vm_id``."""
    return accounts is None or inventory.account_of(vm_id) in accounts
