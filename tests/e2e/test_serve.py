"""
``vmsnap serve`` driven by a real CloudStack client, ``cs`` from PyPI: async jobs, lists,
CloudStack's error codes, the refusals of unauthenticated requests, and a restart.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cs import CloudStackApiException

from tests.e2e.conftest import (
    STATE_FILE,
    UNKNOWN_ID,
    assert_refused,
    e2e_config,
    export,
    ok_json,
    run,
)
from tests.e2e.serve_fixtures import (
    FILE_KEY,
    FILE_SECRET,
    SECRET,
    Server,
    wait_for_job,
)
from tests.support import WAIT_S, wait_for, write_config
from vmsnap.adapters.simulator import SimulatorWorld

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path).start()
    yield s
    s.stop()


def refusal(call: Any, **params: Any) -> tuple[int, str, dict[str, Any]]:
    """Call ``call(**params)``, expect a CloudStack error; (HTTP status, key, error)."""
    with pytest.raises(CloudStackApiException) as info:
        call(**params)
    response = info.value.response
    [key] = response.json().keys()
    return response.status_code, key, info.value.error


class RecordingSession(requests.Session):
    """A requests session that keeps the URL of every request the client sends."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.urls.append(request.url)
        return super().send(request, **kwargs)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_a_quiesced_vm_snapshot_is_created_polled_listed_reverted_and_deleted(
    server: Server,
) -> None:
    cs = server.client()
    accepted = cs.createVMSnapshot(
        virtualmachineid="vm-1", name="before-upgrade", description="d", quiescevm=True
    )
    job = wait_for_job(cs, accepted["jobid"])
    assert (job["jobstatus"], job["jobresultcode"], job["jobresulttype"]) == (1, 0, "object")
    assert job["jobinstanceid"] == accepted["id"]
    snap = job["jobresult"]["vmsnapshot"]
    assert snap["id"] == accepted["id"]
    assert (snap["name"], snap["displayname"], snap["description"]) == (
        "before-upgrade",
        "before-upgrade",
        "d",
    )
    assert (snap["state"], snap["type"], snap["current"]) == ("Ready", "Disk", True)
    assert (snap["virtualmachineid"], snap["parent"]) == ("vm-1", None)
    assert (snap["quiescevm"], snap["quiesced"], snap["strategy"]) == (True, True, "storage")
    requested = next(
        e["data"]
        for e in export(server.config, server.folder)
        if e["type"] == "VmSnapshot.Requested" and e["originator_id"] == snap["id"]
    )
    # Who (the API user) and which request (the async job) are on the operation's first event.
    assert (requested["actor"], requested["correlation_id"]) == ("admin", accepted["jobid"])

    listed = cs.listVMSnapshot(virtualmachineid="vm-1")
    assert listed["count"] == 1
    assert [s["id"] for s in listed["vmSnapshot"]] == [snap["id"]]
    assert cs.listVMSnapshot(vmsnapshotid=snap["id"])["vmSnapshot"][0]["state"] == "Ready"
    assert cs.listVMSnapshot(state="Error") == {}  # CloudStack: an empty list is {}

    reverted = cs.revertToVMSnapshot(vmsnapshotid=snap["id"], fetch_result=True)
    assert reverted["virtualmachine"]["id"] == "vm-1"
    assert reverted["vmsnapshot"]["state"] == "Ready"

    deleted = cs.deleteVMSnapshot(vmsnapshotid=snap["id"], fetch_result=True)
    assert deleted["success"] is True
    assert cs.listVMSnapshot(virtualmachineid="vm-1") == {}
    removed = cs.listVMSnapshot(virtualmachineid="vm-1", state="Removed")["vmSnapshot"]
    assert [(s["id"], s["state"]) for s in removed] == [(snap["id"], "Removed")]
    # The same store the command line reads.
    shown = ok_json(
        run(
            "--config",
            server.config,
            "vm-snapshots",
            "show",
            snap["id"],
            "--json",
            cwd=server.folder,
        )
    )
    assert shown["state"] == "removed"


def test_pools_list_their_caps_and_volumes_say_where_quiesce_is_possible(
    server: Server,
) -> None:
    cs = server.client(key=FILE_KEY, secret=FILE_SECRET)  # the user whose secret is a file
    pools = cs.listStoragePools()
    assert pools["count"] == 4
    caps = {p["id"]: p["caps"] for p in pools["storagepool"]}
    assert caps["netapp-1"] == {
        "VOLUME_SNAPSHOT_QUIESCEVM": "true",
        "STORAGE_SYSTEM_SNAPSHOT": "true",
    }
    assert caps["primary-1"] == {
        "VOLUME_SNAPSHOT_QUIESCEVM": "false",
        "STORAGE_SYSTEM_SNAPSHOT": "false",
    }
    assert caps["pure-1"]["STORAGE_SYSTEM_SNAPSHOT"] == "true"
    volumes = cs.listVolumes(virtualmachineid="vm-1")["volume"]
    flags = {v["id"]: (v["quiescevm"], v["supportsstoragesnapshot"]) for v in volumes}
    assert flags == {"vol-1": (False, False), "vol-2": (True, True), "vol-3": (False, True)}
    assert cs.listStoragePools(id="netapp-1")["storagepool"][0]["name"] == "NetApp 1"


def test_a_quiesced_volume_snapshot_is_taken_only_where_the_pool_advertises_it(
    server: Server,
) -> None:
    cs = server.client()
    snap = cs.createSnapshot(volumeid="vol-2", quiescevm=True, fetch_result=True)["snapshot"]
    assert (snap["volumeid"], snap["state"]) == ("vol-2", "BackedUp")
    assert (snap["quiescevm"], snap["quiesced"]) == (True, True)
    listed = cs.listSnapshots(volumeid="vol-2")
    assert (listed["count"], listed["snapshot"][0]["id"]) == (1, snap["id"])

    status, key, error = refusal(cs.createSnapshot, volumeid="vol-1", quiescevm=True)
    assert (status, key, error["errorcode"]) == (431, "createsnapshotresponse", 431)
    assert "VOLUME_SNAPSHOT_QUIESCEVM" in error["errortext"]
    assert cs.listSnapshots(volumeid="vol-1") == {}


def test_clients_that_post_forms_are_served_too(server: Server) -> None:
    cs = server.client(method="post")
    snap = cs.createSnapshot(volumeid="vol-2", fetch_result=True)["snapshot"]
    assert snap["state"] == "BackedUp"
    assert cs.listSnapshots(id=snap["id"])["count"] == 1
    assert refusal(server.client(method="post", secret="wrong").listVolumes)[0] == 401


def test_bad_parameters_and_unknown_ids_are_refused_with_431_and_record_nothing(
    server: Server,
) -> None:
    cs = server.client()
    before = types(export(server.config, server.folder))
    for call, params in (
        (cs.createVMSnapshot, {}),
        (cs.createVMSnapshot, {"virtualmachineid": "vm-1", "quiescevm": "maybe"}),
        (cs.createVMSnapshot, {"virtualmachineid": "no-such-vm"}),
        (cs.createVMSnapshot, {"virtualmachineid": "vm-1", "name": "x" * 256}),
        (cs.revertToVMSnapshot, {"vmsnapshotid": UNKNOWN_ID}),
        (cs.deleteVMSnapshot, {"vmsnapshotid": "not-an-id"}),
        (cs.createSnapshot, {"volumeid": "no-such-volume"}),
        (cs.queryAsyncJobResult, {"jobid": UNKNOWN_ID}),
        (cs.listVMSnapshot, {"state": "Sleeping"}),
        (cs.listVMSnapshot, {"vmsnapshotid": UNKNOWN_ID}),
        (cs.listVMSnapshot, {"virtualmachineid": "no-such-vm"}),
        (cs.listSnapshots, {"id": UNKNOWN_ID}),
        (cs.listSnapshots, {"volumeid": "no-such-volume"}),
        (cs.listStoragePools, {"id": "no-such-pool"}),
        (cs.listVolumes, {"virtualmachineid": "no-such-vm"}),
        (cs.listVolumes, {"page": "0"}),
    ):
        status, _, error = refusal(call, **params)
        assert (status, error["errorcode"]) == (431, 431), (params, error)
        assert error["errortext"]
    status, key, error = refusal(cs.listEverything)
    assert (status, key, error["errorcode"]) == (432, "listeverythingresponse", 432)
    assert types(export(server.config, server.folder)) == before


def test_a_second_operation_on_a_busy_vm_is_refused_with_530(tmp_path: Path) -> None:
    server = Server(tmp_path, netapp_delay_s={"take_vm_snapshot": 5}).start()
    try:
        cs = server.client()
        first = cs.createVMSnapshot(virtualmachineid="vm-1")  # answered once vm-1 is claimed
        status, _, error = refusal(cs.createVMSnapshot, virtualmachineid="vm-1", name="b")
        assert (status, error["errorcode"]) == (530, 530)
        assert "in progress" in error["errortext"]
        assert wait_for_job(cs, first["jobid"])["jobstatus"] == 1
    finally:
        assert server.stop() == 0  # SIGTERM: a clean stop


def test_unauthenticated_requests_are_refused_with_401_counted_and_a_replay_recorded(
    server: Server,
) -> None:
    session = RecordingSession()
    cs = server.client(session=session)
    accepted = cs.createVMSnapshot(virtualmachineid="vm-plain", name="once")
    create_url = session.urls[-1]
    assert wait_for_job(cs, accepted["jobid"])["jobstatus"] == 1

    unsigned = server.client(key=None, secret=None)
    assert refusal(unsigned.listVolumes)[0] == 401
    assert refusal(server.client(secret="wrong").listVolumes)[0] == 401
    assert refusal(server.client(key="AK-nobody").listVolumes)[0] == 401
    status, key, error = refusal(
        cs.listVolumes, expires="2020-01-01T00:00:00+0000", signatureVersion="3"
    )
    assert (status, key, error["errorcode"]) == (401, "listvolumesresponse", 401)

    replay = requests.get(create_url, timeout=30)
    assert replay.status_code == 401
    assert replay.json()["createvmsnapshotresponse"]["errorcode"] == 401
    assert cs.listVMSnapshot(virtualmachineid="vm-plain")["count"] == 1  # not taken twice

    events = export(server.config, server.folder)
    reasons = [e["data"]["reason"] for e in events if e["type"] == "ApiRefusal.Recorded"]
    # Unauthenticated refusals are counted and logged, never stored (#16); the replay of
    # a request signed by a known key keeps its audit record.
    assert reasons == ["replayed"]
    server.stop()
    assert "refused unauthenticated API requests: unsigned 1" in server.stderr
    text = "".join(str(e) for e in events) + server.stderr
    assert SECRET not in text
    signature = requests.utils.unquote(create_url.split("signature=")[1].split("&")[0])
    assert signature not in text


def test_a_job_is_answered_after_the_server_is_killed_and_restarted(tmp_path: Path) -> None:
    # netapp-1's take_vm_snapshot outlives the test: the server is killed inside it.
    server = Server(tmp_path, netapp_delay_s={"take_vm_snapshot": 120}).start()
    cs = server.client()
    done = cs.createSnapshot(volumeid="vol-p2")  # vm-plain: no delayed pool
    assert wait_for_job(cs, done["jobid"])["jobstatus"] == 1
    hung = cs.createVMSnapshot(virtualmachineid="vm-1", quiescevm=True)
    pending = cs.queryAsyncJobResult(jobid=hung["jobid"])
    assert (pending["jobstatus"], pending["jobinstanceid"]) == (0, hung["id"])
    assert "jobresult" not in pending
    server.stop(signal.SIGKILL)

    server.start()  # recovers what the killed server left in flight
    try:
        cs = server.client()
        finished = cs.queryAsyncJobResult(jobid=done["jobid"])
        assert (finished["jobstatus"], finished["jobresult"]["snapshot"]["state"]) == (
            1,
            "BackedUp",
        )
        failed = cs.queryAsyncJobResult(jobid=hung["jobid"])
        assert (failed["jobstatus"], failed["jobresultcode"]) == (2, 530)
        assert failed["jobresult"]["errorcode"] == 530
        assert "interrupted" in failed["jobresult"]["errortext"]
        assert failed["jobinstanceid"] == hung["id"]
        snap = cs.listVMSnapshot(vmsnapshotid=hung["id"], state="Error")["vmSnapshot"][0]
        assert snap["state"] == "Error"
    finally:
        server.stop()
    ends = [
        e["data"]
        for e in export(server.config, server.folder)
        if e["type"] == "ApiJob.Finished" and e["originator_id"] == hung["jobid"]
    ]
    assert [(d["status"], d["recovered"]) for d in ends] == [("failed", True)]
    verified = run("--config", server.config, "audit", "verify", "--json", cwd=server.folder)
    assert ok_json(verified)["ok"] is True


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('[[api.keys]]\nuser = "a"\napi_key = "K"\n', "exactly one of secret_env"),
        (
            '[[api.keys]]\nuser = "a"\napi_key = "K"\nsecret_env = "X"\nsecret_file = "f"\n',
            "exactly one of secret_env",
        ),
        ('[[api.keys]]\nuser = "a"\napi_key = "K"\nsecret_env = "X"\nrole = "root"\n', "role"),
        ('[[api.keys]]\nuser = "a"\napi_key = "K"\nsecret = "inline"\n', "never"),
        (
            '[[api.keys]]\nuser = "a"\napi_key = "K"\nsecret_env = "X"\n'
            '[[api.keys]]\nuser = "b"\napi_key = "K"\nsecret_env = "Y"\n',
            "duplicate api_key",
        ),
        ('[[api.keys]]\nuser = "a"\napi_key = "K"\nsecret_env = "UNSET_SECRET_VAR"\n', "not set"),
        ('[[api.keys]]\nuser = "a"\napi_key = "K"\nsecret_file = "missing.secret"\n', "missing"),
        ("", "at least one [[api.keys]]"),
    ],
)
def test_bad_api_keys_are_refused_with_exit_2(tmp_path: Path, keys: str, message: str) -> None:
    config = write_config(tmp_path, e2e_config())
    with config.open("a", encoding="utf-8") as f:
        f.write("\n" + keys)
    result = run("--config", config, "serve", "--port", "1", cwd=tmp_path)
    assert_refused(result)
    assert message in result.stderr


def test_sigterm_while_a_guest_is_frozen_mid_call_thaws_it_at_once_and_exits_cleanly(
    tmp_path: Path,
) -> None:
    # netapp-1's take_vm_snapshot runs long after SIGTERM: the guest must not wait for it.
    server = Server(tmp_path, netapp_delay_s={"take_vm_snapshot": 20}).start()
    cs = server.client()
    job = cs.createVMSnapshot(virtualmachineid="vm-kvm", quiescevm=True)
    with SimulatorWorld(tmp_path / STATE_FILE) as world:
        wait_for(lambda: world.is_frozen("vm-kvm"), WAIT_S, "the guest frozen")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not world.is_frozen("vm-kvm"), WAIT_S, "the guest thawed")

        def refused() -> bool:
            try:
                requests.get(server.endpoint, timeout=5)
            except requests.ConnectionError:
                return True
            return False

        wait_for(refused, WAIT_S, "serve to stop accepting requests")
        assert server.stop() == 0  # it waited for the running call, then exited
        assert world.hypervisor_snapshots("vm-kvm") == []
    events = export(server.config, server.folder)
    mine = [e for e in events if e["originator_id"] == job["id"]]
    thaws = [e["data"]["reason"] for e in mine if e["type"] == "Snapshot.Unquiesced"]
    assert thaws[0] == "interrupted"
    [failed] = [e["data"] for e in mine if e["type"] == "Snapshot.Failed"]
    assert "the controller is stopping" in failed["error"]
    recovered = ok_json(run("--config", server.config, "recover", "--json", cwd=tmp_path))
    assert recovered == {"recovered": [], "unrecovered": []}
    assert run("--config", server.config, "reconcile", cwd=tmp_path).code == 0  # no orphan
    verified = run("--config", server.config, "audit", "verify", "--json", cwd=tmp_path)
    assert ok_json(verified)["ok"] is True
