"""
The web UI's operations run in worker threads, so that a request answers at once and the
page shows the operation's states live (the Controller records each step).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from vmsnap.domain.exceptions import OperationInProgress, VmsnapError

#: The work of an operation: a Controller call given ``on_claimed``.
Work = Callable[[Callable[[str], None]], object]

WORKERS = 4
CLAIM_WAIT_S = 30.0


class Tasks:
    """Runs operations in the background; ``close()`` waits for the running ones."""

    def __init__(self, workers: int = WORKERS) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vmsnap-web-op")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def start(self, work: Work) -> tuple[str | None, str | None, bool]:
        """
        Start ``work`` and wait until its VM is claimed or it ended: (snapshot id, None,
        False) once claimed; (None, error in words, conflict) when it was refused before
        the claim, ``conflict`` True when another operation holds the VM.
        """
        settled = threading.Event()
        outcome: dict[str, str] = {}

        def on_claimed(sid: str) -> None:
            outcome["id"] = sid
            settled.set()

        def run() -> None:
            try:
                work(on_claimed)
            except OperationInProgress as e:
                outcome.setdefault("conflict", str(e))
            except VmsnapError as e:
                outcome.setdefault("error", str(e))
            except Exception as e:  # the operation fails with its reason; the server goes on
                outcome.setdefault("error", f"{type(e).__name__}: {e}")
            finally:
                settled.set()

        self._pool.submit(run)
        settled.wait(CLAIM_WAIT_S)
        if "id" in outcome:
            return outcome["id"], None, False
        if "conflict" in outcome:
            return None, outcome["conflict"], True
        return None, outcome.get("error", "the operation did not start in time"), False
