"""
The ApiJob aggregate: one asynchronous job of the HTTP API (CloudStack's async jobs).

Jobs are events in the same log as the snapshots, so a job outlives the server that ran
it. The id is derived from the signed request, so a replayed request names a job that
exists already and the store refuses to record it twice (ADR 0014).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from vmsnap.domain.vm import NAMESPACE

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


class ApiJob(Aggregate):
    """
    A command accepted by the HTTP API, the snapshot it works on, and how it ended.
    """

    @staticmethod
    def create_id(request: str) -> UUID:
        return uuid5(NAMESPACE, f"api-job:{request}")

    class Submitted(Aggregate.Created):
        """The API accepted a command; ``request`` is a digest of the signed request."""

        request: str
        command: str
        user: str
        owner: str
        params: dict[str, str]
        snapshot_id: str | None

    @event(Submitted)
    def __init__(
        self,
        request: str,
        command: str,
        user: str,
        owner: str,
        params: dict[str, str],
        snapshot_id: str | None,
    ) -> None:
        # ``request`` is a digest of the signed request, never the signature or a secret.
        self.command = command
        self.user = user
        self.owner = owner
        self.params = dict(params)
        self.snapshot_id = snapshot_id
        self.status = PENDING
        self.result: dict[str, Any] | None = None
        self.error_code: int | None = None
        self.error_text: str | None = None
        self.recovered = False

    def assign(self, snapshot_id: str) -> None:
        """
        Record the snapshot the job works on, once the Controller has claimed its VM.
        """
        if snapshot_id != self.snapshot_id:
            self.trigger_event(ApiJob.SnapshotAssigned, snapshot_id=snapshot_id)

    class SnapshotAssigned(Aggregate.Event):
        snapshot_id: str

        def apply(self, job: Any) -> None:
            job.snapshot_id = self.snapshot_id

    def finish(
        self,
        result: dict[str, Any] | None,
        error_code: int | None = None,
        error_text: str | None = None,
        recovered: bool = False,
    ) -> None:
        """
        Record the job's end: ``result`` (the CloudStack object) when it succeeded, an
        error code and text when it failed. ``recovered``: concluded from the snapshot's
        state after the server that ran the job stopped.
        """
        if self.status == PENDING:
            self.trigger_event(
                ApiJob.Finished,
                status=SUCCEEDED if error_code is None else FAILED,
                result=result,
                error_code=error_code,
                error_text=error_text,
                recovered=recovered,
            )

    class Finished(Aggregate.Event):
        status: str
        result: dict[str, Any] | None
        error_code: int | None
        error_text: str | None
        recovered: bool

        def apply(self, job: Any) -> None:
            job.status = self.status
            job.result = self.result
            job.error_code = self.error_code
            job.error_text = self.error_text
            job.recovered = self.recovered
