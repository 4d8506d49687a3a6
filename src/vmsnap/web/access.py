"""
Who signs in to the web UI and what they see: the HTTP API's keys, secrets and
authorization rule (``vmsnap.api.auth``, ``vmsnap.api.access``; ADR 0022), seen as users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from vmsnap.api import access as api_access
from vmsnap.api.access import ADMIN, Principal
from vmsnap.api.auth import Authenticator
from vmsnap.api.errors import Unauthenticated
from vmsnap.config import ApiKey, Config


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
    return User(key.user, key.role, key.account_name)


def visible_vms(user: User, config: Config) -> list[str]:
    """
    The ids of the VMs ``user`` may see and act on, in config order: the HTTP API's rule
    (``vmsnap.api.access``, ADR 0022).
    """
    principal = Principal(user.name, "", "", account=user.account, role=user.role)
    return api_access.visible_vms(
        principal, api_access.Inventory.from_config(config), [vm.id for vm in config.vms]
    )


class Directory:
    """
    The users who may sign in: the ``[[api.keys]]`` of the config, each with the secret
    that signs its API requests, checked by the API's :class:`Authenticator`.
    """

    def __init__(self, auth: Authenticator, keys: Sequence[ApiKey]) -> None:
        self._auth = auth
        self._users = {k.user: user_of(k) for k in keys}

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str] | None = None) -> Directory:
        """
        Raises:
            ConfigError: a secret is missing or too short, or a secret file too open.
        """
        return cls(Authenticator.from_keys(config.api_keys, environ), config.api_keys)

    def check(self, name: str, secret: str) -> User | None:
        """
        The user when ``secret`` is a secret of user ``name``; compared in constant time,
        one answer for both wrong parts.
        """
        try:
            principal = self._auth.login(name, secret)
        except Unauthenticated:
            return None
        return User(principal.user, principal.role, principal.account)

    def user(self, name: str) -> User | None:
        """The user ``name`` as configured now (its role may have changed)."""
        return self._users.get(name)
