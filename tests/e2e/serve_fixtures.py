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
from pathlib import Path
from typing import Any

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
        self.config = write_config(folder, e2e_config(**config).with_tables(*API_KEYS))
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
            env={SECRET_ENV: SECRET},
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
