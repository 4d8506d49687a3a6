"""The Pool aggregate: what a storage pool advertised, and from when."""

from __future__ import annotations

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

    @event("Registered")
    def __init__(self, pool_id: str, name: str, driver: str, caps: Capabilities) -> None:
        self.pool_id = pool_id
        self.name = name
        self.driver = driver
        self.caps = caps

    def observe(self, name: str, driver: str, caps: Capabilities) -> None:
        if (name, driver, caps) != (self.name, self.driver, self.caps):
            self._advertised(self.pool_id, name, driver, caps)

    @event("CapabilitiesChanged")
    def _advertised(self, pool_id: str, name: str, driver: str, caps: Capabilities) -> None:
        self.name = name
        self.driver = driver
        self.caps = caps
