"""
The web UI in-process (Starlette's TestClient, no browser): the session cookie, CSRF
tokens, the access rule, refusals in words, and the timeline picture's parts.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.conftest import VendorPool, world_config
from tests.support import wait_for, write_config
from tests.web.conftest import (
    ADMIN_SECRET,
    ALICE_SECRET,
    ALICE_VM,
    ENV,
    csrf_of,
    sign_in,
    web_config,
)
from vmsnap import Controller
from vmsnap.config import load
from vmsnap.domain.exceptions import ConfigError
from vmsnap.web import model, timeline
from vmsnap.web.access import Directory, User, visible_vms
from vmsnap.web.app import MAX_FORM_BYTES, WebUi
from vmsnap.web.session import COOKIE, Session, Sessions


def set_cookie(response_headers: list[str]) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response_headers:
        jar.load(header)
    return jar


# The session cookie -----------------------------------------------------------------


def test_the_session_cookie_is_signed_and_expires() -> None:
    now = [1000.0]
    sessions = Sessions(b"k" * 32, lifetime_s=60, clock=lambda: now[0])
    session = sessions.new("admin")
    cookie = sessions.dump(session)
    assert sessions.load(cookie) == session
    body, signature = cookie.rsplit(".", 1)
    forged = Sessions(b"x" * 32).dump(Session("root", session.csrf, session.expires))
    for bad in (None, "", "nodot", f"{body}.{signature[:-2]}AA", forged, f"{body}x.{signature}"):
        assert sessions.load(bad) is None
    now[0] += 61
    assert sessions.load(cookie) is None  # expired
    assert Sessions().load(cookie) is None  # another process's secret


def test_a_malformed_but_signed_cookie_is_refused() -> None:
    sessions = Sessions(b"k" * 32)
    sign = sessions._sign
    for payload in ("bm90IGpzb24", "eyJ1IjogMX0", "eyJ1IjoxLCJjIjoiYSIsImUiOjF9"):
        assert sessions.load(f"{payload}.{sign(payload)}") is None


def test_sign_in_sets_an_httponly_strict_cookie_secure_behind_tls(ui: WebUi) -> None:
    with TestClient(ui.app, base_url="https://testserver") as client:
        token = csrf_of(client.get("/signin").text)
        r = client.post(
            "/signin",
            data={"csrf": token, "username": "admin", "secret": ADMIN_SECRET},
            follow_redirects=False,
        )
        assert (r.status_code, r.headers["location"]) == (303, "/")
        morsel = set_cookie(r.headers.get_list("set-cookie"))[COOKIE]
        assert morsel["httponly"] and morsel["secure"]
        assert morsel["samesite"] == "strict" and int(morsel["max-age"]) > 0
        # A new session at sign-in: the token of the visitor's session is not reused.
        assert ui.sessions.load(morsel.value).csrf != token  # type: ignore[union-attr]


def test_wrong_credentials_get_one_message_whichever_part_was_wrong(client: TestClient) -> None:
    answers = set()
    for user, secret in (("admin", "nope"), ("nobody", ADMIN_SECRET), ("alice", ADMIN_SECRET)):
        token = csrf_of(client.get("/signin").text)
        r = client.post("/signin", data={"csrf": token, "username": user, "secret": secret})
        assert r.status_code == 401
        answers.add(r.text.split('id="signin-error">')[1].split("<")[0])
    assert answers == {"Sign-in failed: that user name and secret do not match."}


def test_sign_in_needs_the_forms_token(client: TestClient) -> None:
    client.get("/signin")
    r = client.post("/signin", data={"username": "admin", "secret": ADMIN_SECRET})
    assert r.status_code == 400 and "expired" in r.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session(client: TestClient) -> None:
    token = sign_in(client)
    r = client.post("/signout", data={"csrf": token})
    assert r.url.path == "/signin"
    assert client.get("/", follow_redirects=False).headers["location"] == "/signin"
    assert client.get("/state.json").status_code == 401


def test_every_page_has_a_strict_content_security_policy(client: TestClient) -> None:
    sign_in(client)
    for path in ("/", "/signin", "/pools", "/audit", "/static/app.js", "/state.json"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert "http" not in client.get("/").text.split("<body>")[0].replace("http-equiv", "")


# CSRF ------------------------------------------------------------------------------


def test_a_post_without_the_sessions_token_is_refused(client: TestClient) -> None:
    token = sign_in(client)
    for fields in ({}, {"csrf": "forged"}, {"csrf": token[:-1]}):
        r = client.post("/vms/vm-vmware/snapshots", data=fields)
        assert r.status_code == 403 and "expired" in r.text
    assert client.get("/state.json").json()["snapshots"] == {}


def test_a_post_of_a_visitor_who_did_not_sign_in_is_refused(client: TestClient) -> None:
    token = csrf_of(client.get("/signin").text)
    assert client.post("/vms/vm-vmware/snapshots", data={"csrf": token}).status_code == 403
    assert client.post("/signout", data={"csrf": token}).status_code == 403


def test_a_form_too_large_is_refused(client: TestClient) -> None:
    token = sign_in(client)
    big = "x" * (MAX_FORM_BYTES + 1)
    r = client.post("/vms/vm-vmware/snapshots", data={"csrf": token, "name": big})
    assert r.status_code == 413
    assert client.post("/signin", data={"secret": big}).status_code == 413


# The access rule --------------------------------------------------------------------


def test_an_admin_sees_every_vm_and_a_user_those_of_their_account(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, web_config()))
    admin, alice = User("admin", "admin", "admin"), User("alice", "user", "acme")
    assert visible_vms(admin, config) == [vm.id for vm in config.vms]
    assert visible_vms(alice, config) == [ALICE_VM]
    assert visible_vms(User("bob", "user", "bob"), config) == []
    directory = Directory.from_config(config, ENV)
    assert directory.check("alice", ALICE_SECRET) == alice
    assert directory.check("alice", ADMIN_SECRET) is None
    assert directory.user("alice") == alice and directory.user("carol") is None


def test_the_config_knows_roles_and_accounts(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, web_config()))
    assert [(k.user, k.role, k.account) for k in config.api_keys] == [
        ("admin", "admin", None),
        ("alice", "user", "acme"),
    ]
    assert config.vm_accounts == {ALICE_VM: "acme"}
    bad = web_config().with_tables(
        ("[[api.keys]]", {"user": "eve", "api_key": "AK-eve", "secret_env": "X", "role": "root"})
    )
    with pytest.raises(ConfigError, match="role"):
        load(write_config(tmp_path, bad))


def test_a_user_neither_sees_nor_acts_on_another_accounts_vm(
    client: TestClient, web_controller: Controller
) -> None:
    theirs = web_controller.create_vm_snapshot("vm-vmware", "theirs")
    token = sign_in(client, "alice", ALICE_SECRET)
    page = client.get("/").text
    assert 'id="vm-vm-xen"' in page and "vm-vmware" not in page
    assert "crash-consistent" in page  # vm-xen's hypervisor ignores quiesce
    assert set(client.get("/state.json").json()["vms"]) == {ALICE_VM}
    for path in (f"/snapshots/{theirs.id}", f"/snapshots/{theirs.id}/delete"):
        assert client.get(path).status_code == 404
    for path in (
        "/vms/vm-vmware/snapshots",
        "/volumes/vmw-data/snapshots",
        f"/snapshots/{theirs.id}/delete",
    ):
        assert client.post(path, data={"csrf": token}).status_code == 404
    assert web_controller.get_vm_snapshot(theirs.id).state == "ready"
    assert client.get("/audit").status_code == 403
    assert client.get("/audit/export").status_code == 403


# Operations and their refusals ------------------------------------------------------


def test_refusals_are_shown_in_words(client: TestClient, web_controller: Controller) -> None:
    token = sign_in(client)
    r = client.post("/volumes/vmw-root/snapshots", data={"csrf": token, "quiesce": "on"})
    assert r.status_code == 400 and "does not advertise VOLUME_SNAPSHOT_QUIESCEVM" in r.text
    r = client.post("/vms/vm-stopped/snapshots", data={"csrf": token, "memory": "on"})
    assert r.status_code == 400 and "needs it Running" in r.text
    assert client.get("/snapshots/nope").status_code == 404
    assert client.post("/snapshots/nope/revert", data={"csrf": token}).status_code == 404
    snap = web_controller.create_vm_snapshot("vm-vmware", "one")
    assert client.get(f"/snapshots/{snap.id}/explode").status_code == 404
    assert client.post(f"/snapshots/{snap.id}/explode", data={"csrf": token}).status_code == 404


def test_operations_run_in_the_background_and_are_shown(
    client: TestClient, web_controller: Controller
) -> None:
    token = sign_in(client)
    r = client.post("/vms/vm-vmware/snapshots", data={"csrf": token, "name": "a", "quiesce": "on"})
    assert r.status_code == 200 and r.url.fragment == "vm-vm-vmware"
    [snap] = web_controller.list_vm_snapshots("vm-vmware")

    def settled() -> bool:
        return web_controller.get_vm_snapshot(snap.id).state == "ready"

    wait_for(settled, 30, "the snapshot ready")
    page = client.get(f"/snapshots/{snap.id}").text
    assert "take_vm_snapshot → true" in page and 'class="bar freeze"' in page
    assert client.get(f"/snapshots/{snap.id}/revert").status_code == 200
    client.post(f"/snapshots/{snap.id}/revert", data={"csrf": token})
    wait_for(lambda: web_controller.list_vms()[0].operation is None, 30, "the revert done")
    client.post("/volumes/vmw-data/snapshots", data={"csrf": token, "quiesce": "on"})

    def volume_snapshot_ready() -> bool:
        states = client.get("/state.json").json()["volume_snapshots"].values()
        return [s["state"] for s in states] == ["ready"]

    wait_for(volume_snapshot_ready, 30, "the volume snapshot ready")
    wait_for(lambda: web_controller.list_vms()[0].operation is None, 30, "the VM free")
    r = client.post(f"/snapshots/{snap.id}/delete", data={"csrf": token})
    assert r.status_code == 200, r.text
    wait_for(lambda: not web_controller.list_vm_snapshots("vm-vmware"), 30, "the delete")
    export = client.get("/audit/export")
    assert export.headers["content-disposition"].startswith("attachment")
    assert '"type":"Snapshot.Removed"' in export.text
    assert "The log checks out" in client.get("/audit").text


def test_the_picture_draws_failures_and_compensations_in_their_colours(tmp_path: Path) -> None:
    config = web_config(world_config(pure=VendorPool(faults={"take_vm_snapshot": "fail"})))
    with Controller.from_config(write_config(tmp_path, config)) as c:
        snap = c.create_vm_snapshot("vm-vmware", quiesce=True)
        assert snap.state == "failed"
        events = c.audit_timeline(snap.id)
    found, lanes, span = timeline.bars(events)
    kinds = {b.kind for b in found}
    assert {"call", "failure", "compensation", "freeze"} <= kinds
    assert lanes[:2] == ["freeze window", "esx1"] and "failures" in lanes and span > 0
    picture = timeline.svg(events, actor="alice <ops>")
    assert "actor: alice &lt;ops&gt;" in picture and 'class="bar failure"' in picture
    assert timeline.svg([]).startswith("<svg") and timeline.offsets(events)[0] == ""


def test_snapshots_are_shown_as_a_tree_with_the_current_one_marked(
    client: TestClient, web_controller: Controller
) -> None:
    first = web_controller.create_vm_snapshot("vm-vmware", "first")
    second = web_controller.create_vm_snapshot("vm-vmware", "second")
    web_controller.revert_vm_snapshot(first.id)
    third = web_controller.create_vm_snapshot("vm-vmware", "third")
    [root] = model.tree(web_controller.list_vm_snapshots("vm-vmware"))
    assert root.snap.id == first.id
    assert [c.snap.id for c in root.children] == [second.id, third.id]
    sign_in(client)
    page = client.get("/").text
    tree = page.split('id="tree-vm-vmware"')[1].split("</ul>\n")[0]
    assert tree.index("first") < tree.index("<ul>") < tree.index("second")
    assert tree.count('class="tag">current') == 1
    assert tree.index("third") < tree.index('class="tag">current')


def test_an_operation_on_a_busy_vm_is_a_conflict_in_words(tmp_path: Path) -> None:
    slow = world_config(hypervisor_delays={"esx1": {"quiesce": 1.0}})
    with Controller.from_config(write_config(tmp_path, web_config(slow))) as c:
        web = WebUi(c, Directory.from_config(c.config, ENV))
        try:
            with TestClient(web.app) as client:
                token = sign_in(client)
                data = {"csrf": token, "quiesce": "on"}
                assert client.post("/vms/vm-vmware/snapshots", data=data).status_code == 200
                r = client.post("/vms/vm-vmware/snapshots", data=data)
                assert r.status_code == 409 and "in progress" in r.text
                assert "Operation in flight" in client.get("/").text
        finally:
            web.close()  # waits for the first snapshot
        [snap] = c.list_vm_snapshots("vm-vmware")
        assert snap.state == "ready"


def test_tokens_and_cookies_that_are_not_ascii_are_refused_not_crashed(
    client: TestClient,
) -> None:
    token = sign_in(client)
    assert client.post("/signout", data={"csrf": token + "é"}).status_code == 403
    assert Sessions().load("e30.é") is None
