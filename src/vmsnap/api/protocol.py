"""
uvicorn's HTTP/1.1 protocol with a deadline for a request's headers: a connection that
has not sent a whole request line and headers within ``read_timeout_s`` of opening (or of
its last answer) is closed, so idle and half-sent connections cannot pile up (ADR 0022).
uvicorn itself bounds only the idle time after an answer (``timeout_keep_alive``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def bounded_protocol(read_timeout_s: float) -> type[asyncio.Protocol]:
    """An H11Protocol class whose header deadline is ``read_timeout_s``."""

    class BoundedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(read_timeout_s, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            waiting = self.conn.their_state is h11.IDLE and (
                self.cycle is None or self.cycle.response_complete
            )
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return BoundedH11Protocol
