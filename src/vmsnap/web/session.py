"""
The web UI's session: a signed cookie (HMAC-SHA256 over its JSON payload) that holds the
user, when it expires and the session's CSRF token (ADR 0023). Nothing is stored on the
server: a restart with a new secret signs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable

import attrs

COOKIE = "vmsnap_session"
LIFETIME_S = 8 * 3600.0

Clock = Callable[[], float]


@attrs.frozen
class Session:
    """``user`` is None before sign-in; ``csrf`` is the token every form must carry."""

    user: str | None
    csrf: str
    expires: float

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf.encode(), token.encode())


class Sessions:
    """Issues and reads signed session cookies."""

    def __init__(
        self,
        secret: bytes | None = None,
        lifetime_s: float = LIFETIME_S,
        clock: Clock | None = None,
    ) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.lifetime_s = lifetime_s
        self._clock = clock or time.time

    def new(self, user: str | None) -> Session:
        """A fresh session (new CSRF token): at sign-in, and for a visitor without one."""
        return Session(user, secrets.token_urlsafe(24), self._clock() + self.lifetime_s)

    def dump(self, session: Session) -> str:
        payload = json.dumps(
            {"u": session.user, "c": session.csrf, "e": session.expires}, separators=(",", ":")
        ).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._sign(body)}"

    def load(self, cookie: str | None) -> Session | None:
        """The session in ``cookie``; None when absent, forged, malformed or expired."""
        if not cookie or "." not in cookie:
            return None
        body, signature = cookie.rsplit(".", 1)
        if not hmac.compare_digest(self._sign(body).encode(), signature.encode()):
            return None
        try:
            raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            user = raw["u"]
            if user is not None and not isinstance(user, str):
                return None
            session = Session(user, str(raw["c"]), float(raw["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > self._clock() else None

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
