"""
The public face for an embedding controller: :class:`Controller`, a facade over the
application service's rooms (``vmsnap.service``): commands, queries, recovery, audit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from vmsnap import config as config_module
from vmsnap.adapters.log_reader import LogReader
from vmsnap.adapters.store import EventLog
from vmsnap.audit import Point
from vmsnap.bootstrap import Wiring, wire
from vmsnap.config import Config
from vmsnap.domain.exceptions import InvalidRequest
from vmsnap.domain.values import Origin
from vmsnap.export import ExportedEvent
from vmsnap.service.auditing import Auditing
from vmsnap.service.commands import Commands
from vmsnap.service.queries import Queries, SnapshotView
from vmsnap.service.reconciling import ReconcileReport, Reconciling
from vmsnap.service.recovery import Recovery, pid_alive
from vmsnap.service.runtime import Claimed, Runtime
from vmsnap.views import (
    EventView,
    PoolView,
    RecoverReport,
    UnrecoveredVm,
    VerifyReport,
    VmSnapshotView,
    VmView,
    VolumeSnapshotView,
    VolumeView,
)

__all__ = ["Controller", "pid_alive"]


class Controller:
    """
    vmsnap for a controller process: create, list, revert and delete VM snapshots and
    volume snapshots, read pool capabilities, recover and audit.

    Safe to share between threads; several controllers (processes) may share one store.
    """

    def __init__(
        self,
        config: Config,
        store_url: str | None = None,
        *,
        recover: bool = False,
        migrate: bool = False,
        cipher_key: str | None = None,
    ):
        self.config = config
        self._wiring: Wiring = wire(config, store_url, migrate=migrate, cipher_key=cipher_key)
        self._runtime = Runtime(config, self._wiring)
        self._commands = Commands(self._runtime)
        self._queries = Queries(self._runtime)
        self._recovery = Recovery(self._runtime)
        wiring = self._wiring
        self._auditing = Auditing(
            LogReader.over(wiring.log), lambda vm: wiring.inventory.vm(vm) is not None
        )
        self._reconciling = Reconciling(self._runtime)
        if recover:
            self.recover()

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str],
        store_url: str | None = None,
        *,
        recover: bool = False,
        migrate: bool = False,
        cipher_key: str | None = None,
    ) -> Controller:
        """
        Open vmsnap as the config file at ``path`` says; ``store_url`` overrides its store.
        ``migrate`` creates or upgrades the store's schema first (needed once on PostgreSQL);
        ``cipher_key`` is the key of ``[store] cipher`` (default: ``$VMSNAP_CIPHER_KEY``).
        """
        return cls(
            config_module.load(Path(path)),
            store_url,
            recover=recover,
            migrate=migrate,
            cipher_key=cipher_key,
        )

    @property
    def owner(self) -> str:
        """This controller's identity in the claims it records (host:pid:token)."""
        return self._runtime.owner

    @property
    def event_log(self) -> EventLog:
        """
        The event log, for services beside the Controller that record their own
        aggregates in the same log (the HTTP API's jobs and refusals).
        """
        return self._wiring.log

    def stop(self) -> None:
        """
        Begin to stop (``vmsnap serve`` on SIGTERM): no new operation starts; a running one
        that holds its guest frozen thaws it at once (recorded, reason ``interrupted``)
        and fails, compensated, when its running call returns; the others run to their
        end. Call :meth:`close` once they have.
        """
        self._runtime.stopping.set()

    def close(self) -> None:
        self._runtime.close()

    def __enter__(self) -> Controller:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # VM snapshots -----------------------------------------------------------------

    def create_vm_snapshot(
        self,
        vm_id: str,
        name: str | None = None,
        description: str | None = None,
        *,
        memory: bool = False,
        quiesce: bool = False,
        on_claimed: Claimed | None = None,
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> VmSnapshotView:
        """
        Take a VM snapshot with the strategy the factory chooses. Returns the snapshot;
        ``state == "failed"`` (with ``error``) when it ran and failed. ``on_claimed``
        (here and in the other operations) is called with the snapshot id once the VM
        is claimed, before any hypervisor or driver call. ``actor`` (who asks),
        ``reason`` (why) and ``correlation_id`` (the caller's request or ticket), here and
        in the other operations, are recorded on the operation's first event for the
        audit (at most 255 characters each).

        Raises:
            InvalidRequest: refused before anything was recorded.
            OperationInProgress: another operation on the VM is in flight.
        """
        _args(vm_id=(vm_id, str), name=(name, str, None), description=(description, str, None))
        _flags(memory=memory, quiesce=quiesce)
        sid = self._commands.create_vm_snapshot(
            vm_id,
            name=name,
            description=description,
            memory=memory,
            quiesce=quiesce,
            on_claimed=on_claimed,
            origin=Origin(actor, reason, correlation_id),
        )
        return self.get_vm_snapshot(sid)

    def revert_vm_snapshot(
        self,
        snapshot: str,
        *,
        on_claimed: Claimed | None = None,
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> VmSnapshotView:
        """
        Revert the VM to a ``ready`` snapshot. A failed revert returns the snapshot to
        ``ready`` with ``error`` set.
        """
        _args(snapshot=(snapshot, str))
        return self.get_vm_snapshot(
            self._commands.revert_vm_snapshot(
                snapshot,
                on_claimed=on_claimed,
                origin=Origin(actor, reason, correlation_id),
            )
        )

    def delete_vm_snapshot(
        self,
        snapshot: str,
        *,
        on_claimed: Claimed | None = None,
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> VmSnapshotView:
        """
        Delete a ``ready`` or ``failed`` snapshot; a failed delete ends ``failed`` and may
        be retried.
        """
        _args(snapshot=(snapshot, str))
        return self.get_vm_snapshot(
            self._commands.delete_vm_snapshot(
                snapshot,
                on_claimed=on_claimed,
                origin=Origin(actor, reason, correlation_id),
            )
        )

    def snapshot(self, snapshot: str) -> SnapshotView:
        """A VM snapshot or a volume snapshot, whichever has the id."""
        return self._queries.snapshot(snapshot)

    def get_vm_snapshot(self, snapshot: str) -> VmSnapshotView:
        return self._queries.get_vm_snapshot(snapshot)

    def list_vm_snapshots(
        self, vm_id: str | None = None, state: str | None = None, *, include_removed: bool = False
    ) -> list[VmSnapshotView]:
        _args(vm_id=(vm_id, str, None), state=(state, str, None))
        _flags(include_removed=include_removed)
        return self._queries.list_vm_snapshots(
            vm_id=vm_id, state=state, include_removed=include_removed
        )

    # Volume snapshots -------------------------------------------------------------

    def create_volume_snapshot(
        self,
        volume_id: str,
        *,
        quiesce: bool = False,
        on_claimed: Claimed | None = None,
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> VolumeSnapshotView:
        """
        Snapshot one volume; ``quiesce`` only where its pool advertises
        VOLUME_SNAPSHOT_QUIESCEVM.
        """
        _args(volume_id=(volume_id, str))
        _flags(quiesce=quiesce)
        sid = self._commands.create_volume_snapshot(
            volume_id,
            quiesce=quiesce,
            on_claimed=on_claimed,
            origin=Origin(actor, reason, correlation_id),
        )
        return self.get_volume_snapshot(sid)

    def delete_volume_snapshot(
        self,
        snapshot: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> VolumeSnapshotView:
        _args(snapshot=(snapshot, str))
        sid = self._commands.delete_volume_snapshot(snapshot, Origin(actor, reason, correlation_id))
        return self.get_volume_snapshot(sid)

    def get_volume_snapshot(self, snapshot: str) -> VolumeSnapshotView:
        return self._queries.get_volume_snapshot(snapshot)

    def list_volume_snapshots(self, volume_id: str | None = None) -> list[VolumeSnapshotView]:
        _args(volume_id=(volume_id, str, None))
        return self._queries.list_volume_snapshots(volume_id=volume_id)

    # Pools, volumes and VMs ---------------------------------------------------------

    def list_pools(self) -> list[PoolView]:
        """
        The pools with what their drivers advertise now (``caps``).
        """
        return self._queries.list_pools()

    def list_volumes(self, vm_id: str | None = None) -> list[VolumeView]:
        _args(vm_id=(vm_id, str, None))
        return self._queries.list_volumes(vm_id=vm_id)

    def list_vms(self, *, frozen: bool = False) -> list[VmView]:
        """
        The VMs with their operation in flight and whether they are believed frozen
        (``frozen=True``: only those).
        """
        return self._queries.list_vms(frozen=frozen)

    # Store, recovery and audit -------------------------------------------------------

    def migrate(self) -> int:
        """
        Create or upgrade the store's schema and rebuild the views from the log (their
        shape may have changed with this version); return the number of the last event.
        """
        return self._wiring.views.rebuild()

    def recover(self) -> list[SnapshotView]:
        """
        Finish or compensate every operation left in flight by a controller that died;
        return the snapshots it touched. Running it twice, or several at once, is harmless.
        A VM that cannot be recovered now is left as it is (see :meth:`recover_report`).
        """
        return list(self.recover_report().recovered)

    def recover_report(self) -> RecoverReport:
        """
        As :meth:`recover`, with the VMs it could not recover and why (each VM is
        recovered on its own: one that cannot be finished does not stop the others).
        """
        outcome = self._recovery.recover()
        return RecoverReport(
            recovered=tuple(self._queries.snapshot(sid) for sid in outcome.done),
            unrecovered=tuple(
                UnrecoveredVm(u.vm_id, u.snapshot_id, u.reason) for u in outcome.unrecovered
            ),
        )

    def reconcile(self, *, clean: bool = False) -> ReconcileReport:
        """
        Compare what the backends hold under vmsnap's names with what the log owns:
        what the orphan ledger owes, and orphans nothing records. ``clean``: record and
        remove each of them (under a claim of its VM), then compare again. ``ok``: nothing
        is owed or orphaned.
        """
        _flags(clean=clean)
        return self._reconciling.reconcile(clean=clean)

    def audit_timeline(
        self, snapshot_id: str | None = None, vm_id: str | None = None
    ) -> list[EventView]:
        """
        The events of one snapshot, or of every snapshot of a VM, in log order.
        """
        return self._auditing.timeline(snapshot_id=snapshot_id, vm_id=vm_id)

    def audit_export(self) -> Iterator[ExportedEvent]:
        """
        Every stored event in log order, read in pages, with its stored form, digest and
        chain hash: enough to verify the log from the export alone (ADR 0021).
        """
        return self._auditing.export()

    def audit_verify(self, expect_head: str | None = None) -> VerifyReport:
        """
        Replay the whole log in pages: legal transitions, the AND rule, a thaw after every
        freeze, views equal to a rebuild, and the chain of seals intact and complete (ADR
        0011, 0012, 0021). Read-only: events not sealed yet are reported (``unsealed``),
        never sealed here.
        ``expect_head``: ``POSITION:HASH``, a ``chain_head`` an earlier verify gave and
        that was kept elsewhere: the chain must still pass through it.

        Raises:
            InvalidRequest: ``expect_head`` is not ``POSITION:HASH``.
        """
        return self._auditing.verify(expect_head)

    def audit_state(self, snapshot_id: str, at: str | Point) -> SnapshotView:
        """
        The snapshot as it was at ``at``: a log position, or an instant (a datetime or
        an ISO-8601 string; UTC when it names no zone).

        Raises:
            NotFound: no such snapshot, or it did not exist yet at ``at``.
            InvalidRequest: ``at`` is neither a position nor a timestamp.
        """
        return self._auditing.state(snapshot_id, at)


def _args(**checked: tuple[object, ...]) -> None:
    """
    Check each argument's type at the API boundary: ``name=(value, type, ...)``, None
    among the types when the argument may be None.

    Raises:
        InvalidRequest: an argument has another type (nothing is recorded).
    """
    for name, (value, *types) in checked.items():
        if value is None and None in types:
            continue
        if not any(isinstance(t, type) and isinstance(value, t) for t in types):
            raise InvalidRequest(f"{name} must be a string, not {type(value).__name__}")


def _flags(**flags: object) -> None:
    """Booleans must be booleans: ``quiesce="false"`` is refused, not taken as true."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise InvalidRequest(f"{name} must be True or False, not {value!r}")
