"""
A real ``vmsnap serve`` process on a free loopback port, and ``cs`` clients for it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from cs import CloudStack

from tests.e2e.conftest import TIMEOUT_S, start, write_config

KEY, SECRET = "AK-admin", "s3cret-admin"
FILE_KEY, FILE_SECRET = "AK-ops", "s3cret-ops"
SECRET_ENV = "CS_TEST_ADMIN_SECRET"
WAIT_S = 30.0
API_KEYS = f"""
[[api.keys]]
user = "admin"
api_key = "{KEY}"
secret_env = "{SECRET_ENV}"

[[api.keys]]
user = "ops"
api_key = "{FILE_KEY}"
secret_file = "ops.secret"
"""


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

    def __init__(self, folder: Path, **config: Any) -> None:
        self.folder = folder
        self.config = write_config(folder, **config)
        with self.config.open("a", encoding="utf-8") as f:
            f.write(API_KEYS)
        (folder / "ops.secret").write_text(FILE_SECRET + "\n", encoding="utf-8")
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
            env={SECRET_ENV: SECRET},
        )
        deadline = time.monotonic() + WAIT_S
        while True:
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                raise AssertionError(f"serve exited {self.proc.returncode}: {err}")
            try:
                # Another path: answered (404) without touching the API or the log.
                requests.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return self
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise AssertionError("serve did not answer in time") from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server (once; later calls change nothing) and return its exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            _, self.stderr = self.proc.communicate(timeout=TIMEOUT_S)
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
    """Poll queryAsyncJobResult until the job is no longer pending; return its answer."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        job: dict[str, Any] = client.queryAsyncJobResult(jobid=jobid)
        if job["jobstatus"] != 0:
            return job
        assert time.monotonic() < deadline, f"job {jobid} still pending"
        time.sleep(0.05)
