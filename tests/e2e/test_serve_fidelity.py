"""
``vmsnap serve`` faithful to CloudStack where clients notice (#16): XML by default, the
commands CloudMonkey needs, paging, ordering, empty lists, field names and types.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from cs import CloudStackApiException

from tests.e2e.serve_fixtures import Server, raw, wait_for_job

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path, tenants=True).start()
    yield s
    s.stop()


def test_the_answer_is_xml_without_response_and_json_with_response_json(server: Server) -> None:
    xml = raw(server, {"command": "listVolumes", "virtualmachineid": "vm-1"})
    assert (xml.status_code, xml.headers["content-type"]) == (200, "text/xml; charset=UTF-8")
    root = ET.fromstring(xml.content)
    assert root.tag == "listvolumesresponse"
    assert root.findtext("count") == "3"
    assert {v.findtext("id") for v in root.findall("volume")} == {"vol-1", "vol-2", "vol-3"}
    assert root.find("volume/quiescevm") is not None
    as_json = raw(server, {"command": "listVolumes", "response": "json"})
    assert as_json.headers["content-type"].startswith("application/json")
    xml_asked = raw(server, {"command": "listZones", "response": "xml"})
    assert ET.fromstring(xml_asked.content).findtext("zone/name") == "vmsnap"
    error = raw(server, {"command": "listVolumes", "virtualmachineid": "no-such-vm"})
    root = ET.fromstring(error.content)
    assert (error.status_code, root.findtext("errorcode"), root.findtext("cserrorcode")) == (
        431,
        "431",
        "4350",
    )
    empty = raw(server, {"command": "listSnapshots"})
    assert list(ET.fromstring(empty.content)) == []


def test_the_commands_cloudmonkey_and_tools_call_are_served(server: Server) -> None:
    cs = server.client()
    apis = {a["name"]: a for a in cs.listApis()["api"]}
    assert {"deleteSnapshot", "listApis", "listAsyncJobs", "listZones"} <= set(apis)
    create = apis["createVMSnapshot"]
    assert create["isasync"] is True
    assert {"name": "virtualmachineid", "required": True}.items() <= create["params"][0].items()
    assert cs.listCapabilities()["capability"]["cloudstackversion"].startswith("4.")
    [zone] = cs.listZones()["zone"]
    vms = {v["id"]: v for v in cs.listVirtualMachines()["virtualmachine"]}
    assert (vms["vm-1"]["hypervisor"], vms["vm-1"]["zoneid"]) == ("VMware", zone["id"])
    assert (vms["vm-xen"]["hypervisor"], vms["vm-kvm"]["hypervisor"]) == ("XenServer", "KVM")
    assert vms["vm-off"]["state"] == "Stopped"
    job = cs.createSnapshot(volumeid="vol-p2")
    wait_for_job(cs, job["jobid"])
    jobs = cs.listAsyncJobs()["asyncjobs"]
    assert jobs[0]["jobid"] == job["jobid"]
    assert (jobs[0]["jobinstancetype"], jobs[0]["jobstatus"]) == ("Snapshot", 1)


def test_lists_are_newest_first_paged_as_cloudstack_and_carry_its_fields(server: Server) -> None:
    cs = server.client()
    first = cs.createVMSnapshot(virtualmachineid="vm-1", name="one", fetch_result=True)
    second = cs.createVMSnapshot(virtualmachineid="vm-1", name="two", fetch_result=True)
    listed = cs.listVMSnapshot(virtualmachineid="vm-1")["vmSnapshot"]
    assert [s["name"] for s in listed] == ["two", "one"]
    snap = listed[0]
    assert snap["id"] == second["vmsnapshot"]["id"]
    assert (snap["parent"], snap["parentName"]) == (first["vmsnapshot"]["id"], "one")
    assert (snap["hypervisor"], snap["account"], snap["domain"]) == ("VMware", "acme", "ROOT")
    assert snap["domainid"]
    assert cs.listVMSnapshot(virtualmachineid="vm-1", pagesize=1, page=2)["vmSnapshot"] == [
        listed[1]
    ]
    assert cs.listVMSnapshot(pagesize=-1)["count"] == 2
    assert cs.listVMSnapshot(keyword="tw")["count"] == 1
    assert cs.listVMSnapshot(name="one")["vmSnapshot"][0]["name"] == "one"
    volumes = {v["id"]: v for v in cs.listVolumes(virtualmachineid="vm-1")["volume"]}
    assert (volumes["vol-1"]["vmname"], volumes["vol-1"]["deviceid"]) == ("vm-1", 0)
    assert (volumes["vol-3"]["deviceid"], volumes["vol-3"]["size"]) == (2, 0)
    assert cs.listVolumes(ids="vol-1,vol-3")["count"] == 2
    vsnap = cs.createSnapshot(volumeid="vol-2", fetch_result=True)["snapshot"]
    assert vsnap["name"].startswith("vm-1_vol-2_")
    pool = cs.listStoragePools(id="netapp-1")["storagepool"][0]
    assert pool["caps"] == pool["storagecapabilities"]
    assert pool["caps"]["STORAGE_SYSTEM_SNAPSHOT"] == "true"


def test_the_cs_client_reads_xml_and_fetches_whole_lists(server: Server) -> None:
    cs = server.client()
    text = cs.listVolumes(virtualmachineid="vm-1", json=False)  # cs asks without response
    root = ET.fromstring(text)
    assert (root.tag, root.findtext("count")) == ("listvolumesresponse", "3")
    for name in ("one", "two", "three"):
        cs.createVMSnapshot(virtualmachineid="vm-kvm", name=name, fetch_result=True)
    listed = cs.listVMSnapshot(fetch_list=True)  # pages of 500 until an empty page
    assert [s["name"] for s in listed] == ["three", "two", "one"]
    assert cs.listSnapshots(fetch_list=True) == []
    domain = listed[0]["domainid"]
    assert cs.listVMSnapshot(domainid=domain)["count"] == 3
    with pytest.raises(CloudStackApiException) as info:
        cs.listVMSnapshot(domainid="no-such-domain")
    assert info.value.error["errorcode"] == 431
