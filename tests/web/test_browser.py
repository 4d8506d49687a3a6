"""
The web UI in a real browser (Debian chromium through Selenium) against a real
``vmsnap serve`` process: sign in, the ``Quiesce VM`` checkbox rule, a quiesced VM
snapshot whose states change on the page without a reload, its timeline picture,
revert and delete, and a second user who sees only the VMs of their account.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.e2e.conftest import e2e_config
from tests.e2e.serve_fixtures import API_KEYS, SECRET, Server
from tests.support import write_config
from tests.web.browser import require_browser, screenshot, start_browser, until

pytestmark = pytest.mark.slow

ALICE_SECRET = "s3cret-alice-0123456789"
ALICE_KEY = {
    "user": "alice",
    "api_key": "AK-alice",
    "secret_file": "alice.secret",
    "role": "user",
    "account": "acme",
}
DELAY_S = 1.5  # each delayed simulated call: long enough to see its state on the page
#: What the pre-freeze hook of vm-kvm prints: markup, a script, a terminal escape and a
#: right-to-left override.
MARKUP = '<b id="injected">bold</b><script>document.title="pwned"</script>'
HOSTILE = MARKUP + "\x1b[31mred\u202e\n"
#: vm-kvm's hooks: host commands (real processes on the host of the serve process).
KVM_HOOKS = {
    "pre_freeze": {
        "run": ["/bin/sh", "-c", f"printf '%s\\033[31mred\\342\\200\\256\\n' '{MARKUP}'"],
        "where": "host",
        "timeout_s": 30,
    },
    "post_thaw": {"run": ["/bin/sh", "-c", "echo resumed"], "where": "host", "timeout_s": 30},
}


class UiServer(Server):
    """``vmsnap serve`` on the e2e world: esx1 and netapp-1 answer slowly, ``alice``
    (role user, account acme) owns ``vm-xen``, and ``vm-kvm`` has host hooks."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        base = e2e_config(netapp_delay_s={"take_vm_snapshot": DELAY_S})
        hypervisors = [
            {**h, "delay_s": {"quiesce": DELAY_S}} if h["name"] == "esx1" else h
            for h in base.hypervisors
        ]
        extra = {"vm-xen": {"account": "acme"}, "vm-kvm": {"hooks": KVM_HOOKS}}
        vms = [{**v, **extra.get(v["id"], {})} for v in base.vms]
        config = attrs.evolve(base, hypervisors=hypervisors, vms=vms)
        write_config(folder, config.with_tables(*API_KEYS, ("[[api.keys]]", ALICE_KEY)))
        secret = folder / "alice.secret"
        secret.write_text(ALICE_SECRET + "\n", encoding="utf-8")
        secret.chmod(0o600)  # serve refuses a secret file others may read

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    require_browser()
    s = UiServer(tmp_path_factory.mktemp("ui")).start()
    yield s
    assert s.stop() == 0, s.stderr


@pytest.fixture(scope="module")
def browser(server: UiServer) -> Iterator[Any]:
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: Any, server: UiServer) -> Any:
    """The browser, signed out (no cookies)."""
    browser.get(server.url + "/signin")
    browser.delete_all_cookies()
    return browser


def by_label(driver: Any, text: str) -> Any:
    """The control whose label says ``text`` (as a user or a screen reader finds it)."""
    from selenium.webdriver.common.by import By

    label = driver.find_element(By.XPATH, f".//label[normalize-space()={text!r}]")
    target = label.get_attribute("for")
    if target:
        return driver.find_element(By.ID, target)
    return label.find_element(By.TAG_NAME, "input")


def sign_in(driver: Any, server: UiServer, user: str, secret: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server.url + "/signin")
    by_label(driver, "Username").send_keys(user)
    by_label(driver, "Secret").send_keys(secret)
    driver.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()


def text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)


def test_sign_in_refuses_a_wrong_secret_without_saying_which_part_and_signs_out(
    page: Any, server: UiServer
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(page, server, "admin", "wrong")
    error = page.find_element(By.ID, "signin-error").text
    assert error == "Sign-in failed: that user name and secret do not match."
    sign_in(page, server, "nobody", SECRET)
    assert page.find_element(By.ID, "signin-error").text == error
    screenshot(page, "signin-failed")

    sign_in(page, server, "admin", SECRET)
    until(page, lambda d: d.find_elements(By.XPATH, "//h1[.='Instances']"), "the instances")
    cookie = page.get_cookie("vmsnap_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert "expiry" in cookie
    page.find_element(By.XPATH, "//button[normalize-space()='Sign out']").click()
    until(page, lambda d: d.find_elements(By.XPATH, "//h1[.='Sign in']"), "the sign-in page")
    page.get(server.url + "/")
    assert page.current_url.endswith("/signin")


def section(driver: Any, vm_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, f"vm-{vm_id}")


def volume_row(driver: Any, volume_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, f"volume-{volume_id}")


def labels(element: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [el.text.strip() for el in element.find_elements(By.TAG_NAME, "label")]


def test_the_quiesce_checkbox_is_offered_only_where_the_pool_advertises_it(
    page: Any, server: UiServer
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(page, server, "admin", SECRET)
    capable, default, storage_only = (volume_row(page, v) for v in ("vol-2", "vol-1", "vol-3"))
    assert "VOLUME_SNAPSHOT_QUIESCEVM" in capable.text
    assert labels(capable) == ["Quiesce VM"]
    assert labels(default) == [] and labels(storage_only) == []
    for row in (capable, default, storage_only):
        button = row.find_element(By.TAG_NAME, "button")
        assert button.text == "Take volume snapshot"
    screenshot(page, "instances")

    # A quiesced volume snapshot on the capable pool is taken and shown live.
    capable.find_element(By.XPATH, ".//label[normalize-space()='Quiesce VM']//input").click()
    capable.find_element(By.TAG_NAME, "button").click()
    until(
        page,
        lambda d: "ready" in volume_row(d, "vol-2").find_element(By.CLASS_NAME, "vsnaps").text,
        "the volume snapshot ready",
    )
    # A forged quiesce request for a pool without the cap is refused by the server.
    page.execute_script(
        "var f = document.querySelector('#volume-vol-1 form');"
        "var i = document.createElement('input'); i.type = 'hidden'; i.name = 'quiesce';"
        "i.value = 'on'; f.appendChild(i); f.submit();"
    )
    until(page, lambda d: d.find_elements(By.XPATH, "//h1[.='Refused']"), "the refusal")
    assert "does not advertise VOLUME_SNAPSHOT_QUIESCEVM" in text(page)


def test_a_quiesced_vm_snapshot_is_watched_live_drawn_reverted_and_deleted(
    page: Any, server: UiServer
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(page, server, "admin", SECRET)
    vm = section(page, "vm-1").find_element(By.CSS_SELECTOR, "details.take")
    by_label(vm, "Name").send_keys("before-upgrade")
    by_label(vm, "Description").send_keys("taken from the web UI")
    vm.find_element(By.XPATH, ".//label[normalize-space()='Quiesce VM']//input").click()
    vm.find_element(By.XPATH, ".//button[normalize-space()='Take VM snapshot']").click()

    def state_of(d: Any) -> str:
        link = d.find_element(By.LINK_TEXT, "before-upgrade")
        return str(link.find_element(By.XPATH, "./following-sibling::span[1]").text)

    until(page, lambda d: d.find_elements(By.LINK_TEXT, "before-upgrade"), "the new snapshot")
    page.execute_script("window.vmsnapNoReload = true;")  # gone if the page reloads
    seen = [
        until(
            page,
            lambda d: state_of(d) in {"quiescing", "snapshotting"} and state_of(d),
            "an intermediate state",
        )
    ]
    page.execute_script("document.getElementById('vm-vm-1').scrollIntoView();")
    screenshot(page, "live-state", full=False)
    seen.append(
        until(page, lambda d: state_of(d) == "snapshotting" and "snapshotting", "snapshotting")
    )
    until(page, lambda d: state_of(d) == "ready", "the snapshot ready")
    until(
        page,
        lambda d: section(d, "vm-1").find_element(By.CLASS_NAME, "op").text == "none",
        "no operation in flight",
    )
    assert page.execute_script("return window.vmsnapNoReload === true;"), "the page reloaded"
    assert "snapshotting" in seen

    # Its page: the fields, the freeze window and each driver's answer in the picture.
    page.find_element(By.LINK_TEXT, "before-upgrade").click()
    until(
        page,
        lambda d: d.find_elements(By.XPATH, "//h1[.='Snapshot before-upgrade']"),
        "the snapshot's page",
    )
    screenshot(page, "snapshot-timeline")
    assert "requested: yes; quiesced: yes" in text(page)
    picture = page.find_element(By.CSS_SELECTOR, "svg.timeline")
    assert picture.find_elements(By.CSS_SELECTOR, "g.freeze rect"), "no freeze window"
    drawn = picture.get_attribute("textContent")
    assert "take_vm_snapshot → true" in drawn  # netapp-1 and pure-1 captured their volumes
    assert "quiesce → quiesced=true" in drawn, drawn[:400]
    assert "AND rule: " in drawn and "need_unquiesce=false" in drawn
    for lane in ("freeze window", "esx1", "primary-1", "netapp-1", "pure-1", "decision"):
        assert lane in drawn
    assert "Snapshot.UnquiesceDecided" in text(page)  # the table of the same events

    # Revert, with a confirmation, then delete.
    page.find_element(By.LINK_TEXT, "Revert to this snapshot").click()
    assert "Revert snapshot before-upgrade?" in text(page)
    page.find_element(By.XPATH, "//button[normalize-space()='Yes, revert it']").click()
    until(page, lambda d: d.find_elements(By.LINK_TEXT, "before-upgrade"), "the instances")
    until(page, lambda d: state_of(d) == "ready", "ready after the revert")
    page.find_element(By.LINK_TEXT, "before-upgrade").click()
    page.find_element(By.LINK_TEXT, "Delete this snapshot").click()
    screenshot(page, "confirm-delete")
    page.find_element(By.XPATH, "//button[normalize-space()='Yes, delete it']").click()
    until(page, lambda d: d.find_elements(By.ID, "vm-vm-1"), "the instances")
    until(
        page,
        lambda d: not d.find_elements(By.LINK_TEXT, "before-upgrade") or state_of(d) == "removed",
        "the snapshot removed",
    )


def test_a_second_user_sees_only_the_vms_of_their_account(page: Any, server: UiServer) -> None:
    from selenium.webdriver.common.by import By

    sign_in(page, server, "alice", ALICE_SECRET)
    until(page, lambda d: d.find_elements(By.XPATH, "//h1[.='Instances']"), "the instances")
    ids = [s.get_attribute("id") for s in page.find_elements(By.CSS_SELECTOR, "section.instance")]
    assert ids == ["vm-vm-xen"]
    assert "vm-1" not in text(page)
    assert "crash-consistent" in section(page, "vm-xen").text  # XenServer ignores quiesce
    assert not page.find_elements(By.LINK_TEXT, "Audit")  # admins only
    screenshot(page, "second-user")
    page.get(server.url + "/audit")
    assert "Only administrators" in text(page)


def test_pools_and_audit_pages(page: Any, server: UiServer) -> None:
    from selenium.webdriver.common.by import By

    sign_in(page, server, "admin", SECRET)
    page.find_element(By.LINK_TEXT, "Storage pools").click()
    row = page.find_element(By.XPATH, "//tr[th[.='netapp-1']]")
    assert row.text.split()[-2:] == ["yes", "yes"]
    screenshot(page, "pools")
    page.find_element(By.LINK_TEXT, "Audit").click()
    assert page.find_element(By.ID, "verify-result").text.startswith("The log checks out")
    assert ":" in page.find_element(By.ID, "chain-head").text
    screenshot(page, "audit")


def take_quiesced(page: Any, vm_id: str, name: str) -> None:
    """Take a quiesced VM snapshot of ``vm_id`` from the instances page; open its page."""
    from selenium.webdriver.common.by import By

    vm = section(page, vm_id)
    vm.find_element(By.TAG_NAME, "summary").click()  # open the form
    form = vm.find_element(By.CSS_SELECTOR, "details.take")
    by_label(form, "Name").send_keys(name)
    form.find_element(By.XPATH, ".//label[normalize-space()='Quiesce VM']//input").click()
    form.find_element(By.XPATH, ".//button[normalize-space()='Take VM snapshot']").click()
    until(page, lambda d: d.find_elements(By.LINK_TEXT, name), "the new snapshot")
    link = page.find_element(By.LINK_TEXT, name)
    state = link.find_element(By.XPATH, "./following-sibling::span[1]")
    until(page, lambda d: state.text == "ready", "the snapshot ready")
    link.click()


def test_a_kvm_snapshot_draws_the_freeze_from_quiesce_to_thaw(page: Any, server: UiServer) -> None:
    from selenium.webdriver.common.by import By

    sign_in(page, server, "admin", SECRET)
    take_quiesced(page, "vm-kvm", "kvm-nightly")
    picture = until(
        page, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.timeline"), "the picture"
    )[0]
    drawn = picture.get_attribute("textContent")
    assert "frozen " in drawn and "quiesce → quiesced=true, frozen=true" in drawn
    assert "unquiesce → thawed=true" in drawn
    screenshot(page, "snapshot-timeline-kvm")


def test_hooks_are_drawn_around_the_freeze_and_their_output_is_shown_escaped(
    page: Any, server: UiServer
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(page, server, "admin", SECRET)
    take_quiesced(page, "vm-kvm", "kvm-hooked")
    picture = until(
        page, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.timeline"), "the picture"
    )[0]
    lanes = [
        e.get_attribute("textContent") for e in picture.find_elements(By.CSS_SELECTOR, "text.lane")
    ]
    assert lanes[:3] == ["freeze window", "hooks", "kvm1"], lanes
    drawn = picture.get_attribute("textContent")
    assert "pre-freeze hook → ok, exit 0, " in drawn and "post-thaw hook → ok, exit 0, " in drawn
    assert "consistency: application" in text(page)

    table = page.find_element(By.ID, "hooks")
    rows = [
        [c.text for c in r.find_elements(By.XPATH, "./th | ./td")][:6]
        for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    assert [r[:2] + r[3:5] for r in rows] == [
        ["Pre-freeze hook", "host", "ok", "0"],
        ["Post-thaw hook", "host", "ok", "0"],
    ]
    assert rows[0][2].startswith("/bin/sh -c printf") and rows[0][5].endswith(" ms")
    # The output is collapsed, then shown as text: no markup ran, the controls are visible.
    output = table.find_element(By.CSS_SELECTOR, "tbody tr details.output")
    pre = output.find_element(By.TAG_NAME, "pre")
    assert output.get_attribute("open") is None and not pre.is_displayed()
    output.find_element(By.TAG_NAME, "summary").click()
    until(page, lambda d: pre.is_displayed(), "the output shown")
    assert pre.text == MARKUP + "\\x1b[31mred\\u202e"
    assert not page.find_elements(By.ID, "injected") and page.title != "pwned"
    screenshot(page, "snapshot-hooks")
