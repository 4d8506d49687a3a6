"""
CloudStack's request signing: HMAC-SHA1 (base64) over the sorted, URL-encoded,
lower-cased query, with an optional ``signatureversion=3`` + ``expires`` (ADR 0014).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from vmsnap.api.access import ADMIN, Principal
from vmsnap.api.errors import Unauthenticated
from vmsnap.config import ApiKey
from vmsnap.domain.exceptions import ConfigError

__all__ = ["Authenticator", "Principal", "sign", "string_to_sign"]

Clock = Callable[[], datetime]
#: The shortest secret accepted: shorter ones can be guessed from one signed request.
MIN_SECRET_BYTES = 16
#: Where the server secret that keys request digests comes from (ADR 0022); when it is
#: unset, each server makes one at start.
DIGEST_KEY_ENV = "VMSNAP_API_DIGEST_KEY"
#: A key's entry: (user, secret) or (user, secret, account, role).
Entry = Sequence[str]


def string_to_sign(params: Mapping[str, str]) -> list[str]:
    """
    The strings CloudStack signs for ``params``: names sorted as sent, ``name=value``
    with the value URL-encoded, joined by ``&``, lower-cased. Java's URLEncoder and
    Python clients differ only on ``~``, so both spellings are offered.
    """
    names = sorted(k for k in params if k.lower() != "signature")
    python = "&".join(f"{k}={quote(params[k], safe='*')}" for k in names).lower()
    java = python.replace("~", "%7e")
    return [python] if java == python else [python, java]


def sign(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class Authenticator:
    """
    Checks requests against the configured keys. Secrets stay in this object: they are
    never logged, recorded or returned.
    """

    def __init__(
        self,
        secrets: Mapping[str, Entry],
        clock: Clock | None = None,
        digest_key: bytes | None = None,
    ):
        self._secrets = dict(secrets)  # api key -> (user, secret[, account, role])
        self._clock = clock or (lambda: datetime.now(UTC))
        # Request digests are keyed: what is stored cannot test a guessed secret.
        self._digest_key = digest_key or os.urandom(32)

    @classmethod
    def from_keys(
        cls, keys: Sequence[ApiKey], environ: Mapping[str, str] | None = None
    ) -> Authenticator:
        """
        Read each key's secret from its environment variable or file.

        Raises:
            ConfigError: no key is configured, a secret is missing, empty or shorter than
                16 bytes, a secret_file is readable by others, or the digest key (from
                ``VMSNAP_API_DIGEST_KEY``) is shorter than 16 bytes.
        """
        if not keys:
            raise ConfigError("serve needs at least one [[api.keys]] entry in the config")
        env = os.environ if environ is None else environ
        secrets = {}
        for k in keys:
            where = f"[[api.keys]] of user {k.user!r}"
            if k.secret_env is not None:
                secret = env.get(k.secret_env, "").strip()
                if not secret:
                    raise ConfigError(f"{where}: environment variable {k.secret_env} is not set")
            else:
                assert k.secret_file is not None
                secret = _read_secret_file(where, k.secret_file)
            if len(secret.encode()) < MIN_SECRET_BYTES:
                raise ConfigError(f"{where}: the secret is shorter than {MIN_SECRET_BYTES} bytes")
            secrets[k.api_key] = (k.user, secret, k.account_name, k.role)
        digest_key = env.get(DIGEST_KEY_ENV, "").strip().encode()
        if digest_key and len(digest_key) < MIN_SECRET_BYTES:
            raise ConfigError(f"{DIGEST_KEY_ENV} is shorter than {MIN_SECRET_BYTES} bytes")
        return cls(secrets, digest_key=digest_key or None)

    def authenticate(self, params: Mapping[str, str]) -> Principal:
        """
        The principal of a signed request (parameter names as sent).

        Raises:
            Unauthenticated: unsigned, unknown key, wrong signature, bad or past
                ``expires``.
        """
        lower = {k.lower(): v for k, v in params.items()}
        api_key, signature = lower.get("apikey"), lower.get("signature")
        if not api_key or not signature:
            raise Unauthenticated("unsigned", "unable to verify user credentials: unsigned")
        entry = self._secrets.get(api_key)
        if entry is None:
            raise Unauthenticated(
                "unknown-key", "unable to verify user credentials and/or request signature"
            )
        user, secret = entry[0], entry[1]
        account, role = (entry[2], entry[3]) if len(entry) >= 4 else (user, ADMIN)
        expected = [sign(secret, text).encode() for text in string_to_sign(params)]
        given = signature.strip().encode("utf-8", "replace")  # any text: compared as bytes
        if not any(hmac.compare_digest(e, given) for e in expected):
            raise Unauthenticated(
                "bad-signature", "unable to verify user credentials and/or request signature"
            )
        expires = lower.get("expires")
        if lower.get("signatureversion") == "3" or expires is not None:
            self._check_expires(expires)
        request = hmac.new(self._digest_key, b"%s\n%s" % (api_key.encode(), given), "sha256")
        return Principal(
            user, api_key, request.hexdigest(), account, role, guarded=expires is not None
        )

    def login(self, user: str, secret: str) -> Principal:
        """
        The principal of ``user`` when ``secret`` is one of its keys' secrets (for a
        sign-in form, e.g. the web UI); compared in constant time.

        Raises:
            Unauthenticated: no such user, or a wrong secret (one reason for both).
        """
        found = None
        for api_key, entry in self._secrets.items():
            ok = hmac.compare_digest(entry[1].encode(), secret.encode("utf-8", "replace"))
            if entry[0] == user and ok:
                found = (api_key, entry)
        if found is None:
            raise Unauthenticated("bad-signature", "unknown user or wrong secret")
        api_key, entry = found
        account, role = (entry[2], entry[3]) if len(entry) >= 4 else (user, ADMIN)
        return Principal(user, api_key, "", account, role, guarded=False)

    def _check_expires(self, expires: str | None) -> None:
        if not expires:
            raise Unauthenticated("bad-expires", "signatureversion=3 needs expires")
        try:
            when = datetime.strptime(expires, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            raise Unauthenticated(
                "bad-expires", f"expires {expires!r} is not yyyy-MM-ddTHH:mm:ssZ"
            ) from None
        if when <= self._clock():
            raise Unauthenticated("expired", "the request has expired (see expires)")


def _read_secret_file(where: str, path: Path) -> str:
    try:
        mode = path.stat().st_mode
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read secret_file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: secret_file {path} is not UTF-8 text") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{where}: secret_file {path} is readable or writable by others "
            f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    if not secret:
        raise ConfigError(f"{where}: secret_file {path} is empty")
    return secret
