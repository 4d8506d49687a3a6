"""
CloudStack's request signing: HMAC-SHA1 (base64) over the sorted, URL-encoded,
lower-cased query, with an optional ``signatureversion=3`` + ``expires`` (ADR 0014).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

import attrs

from vmsnap.api.errors import Unauthenticated
from vmsnap.config import ApiKey
from vmsnap.domain.exceptions import ConfigError

Clock = Callable[[], datetime]


@attrs.frozen
class Principal:
    """
    The user a request was signed for; ``request`` identifies the signed request (a
    digest of the key and the signature) for replay protection.
    """

    user: str
    api_key: str
    request: str


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

    def __init__(self, secrets: Mapping[str, tuple[str, str]], clock: Clock | None = None):
        self._secrets = dict(secrets)  # api key -> (user, secret)
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def from_keys(
        cls, keys: Sequence[ApiKey], environ: Mapping[str, str] | None = None
    ) -> Authenticator:
        """
        Read each key's secret from its environment variable or file.

        Raises:
            ConfigError: no key is configured, or a secret is missing or empty.
        """
        if not keys:
            raise ConfigError("serve needs at least one [[api.keys]] entry in the config")
        env = os.environ if environ is None else environ
        secrets = {}
        for k in keys:
            where = f"[[api.keys]] of user {k.user!r}"
            if k.secret_env is not None:
                secret = env.get(k.secret_env, "")
                if not secret.strip():
                    raise ConfigError(f"{where}: environment variable {k.secret_env} is not set")
            else:
                assert k.secret_file is not None
                try:
                    secret = k.secret_file.read_text(encoding="utf-8")
                except OSError as e:
                    raise ConfigError(
                        f"{where}: cannot read secret_file {k.secret_file}: {e.strerror or e}"
                    ) from None
                except UnicodeDecodeError:
                    raise ConfigError(
                        f"{where}: secret_file {k.secret_file} is not UTF-8 text"
                    ) from None
                if not secret.strip():
                    raise ConfigError(f"{where}: secret_file {k.secret_file} is empty")
            secrets[k.api_key] = (k.user, secret.strip())
        return cls(secrets)

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
        user, secret = entry
        expected = [sign(secret, text) for text in string_to_sign(params)]
        if not any(hmac.compare_digest(e, signature.strip()) for e in expected):
            raise Unauthenticated(
                "bad-signature", "unable to verify user credentials and/or request signature"
            )
        if lower.get("signatureversion") == "3":
            self._check_expires(lower.get("expires"))
        request = hashlib.sha256(f"{api_key}\n{signature.strip()}".encode()).hexdigest()
        return Principal(user, api_key, request)

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
