"""
PostgreSQL for the tests: the server ``.ci/run`` started ($VMSNAP_TEST_POSTGRES_URL), else
a throwaway cluster of our own (scripts/throwaway-postgres.sh) for the session; a fresh
database per test. Without either the tests fail when $VMSNAP_REQUIRE_POSTGRES=1 (CI),
and are skipped with a loud reason otherwise.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "throwaway-postgres.sh"
START_TIMEOUT_S = 120


def _unavailable(reason: str) -> None:
    if os.environ.get("VMSNAP_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (VMSNAP_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"POSTGRESQL TESTS NOT RUN: {reason}")


def with_database(url: str, dbname: str) -> str:
    """``url`` naming the database ``dbname`` instead (settings kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def admin(server: str) -> Any:
    import psycopg

    return psycopg.connect(with_database(server, "postgres"), autocommit=True)


def create_database(server: str, template: str | None = None) -> str:
    """A new empty database (or a copy of ``template``); return its URL."""
    name = f"vmsnap_test_{uuid.uuid4().hex[:12]}"
    copy = f" TEMPLATE {template}" if template else ""
    with admin(server) as conn:
        conn.execute(f"CREATE DATABASE {name}{copy}")
    return with_database(server, name)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with admin(url) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server the tests may create databases on."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[postgres]')")
    url = os.environ.get("VMSNAP_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    folder = tempfile.mkdtemp(prefix="vmsnap-pg.", dir="/tmp")
    try:
        started = subprocess.run(
            ["bash", str(SCRIPT), "start", folder],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
        if started.returncode != 0:
            _unavailable(f"no throwaway cluster could start: {started.stderr.strip()[-400:]}")
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", folder], timeout=START_TIMEOUT_S, check=False)


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A new, empty (not migrated) database for one test."""
    url = create_database(postgres_server)
    try:
        yield url
    finally:
        drop_database(url)
