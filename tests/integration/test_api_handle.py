"""
``CloudStackApi.handle`` in process (#16): an unexpected error is a 530 whose text carries
nothing of Python's; what a request may not see is an unknown id; signing parameters and
unknown ones never reach a job.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cs import CloudStack

from tests.e2e.conftest import e2e_config
from tests.support import write_config
from vmsnap import Controller
from vmsnap.api.access import Inventory
from vmsnap.api.auth import Authenticator
from vmsnap.api.commands import CloudStackApi
from vmsnap.api.jobs import Jobs

KEY, SECRET = "AK-1", "secret-0123456789abcdef"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[CloudStackApi, Controller]]:
    with Controller.from_config(write_config(tmp_path, e2e_config())) as c:
        jobs = Jobs(c)
        try:
            yield CloudStackApi(c, Authenticator({KEY: ("admin", SECRET)}), jobs, Inventory()), c
        finally:
            jobs.close()


def signed(**params: str) -> dict[str, str]:
    request = {**params, "apiKey": KEY, "response": "json"}
    CloudStack(endpoint="http://unused.invalid", key=KEY, secret=SECRET)._sign(request)
    return request


def test_an_unexpected_error_is_a_530_without_python_text(
    api: tuple[CloudStackApi, Controller], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    handler, controller = api

    def broken() -> None:
        raise RuntimeError("/var/lib/vmsnap/secret-path exploded")

    monkeypatch.setattr(controller, "list_pools", broken)
    status, body = handler.handle(signed(command="listStoragePools"), "127.0.0.1")  # type: ignore[misc]
    error = body["liststoragepoolsresponse"]
    assert (status, error["errorcode"], error["cserrorcode"]) == (530, 530, 4250)
    assert "RuntimeError" not in error["errortext"] and "secret-path" not in error["errortext"]
    assert "secret-path exploded" in caplog.text  # the details go to the server's log


def test_a_job_that_fails_unexpectedly_says_so_without_python_text(
    api: tuple[CloudStackApi, Controller], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, controller = api

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("internal-detail")

    monkeypatch.setattr(controller, "create_volume_snapshot", broken)
    status, body = handler.handle(signed(command="createSnapshot", volumeid="vol-p2"), None)  # type: ignore[misc]
    jobid = body["createsnapshotresponse"]["jobid"] if status == 200 else None
    if jobid is None:  # refused at once: the refusal's text
        text = body["createsnapshotresponse"]["errortext"]
    else:
        _, answer = handler.handle(signed(command="queryAsyncJobResult", jobid=jobid), None)  # type: ignore[misc]
        text = answer["queryasyncjobresultresponse"]["jobresult"]["errortext"]
    assert "KeyError" not in text and "internal-detail" not in text
