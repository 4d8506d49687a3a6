"""The UI's pages (GET): instances, a snapshot, pools, audit, and the live-state JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from vmsnap.domain.exceptions import NotFound
from vmsnap.views import EventView, VmSnapshotView
from vmsnap.web import hooks, model, timeline
from vmsnap.web.access import User, visible_vms
from vmsnap.web.app import WebUi, redirect, signed_in

ACTIONS = {"revert": "Revert", "delete": "Delete"}


class Pages:
    def __init__(self, ui: WebUi) -> None:
        self.ui, self.c, self.config = ui, ui.controller, ui.config

    async def index(self, request: Request, user: User) -> Response:
        found = await run_in_threadpool(model.instances, self.c, self.config, user)
        pools = await run_in_threadpool(model.pools, self.c)
        return self.ui.render(request, "instances.html", {"instances": found, "pools": pools})

    async def signin(self, request: Request) -> Response:
        if self.ui.user(request) is not None:
            return redirect("/")
        return self.ui.render(request, "signin.html", {})

    async def state(self, request: Request, user: User) -> Response:
        return JSONResponse(await run_in_threadpool(model.live_state, self.c, self.config, user))

    def visible(self, user: User, snapshot_id: str) -> VmSnapshotView | None:
        try:
            snap = self.c.get_vm_snapshot(snapshot_id)
        except NotFound:
            return None
        return snap if snap.vm_id in visible_vms(user, self.config) else None

    async def snapshot(self, request: Request, user: User) -> Response:
        snap = await run_in_threadpool(self.visible, user, request.path_params["id"])
        if snap is None:
            return self.ui.error(request, 404, "No such snapshot.")
        events: list[EventView] = await run_in_threadpool(self.c.audit_timeline, snap.id)
        actor = next((str(e.data["actor"]) for e in events if e.data.get("actor")), None)
        context = {
            "snap": snap,
            "events": events,
            "picture": Markup(timeline.svg(events, actor)),  # every text escaped by timeline.svg
            "actor": actor,
            "since": timeline.offsets(events),
            "kinds": timeline.row_kinds(events),
            "hooks": hooks.in_order(snap.hooks),
        }
        return self.ui.render(request, "snapshot.html", context)

    async def confirm(self, request: Request, user: User) -> Response:
        action = request.path_params["action"]
        snap = await run_in_threadpool(self.visible, user, request.path_params["id"])
        if snap is None or action not in ACTIONS:
            return self.ui.error(request, 404, "No such snapshot.")
        context = {"snap": snap, "action": action, "verb": ACTIONS[action]}
        return self.ui.render(request, "confirm.html", context)

    async def pools(self, request: Request, user: User) -> Response:
        found = await run_in_threadpool(model.pools, self.c)
        return self.ui.render(request, "pools.html", {"pools": found.values()})

    async def audit(self, request: Request, user: User) -> Response:
        if not user.admin:
            return self.ui.error(request, 403, "Only administrators may audit the log.")
        report = await run_in_threadpool(self.c.audit_verify)
        return self.ui.render(request, "audit.html", {"report": report})

    async def export(self, request: Request, user: User) -> Response:
        if not user.admin:
            return self.ui.error(request, 403, "Only administrators may export the log.")

        def lines() -> Iterator[str]:
            for event in self.c.audit_export():
                yield json.dumps(event.to_dict(), separators=(",", ":")) + "\n"

        headers = {"Content-Disposition": 'attachment; filename="vmsnap-audit.jsonl"'}
        return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", signed_in(self.ui, self.index)),
            Route("/signin", self.signin, methods=["GET"]),
            Route("/state.json", signed_in(self.ui, self.state)),
            Route("/snapshots/{id}", signed_in(self.ui, self.snapshot)),
            Route("/snapshots/{id}/{action}", signed_in(self.ui, self.confirm), methods=["GET"]),
            Route("/pools", signed_in(self.ui, self.pools)),
            Route("/audit", signed_in(self.ui, self.audit)),
            Route("/audit/export", signed_in(self.ui, self.export)),
        ]
