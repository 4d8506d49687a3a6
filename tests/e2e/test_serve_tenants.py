"""
``vmsnap serve`` for tenants (#16): accounts and roles, a replay guard that lets honest
retries through, errors without Python text, nothing stored that a client did not mean.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cs import CloudStackApiException

from tests.e2e.conftest import export
from tests.e2e.serve_fixtures import (
    ANN_KEY,
    ANN_SECRET,
    BOB_KEY,
    BOB_SECRET,
    Server,
    raw,
    wait_for_job,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path, tenants=True).start()
    yield s
    s.stop()


def error_of(call: Any, **params: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(CloudStackApiException) as info:
        call(**params)
    return info.value.response.status_code, info.value.error


def ids(answer: dict[str, Any], key: str) -> set[str]:
    return {item["id"] for item in answer.get(key, [])}


def test_a_user_sees_and_acts_on_the_vms_of_its_account_only(server: Server) -> None:
    ann = server.client(key=ANN_KEY, secret=ANN_SECRET)
    bob = server.client(key=BOB_KEY, secret=BOB_SECRET)
    admin = server.client()
    assert ids(ann.listVirtualMachines(), "virtualmachine") == {"vm-1", "vm-kvm"}
    assert ids(bob.listVirtualMachines(), "virtualmachine") == {"vm-xen"}
    assert ids(bob.listVolumes(), "volume") == {"vol-x1"}
    # Another account's VM, volume, snapshot and job are unknown ids (431), not 401.
    snap = ann.createVMSnapshot(virtualmachineid="vm-1", fetch_result=True)["vmsnapshot"]
    assert snap["account"] == "acme"
    job = admin.createSnapshot(volumeid="vol-x1")
    for call, params in (
        (bob.createVMSnapshot, {"virtualmachineid": "vm-1"}),
        (bob.listVolumes, {"virtualmachineid": "vm-1"}),
        (bob.createSnapshot, {"volumeid": "vol-2"}),
        (bob.deleteVMSnapshot, {"vmsnapshotid": snap["id"]}),
        (bob.listVMSnapshot, {"vmsnapshotid": snap["id"]}),
        (ann.queryAsyncJobResult, {"jobid": job["jobid"]}),
        (ann.createVMSnapshot, {"virtualmachineid": "vm-plain"}),  # no account: admins only
        (ann.listVolumes, {"account": "globex"}),
        (ann.listVolumes, {"projectid": "p"}),
    ):
        status, error = error_of(call, **params)
        assert (status, error["errorcode"], error["cserrorcode"]) == (431, 431, 4350), params
    assert bob.listVMSnapshot() == {}
    assert wait_for_job(bob, job["jobid"])["account"] == "globex"  # bob's VM: he sees it
    # Pools are an admin's list, as in CloudStack.
    status, error = error_of(ann.listStoragePools)
    assert (status, error["errorcode"]) == (432, 432)
    assert "listStoragePools" not in {a["name"] for a in ann.listApis()["api"]}


def test_an_admin_sees_all_and_filters_by_account(server: Server) -> None:
    admin = server.client()
    every = ids(admin.listVirtualMachines(), "virtualmachine")
    assert every == {"vm-1", "vm-plain", "vm-xen", "vm-kvm", "vm-off"}
    assert ids(admin.listVirtualMachines(listall=True), "virtualmachine") == every
    acme = admin.listVirtualMachines(account="acme", listall=True)
    assert ids(acme, "virtualmachine") == {"vm-1", "vm-kvm"}
    assert {v["account"] for v in acme["virtualmachine"]} == {"acme"}
    assert ids(admin.listVolumes(account="globex"), "volume") == {"vol-x1"}


def test_without_expires_an_identical_request_sent_again_is_a_new_request(server: Server) -> None:
    plain = server.client(expiration=-1)  # cs then signs without signatureVersion/expires
    first = plain.createSnapshot(volumeid="vol-p2")
    assert wait_for_job(plain, first["jobid"])["jobstatus"] == 1
    again = plain.createSnapshot(volumeid="vol-p2")  # same parameters, same signature
    assert first["jobid"] != again["jobid"]
    assert wait_for_job(plain, again["jobid"])["jobstatus"] == 1


def test_a_signed_request_retried_after_an_error_is_not_a_replay(tmp_path: Path) -> None:
    server = Server(tmp_path, netapp_delay_s={"take_vm_snapshot": 3}).start()
    try:
        cs = server.client()
        expires = "2099-01-01T00:00:00+0000"
        busy = cs.createVMSnapshot(virtualmachineid="vm-1")
        retry = {
            "command": "createVMSnapshot",
            "virtualmachineid": "vm-1",
            "name": "retry",
            "response": "json",
            "signatureVersion": "3",
            "expires": expires,
        }
        refused = raw(server, retry)
        assert refused.status_code == 530  # VM busy
        wait_for_job(cs, busy["jobid"])
        accepted = raw(server, retry)  # the very same signed request, now that vm-1 is free
        assert accepted.status_code == 200, accepted.text
        jobid = accepted.json()["createvmsnapshotresponse"]["jobid"]
        assert wait_for_job(cs, jobid)["jobstatus"] == 1
        replayed = raw(server, retry)  # it did its work: now a replay
        assert replayed.status_code == 401
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"command": "listVolumes", "pagesize": "²"}, 431),
        ({"command": "listVolumes", "pagesize": "9" * 5000}, 431),
        ({"command": "listVolumes", "pagesize": "0"}, 431),
        ({"command": "listVolumes", "page": "-3", "pagesize": "1"}, 431),
        ({"command": "listVolumes", "listall": "perhaps"}, 431),
        ({"command": "listVMSnapshot", "state": "\u2603" * 50}, 431),
    ],
)
def test_bad_values_are_431_with_a_clean_text(
    server: Server, params: dict[str, str], status: int
) -> None:
    answer = raw(server, {**params, "response": "json"})
    [body] = answer.json().values()
    assert (answer.status_code, body["errorcode"], body["cserrorcode"]) == (status, status, 4350)
    assert "Error" not in body["errortext"] and len(body["errortext"]) < 200
    assert body["errortext"].isascii()


def test_a_non_ascii_signature_is_a_401_not_a_530(server: Server) -> None:
    params = {"command": "listVolumes", "response": "json", "apiKey": "AK-admin"}
    answer = raw(server, {"command": "listVolumes", "response": "json"})
    assert answer.status_code == 200
    bad = requests.get(server.endpoint, params={**params, "signature": "é" * 28}, timeout=30)
    assert bad.status_code == 401
    assert "Error" not in bad.json()["listvolumesresponse"]["errortext"]


def test_unknown_parameters_are_never_stored_with_a_job(server: Server) -> None:
    cs = server.client(method="post")
    job = cs.createSnapshot(volumeid="vol-p2", junk="x" * 100_000, account="someone")
    wait_for_job(cs, job["jobid"])
    [submitted] = [
        e["data"]
        for e in export(server.config, server.folder)
        if e["type"] == "ApiJob.Submitted" and e["originator_id"] == job["jobid"]
    ]
    assert submitted["params"] == {"volumeid": "vol-p2"}


def test_volume_snapshots_are_deleted_through_the_api(server: Server) -> None:
    cs = server.client()
    snap = cs.createSnapshot(volumeid="vol-p2", fetch_result=True)["snapshot"]
    deleted = cs.deleteSnapshot(id=snap["id"], fetch_result=True)
    assert deleted["success"] is True
    assert cs.listSnapshots(volumeid="vol-p2") == {}
    assert error_of(cs.deleteSnapshot, id="no-such")[0] == 431
