"""
Helpers every test tier shares: one way to wait for something (:func:`wait_for`), one way
to write a config file (:class:`Config`, :func:`write_config`), and skips for the optional
extras (:func:`needs`).

Each tier describes its own world (hypervisors, pools, VMs) as a :class:`Config`:
``tests/conftest.py`` (:func:`tests.conftest.world_config`), ``tests/e2e/conftest.py``
(:func:`tests.e2e.conftest.e2e_config`) and the few modules that need a world of their own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from tests.toml_text import toml_table

if TYPE_CHECKING:  # pytest is imported where a skip is made: the demo reuses wait_for
    import pytest

T = TypeVar("T")

WAIT_S = 30.0  # the longest a test waits for another thread or process by default
POLL_S = 0.01  # how long wait_for pauses between two looks

#: the module each optional extra installs -> why a test is skipped without it
NOT_INSTALLED = {
    "libvirt": "needs the libvirt extra: pip install -e '.[libvirt]' (Debian libvirt-dev)",
    "psycopg": "needs the postgres extra: pip install -e '.[postgres]'",
    "cryptography": "needs the crypto extra: pip install -e '.[crypto]'",
}


def wait_for(
    condition: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    process: subprocess.Popen[Any] | None = None,
) -> T:
    """
    Look at ``condition`` until it holds (answers something truthy, which is returned);
    fail the test, naming ``what``, once ``timeout_s`` seconds have passed without it.

    ``process``: a child the condition depends on. Between looks the helper waits on it
    rather than sleeping, and fails at once if it ends before the condition holds.

    Its short pause between looks is the only sleep in the tests: no test body sleeps.
    """
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up after {timeout_s:g} s waiting for {what}"
        if process is None:
            time.sleep(POLL_S)
            continue
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=POLL_S)
            raise AssertionError(f"the process exited ({process.returncode}) before {what}")
    return value


# Config files ---------------------------------------------------------------------------


@attrs.frozen
class Config:
    """
    The tables of one vmsnap config file (CONTRACT.md), in the order they are written.

    ``store``: the ``[store]`` table's url, or None to leave the table out; ``limits``: the
    ``[limits]`` table, left out when empty; ``tables``: further tables, as (header,
    fields) pairs, e.g. ``("[[api.keys]]", {...})``.
    """

    hypervisors: Sequence[Mapping[str, Any]] = ()
    pools: Sequence[Mapping[str, Any]] = ()
    vms: Sequence[Mapping[str, Any]] = ()
    store: str | None = "sqlite:///vmsnap.db"
    limits: Mapping[str, Any] = attrs.field(factory=dict)
    tables: Sequence[tuple[str, Mapping[str, Any]]] = ()

    def text(self) -> str:
        """The config as TOML text."""
        parts = []
        if self.store is not None:
            parts.append(toml_table("[store]", {"url": self.store}))
        if self.limits:
            parts.append(toml_table("[limits]", self.limits))
        parts += [toml_table("[[hypervisors]]", h) for h in self.hypervisors]
        parts += [toml_table("[[pools]]", p) for p in self.pools]
        parts += [toml_table("[[vms]]", v) for v in self.vms]
        parts += [toml_table(header, fields) for header, fields in self.tables]
        return "\n".join(parts)

    def with_tables(self, *tables: tuple[str, Mapping[str, Any]]) -> Config:
        """This config with ``tables`` added at its end."""
        return attrs.evolve(self, tables=(*self.tables, *tables))


#: VM id -> (hypervisor, power state, [(volume id, pool id, volume type)])
VmWorld = Mapping[str, tuple[str, str, Sequence[tuple[str, str, str]]]]


def vm_tables(vms: VmWorld) -> list[dict[str, Any]]:
    """The ``[[vms]]`` tables of a world of VMs."""
    return [
        {
            "id": vm_id,
            "hypervisor": hv,
            "power_state": power,
            "volumes": [{"id": v, "pool": p, "type": t} for v, p, t in volumes],
        }
        for vm_id, (hv, power, volumes) in vms.items()
    ]


def write_config(folder: Path, config: Config, filename: str = "vmsnap.toml") -> Path:
    """
    Write ``config`` as ``folder/filename`` (creating ``folder``) and return its path.

    Several configs written into one folder share what their relative paths name (the
    store, the simulated world), so Controllers opened on them see each other's work.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(config.text(), encoding="utf-8")
    return path


# Optional extras ------------------------------------------------------------------------


def needs(module: str) -> pytest.MarkDecorator:
    """
    Skip a test, saying why, when the optional extra that installs ``module`` (a key of
    :data:`NOT_INSTALLED`) is missing. A module whose every test needs it calls
    ``pytest.importorskip(module, reason=NOT_INSTALLED[module])`` at its top instead.
    """
    import pytest

    missing = importlib.util.find_spec(module) is None
    return pytest.mark.skipif(missing, reason=NOT_INSTALLED[module])
