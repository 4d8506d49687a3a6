"""
``vmsnap serve`` bounded before authenticated (#16): body size, read deadlines, the
connection cap, and a client that goes away.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.serve_fixtures import Server, raw
from tests.support import WAIT_S, wait_for

pytestmark = pytest.mark.slow
LIMITS = {"max_body_bytes": 4096, "read_timeout_s": 1.0, "max_connections": 20}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path, api=LIMITS).start()
    yield s
    s.stop()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
    return sock


def answer_of(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_declared_body_over_max_body_bytes_is_413_unread_and_unauthenticated(
    server: Server,
) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /client/api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 62914560\r\n\r\ncommand=listVolumes&"
        )
        data = answer_of(sock)
    assert data.startswith(b"HTTP/1.1 413 ")
    assert b"<errorcode>413</errorcode>" in data  # no response=json: XML
    assert raw(server, {"command": "listVolumes", "response": "json"}).status_code == 200


def test_a_streamed_body_is_cut_at_max_body_bytes(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /client/api?response=json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"a" * 1000
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(10):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        data = answer_of(sock)
    assert data.startswith(b"HTTP/1.1 413 ")
    assert b'"cserrorcode"' in data


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # idle
        b"GET /client/api?command=listVolumes HTTP/1.1\r\nHost: x\r\n",  # half the headers
        b"POST /client/api HTTP/1.1\r\nHost: x\r\n"  # half the body
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nab",
    ],
    ids=["idle", "half-header", "half-body"],
)
def test_slow_connections_are_closed_after_read_timeout_s(server: Server, sent: bytes) -> None:
    with connect(server) as sock:
        sock.sendall(sent)
        data = answer_of(sock)  # returns once the server has closed the connection
    assert data == b"" or data.startswith(b"HTTP/1.1 408 ")


def test_hostile_connections_beyond_the_cap_do_not_lock_clients_out(server: Server) -> None:
    hostile = [connect(server) for _ in range(3 * LIMITS["max_connections"])]
    try:
        for sock in hostile:
            sock.sendall(b"GET /client/api HTTP/1.1\r\n")  # and never more
        # The cap answers 503 meanwhile; the deadline frees the slots within a second.
        wait_for(
            lambda: raw(server, {"command": "listVolumes", "response": "json"}).status_code == 200,
            WAIT_S,
            "a signed request to be served beside hostile connections",
        )
    finally:
        for sock in hostile:
            sock.close()


def test_a_client_that_goes_away_mid_request_leaves_no_traceback(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /client/api HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nab"
        )
    assert raw(server, {"command": "listVolumes", "response": "json"}).status_code == 200
    server.stop()
    assert "Traceback" not in server.stderr
