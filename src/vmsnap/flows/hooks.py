"""
Hooks around the freeze (issue 19, ADR 0026): the pre-freeze hook before the quiesce, the
post-thaw hook after the thaw, for quiesced snapshots of a VM that has hooks.

The post-thaw hook is owed from the moment the pre-freeze hook is sent: ``PostHookOwed``
is saved with the pre hook's ``HookStarted``, before the call (or before the quiesce when
there is no pre hook). :meth:`HookSteps.after_thaw` runs it when it is owed and was never
started, on every path: the success path calls it after the thaw, every compensation
(failure, deadline, failed thaw, and ``recover`` after a crash) after its own thaw. Its
start and end are recorded, so it runs once: one started but never ended (the controller
died inside it) is reported, not run again, unless the hook says it is idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from vmsnap.domain.values import (
    GUEST,
    ON_FAILURE_FAIL,
    POST_THAW,
    PRE_FREEZE,
    HookResult,
    HookSpec,
    VmHooks,
)
from vmsnap.flows.steps import StepFailed, Steps

#: Runs a ``where = "host"`` hook: (argv, timeout_s, extra environment) -> its result.
HostHooks = Callable[[Sequence[str], float, Mapping[str, str]], HookResult]

# The alert of a post-thaw hook that failed, or whose end was never recorded.
HOOK_FAILED_ALERT, HOOK_UNENDED_ALERT = "post-thaw-hook-failed", "post-thaw-hook-unended"


class HookSteps:
    """The hooks of one snapshot's create, each call recorded before and after."""

    def __init__(self, steps: Steps, host: HostHooks | None = None) -> None:
        self.steps = steps
        self.snap = steps.snap
        hooks = steps.vm.hooks
        self.hooks: VmHooks | None = hooks if self.snap.quiesce_requested else None
        self.host = host or steps.host_hooks
        self.pre_elapsed_s = 0.0

    @property
    def app_consistent(self) -> bool:
        """The pre-freeze hook ran and succeeded (the caller adds: and the guest quiesced)."""
        return self.snap.pre_hook_ok is True

    def before_freeze(self) -> None:
        """
        Owe the post-thaw hook, then run the pre-freeze hook. Raise :class:`StepFailed`
        when the pre hook failed and the VM's policy is "fail" (the post hook still runs:
        the compensation calls :meth:`after_thaw`).
        """
        hooks, snap = self.hooks, self.snap
        if hooks is None or (hooks.pre_freeze is None and hooks.post_thaw is None):
            return
        if hooks.post_thaw is not None:
            snap.record_post_hook_owed(hooks.post_thaw)
        pre = hooks.pre_freeze
        if pre is None:
            self.steps.save(snap)
            return
        snap.record_hook_started(PRE_FREEZE, pre)
        self.steps.save(snap)  # PostHookOwed and HookStarted together, before the call
        started = time.monotonic()
        error = self._run(PRE_FREEZE, pre)
        self.pre_elapsed_s = time.monotonic() - started
        if snap.pre_hook_ok or hooks.on_pre_freeze_failure != ON_FAILURE_FAIL:
            return
        raise StepFailed(f"pre-freeze hook {pre.run[0]} failed: {error}")

    def after_quiesce(self) -> None:
        """``count_in_deadline``: the quiesce deadline started when the pre hook did."""
        hooks, steps = self.hooks, self.steps
        if hooks is not None and hooks.count_in_deadline and steps.thaw_by is not None:
            steps.thaw_by -= self.pre_elapsed_s

    def after_thaw(self) -> None:
        """
        Run the owed post-thaw hook unless it was started already. One started and never
        ended is run again only when idempotent; else an alert says so, once.
        """
        snap = self.snap
        spec = snap.post_hook
        if spec is None:
            return
        if snap.post_hook_unended and not spec.idempotent:
            # Only recover gets here, once: its compensation ends the snapshot.
            snap.record_alert(HOOK_UNENDED_ALERT, unended_message(str(snap.id), spec))
            self.steps.save(snap)
            return
        if not (snap.post_hook_due or snap.post_hook_unended):
            return
        snap.record_hook_started(POST_THAW, spec)
        self.steps.save(snap)
        error = self._run(POST_THAW, spec)
        if error is not None:
            message = f"post-thaw hook {spec.run[0]} of VM {self.steps.vm.id} failed: {error}"
            snap.record_alert(HOOK_FAILED_ALERT, message)
            self.steps.save(snap)

    def _run(self, hook: str, spec: HookSpec) -> str | None:
        """Call the hook, record its end; return why it failed, or None."""
        steps, snap = self.steps, self.snap
        started = time.monotonic()
        result: HookResult | None = None
        error: str | None = None
        try:
            if spec.where == GUEST:
                result = steps.hv.guest_exec(steps.vm, spec.run, timeout_s=spec.timeout_s)
            elif self.host is None:
                error = "no runner for host hooks"
            else:
                env = {
                    "VMSNAP_VM_ID": steps.vm.id,
                    "VMSNAP_SNAPSHOT_ID": str(snap.id),
                    "VMSNAP_HOOK": hook,
                }
                result = self.host(spec.run, spec.timeout_s, env)
        except Exception as e:  # every failure is recorded, whatever raised it
            error = str(e) or type(e).__name__
        took = round((time.monotonic() - started) * 1000)
        snap.record_hook_ended(hook, result, duration_ms=took, error=error)
        self.steps.save(snap)
        return None if result is not None and result.ok else (error or _why(result))


def _why(result: HookResult | None) -> str:
    if result is None:
        return "it did not run"
    if result.timed_out:
        return "killed at its timeout"
    return f"exit code {result.exit_code}"


def unended_message(sid: str, spec: HookSpec) -> str:
    return (
        f"post-thaw hook {' '.join(spec.run)} of snapshot {sid} was started but its end "
        "was never recorded (the controller stopped inside it): not run again, since it "
        "is not idempotent; check the guest, e.g. that its application was released"
    )
