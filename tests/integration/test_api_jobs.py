"""
Async jobs of the HTTP API in process, on a real SQLite store: what a job answers while
it runs, when it ends, when its request is replayed, and when the server that accepted
it is gone or on another host.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import e2e_config
from tests.support import write_config
from vmsnap import Controller
from vmsnap.api.auth import Principal
from vmsnap.api.errors import ApiError, Unauthenticated
from vmsnap.api.jobs import Jobs, Outcome
from vmsnap.domain.api_job import FAILED, PENDING, SUCCEEDED, ApiJob

SNAPSHOT = "11111111-1111-4111-8111-111111111111"


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    with Controller.from_config(write_config(tmp_path, e2e_config())) as c:
        yield c


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def stored_job(controller: Controller, owner: str, request: str) -> ApiJob:
    job = ApiJob(request, "createVMSnapshot", "admin", owner, {}, SNAPSHOT)
    controller.event_log.save(job)
    return job


def test_a_job_is_pending_while_it_runs_then_answers_its_outcome(
    controller: Controller,
) -> None:
    jobs = Jobs(controller)
    release = threading.Event()

    def work(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
        on_claimed(SNAPSHOT)
        release.wait(60)
        return {"snapshot": {"id": SNAPSHOT}}, None, None

    def never(job: ApiJob) -> Outcome | None:
        raise AssertionError("a running job is not concluded from its snapshot")

    try:
        job = jobs.submit(Principal("admin", "AK", "r1"), "createSnapshot", {}, None, work)
        assert (job.snapshot_id, jobs.get(str(job.id), never).status) == (SNAPSHOT, PENDING)
        with pytest.raises(Unauthenticated) as replay:
            jobs.submit(Principal("admin", "AK", "r1"), "createSnapshot", {}, None, work)
        assert replay.value.reason == "replayed"
        release.set()
    finally:
        jobs.close()
    ended = jobs.get(str(job.id), never)
    assert (ended.status, ended.result, ended.recovered) == (
        SUCCEEDED,
        {"snapshot": {"id": SNAPSHOT}},
        False,
    )


def test_a_refusal_before_the_claim_ends_the_job_at_once(controller: Controller) -> None:
    jobs = Jobs(controller)

    def work(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
        controller.create_vm_snapshot("vm-1", name="x" * 300, on_claimed=on_claimed)
        raise AssertionError("refused before the claim")

    try:
        job = jobs.submit(Principal("admin", "AK", "r2"), "createVMSnapshot", {}, None, work)
    finally:
        jobs.close()
    assert (job.status, job.error_code, job.snapshot_id) == (FAILED, 431, None)


def test_a_job_of_a_server_that_is_gone_is_concluded_once_and_recorded(
    controller: Controller,
) -> None:
    job = stored_job(controller, f"{socket.gethostname()}:{dead_pid()}:cafe", "r3")
    jobs = Jobs(controller)
    concluded: list[str] = []

    def still_running(j: ApiJob) -> Outcome | None:
        concluded.append(str(j.id))
        return None

    assert jobs.get(str(job.id), still_running).status == PENDING

    def failed(j: ApiJob) -> Outcome | None:
        concluded.append(str(j.id))
        return None, 530, "create interrupted"

    ended = jobs.get(str(job.id), failed)
    assert (ended.status, ended.error_code, ended.recovered) == (FAILED, 530, True)
    again = jobs.get(str(job.id), failed)  # recorded: not concluded a second time
    assert (again.status, len(concluded)) == (FAILED, 2)
    jobs.close()


def test_a_job_of_a_server_on_another_host_stays_pending(controller: Controller) -> None:
    job = stored_job(controller, "another-host.invalid:1:beef", "r4")
    jobs = Jobs(controller)

    def never(j: ApiJob) -> Outcome | None:
        raise AssertionError("a job of another host's server is not concluded here")

    assert jobs.get(str(job.id), never).status == PENDING
    jobs.close()


@pytest.mark.parametrize("job_id", ["not-a-uuid", SNAPSHOT])
def test_an_unknown_job_is_a_431(controller: Controller, job_id: str) -> None:
    jobs = Jobs(controller)
    with pytest.raises(ApiError) as info:
        jobs.get(job_id, lambda j: None)
    assert info.value.code == 431
    jobs.close()


def test_a_job_queued_behind_busy_workers_is_answered_at_once(controller: Controller) -> None:
    """One client's many jobs park no request thread: a queued job is settled at once."""
    jobs = Jobs(controller, workers=1)
    release = threading.Event()
    settled: list[str] = []

    def hang(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
        release.wait(60)
        return {}, None, None

    try:
        running = jobs.submit(
            Principal("admin", "AK", "q1"),
            "createSnapshot",
            {},
            None,
            hang,
            on_settled=lambda: settled.append("running"),
        )
        queued = jobs.submit(
            Principal("admin", "AK", "q2"),
            "createSnapshot",
            {},
            None,
            hang,
            on_settled=lambda: settled.append("queued"),
        )
        assert settled == ["queued"]  # answered with its id; the running one is not yet
        assert (running.status, queued.status) == (PENDING, PENDING)
        release.set()
    finally:
        jobs.close()
    assert sorted(settled) == ["queued", "running"]


def test_a_failed_job_may_be_retried_with_the_same_signed_request(controller: Controller) -> None:
    jobs = Jobs(controller)

    def busy(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
        return None, 530, "VM vm-1 has an operation in progress"

    def works(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
        on_claimed(SNAPSHOT)
        return {}, None, None

    principal = Principal("admin", "AK", "same-signed-request")
    try:
        first = jobs.submit(principal, "createVMSnapshot", {}, None, busy)
        retry = jobs.submit(principal, "createVMSnapshot", {}, None, works)
        with pytest.raises(Unauthenticated):  # it succeeded: a third copy is a replay
            jobs.submit(principal, "createVMSnapshot", {}, None, works)
    finally:
        jobs.close()
    assert (first.status, retry.status) == (FAILED, SUCCEEDED)
    assert first.id != retry.id


def test_without_expires_every_request_is_a_job_of_its_own(controller: Controller) -> None:
    jobs = Jobs(controller)
    unguarded = Principal("admin", "AK", "no-expires", guarded=False)

    def works(on_claimed: Callable[[str], None], job_id: str) -> Outcome:
        return {}, None, None

    try:
        one = jobs.submit(unguarded, "createSnapshot", {}, None, works)
        two = jobs.submit(unguarded, "createSnapshot", {}, None, works)
    finally:
        jobs.close()
    assert one.id != two.id
