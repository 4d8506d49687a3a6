"""
A real ``vmsnap serve`` process on a free loopback port, and ``cs`` clients for it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import requests
from cs import CloudStack, CloudStackApiException

from tests.e2e.conftest import TIMEOUT_S, e2e_config, start
from tests.support import WAIT_S, write_config

KEY, SECRET = "AK-admin", "s3cret-admin-0123456789"
FILE_KEY, FILE_SECRET = "AK-ops", "s3cret-ops-0123456789"
SECRET_ENV = "CS_TEST_ADMIN_SECRET"
API_KEYS = (
    ("[[api.keys]]", {"user": "admin", "api_key": KEY, "secret_env": SECRET_ENV}),
    ("[[api.keys]]", {"user": "ops", "api_key": FILE_KEY, "secret_file": "ops.secret"}),
)
#: Tenants (role "user"): ann of account acme, bob of account globex.
ANN_KEY, ANN_SECRET, BOB_KEY, BOB_SECRET = "AK-ann", "ann-secret-0123456789", "AK-bob", "bob-" * 5
TENANT_KEYS = (
    (
        "[[api.keys]]",
        {
            "user": "ann",
            "api_key": ANN_KEY,
            "secret_env": "CS_ANN",
            "account": "acme",
            "role": "user",
        },
    ),
    (
        "[[api.keys]]",
        {
            "user": "bob",
            "api_key": BOB_KEY,
            "secret_env": "CS_BOB",
            "account": "globex",
            "role": "user",
        },
    ),
)
#: vm-1 and vm-kvm belong to acme, vm-xen to globex; the others to nobody (admins only).
ACCOUNTS = {"vm-1": "acme", "vm-kvm": "acme", "vm-xen": "globex"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """
    ``vmsnap serve`` on the e2e test world (tests/e2e/conftest.py) plus two API users:
    ``admin`` (secret from the environment) and ``ops`` (secret from a file).
    """

    def __init__(
        self,
        folder: Path,
        *,
        api: Mapping[str, Any] | None = None,
        tenants: bool = False,
        **config: Any,
    ) -> None:
        self.folder = folder
        world = e2e_config(**config)
        tables: list[tuple[str, Mapping[str, Any]]] = [("[api]", api)] if api else []
        tables += API_KEYS
        if tenants:
            vms = [
                {**v, "account": ACCOUNTS[v["id"]]} if v["id"] in ACCOUNTS else v for v in world.vms
            ]
            world = attrs.evolve(world, vms=vms)
            tables += TENANT_KEYS
        self.config = write_config(folder, world.with_tables(*tables))
        (folder / "ops.secret").write_text(FILE_SECRET + "\n", encoding="utf-8")
        (folder / "ops.secret").chmod(0o600)
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/client/api"

    def start(self) -> Server:
        self.proc = start(
            "--config",
            self.config,
            "serve",
            "--port",
            str(self.port),
            cwd=self.folder,
            env={SECRET_ENV: SECRET, "CS_ANN": ANN_SECRET, "CS_BOB": BOB_SECRET},
        )
        # Wait for the server to say it listens (the socket is bound and listening before it
        # says so): a line on its standard error, or its end.
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()  # raw reads: nothing waits unseen in a buffer
        said = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            deadline = time.monotonic() + WAIT_S
            while b"serving on " not in said:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"serve did not say it was serving in {WAIT_S:g} s")
                chunk = os.read(fd, 4096)
                if not chunk:  # end of its output: it exited
                    _, err = self.proc.communicate()
                    raise AssertionError(
                        f"serve exited {self.proc.returncode}: {said.decode()}{err}"
                    )
                said += chunk
        self.stderr = said.decode()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server (once; later calls change nothing) and return its exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            _, rest = self.proc.communicate(timeout=TIMEOUT_S)
            self.stderr += rest
        return self.proc.returncode

    def client(self, key: str | None = KEY, secret: str | None = SECRET, **kw: Any) -> CloudStack:
        # Reads may repeat within one second (same signature): polling fast is fine.
        return CloudStack(
            endpoint=self.endpoint,
            key=key,
            secret=secret,
            poll_interval=0.05,
            job_timeout=TIMEOUT_S,
            timeout=TIMEOUT_S,
            **kw,
        )


def wait_for_job(client: CloudStack, jobid: str) -> dict[str, Any]:
    """
    Wait for the job as a CloudStack client does (``cs`` polls queryAsyncJobResult itself
    with ``fetch_result``), then return its whole answer.
    """
    with contextlib.suppress(CloudStackApiException):  # a failed job: answered below too
        client.queryAsyncJobResult(jobid=jobid, fetch_result=True)
    job: dict[str, Any] = client.queryAsyncJobResult(jobid=jobid)
    return job


def signed(params: Mapping[str, str], key: str = KEY, secret: str = SECRET) -> dict[str, str]:
    """``params`` with apiKey and a signature, as ``cs`` signs (no ``expires`` added)."""
    request = {**params, "apiKey": key}
    CloudStack(endpoint="http://unused.invalid", key=key, secret=secret)._sign(request)
    return request


def raw(server: Server, params: Mapping[str, str], **kw: Any) -> requests.Response:
    """A signed GET, sent as is (``response`` only when ``params`` has it)."""
    return requests.get(server.endpoint, params=signed(params, **kw), timeout=TIMEOUT_S)
