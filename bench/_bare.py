"""
The baselines' bare eventsourcing aggregate and application: no state machine, no
transcodings, no views; module level, so that eventsourcing can resolve their topics.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Bare(Aggregate):
    @event("Started")
    def __init__(self, data: Any = None) -> None:
        self.last = data

    @event("Happened")
    def happen(self, data: Any) -> None:
        self.last = data


class BareApp(Application[Any]):
    pass


def bare_app(db: str) -> BareApp:
    return BareApp(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": db})
