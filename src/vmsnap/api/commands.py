"""
The CloudStack commands vmsnap serves: parameters checked as CloudStack names them,
answers in CloudStack's shapes, changes run as async jobs (ADR 0013).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eventsourcing.persistence import PersistenceError

from vmsnap.api import responses
from vmsnap.api.auth import Authenticator, Principal
from vmsnap.api.errors import (
    CONFLICT,
    INTERNAL_ERROR,
    PARAM_ERROR,
    UNSUPPORTED_ACTION_ERROR,
    ApiError,
    Unauthenticated,
)
from vmsnap.api.jobs import Jobs, Outcome
from vmsnap.controller import Controller
from vmsnap.domain.api_job import FAILED, PENDING, SUCCEEDED, ApiJob
from vmsnap.domain.api_refusal import ApiRefusal
from vmsnap.domain.exceptions import InvalidRequest, OperationInProgress
from vmsnap.domain.rules import check_text
from vmsnap.domain.workflow import IN_PROGRESS, REMOVED
from vmsnap.views import VmSnapshotView, VolumeSnapshotView

Doc = dict[str, Any]
Params = Mapping[str, str]
#: Parameters that sign a request rather than say what it asks; not kept in jobs.
SIGNING = {"apikey", "signature", "signatureversion", "expires", "response", "command"}
#: The CloudStack command classes, for the ``cmd`` of a job.
COMMAND_CLASSES = {
    "createVMSnapshot": "org.apache.cloudstack.api.command.user.vmsnapshot.CreateVMSnapshotCmd",
    "revertToVMSnapshot": "org.apache.cloudstack.api.command.user.vmsnapshot.RevertToVMSnapshotCmd",
    "deleteVMSnapshot": "org.apache.cloudstack.api.command.user.vmsnapshot.DeleteVMSnapshotCmd",
    "createSnapshot": "org.apache.cloudstack.api.command.user.snapshot.CreateSnapshotCmd",
}
MAX_RECORDED = 128  # caller-supplied text kept in a refusal event is cut to this length


class CloudStackApi:
    """
    Answers one request (its parameters as sent) with an HTTP status and a JSON body.
    """

    def __init__(self, controller: Controller, auth: Authenticator, jobs: Jobs) -> None:
        self._ctl = controller
        self._auth = auth
        self._jobs = jobs
        self._commands: dict[str, Callable[[Principal, Params], Doc]] = {
            "createvmsnapshot": self._create_vm_snapshot,
            "reverttovmsnapshot": self._revert,
            "deletevmsnapshot": self._delete,
            "listvmsnapshot": self._list_vm_snapshots,
            "createsnapshot": self._create_snapshot,
            "listsnapshots": self._list_snapshots,
            "liststoragepools": self._list_pools,
            "listvolumes": self._list_volumes,
            "queryasyncjobresult": self._query_job,
        }

    def handle(self, params: Params, remote: str | None) -> tuple[int, Doc]:
        lower = {k.lower(): v for k, v in params.items()}
        command = lower.get("command", "").lower() or None
        try:
            principal = self._auth.authenticate(params)
            if lower.get("response", "json").lower() != "json":
                raise ApiError(PARAM_ERROR, "only response=json is served")
            handler = self._commands.get(command or "")
            if handler is None:
                raise ApiError(
                    UNSUPPORTED_ACTION_ERROR,
                    f"The given command {command!r} does not exist or it is not available",
                )
            return 200, {f"{command}response": handler(principal, lower)}
        except Unauthenticated as e:
            self._record_refusal(e.reason, command, lower.get("apikey"), remote)
            return e.code, responses.error(command, e.code, e.text)
        except ApiError as e:
            return e.code, responses.error(command, e.code, e.text)
        except OperationInProgress as e:
            return CONFLICT, responses.error(command, CONFLICT, str(e))
        except InvalidRequest as e:
            return PARAM_ERROR, responses.error(command, PARAM_ERROR, str(e))
        except Exception as e:  # answered as CloudStack does (530), the server goes on
            text = f"{type(e).__name__}: {e}"
            return INTERNAL_ERROR, responses.error(command, INTERNAL_ERROR, text)

    def _record_refusal(
        self, reason: str, command: str | None, api_key: str | None, remote: str | None
    ) -> None:
        def cut(text: str | None) -> str | None:
            return None if text is None else text[:MAX_RECORDED]

        # The refusal is answered even when the store cannot take the record.
        with contextlib.suppress(PersistenceError):
            self._ctl.event_log.save(ApiRefusal(reason, cut(command), cut(api_key), remote))

    # Async commands ---------------------------------------------------------------

    def _create_vm_snapshot(self, principal: Principal, p: Params) -> Doc:
        vm_id = _required(p, "virtualmachineid")
        self._known_vm(vm_id)
        name, description = p.get("name"), p.get("description")
        check_text("name", name)
        check_text("description", description)
        memory, quiesce = _bool(p, "snapshotmemory"), _bool(p, "quiescevm")

        def work(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
            view = self._ctl.create_vm_snapshot(
                vm_id,
                name,
                description,
                memory=memory,
                quiesce=quiesce,
                on_claimed=on_claimed,
                actor=principal.user,
                correlation_id=job_id,
            )
            return _outcome("createVMSnapshot", view)

        return self._submit(principal, "createVMSnapshot", p, None, work)

    def _revert(self, principal: Principal, p: Params) -> Doc:
        sid = self._vm_snapshot_id(p)

        def work(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
            view = self._ctl.revert_vm_snapshot(
                sid, on_claimed=on_claimed, actor=principal.user, correlation_id=job_id
            )
            return _outcome("revertToVMSnapshot", view)

        return self._submit(principal, "revertToVMSnapshot", p, sid, work)

    def _delete(self, principal: Principal, p: Params) -> Doc:
        sid = self._vm_snapshot_id(p)

        def work(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
            view = self._ctl.delete_vm_snapshot(
                sid, on_claimed=on_claimed, actor=principal.user, correlation_id=job_id
            )
            return _outcome("deleteVMSnapshot", view)

        return self._submit(principal, "deleteVMSnapshot", p, sid, work)

    def _create_snapshot(self, principal: Principal, p: Params) -> Doc:
        volume_id = _required(p, "volumeid")
        self._known_volume(volume_id)
        quiesce = _bool(p, "quiescevm")

        def work(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
            view = self._ctl.create_volume_snapshot(
                volume_id,
                quiesce=quiesce,
                on_claimed=on_claimed,
                actor=principal.user,
                correlation_id=job_id,
            )
            return _outcome("createSnapshot", view)

        return self._submit(principal, "createSnapshot", p, None, work)

    def _vm_snapshot_id(self, p: Params) -> str:
        sid = _required(p, "vmsnapshotid")
        try:
            return self._ctl.get_vm_snapshot(sid).id
        except InvalidRequest:
            raise _no_such("vmsnapshotid", sid) from None

    def _submit(
        self,
        principal: Principal,
        command: str,
        p: Params,
        snapshot_id: str | None,
        work: Callable[[Callable[[str], None], str], Outcome],
    ) -> Doc:
        params = {k: v for k, v in p.items() if k not in SIGNING}
        job = self._jobs.submit(principal, command, params, snapshot_id, work)
        if job.status == FAILED and job.snapshot_id is None:
            # Refused before its VM was claimed (name taken, limit, VM busy): at once.
            assert job.error_code is not None
            raise ApiError(job.error_code, job.error_text or "refused")
        answer: Doc = {"jobid": str(job.id)}
        if job.snapshot_id is not None:
            answer["id"] = job.snapshot_id
        return answer

    def _query_job(self, principal: Principal, p: Params) -> Doc:
        job = self._jobs.get(_required(p, "jobid"), self._conclude)
        return _job(job)

    def _conclude(self, job: ApiJob) -> Outcome | None:
        """
        How a job whose server stopped ended, from its snapshot: None while the snapshot
        is still in progress (``vmsnap recover`` ends it).
        """
        if job.snapshot_id is None:
            return None, INTERNAL_ERROR, "the server stopped before the job claimed its VM"
        view: VmSnapshotView | VolumeSnapshotView
        if job.command == "createSnapshot":
            view = self._ctl.get_volume_snapshot(job.snapshot_id)
        else:
            view = self._ctl.get_vm_snapshot(job.snapshot_id)
        if view.state in IN_PROGRESS:
            return None
        return _outcome(job.command, view)

    # Lists ------------------------------------------------------------------------

    def _list_vm_snapshots(self, principal: Principal, p: Params) -> Doc:
        state, sid, vm_id = p.get("state"), p.get("vmsnapshotid"), p.get("virtualmachineid")
        states = None
        if state is not None:
            states = {k for k, v in responses.VM_SNAPSHOT_STATES.items() if v == state}
            if not states:
                raise ApiError(PARAM_ERROR, f"Invalid parameter state value={state}")
        # As CloudStack: an id that names nothing is a bad parameter, in lists too.
        if sid is not None:
            self._vm_snapshot_id(p)
        if vm_id is not None:
            self._known_vm(vm_id)
        views = self._ctl.list_vm_snapshots(vm_id=vm_id, include_removed=state == "Removed")
        items = [
            responses.vm_snapshot(v)
            for v in views
            if (states is None or v.state in states)
            and sid in (None, v.id)
            and p.get("name", v.name) == v.name
        ]
        return _page("listvmsnapshot", items, p)

    def _list_snapshots(self, principal: Principal, p: Params) -> Doc:
        sid, volume_id = p.get("id"), p.get("volumeid")
        if sid is not None:
            try:
                self._ctl.get_volume_snapshot(sid)
            except InvalidRequest:
                raise _no_such("id", sid) from None
        if volume_id is not None:
            self._known_volume(volume_id)
        items = [
            responses.volume_snapshot(v)
            for v in self._ctl.list_volume_snapshots(volume_id)
            if v.state != REMOVED and sid in (None, v.id)
        ]
        return _page("listsnapshots", items, p)

    def _list_pools(self, principal: Principal, p: Params) -> Doc:
        pools = self._ctl.list_pools()
        pool_id = p.get("id")
        if pool_id is not None and pool_id not in {v.id for v in pools}:
            raise _no_such("id", pool_id)
        items = [
            responses.storage_pool(v)
            for v in pools
            if pool_id in (None, v.id) and p.get("name", v.name) == v.name
        ]
        return _page("liststoragepools", items, p)

    def _list_volumes(self, principal: Principal, p: Params) -> Doc:
        volume_id, vm_id = p.get("id"), p.get("virtualmachineid")
        if volume_id is not None:
            self._known_volume(volume_id)
        if vm_id is not None:
            self._known_vm(vm_id)
        views = self._ctl.list_volumes(vm_id)
        items = [responses.volume(v) for v in views if volume_id in (None, v.id)]
        return _page("listvolumes", items, p)

    def _known_vm(self, vm_id: str) -> None:
        try:
            self._ctl.list_volumes(vm_id)
        except InvalidRequest:
            raise _no_such("virtualmachineid", vm_id) from None

    def _known_volume(self, volume_id: str) -> None:
        if volume_id not in {v.id for v in self._ctl.list_volumes()}:
            raise _no_such("volumeid", volume_id)


def _no_such(name: str, value: str) -> ApiError:
    return ApiError(PARAM_ERROR, f"Invalid parameter {name} value={value}: no such entity")


def _outcome(command: str, view: VmSnapshotView | VolumeSnapshotView) -> Outcome:
    if view.state == "failed" or (command == "revertToVMSnapshot" and view.error is not None):
        return None, INTERNAL_ERROR, view.error or f"{command} failed"
    if isinstance(view, VolumeSnapshotView):
        return {"snapshot": responses.volume_snapshot(view)}, None, None
    snap = responses.vm_snapshot(view)
    if command == "revertToVMSnapshot":
        vm = {"id": view.vm_id, "name": view.vm_id, "vmsnapshotid": view.id}
        return {"virtualmachine": vm, "vmsnapshot": snap}, None, None
    if command == "deleteVMSnapshot":
        return {"success": True, "vmsnapshot": snap}, None, None
    return {"vmsnapshot": snap}, None, None


def _job(job: ApiJob) -> Doc:
    doc: Doc = {
        "jobid": str(job.id),
        "userid": job.user,
        "account": job.user,
        "cmd": COMMAND_CLASSES.get(job.command, job.command),
        "jobstatus": {PENDING: 0, SUCCEEDED: 1, FAILED: 2}[job.status],
        "jobprocstatus": 0,
        "jobresultcode": 0 if job.status != FAILED else INTERNAL_ERROR,
        "jobresulttype": "object",
        "jobinstancetype": "Snapshot" if job.command == "createSnapshot" else "VMSnapshot",
        "created": job.created_on.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if job.snapshot_id is not None:
        doc["jobinstanceid"] = job.snapshot_id
    if job.status == SUCCEEDED:
        doc["jobresult"] = job.result or {}
    elif job.status == FAILED:
        doc["jobresult"] = {"errorcode": job.error_code, "errortext": job.error_text}
    if job.status != PENDING:
        doc["completed"] = job.modified_on.strftime("%Y-%m-%dT%H:%M:%S%z")
    return doc


def _required(p: Params, name: str) -> str:
    value = p.get(name)
    if not value:
        raise ApiError(
            PARAM_ERROR, f"Unable to execute API command due to missing parameter {name}"
        )
    return value


def _bool(p: Params, name: str) -> bool:
    value = p.get(name, "false").lower()
    if value not in ("true", "false"):
        raise ApiError(PARAM_ERROR, f"Invalid parameter {name} value={p[name]}: not a boolean")
    return value == "true"


def _int(p: Params, name: str, default: int) -> int:
    value = p.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ApiError(PARAM_ERROR, f"Invalid parameter {name} value={value}: not a number >= 1")
    return int(value)


def _page(command: str, items: Sequence[Doc], p: Params) -> Doc:
    """
    One page of a list (``page``, ``pagesize``); ``count`` is the whole list's length.
    """
    size = _int(p, "pagesize", max(len(items), 1))
    page = _int(p, "page", 1)
    shown = list(items)[(page - 1) * size :][:size]
    return {"count": len(items), responses.LIST_KEYS[command]: shown}
