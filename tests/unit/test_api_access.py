"""
The HTTP API's pieces without a server (#16): who sees which VM, forwarded addresses,
refusals counted not stored, XML as CloudStack writes it, request parameters.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from vmsnap.api import wire
from vmsnap.api.access import Inventory, Principal, account_filter, can_act, visible_vms
from vmsnap.api.app import client_address
from vmsnap.api.errors import ApiError
from vmsnap.api.params import page
from vmsnap.api.refusals import RefusalCounter

INVENTORY = Inventory({"vm-1": "acme", "vm-2": "globex"}, {"vm-1": "VMware"})
ADMIN = Principal("root", "AK", "r", "admin", "admin")
ANN = Principal("ann", "AK-ann", "r", "acme", "user")


def test_a_user_sees_its_accounts_vms_and_an_admin_all() -> None:
    vms = ["vm-1", "vm-2", "vm-3"]
    assert visible_vms(ANN, INVENTORY, vms) == ["vm-1"]
    assert visible_vms(ADMIN, INVENTORY, vms) == vms
    assert (can_act(ANN, "vm-1", INVENTORY), can_act(ANN, "vm-3", INVENTORY)) == (True, False)
    assert account_filter(ANN, None) == frozenset({"acme"})
    assert account_filter(ADMIN, None) is None
    assert account_filter(ADMIN, "globex") == frozenset({"globex"})


def request(peer: str, forwarded: str | None) -> Request:
    headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
    return Request({"type": "http", "client": (peer, 5000), "headers": headers})


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("127.0.0.1", "6.6.6.6", [], "127.0.0.1"),  # loopback is not trusted by default
        ("10.0.0.5", "6.6.6.6", ["10.0.0.0/8"], "6.6.6.6"),
        ("10.0.0.5", "1.1.1.1, 6.6.6.6, 10.0.0.7", ["10.0.0.0/8"], "6.6.6.6"),
        ("192.0.2.1", "6.6.6.6", ["10.0.0.0/8"], "192.0.2.1"),
        ("10.0.0.5", "not-an-ip", ["10.0.0.0/8"], "not-an-ip"),
        ("10.0.0.5", None, ["10.0.0.0/8"], "10.0.0.5"),
    ],
)
def test_forwarded_addresses_are_believed_only_from_trusted_proxies(
    peer: str, forwarded: str | None, trusted: list[str], expected: str
) -> None:
    nets = [ipaddress.ip_network(t) for t in trusted]
    assert client_address(request(peer, forwarded), nets) == expected


def test_unauthenticated_refusals_are_logged_at_most_once_an_interval() -> None:
    now = [0.0]
    lines: list[str] = []
    counter = RefusalCounter(60.0, clock=lambda: now[0], log=lines.append)
    for _ in range(318):
        counter.refused("unsigned", "127.0.0.1")
    now[0] = 61.0
    counter.refused("bad-signature", "127.0.0.1")
    assert counter.total == {"unsigned": 318, "bad-signature": 1}
    assert len(lines) == 2
    assert "unsigned 317" in lines[1] and "bad-signature 1" in lines[1]


def test_xml_is_written_as_cloudstack_writes_it() -> None:
    body = {
        "listvolumesresponse": {
            "count": 2,
            "volume": [{"id": "a", "quiescevm": True, "tags": None}, {"id": "b<&>"}],
            "caps": {"VOLUME_SNAPSHOT_QUIESCEVM": "true"},
        }
    }
    content, media = wire.render(body, as_json=False)
    assert media == wire.XML_TYPE
    root = ET.fromstring(content)
    assert root.tag == "listvolumesresponse" and root.get("cloud-stack-version")
    assert [v.findtext("id") for v in root.findall("volume")] == ["a", "b<&>"]
    assert root.findtext("volume/quiescevm") == "true"
    assert root.find("volume/tags") is None
    assert root.findtext("caps/VOLUME_SNAPSHOT_QUIESCEVM") == "true"


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4))
def test_any_keys_and_values_make_well_formed_xml(doc: dict[str, str]) -> None:
    clean = {k: "".join(c for c in v if c.isprintable()) for k, v in doc.items()}
    ET.fromstring(wire.render({"r": clean}, as_json=False)[0])


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (7, list(range(7)))),
        ({"pagesize": "-1"}, (7, list(range(7)))),
        ({"pagesize": "3"}, (7, [0, 1, 2])),
        ({"pagesize": "3", "page": "3"}, (7, [6])),
        ({"page": "2"}, (7, [])),  # pages of 500
    ],
)
def test_lists_are_paged_as_cloudstack_pages(params: dict[str, str], expected: Any) -> None:
    items = [{"i": i} for i in range(7)]
    count, shown = page(items, params)
    assert (count, [d["i"] for d in shown]) == expected


@pytest.mark.parametrize("value", ["0", "501", "²", "9" * 5000, "1.5", "-2"])
def test_a_bad_page_size_is_a_clean_431(value: str) -> None:
    with pytest.raises(ApiError) as info:
        page([], {"pagesize": value})
    assert info.value.code == 431 and info.value.text.isascii()
