"""The Pool aggregate: what a storage pool advertised, and from when."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from vmsnap.domain.values import Capabilities
from vmsnap.domain.vm import NAMESPACE


class Pool(Aggregate):
    """
    A pool's advertised capabilities, recorded when first seen and whenever they change,
    so the log shows what a pool advertised when a decision was made.
    """

    @staticmethod
    def create_id(pool_id: str) -> UUID:
        return uuid5(NAMESPACE, f"pool:{pool_id}")

    class Registered(Aggregate.Created):
        """The pool as first seen: its name, driver and what it advertised."""

        pool_id: str
        name: str
        driver: str
        caps: Capabilities

    @event(Registered)
    def __init__(self, pool_id: str, name: str, driver: str, caps: Capabilities) -> None:
        self.pool_id = pool_id
        self.name = name
        self.driver = driver
        self.caps = caps

    def observe(self, name: str, driver: str, caps: Capabilities) -> None:
        if (name, driver, caps) != (self.name, self.driver, self.caps):
            self.trigger_event(
                Pool.CapabilitiesChanged, pool_id=self.pool_id, name=name, driver=driver, caps=caps
            )

    class CapabilitiesChanged(Aggregate.Event):
        """What the pool advertises changed (or its name or driver)."""

        pool_id: str
        name: str
        driver: str
        caps: Capabilities

        def apply(self, pool: Any) -> None:
            pool.name = self.name
            pool.driver = self.driver
            pool.caps = self.caps
