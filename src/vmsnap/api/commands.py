"""
The CloudStack commands vmsnap serves: parameters checked as CloudStack names them,
answers in CloudStack's shapes, changes run as async jobs (ADR 0013), each caller
confined to what its account may see (ADR 0022).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import attrs
from eventsourcing.persistence import PersistenceError

from vmsnap.api import catalog, responses
from vmsnap.api.access import Inventory, Principal, can_act
from vmsnap.api.auth import Authenticator
from vmsnap.api.errors import (
    CONFLICT,
    INTERNAL_ERROR,
    PARAM_ERROR,
    UNSUPPORTED_ACTION_ERROR,
    ApiError,
    Unauthenticated,
)
from vmsnap.api.jobs import Jobs, Outcome
from vmsnap.api.lists import Lists
from vmsnap.api.params import Doc, Params, boolean, no_such, required
from vmsnap.api.refusals import RefusalCounter
from vmsnap.controller import Controller
from vmsnap.domain.api_job import FAILED, PENDING, SUCCEEDED, ApiJob
from vmsnap.domain.api_refusal import ApiRefusal
from vmsnap.domain.exceptions import InvalidRequest, OperationInProgress
from vmsnap.domain.rules import check_text
from vmsnap.domain.workflow import IN_PROGRESS
from vmsnap.views import VmSnapshotView, VolumeSnapshotView

LOG = logging.getLogger("vmsnap.api")
#: The CloudStack command classes, for the ``cmd`` of a job.
COMMAND_CLASSES = {
    "createVMSnapshot": "org.apache.cloudstack.api.command.user.vmsnapshot.CreateVMSnapshotCmd",
    "revertToVMSnapshot": "org.apache.cloudstack.api.command.user.vmsnapshot.RevertToVMSnapshotCmd",
    "deleteVMSnapshot": "org.apache.cloudstack.api.command.user.vmsnapshot.DeleteVMSnapshotCmd",
    "createSnapshot": "org.apache.cloudstack.api.command.user.snapshot.CreateSnapshotCmd",
    "deleteSnapshot": "org.apache.cloudstack.api.command.user.snapshot.DeleteSnapshotCmd",
}
VOLUME_COMMANDS = ("createSnapshot", "deleteSnapshot")
MAX_RECORDED = 128  # caller-supplied text kept in a refusal event is cut to this length
Answer = tuple[int, Doc]


@attrs.frozen
class Deferred:
    """A submitted job whose answer waits for its claim (:meth:`CloudStackApi.handle`)."""

    command: str
    job: ApiJob

    def resolve(self) -> Answer:
        return _accepted(self.command, self.job)


class CloudStackApi:
    """
    Answers one request (its parameters as sent) with an HTTP status and a body.
    """

    def __init__(
        self,
        controller: Controller,
        auth: Authenticator,
        jobs: Jobs,
        inventory: Inventory | None = None,
        refusals: RefusalCounter | None = None,
    ) -> None:
        self._ctl = controller
        self._auth = auth
        self._jobs = jobs
        self._inv = inventory or Inventory()
        self.refusals = refusals or RefusalCounter()
        self._lists = lists = Lists(controller, self._inv)
        self._commands: dict[str, Callable[[Principal, Params], Doc | Deferred]] = {
            "createvmsnapshot": self._create_vm_snapshot,
            "reverttovmsnapshot": self._revert,
            "deletevmsnapshot": self._delete,
            "createsnapshot": self._create_snapshot,
            "deletesnapshot": self._delete_snapshot,
            "queryasyncjobresult": self._query_job,
            "listasyncjobs": self._list_jobs,
            "listvmsnapshot": lists.list_vm_snapshots,
            "listsnapshots": lists.list_snapshots,
            "liststoragepools": lists.list_pools,
            "listvolumes": lists.list_volumes,
            "listvirtualmachines": lists.list_vms,
            "listzones": lists.list_zones,
            "listcapabilities": lists.list_capabilities,
            "listapis": lists.list_apis,
        }
        self._call = threading.local()  # this request's on_settled (one per thread)

    def handle(
        self,
        params: Params,
        remote: str | None,
        on_settled: Callable[[], None] | None = None,
    ) -> Answer | Deferred:
        """
        The answer to one request. With ``on_settled``, a submitted job is answered by a
        :class:`Deferred`, to resolve once ``on_settled`` was called (or after a while):
        the caller waits without holding a thread.
        """
        lower = {k.lower(): v for k, v in params.items()}
        command = lower.get("command", "").lower() or None
        try:
            principal = self._auth.authenticate(params)
            cmd = catalog.BY_NAME.get(command or "")
            if cmd is None or (cmd.admin and not principal.is_admin):
                raise ApiError(
                    UNSUPPORTED_ACTION_ERROR,
                    "The given command does not exist or it is not available for the user",
                )
            p = catalog.known_params(cmd, lower)  # anything else is dropped, never stored
            self._call.on_settled = on_settled
            done = self._commands[cmd.name.lower()](principal, p)
            if isinstance(done, Deferred):
                return done
            return 200, {f"{command}response": done}
        except Unauthenticated as e:
            self._refused(e.reason, command, lower.get("apikey"), remote)
            return e.code, responses.error(command, e.code, e.text)
        except ApiError as e:
            return e.code, responses.error(command, e.code, e.text, e.cs_code)
        except OperationInProgress as e:
            return CONFLICT, responses.error(command, CONFLICT, str(e), responses.CS_CONCURRENT)
        except InvalidRequest as e:
            return PARAM_ERROR, responses.error(command, PARAM_ERROR, str(e))
        except Exception:  # answered as CloudStack does (530); the details go to the log
            LOG.exception("the API failed to answer %s", command)
            text = "internal error: the request could not be completed"
            return INTERNAL_ERROR, responses.error(command, INTERNAL_ERROR, text)

    def _refused(
        self, reason: str, command: str | None, api_key: str | None, remote: str | None
    ) -> None:
        """
        A replay was signed by a known key: kept for auditors. Any other refusal is
        unauthenticated: counted and logged (rate-limited), never stored (ADR 0022).
        """
        if reason != "replayed":
            self.refusals.refused(reason, remote)
            return

        def cut(text: str | None) -> str | None:
            return None if text is None else text[:MAX_RECORDED]

        # The refusal is answered even when the store cannot take the record.
        with contextlib.suppress(PersistenceError):
            self._ctl.event_log.save(ApiRefusal(reason, cut(command), cut(api_key), remote))

    # Async commands ---------------------------------------------------------------

    def _create_vm_snapshot(self, principal: Principal, p: Params) -> Doc | Deferred:
        vm_id = self._lists.vm(principal, required(p, "virtualmachineid"))
        name, description = p.get("name"), p.get("description")
        check_text("name", name)
        check_text("description", description)
        memory, quiesce = boolean(p, "snapshotmemory"), boolean(p, "quiescevm")

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
            return self._outcome("createVMSnapshot", view)

        return self._submit(principal, "createVMSnapshot", p, None, work)

    def _revert(self, principal: Principal, p: Params) -> Doc | Deferred:
        sid = self._lists.vm_snapshot(principal, required(p, "vmsnapshotid"), "vmsnapshotid").id

        def work(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
            view = self._ctl.revert_vm_snapshot(
                sid, on_claimed=on_claimed, actor=principal.user, correlation_id=job_id
            )
            return self._outcome("revertToVMSnapshot", view)

        return self._submit(principal, "revertToVMSnapshot", p, sid, work)

    def _delete(self, principal: Principal, p: Params) -> Doc | Deferred:
        sid = self._lists.vm_snapshot(principal, required(p, "vmsnapshotid"), "vmsnapshotid").id

        def work(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
            view = self._ctl.delete_vm_snapshot(
                sid, on_claimed=on_claimed, actor=principal.user, correlation_id=job_id
            )
            return self._outcome("deleteVMSnapshot", view)

        return self._submit(principal, "deleteVMSnapshot", p, sid, work)

    def _create_snapshot(self, principal: Principal, p: Params) -> Doc | Deferred:
        volume_id = required(p, "volumeid")
        self._lists.volume_vm(principal, volume_id)
        quiesce = boolean(p, "quiescevm")

        def work(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
            view = self._ctl.create_volume_snapshot(
                volume_id,
                quiesce=quiesce,
                on_claimed=on_claimed,
                actor=principal.user,
                correlation_id=job_id,
            )
            return self._outcome("createSnapshot", view)

        return self._submit(principal, "createSnapshot", p, None, work)

    def _delete_snapshot(self, principal: Principal, p: Params) -> Doc | Deferred:
        sid = required(p, "id")
        try:
            view = self._ctl.get_volume_snapshot(sid)
        except InvalidRequest:
            raise no_such("id", sid) from None
        if not can_act(principal, view.vm_id, self._inv):
            raise no_such("id", sid)

        def work(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
            deleted = self._ctl.delete_volume_snapshot(
                view.id, actor=principal.user, correlation_id=job_id
            )
            return self._outcome("deleteSnapshot", deleted)

        return self._submit(principal, "deleteSnapshot", p, view.id, work)

    def _submit(
        self,
        principal: Principal,
        command: str,
        p: Params,
        snapshot_id: str | None,
        work: Callable[[Callable[[str], None], str], Outcome],
    ) -> Doc | Deferred:
        settled: Callable[[], None] | None = getattr(self._call, "on_settled", None)
        job = self._jobs.submit(principal, command, dict(p), snapshot_id, work, on_settled=settled)
        if settled is not None:
            return Deferred(command, job)
        status, body = _accepted(command, job)
        if status != 200:
            [doc] = body.values()
            raise ApiError(status, doc["errortext"])
        [doc] = body.values()
        return dict(doc)

    def _query_job(self, principal: Principal, p: Params) -> Doc:
        jobid = required(p, "jobid")
        job = self._jobs.get(jobid, self._conclude)
        if not self._may_see(principal, job):
            raise no_such("jobid", jobid)
        return self._job_doc(job)

    def _list_jobs(self, principal: Principal, p: Params) -> Doc:
        visible = self._lists.scope(principal, p)
        docs = []
        for job_id in reversed(self._jobs.recent):  # newest first
            job = self._jobs.get(str(job_id), self._conclude)
            vm = self._job_vm(job)
            if self._may_see(principal, job) and (vm is None or visible(vm)):
                docs.append(self._job_doc(job))
        return self._lists.listed("listasyncjobs", docs, p)

    def _may_see(self, principal: Principal, job: ApiJob) -> bool:
        if principal.is_admin:
            return True
        vm = self._job_vm(job)
        return vm is not None and can_act(principal, vm, self._inv)

    def _job_vm(self, job: ApiJob) -> str | None:
        """The VM a job works on: from its snapshot, else from its parameters."""
        with contextlib.suppress(InvalidRequest):
            if job.snapshot_id is not None:
                if job.command in VOLUME_COMMANDS:
                    return self._ctl.get_volume_snapshot(job.snapshot_id).vm_id
                return self._ctl.get_vm_snapshot(job.snapshot_id).vm_id
            if "virtualmachineid" in job.params:
                return job.params["virtualmachineid"]
            volume = job.params.get("volumeid")
            return next((v.vm_id for v in self._ctl.list_volumes() if v.id == volume), None)
        return None

    def _conclude(self, job: ApiJob) -> Outcome | None:
        """
        How a job whose server stopped ended, from its snapshot: None while the snapshot
        is still in progress (``vmsnap recover`` ends it).
        """
        if job.snapshot_id is None:
            return None, INTERNAL_ERROR, "the server stopped before the job claimed its VM"
        view: VmSnapshotView | VolumeSnapshotView
        if job.command in VOLUME_COMMANDS:
            view = self._ctl.get_volume_snapshot(job.snapshot_id)
        else:
            view = self._ctl.get_vm_snapshot(job.snapshot_id)
        if view.state in IN_PROGRESS:
            return None
        return self._outcome(job.command, view)

    def _outcome(self, command: str, view: VmSnapshotView | VolumeSnapshotView) -> Outcome:
        if view.state == "failed" or (command == "revertToVMSnapshot" and view.error is not None):
            return None, INTERNAL_ERROR, view.error or f"{command} failed"
        if isinstance(view, VolumeSnapshotView):
            snap = responses.volume_snapshot(view, self._inv.account_of(view.vm_id))
            if command == "deleteSnapshot":
                return {"success": True, "snapshot": snap}, None, None
            return {"snapshot": snap}, None, None
        doc = self._lists.vm_snapshot_doc(view)
        if command == "revertToVMSnapshot":
            vm = {"id": view.vm_id, "name": view.vm_id, "vmsnapshotid": view.id}
            return {"virtualmachine": vm, "vmsnapshot": doc}, None, None
        if command == "deleteVMSnapshot":
            return {"success": True, "vmsnapshot": doc}, None, None
        return {"vmsnapshot": doc}, None, None

    def _job_doc(self, job: ApiJob) -> Doc:
        vm = self._job_vm(job)
        return _job(job, self._inv.account_of(vm) if vm else None)


def _accepted(command: str, job: ApiJob) -> Answer:
    """
    A submitted job's answer: its refusal when it was refused before its VM was claimed
    (name taken, limit, VM busy), else ``{"jobid", "id"}``.
    """
    name = f"{command.lower()}response"
    if job.status == FAILED and job.snapshot_id is None:
        code = job.error_code or INTERNAL_ERROR
        cs = responses.CS_CONCURRENT if "in progress" in (job.error_text or "") else None
        return code, responses.error(command.lower(), code, job.error_text or "refused", cs)
    answer: Doc = {"jobid": str(job.id)}
    if job.snapshot_id is not None:
        answer["id"] = job.snapshot_id
    return 200, {name: answer}


def _job(job: ApiJob, account: str | None) -> Doc:
    doc: Doc = {
        "jobid": str(job.id),
        "userid": job.user,
        "accountid": account or "admin",
        "account": account or "admin",
        "cmd": COMMAND_CLASSES.get(job.command, job.command),
        "jobstatus": {PENDING: 0, SUCCEEDED: 1, FAILED: 2}[job.status],
        "jobprocstatus": 0,
        "jobresultcode": 0 if job.status != FAILED else INTERNAL_ERROR,
        "jobresulttype": "object",
        "jobinstancetype": "Snapshot" if job.command in VOLUME_COMMANDS else "VmSnapshot",
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
