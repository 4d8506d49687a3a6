"""
Async jobs: each accepted command is an ApiJob in the event log, run by a worker thread
through the (thread-safe) Controller, and answered from the log by queryAsyncJobResult,
also after a restart (ADR 0013).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from vmsnap.api.auth import Principal
from vmsnap.api.errors import CONFLICT, INTERNAL_ERROR, PARAM_ERROR, ApiError, Unauthenticated
from vmsnap.controller import Controller, pid_alive
from vmsnap.domain.api_job import FAILED, PENDING, ApiJob
from vmsnap.domain.exceptions import InvalidRequest, OperationInProgress

#: (result object, error code, error text): the object when it succeeded, else the error.
Outcome = tuple[dict[str, Any] | None, int | None, str | None]
#: The work of a job: runs the Controller call, telling ``on_claimed`` the snapshot id.
# The job's work: given the claim callback and the job id (its correlation id).
Work = Callable[[Callable[[str], None], str], Outcome]
#: How a job whose server stopped ended, read from its snapshot; None while in progress.
Conclude = Callable[[ApiJob], Outcome | None]

WORKERS = 4
#: How long a submit waits for the VM to be claimed, so that refusals found before the
#: claim (name taken, limit reached, VM busy) are answered at once, as CloudStack does.
#: The HTTP API waits without a thread (``on_settled``), and not at all for a job that
#: waits behind others for a worker.
CLAIM_WAIT_S = 30.0
#: How many tries of one signed request may follow refusals before the claim (a retry
#: after "VM busy" is not a replay).
RETRIES = 50
KEPT = 1000  # the jobs listAsyncJobs remembers (this server's latest)
LOG = logging.getLogger("vmsnap.api")


class Jobs:
    """
    Submits, runs and answers async jobs. ``close()`` waits for the running ones.
    """

    def __init__(self, controller: Controller, workers: int = WORKERS) -> None:
        self._controller = controller
        self._log = controller.event_log
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vmsnap-api-job")
        self._running: set[UUID] = set()
        self._lock = threading.Lock()
        self._workers = workers
        self._started = 0  # jobs handed to the pool and not yet ended
        self.recent: collections.deque[UUID] = collections.deque(maxlen=KEPT)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def submit(
        self,
        principal: Principal,
        command: str,
        params: dict[str, str],
        snapshot_id: str | None,
        work: Work,
        *,
        on_settled: Callable[[], None] | None = None,
    ) -> ApiJob:
        """
        Record the job and start it. Without ``on_settled``, return it once its VM is
        claimed or it has ended (at most :data:`CLAIM_WAIT_S`); with it, return at once
        and call ``on_settled`` then (or at once when the job waits for a worker).

        Raises:
            Unauthenticated: the same signed request (one with ``expires``) was
                accepted before (a replay).
        """
        job = self._record(principal, command, params, snapshot_id)
        settled = threading.Event()

        def settle() -> None:
            if not settled.is_set():
                settled.set()
                if on_settled is not None:
                    on_settled()

        def on_claimed(sid: str) -> None:
            job.assign(sid)
            self._log.save(job)
            settle()

        def run() -> None:
            try:
                outcome = _run(work, on_claimed, str(job.id))
                job.finish(*outcome)
                self._log.save(job)
            finally:
                with self._lock:
                    self._running.discard(job.id)
                    self._started -= 1
                settle()

        with self._lock:
            self._running.add(job.id)
            self.recent.append(job.id)
            queued = self._started >= self._workers
            self._started += 1
        self._pool.submit(run)
        if on_settled is None:
            settled.wait(CLAIM_WAIT_S)
        elif queued:
            settle()  # behind other jobs: answered with its id now, refusals in the job
        return job

    def _record(
        self, principal: Principal, command: str, params: dict[str, str], sid: str | None
    ) -> ApiJob:
        """
        Save the job's first event. A request signed with ``expires`` names one job: a
        second copy is a replay, unless every copy before it failed (a retry after an
        error). Without ``expires`` every request is a job of its own.
        """
        base = principal.request if principal.guarded else f"{principal.request}:{uuid4()}"
        for attempt in range(RETRIES):
            request = base if attempt == 0 else f"{base}:retry-{attempt}"
            job = ApiJob(request, command, principal.user, self._controller.owner, params, sid)
            try:
                self._log.save(job)
                return job
            except IntegrityError:
                before = self._load(str(job.id))
                if before.status != FAILED:
                    break
        raise Unauthenticated("replayed", "the request was already used (replayed)")

    def get(self, job_id: str, conclude: Conclude) -> ApiJob:
        """
        The job ``job_id``. A pending job whose server stopped is concluded from its
        snapshot (after ``recover``, its terminal state) and that end is recorded.

        Raises:
            ApiError: no such job (431).
        """
        job = self._load(job_id)
        if job.status != PENDING or self._alive(job):
            return job
        outcome = conclude(job)
        if outcome is None:
            return job
        job.finish(*outcome, recovered=True)
        try:
            self._log.save(job)
        except IntegrityError:  # another server concluded it first
            return self._load(job_id)
        return job

    def _load(self, job_id: str) -> ApiJob:
        unknown = ApiError(PARAM_ERROR, f"Invalid parameter jobid value={job_id}: no such job")
        try:
            agg: Aggregate = self._log.repository.get(UUID(job_id))
        except (ValueError, AggregateNotFoundError):
            raise unknown from None
        if not isinstance(agg, ApiJob):
            raise unknown
        return agg

    def _alive(self, job: ApiJob) -> bool:
        """
        Whether the server that accepted the job may still be running it. A server on
        another host is assumed alive.
        """
        with self._lock:
            if job.id in self._running:
                return True
        if job.owner == self._controller.owner:
            return False
        host, pid = [*job.owner.split(":"), "", ""][:2]
        if host != socket.gethostname() or pid == str(os.getpid()):
            return True
        return pid_alive(pid)


def _run(work: Work, on_claimed: Callable[[str], None], job_id: str) -> Outcome:
    try:
        return work(on_claimed, job_id)
    except OperationInProgress as e:
        return None, CONFLICT, str(e)
    except InvalidRequest as e:
        return None, PARAM_ERROR, str(e)
    except Exception:  # the job fails; the reason goes to the server's log, not the client
        LOG.exception("an API job failed unexpectedly")
        return None, INTERNAL_ERROR, "internal error: the job failed unexpectedly"
