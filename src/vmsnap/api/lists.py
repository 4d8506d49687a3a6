"""
The list commands: each shows what the caller may see (:mod:`vmsnap.api.access`),
filtered, newest first where CloudStack orders so, and paged as CloudStack pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from vmsnap.api import catalog, responses
from vmsnap.api.access import Inventory, Principal, account_filter, can_act, shown
from vmsnap.api.params import (
    Doc,
    Params,
    boolean,
    id_list,
    invalid,
    keyword_match,
    no_such,
    page,
)
from vmsnap.controller import Controller
from vmsnap.domain.exceptions import InvalidRequest
from vmsnap.domain.workflow import REMOVED
from vmsnap.views import VmSnapshotView, VolumeSnapshotView

Created = TypeVar("Created", VmSnapshotView, VolumeSnapshotView)

CAPABILITIES: Doc = {
    "cloudstackversion": "4.19.0.0",
    "apilimitinterval": 1,
    "apilimitmax": -1,
    "allowusercreateprojects": False,
    "allowuserexpungerecovervm": False,
    "allowuserviewdestroyedvm": False,
    "kvmsnapshotenabled": True,
    "securitygroupsenabled": False,
    "userpublictemplateenabled": False,
    "supportELB": "false",
    "projectinviterequired": False,
    "customdiskofferingmaxsize": 1024,
    "customdiskofferingminsize": 1,
    "dynamicrolesenabled": False,
}


class Lists:
    """The list commands over one Controller and its inventory."""

    def __init__(self, controller: Controller, inventory: Inventory) -> None:
        self._ctl = controller
        self._inv = inventory

    # Scope ---------------------------------------------------------------------------

    def scope(self, principal: Principal, p: Params) -> Callable[[str], bool]:
        """Which VMs a list shows: the caller's, narrowed by ``account``/``domainid``."""
        boolean(p, "listall")
        if "projectid" in p:
            raise invalid("projectid", p["projectid"], "vmsnap has no projects")
        domain = p.get("domainid")
        if domain is not None and domain != responses.DOMAIN_ID:
            raise no_such("domainid", domain)
        account = p.get("account")
        if account is not None and not principal.is_admin and account != principal.account:
            raise no_such("account", account)
        accounts = account_filter(principal, account)
        return lambda vm_id: shown(vm_id, accounts, self._inv)

    def vm(self, principal: Principal, vm_id: str, name: str = "virtualmachineid") -> str:
        """``vm_id`` when it names a VM the caller may see; else a 431 "no such"."""
        if not can_act(principal, vm_id, self._inv):
            raise no_such(name, vm_id)
        try:
            self._ctl.list_volumes(vm_id)  # refuses an unknown VM
        except InvalidRequest:
            raise no_such(name, vm_id) from None
        return vm_id

    def volume_vm(self, principal: Principal, volume_id: str, name: str = "volumeid") -> str:
        """The VM of the volume ``volume_id`` when the caller may see it."""
        vm = next((v.vm_id for v in self._ctl.list_volumes() if v.id == volume_id), None)
        if vm is None or not can_act(principal, vm, self._inv):
            raise no_such(name, volume_id)
        return vm

    def vm_snapshot(self, principal: Principal, sid: str, name: str) -> VmSnapshotView:
        try:
            view = self._ctl.get_vm_snapshot(sid)
        except InvalidRequest:
            raise no_such(name, sid) from None
        if not can_act(principal, view.vm_id, self._inv):
            raise no_such(name, sid)
        return view

    def vm_snapshot_doc(self, view: VmSnapshotView, names: dict[str, str] | None = None) -> Doc:
        parent = None
        if view.parent_id is not None:
            if names is not None:
                parent = names.get(view.parent_id)
            else:
                try:
                    parent = self._ctl.get_vm_snapshot(view.parent_id).name
                except InvalidRequest:
                    parent = None
        vm = view.vm_id
        kind = self._inv.hypervisor_types.get(vm, "KVM")
        return responses.vm_snapshot(view, self._inv.account_of(vm), kind, parent)

    # Commands ------------------------------------------------------------------------

    def list_vm_snapshots(self, principal: Principal, p: Params) -> Doc:
        visible = self.scope(principal, p)
        state, vm_id = p.get("state"), p.get("virtualmachineid")
        states = None
        if state is not None:
            states = {k for k, v in responses.VM_SNAPSHOT_STATES.items() if v == state}
            if not states:
                raise invalid("state", state, "not a state of a VM snapshot")
        ids = id_list(p, "vmsnapshotids") or set()
        if "vmsnapshotid" in p:
            ids.add(self.vm_snapshot(principal, p["vmsnapshotid"], "vmsnapshotid").id)
        if vm_id is not None:
            self.vm(principal, vm_id)
        views = self._ctl.list_vm_snapshots(vm_id=vm_id, include_removed=state == "Removed")
        names = {v.id: v.name for v in views}
        items = [
            v
            for v in _newest(views)
            if visible(v.vm_id)
            and (states is None or v.state in states)
            and (not ids or v.id in ids)
            and p.get("name", v.name) == v.name
            and keyword_match(p, v.name, v.description)
        ]
        docs = [self.vm_snapshot_doc(v, names) for v in items]
        return self.listed("listvmsnapshot", docs, p)

    def list_snapshots(self, principal: Principal, p: Params) -> Doc:
        visible = self.scope(principal, p)
        ids = id_list(p, "ids") or set()
        if "id" in p:
            try:
                view = self._ctl.get_volume_snapshot(p["id"])
            except InvalidRequest:
                raise no_such("id", p["id"]) from None
            if not can_act(principal, view.vm_id, self._inv):
                raise no_such("id", p["id"])
            ids.add(view.id)
        volume_id = p.get("volumeid")
        if volume_id is not None:
            self.volume_vm(principal, volume_id)
        docs = [
            responses.volume_snapshot(v, self._inv.account_of(v.vm_id))
            for v in _newest(self._ctl.list_volume_snapshots(volume_id))
            if v.state != REMOVED and visible(v.vm_id) and (not ids or v.id in ids)
        ]
        items = [
            d for d in docs if p.get("name", d["name"]) == d["name"] and keyword_match(p, d["name"])
        ]
        return self.listed("listsnapshots", items, p)

    def list_pools(self, principal: Principal, p: Params) -> Doc:
        self.scope(principal, p)
        pools = self._ctl.list_pools()
        pool_id = p.get("id")
        if pool_id is not None and pool_id not in {v.id for v in pools}:
            raise no_such("id", pool_id)
        items = [
            responses.storage_pool(v)
            for v in pools
            if pool_id in (None, v.id)
            and p.get("name", v.name) == v.name
            and keyword_match(p, v.name, v.id)
        ]
        return self.listed("liststoragepools", items, p)

    def list_volumes(self, principal: Principal, p: Params) -> Doc:
        visible = self.scope(principal, p)
        ids = id_list(p, "ids") or set()
        if "id" in p:
            self.volume_vm(principal, p["id"], "id")
            ids.add(p["id"])
        vm_id = p.get("virtualmachineid")
        if vm_id is not None:
            self.vm(principal, vm_id)
        items = []
        devices: dict[str, int] = {}
        for v in self._ctl.list_volumes(vm_id):
            device = 0 if v.type == "ROOT" else devices.get(v.vm_id, 0) + 1
            if v.type != "ROOT":
                devices[v.vm_id] = device
            wanted = (not ids or v.id in ids) and p.get("name", v.id) == v.id
            if wanted and visible(v.vm_id) and keyword_match(p, v.id):
                items.append(responses.volume(v, self._inv.account_of(v.vm_id), device))
        return self.listed("listvolumes", items, p)

    def list_vms(self, principal: Principal, p: Params) -> Doc:
        visible = self.scope(principal, p)
        ids = id_list(p, "ids") or set()
        if "id" in p:
            ids.add(self.vm(principal, p["id"], "id"))
        items = [
            responses.virtual_machine(
                v, self._inv.account_of(v.id), self._inv.hypervisor_types.get(v.id, "KVM")
            )
            for v in self._ctl.list_vms()
            if visible(v.id)
            and (not ids or v.id in ids)
            and p.get("name", v.id) == v.id
            and keyword_match(p, v.id)
        ]
        return self.listed("listvirtualmachines", items, p)

    def list_zones(self, principal: Principal, p: Params) -> Doc:
        zone_id = p.get("id")
        if zone_id is not None and zone_id != responses.ZONE_ID:
            raise no_such("id", zone_id)
        return self.listed("listzones", [responses.zone()], p)

    def list_capabilities(self, principal: Principal, p: Params) -> Doc:
        return {"capability": dict(CAPABILITIES)}

    def list_apis(self, principal: Principal, p: Params) -> Doc:
        mine = [c for c in catalog.COMMANDS if principal.is_admin or not c.admin]
        name = p.get("name")
        if name is not None:
            mine = [c for c in mine if c.name.lower() == name.lower()]
            if not mine:
                raise no_such("name", name)
        return self.listed("listapis", [catalog.api_doc(c) for c in mine], p)

    def listed(self, command: str, items: list[Doc], p: Params) -> Doc:
        count, shown_page = page(items, p)
        return responses.listed(command, count, shown_page)


def _newest(views: Iterable[Created]) -> list[Created]:
    """Newest first, as CloudStack lists snapshots (``created``, then id for ties)."""
    return sorted(views, key=lambda v: (v.created, v.id), reverse=True)
