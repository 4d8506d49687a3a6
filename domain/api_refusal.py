"""
The ApiRefusal aggregate: a request the HTTP API refused to authenticate, kept for
auditors (who tried, with which key, why it was refused). One aggregate per refusal.
"""

from __future__ import annotations

from eventsourcing.domain import Aggregate, event

#: Why a request was refused (``ApiRefusal.Recorded.reason``).
REASONS = ("unsigned", "unknown-key", "bad-signature", "expired", "bad-expires", "replayed")


class ApiRefusal(Aggregate):
    """
    An unauthenticated request: unsigned, unknown key, bad signature, expired or replayed.
    Neither the signature nor any secret is recorded.
    """

    class Recorded(Aggregate.Created):
        reason: str
        command: str | None
        api_key: str | None
        remote: str | None

    @event(Recorded)
    def __init__(
        self, reason: str, command: str | None, api_key: str | None, remote: str | None
    ) -> None:
        self.reason = reason
        self.command = command
        self.api_key = api_key
        self.remote = remote
