"""``vmsnap serve``: the HTTP API on uvicorn, over one Controller and its job workers."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from types import FrameType

import uvicorn

from vmsnap.api.access import Inventory
from vmsnap.api.app import PATH, create_app
from vmsnap.api.auth import Authenticator
from vmsnap.api.commands import CloudStackApi
from vmsnap.api.jobs import Jobs
from vmsnap.api.protocol import bounded_protocol
from vmsnap.config import Config
from vmsnap.controller import Controller
from vmsnap.domain.exceptions import ConfigError
from vmsnap.web.access import Directory
from vmsnap.web.app import WebUi


def serve(config: Config, store_url: str | None, host: str, port: int) -> int:
    """
    Serve until interrupted (SIGINT/SIGTERM); running jobs are waited for. Operations a
    stopped server left in flight are recovered first.

    Raises:
        ConfigError: no API key, a secret missing, or the address cannot be bound.
    """
    auth = Authenticator.from_keys(config.api_keys)
    sock = _listen(host, port)
    try:
        with Controller(config, store_url, recover=True) as controller:
            jobs = Jobs(controller)
            web = WebUi(controller, Directory(auth, config.api_keys))
            try:
                api = CloudStackApi(controller, auth, jobs, Inventory.from_config(config))
                app = create_app(api, config.api)
                app.mount("/", web.app)  # the web UI (ADR 0023); /client/api is matched first
                limits = config.api
                # No access log: request lines carry api keys and signatures. No proxy
                # headers: X-Forwarded-For is believed only from [api] trusted_proxies.
                server = uvicorn.Server(
                    uvicorn.Config(
                        app,
                        log_level="warning",
                        access_log=False,
                        lifespan="off",
                        http=bounded_protocol(limits.read_timeout_s),
                        proxy_headers=False,
                        timeout_keep_alive=max(1, int(limits.read_timeout_s)),
                        limit_concurrency=limits.max_connections,
                    )
                )
                bound = sock.getsockname()
                print(f"serving on http://{bound[0]}:{bound[1]}{PATH}", file=sys.stderr)
                with _stop_on_signals():
                    server.run(sockets=[sock])
            finally:
                # No new work; a frozen guest is thawed now, not when its call returns.
                controller.stop()
                with _stop_on_signals(again=True):
                    web.close()  # waits for the operations the UI started
                    jobs.close()  # waits for the running jobs
    finally:
        sock.close()
    return 0


class _Stop(Exception):
    pass


@contextlib.contextmanager
def _stop_on_signals(*, again: bool = False) -> Iterator[None]:
    """
    uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
    handler that was there before: this one, so that the jobs are waited for and the
    store closed, and the command exits 0. ``again``: while the running operations end,
    a further signal only says what is awaited (its default action would kill the
    process between a guest's freeze and its recorded thaw).
    """

    def stop(sig: int, frame: FrameType | None) -> None:
        if again:
            print("stopping: waiting for the running operations to end", file=sys.stderr)
            return
        raise _Stop

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, stop) for sig in handled}
    try:
        yield
    except _Stop:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, proto, _, address = infos[0]
        # The TCP protocol number, so that asyncio sets TCP_NODELAY on each connection
        # (it checks sock.proto): without it every answer waited ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock
