"""Request signing as CloudStack clients do it, checked against the real ``cs`` signer."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cs import CloudStack
from hypothesis import given
from hypothesis import strategies as st

from vmsnap.api.auth import Authenticator
from vmsnap.api.errors import Unauthenticated
from vmsnap.config import ApiKey
from vmsnap.domain.exceptions import ConfigError

KEY, SECRET = "AK-1", "s3cret"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
names = st.text(string.ascii_letters, min_size=1, max_size=12).filter(
    lambda n: n.lower() not in ("apikey", "signature", "signatureversion", "expires")
)
queries = st.dictionaries(names, st.text(max_size=30), max_size=8)


def signed(params: dict[str, str], secret: str = SECRET) -> dict[str, str]:
    """``params`` with apiKey and the signature the cs client computes."""
    request = {**params, "apiKey": KEY}
    CloudStack(endpoint="http://unused.invalid", key=KEY, secret=secret)._sign(request)
    return request


def auth() -> Authenticator:
    return Authenticator({KEY: ("admin", SECRET)}, clock=lambda: NOW)


def reason(params: dict[str, str]) -> str:
    with pytest.raises(Unauthenticated) as info:
        auth().authenticate(params)
    return info.value.reason


@given(queries)
def test_any_query_signed_by_the_cs_client_is_accepted(params: dict[str, str]) -> None:
    principal = auth().authenticate(signed(params))
    assert (principal.user, principal.api_key) == ("admin", KEY)


@given(queries.filter(bool), st.data())
def test_changing_any_value_after_signing_breaks_the_signature(
    params: dict[str, str], data: st.DataObject
) -> None:
    request = signed(params)
    name = data.draw(st.sampled_from(sorted(params)))
    request[name] += "x"
    assert reason(request) == "bad-signature"


@given(queries)
def test_two_signed_requests_have_the_same_identity_only_when_they_are_the_same(
    params: dict[str, str],
) -> None:
    first = auth().authenticate(signed(params)).request
    assert auth().authenticate(signed(params)).request == first
    assert auth().authenticate(signed({**params, "extra": "1"})).request != first


def test_unsigned_unknown_key_and_wrong_secret_are_refused() -> None:
    assert reason({"command": "listVolumes"}) == "unsigned"
    assert reason({"command": "listVolumes", "apiKey": KEY}) == "unsigned"
    request = signed({"command": "listVolumes"})
    assert reason({**request, "apiKey": "AK-other"}) == "unknown-key"
    assert reason(signed({"command": "listVolumes"}, secret="wrong")) == "bad-signature"


@given(st.integers(min_value=-10_000_000, max_value=10_000_000))
def test_a_version_3_request_is_accepted_only_before_it_expires(seconds: int) -> None:
    expires = (NOW + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S%z")
    request = signed({"command": "listVolumes", "signatureVersion": "3", "expires": expires})
    if seconds > 0:
        auth().authenticate(request)
    else:
        assert reason(request) == "expired"


def test_a_version_3_request_needs_a_well_formed_expires() -> None:
    assert reason(signed({"command": "x", "signatureVersion": "3"})) == "bad-expires"
    bad = signed({"command": "x", "signatureVersion": "3", "expires": "tomorrow"})
    assert reason(bad) == "bad-expires"


def test_secrets_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "ops.secret").write_text("from-file\n", encoding="utf-8")
    keys = [
        ApiKey("admin", "AK-env", secret_env="ADMIN_SECRET"),
        ApiKey("ops", "AK-file", secret_file=tmp_path / "ops.secret"),
    ]
    a = Authenticator.from_keys(keys, {"ADMIN_SECRET": "from-env"})
    env_request = {"command": "x", "apiKey": "AK-env"}
    CloudStack(endpoint="http://unused.invalid", key="AK-env", secret="from-env")._sign(env_request)
    file_request = {"command": "x", "apiKey": "AK-file"}
    CloudStack(endpoint="http://unused.invalid", key="AK-file", secret="from-file")._sign(
        file_request
    )
    assert a.authenticate(env_request).user == "admin"
    assert a.authenticate(file_request).user == "ops"
    with pytest.raises(ConfigError, match="ADMIN_SECRET is not set"):
        Authenticator.from_keys(keys, {})
