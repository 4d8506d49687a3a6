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


DIGEST_KEY = b"server-digest-key-0123456789"


def auth() -> Authenticator:
    return Authenticator({KEY: ("admin", SECRET)}, clock=lambda: NOW, digest_key=DIGEST_KEY)


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
    (tmp_path / "ops.secret").write_text("from-file-0123456789\n", encoding="utf-8")
    (tmp_path / "ops.secret").chmod(0o600)
    keys = [
        ApiKey("admin", "AK-env", secret_env="ADMIN_SECRET"),
        ApiKey("ops", "AK-file", secret_file=tmp_path / "ops.secret"),
    ]
    a = Authenticator.from_keys(keys, {"ADMIN_SECRET": "from-env-0123456789"})
    env_request = {"command": "x", "apiKey": "AK-env"}
    CloudStack(endpoint="http://unused.invalid", key="AK-env", secret="from-env-0123456789")._sign(
        env_request
    )
    file_request = {"command": "x", "apiKey": "AK-file"}
    CloudStack(
        endpoint="http://unused.invalid", key="AK-file", secret="from-file-0123456789"
    )._sign(file_request)
    assert a.authenticate(env_request).user == "admin"
    assert a.authenticate(file_request).user == "ops"
    with pytest.raises(ConfigError, match="ADMIN_SECRET is not set"):
        Authenticator.from_keys(keys, {})


# -- #16: nothing to guess offline, replay guard only where expires is signed -------------


def test_the_request_digest_is_keyed_with_the_server_secret_not_a_plain_hash() -> None:
    import hashlib

    request = signed({"command": "createSnapshot", "volumeid": "vol-2"})
    digest = auth().authenticate(request).request
    plain = hashlib.sha256(f"{KEY}\n{request['signature']}".encode()).hexdigest()
    assert digest != plain
    other = Authenticator({KEY: ("admin", SECRET)}, clock=lambda: NOW, digest_key=b"x" * 32)
    assert other.authenticate(request).request != digest


def test_only_a_request_with_expires_is_guarded_against_replay() -> None:
    expires = "2026-11-26T12:10:00+0000"
    plain = signed({"command": "createSnapshot"})
    timed = signed({"command": "createSnapshot", "signatureVersion": "3", "expires": expires})
    assert auth().authenticate(plain).guarded is False
    assert auth().authenticate(timed).guarded is True


def test_a_non_ascii_signature_is_a_bad_signature_not_an_error() -> None:
    request = signed({"command": "listVolumes"})
    assert reason({**request, "signature": "é" * 28}) == "bad-signature"


def test_accounts_and_roles_reach_the_principal() -> None:
    a = Authenticator({KEY: ("ann", SECRET, "acme", "user")}, clock=lambda: NOW)
    principal = a.authenticate(signed({"command": "listVolumes"}))
    assert (principal.user, principal.account, principal.role) == ("ann", "acme", "user")
    assert not principal.is_admin


@pytest.mark.parametrize("secret", ["1", "fifteen-bytes!!"])
def test_a_secret_shorter_than_16_bytes_is_refused_at_start(secret: str) -> None:
    keys = [ApiKey("admin", "AK-env", secret_env="ADMIN_SECRET")]
    with pytest.raises(ConfigError, match="shorter than 16 bytes"):
        Authenticator.from_keys(keys, {"ADMIN_SECRET": secret})


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_secret_file_readable_by_others_is_refused_at_start(tmp_path: Path, mode: int) -> None:
    file = tmp_path / "ops.secret"
    file.write_text("from-file-0123456789\n", encoding="utf-8")
    file.chmod(mode)
    keys = [ApiKey("ops", "AK-file", secret_file=file)]
    with pytest.raises(ConfigError, match="readable or writable by others"):
        Authenticator.from_keys(keys, {})
    file.chmod(0o400)
    assert Authenticator.from_keys(keys, {})


def test_a_short_digest_key_is_refused() -> None:
    keys = [ApiKey("admin", "AK-env", secret_env="S")]
    with pytest.raises(ConfigError, match="VMSNAP_API_DIGEST_KEY"):
        Authenticator.from_keys(keys, {"S": "s" * 20, "VMSNAP_API_DIGEST_KEY": "short"})


def test_a_user_signs_in_with_its_name_and_secret() -> None:
    a = Authenticator({KEY: ("ann", SECRET, "acme", "user")}, clock=lambda: NOW)
    principal = a.login("ann", SECRET)
    assert (principal.user, principal.account, principal.role) == ("ann", "acme", "user")
    for user, secret in (("ann", "wrong"), ("bob", SECRET), ("ann", "é")):
        with pytest.raises(Unauthenticated):
            a.login(user, secret)
