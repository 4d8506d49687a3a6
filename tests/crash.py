"""
A controller that dies mid-flight, in process: the n-th hypervisor or driver call raises
:class:`SimulatedCrash`, a BaseException that no vmsnap code catches, so nothing after it
runs or is recorded, as when the process is killed. The call may die before or after it
reached the (simulated) backend: after is the hard case, a side effect with no record.
"""

from __future__ import annotations

from typing import Any

from vmsnap import Controller

WORKFLOW_CALLS = frozenset(
    {
        "quiesce",
        "unquiesce",
        "take_vm_snapshot",
        "revert_vm_snapshot",
        "delete_vm_snapshot",
        "take_snapshot",
        "delete_snapshot",
        "take_volume_snapshot",
        "delete_volume_snapshot",
        "guest_exec",  # a guest hook (issue 19)
    }
)


class SimulatedCrash(BaseException):
    """The controller process died here."""


class _Countdown:
    def __init__(self, calls: int, after: bool) -> None:
        self.left = calls
        self.after = after
        self.fired: str | None = None

    def tick(self, name: str) -> bool:
        self.left -= 1
        if self.left == 0:
            self.fired = name
            return True
        return False


class _Dying:
    """Wraps one adapter; workflow calls count down the shared countdown."""

    def __init__(self, inner: Any, countdown: _Countdown) -> None:
        self._inner = inner
        self._countdown = countdown

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in WORKFLOW_CALLS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if not self._countdown.tick(name):
                return attr(*args, **kwargs)
            if self._countdown.after:
                attr(*args, **kwargs)
            raise SimulatedCrash(name)

        return call


def die_at_call(ctrl: Controller, n: int, *, after: bool) -> _Countdown:
    """
    Make ``ctrl`` die at its ``n``-th workflow call (counting every hypervisor and driver);
    ``after``: once the call has done its work. Returns the countdown (``fired`` names
    the call it died in, or None if it never got that far).
    """
    countdown = _Countdown(n, after)
    wiring = ctrl._wiring
    for name, hv in list(wiring.hypervisors.items()):
        wiring.hypervisors[name] = _Dying(hv, countdown)  # type: ignore[assignment]
    for pool, driver in list(wiring.drivers.items()):
        wiring.drivers[pool] = _Dying(driver, countdown)  # type: ignore[assignment]
    return countdown
