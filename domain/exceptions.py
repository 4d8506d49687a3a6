"""The errors vmsnap raises; every one derives from VmsnapError."""

from collections.abc import Sequence
from typing import Any


class VmsnapError(Exception):
    """
    Base of every error vmsnap raises on purpose.
    """


class InvalidRequest(VmsnapError, ValueError):
    """
    The request was refused before anything was recorded: bad input, an unknown id,
    a precondition not met, a bad config or store.
    """


class NotFound(InvalidRequest, LookupError):
    """
    An id names no VM, volume, pool or snapshot that vmsnap knows.
    """


class ConfigError(InvalidRequest):
    """
    The configuration file or the store URL cannot be used.
    """


class StoreError(InvalidRequest):
    """
    The event store cannot be opened or read: missing, corrupt, locked or not migrated.
    """


class OperationInProgress(VmsnapError, RuntimeError):
    """
    Another operation on the same VM is in flight; try again when it has ended.
    """


class IllegalTransition(InvalidRequest):
    """
    A command does not apply to a snapshot in its current state (the workflow machine
    has no such transition).
    """


class DriverError(VmsnapError, RuntimeError):
    """
    A hypervisor or storage driver call failed. Adapters raise it with the backend's own
    message (and code, where it has one); the workflow records it as an event.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class OperationInterrupted(VmsnapError, RuntimeError):
    """
    An operation stopped after it had claimed its VM (events were recorded), on the
    snapshot ``snapshot_id``. The CLI exits 1 with the snapshot as far as it got.
    """

    def __init__(self, message: str, snapshot_id: str, owed: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.snapshot_id = snapshot_id
        #: what the backends may hold from its last call, with no answer recorded (``Owed``)
        self.owed = tuple(owed)


class OperationTakenOver(OperationInterrupted):
    """
    Recovery took this operation over (its controller was judged stopped): the store
    refused the operation's next write on its version check, so the operation stopped
    before any further call. ``vmsnap recover`` finishes what is left.
    """


class StoreFailedMidOperation(OperationInterrupted):
    """
    The store failed after the operation had claimed its VM (events were recorded): the
    operation is left in flight, and ``vmsnap recover`` finishes or compensates it.
    """
