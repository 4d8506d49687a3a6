"""
The web UI's world: the shared simulated world (tests/conftest.py) with two users who
may sign in: ``admin`` (role admin, sees every VM) and ``alice`` (role user, account
``acme``, which owns ``vm-xen`` only).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from starlette.testclient import TestClient

from tests.conftest import world_config
from tests.support import Config, write_config
from vmsnap import Controller
from vmsnap.web.access import Directory
from vmsnap.web.app import WebUi

ADMIN_SECRET, ALICE_SECRET = "s3cret-admin-0123456789", "s3cret-alice-0123456789"
ENV = {"WEB_ADMIN_SECRET": ADMIN_SECRET, "WEB_ALICE_SECRET": ALICE_SECRET}
KEYS = (
    ("[[api.keys]]", {"user": "admin", "api_key": "AK-admin", "secret_env": "WEB_ADMIN_SECRET"}),
    (
        "[[api.keys]]",
        {
            "user": "alice",
            "api_key": "AK-alice",
            "secret_env": "WEB_ALICE_SECRET",
            "role": "user",
            "account": "acme",
        },
    ),
)
ALICE_VM = "vm-xen"


def web_config(base: Config | None = None) -> Config:
    """``base`` (default: the shared world) with the two users, ``vm-xen`` owned by acme."""
    base = base or world_config()
    vms: list[Mapping[str, Any]] = [
        {**vm, "account": "acme"} if vm["id"] == ALICE_VM else vm for vm in base.vms
    ]
    return attrs.evolve(base, vms=vms).with_tables(*KEYS)


@pytest.fixture
def web_controller(tmp_path: Path) -> Iterator[Controller]:
    with Controller.from_config(write_config(tmp_path, web_config())) as c:
        yield c


@pytest.fixture
def ui(web_controller: Controller) -> Iterator[WebUi]:
    web = WebUi(web_controller, Directory.from_config(web_controller.config, ENV))
    yield web
    web.close()


@pytest.fixture
def client(ui: WebUi) -> Iterator[TestClient]:
    with TestClient(ui.app, base_url="http://testserver") as c:
        yield c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, user: str = "admin", secret: str = ADMIN_SECRET) -> str:
    """Sign in; return the CSRF token of the signed-in session."""
    token = csrf_of(client.get("/signin").text)
    r = client.post("/signin", data={"csrf": token, "username": user, "secret": secret})
    assert r.status_code == 200, r.text  # followed the redirect to the instances
    return csrf_of(r.text)
