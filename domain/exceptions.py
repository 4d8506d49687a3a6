"""The errors vmsnap raises; every one derives from VmsnapError."""


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


class OperationTakenOver(VmsnapError, RuntimeError):
    """
    Recovery took this operation over (its controller was judged stopped): the store
    refused the operation's next write on its version check, so the operation stopped
    before any further call. ``vmsnap recover`` finishes what is left.
    """


class StoreFailedMidOperation(VmsnapError, RuntimeError):
    """
    The store failed after the operation had claimed its VM (events were recorded): the
    operation is left in flight, and ``vmsnap recover`` finishes or compensates it.
    """
