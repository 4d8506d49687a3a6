"""
The UI's form posts: sign in and out, take VM and volume snapshots, revert and delete.
Operations run in the background (:mod:`vmsnap.web.tasks`); refusals are shown in words.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from vmsnap.domain.exceptions import NotFound
from vmsnap.web.access import User, visible_vms
from vmsnap.web.app import FormTooLarge, WebUi, form, posted, redirect
from vmsnap.web.session import COOKIE
from vmsnap.web.tasks import Work

SIGN_IN_FAILED = "Sign-in failed: that user name and secret do not match."


class Actions:
    def __init__(self, ui: WebUi) -> None:
        self.ui, self.c, self.config = ui, ui.controller, ui.config

    async def signin(self, request: Request) -> Response:
        try:
            fields = await form(request)
        except FormTooLarge:
            return self.ui.error(request, 413, "The form is too large.")
        session = self.ui.session(request)
        if session is None or not session.csrf_ok(fields.get("csrf")):
            message = "The sign-in form had expired. Please try again."
            return self.ui.render(request, "signin.html", {"error": message}, 400)
        user = self.ui.directory.check(fields.get("username", ""), fields.get("secret", ""))
        if user is None:
            return self.ui.render(request, "signin.html", {"error": SIGN_IN_FAILED}, 401)
        response = redirect("/")
        self.ui.set_session(request, response, self.ui.sessions.new(user.name))  # a new CSRF token
        return response

    async def signout(self, request: Request, user: User, fields: dict[str, str]) -> Response:
        response = redirect("/signin")
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def start(self, request: Request, work: Work, done: Callable[[str], str]) -> Response:
        sid, error, conflict = await run_in_threadpool(self.ui.tasks.start, work)
        if sid is None:
            return self.ui.error(request, 409 if conflict else 400, str(error))
        return redirect(done(sid))

    async def create_vm(self, request: Request, user: User, f: dict[str, str]) -> Response:
        vm_id = request.path_params["vm"]
        if vm_id not in visible_vms(user, self.config):
            return self.ui.error(request, 404, "No such instance.")

        def work(on_claimed: Callable[[str], None]) -> object:
            return self.c.create_vm_snapshot(
                vm_id,
                f.get("name") or None,
                f.get("description") or None,
                memory=f.get("memory") == "on",
                quiesce=f.get("quiesce") == "on",
                on_claimed=on_claimed,
                actor=user.name,
            )

        return await self.start(request, work, lambda sid: f"/#vm-{vm_id}")

    async def create_volume(self, request: Request, user: User, f: dict[str, str]) -> Response:
        volume_id = request.path_params["volume"]
        vm = next((v for v in self.config.vms if any(x.id == volume_id for x in v.volumes)), None)
        if vm is None or vm.id not in visible_vms(user, self.config):
            return self.ui.error(request, 404, "No such volume.")

        def work(on_claimed: Callable[[str], None]) -> object:
            quiesce = f.get("quiesce") == "on"
            return self.c.create_volume_snapshot(
                volume_id, quiesce=quiesce, on_claimed=on_claimed, actor=user.name
            )

        return await self.start(request, work, lambda sid: f"/#vm-{vm.id}")

    async def act(self, request: Request, user: User, f: dict[str, str]) -> Response:
        sid, action = request.path_params["id"], request.path_params["action"]
        try:
            snap = await run_in_threadpool(self.c.get_vm_snapshot, sid)
        except NotFound:
            snap = None
        if snap is None or snap.vm_id not in visible_vms(user, self.config):
            return self.ui.error(request, 404, "No such snapshot.")
        call = {"revert": self.c.revert_vm_snapshot, "delete": self.c.delete_vm_snapshot}.get(
            action
        )
        if call is None:
            return self.ui.error(request, 404, "No such action.")

        def work(on_claimed: Callable[[str], None]) -> object:
            assert call is not None
            return call(sid, on_claimed=on_claimed, actor=user.name)

        return await self.start(request, work, lambda _: f"/#vm-{snap.vm_id}")

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/signin", self.signin, methods=["POST"]),
            Route("/signout", posted(self.ui, self.signout), methods=["POST"]),
            Route("/vms/{vm}/snapshots", posted(self.ui, self.create_vm), methods=["POST"]),
            Route(
                "/volumes/{volume}/snapshots", posted(self.ui, self.create_volume), methods=["POST"]
            ),
            Route("/snapshots/{id}/{action}", posted(self.ui, self.act), methods=["POST"]),
        ]
