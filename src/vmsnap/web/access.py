"""
Who sees what in the web UI: one rule, :func:`visible_vms`, meant to be replaced by the
HTTP API's authorization once it has one (issue 16).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

import attrs

from vmsnap.config import ApiKey, Config

ADMIN = "admin"


@attrs.frozen
class User:
    """A signed-in user: ``role`` admin or user; ``account`` whose VMs a user sees."""

    name: str
    role: str
    account: str

    @property
    def admin(self) -> bool:
        return self.role == ADMIN


def user_of(key: ApiKey) -> User:
    """The user an API key belongs to; a key without ``account`` is its user's account."""
    return User(key.user, key.role, key.account or key.user)


def visible_vms(user: User, config: Config) -> list[str]:
    """
    The ids of the VMs ``user`` may see and act on, in config order: an admin sees every
    VM; a user, the VMs whose ``[[vms]] account`` is the user's account.
    """
    if user.admin:
        return [vm.id for vm in config.vms]
    return [vm.id for vm in config.vms if config.vm_accounts.get(vm.id) == user.account]


class Directory:
    """
    The users who may sign in: the ``[[api.keys]]`` of the config, each with the secret
    its variable or file holds (the same secret that signs its API requests).
    """

    def __init__(self, entries: list[tuple[User, str]]) -> None:
        self._entries = entries

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str] | None = None) -> Directory:
        env = os.environ if environ is None else environ
        entries = []
        for key in config.api_keys:
            secret = _secret(key, env)
            if secret:
                entries.append((user_of(key), secret))
        return cls(entries)

    def check(self, name: str, secret: str) -> User | None:
        """
        The user when ``secret`` is a secret of user ``name``; every entry is compared, in
        constant time, so the answer's timing tells neither which part was wrong.
        """
        found = None
        for user, expected in self._entries:
            same_name = hmac.compare_digest(user.name.encode(), name.encode())
            same_secret = hmac.compare_digest(expected.encode(), secret.encode())
            if same_name and same_secret and found is None:
                found = user
        return found

    def user(self, name: str) -> User | None:
        """The user ``name`` as configured now (its role may have changed)."""
        return next((u for u, _ in self._entries if u.name == name), None)


def _secret(key: ApiKey, env: Mapping[str, str]) -> str | None:
    if key.secret_env is not None:
        return env.get(key.secret_env, "").strip() or None
    if key.secret_file is None:
        return None
    try:
        return key.secret_file.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
