"""PostgreSQL store URLs: what reaches eventsourcing, what is refused, what messages show."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmsnap.adapters.store import PG_SETTINGS, StoreUrl
from vmsnap.domain.exceptions import ConfigError

BASE = "postgresql://vmsnap:pw@db.example:6543/snapshots"
texts = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=20)


def env_of(url: str) -> dict[str, str]:
    return StoreUrl.parse(url, Path("/")).env()


def test_a_url_gives_the_server_and_vmsnaps_defaults_with_table_creation_off() -> None:
    env = env_of(BASE)
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("db.example", "6543")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("vmsnap", "pw")
    assert env["POSTGRES_DBNAME"] == "snapshots"
    assert env["CREATE_TABLE"] == "no"
    assert env["POSTGRES_LOCK_TIMEOUT"] != "0", "the library's default waits forever"
    assert env_of("postgresql://u@h/d")["POSTGRES_PORT"] == "5432"


@given(st.sampled_from(sorted(set(PG_SETTINGS) - {"schema"})), st.integers(1, 10**6))
def test_each_numeric_setting_in_the_query_reaches_its_eventsourcing_key(
    name: str, value: int
) -> None:
    assert env_of(f"{BASE}?{name}={value}")[PG_SETTINGS[name][0]] == str(value)


def test_a_schema_in_the_query_reaches_eventsourcing() -> None:
    assert env_of(f"{BASE}?schema=vmsnap_a")["POSTGRES_SCHEMA"] == "vmsnap_a"


@given(texts, texts)
def test_quoted_user_names_and_passwords_arrive_unquoted(user: str, password: str) -> None:
    env = env_of(f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@h:1/d")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == (user, password)


@given(texts)
def test_a_password_is_never_shown(password: str) -> None:
    secret = quote(password, safe="") + "Z9"
    url = StoreUrl.parse(f"postgresql://u:{secret}@h:1/d", Path("/"))
    assert secret not in url.shown
    assert url.shown == "postgresql://u:***@h:1/d"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h/d",  # no user
        "postgresql://u@h/",  # no database
        "postgresql://u@h:notaport/d",
        f"{BASE}?pool_size=many",
        f"{BASE}?pool_size=0",
        f"{BASE}?lock_timeout=-1",
        f"{BASE}?schema=Robert'); DROP TABLE x;--",
        f"{BASE}?colour=blue",
    ],
)
def test_a_bad_postgresql_url_is_refused_before_anything_connects(url: str) -> None:
    with pytest.raises(ConfigError):
        StoreUrl.parse(url, Path("/"))
