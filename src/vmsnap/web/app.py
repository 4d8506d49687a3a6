"""
The web UI of ``vmsnap serve`` (issue 17): server-rendered pages (Jinja2) on the same
Starlette app, Controller, store and users as the HTTP API (ADR 0023).

``WebUi(controller).app`` is mounted at ``/``; ``close()`` waits for its operations.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from vmsnap.controller import Controller
from vmsnap.web import hooks
from vmsnap.web.access import Directory, User
from vmsnap.web.session import COOKIE, Session, Sessions
from vmsnap.web.tasks import Tasks

HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[Request], Awaitable[Response]]


class FormTooLarge(Exception):
    pass


class WebUi:
    """The pages, their users and sessions, and the operations they start."""

    def __init__(
        self,
        controller: Controller,
        directory: Directory | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self.controller = controller
        self.config = controller.config
        self.directory = directory or Directory.from_config(controller.config)
        self.sessions = sessions or Sessions()
        self.tasks = Tasks()
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["visible"] = hooks.visible
        self.templates.filters["hook_title"] = hooks.title
        from vmsnap.web import actions, pages  # the routes need this object first

        routes = [*pages.Pages(self).routes(), *actions.Actions(self).routes()]
        routes.append(
            Mount(
                "/static",
                StaticFiles(directory=HERE / "static", follow_symlink=True),
                name="static",
            )
        )
        self.app = Starlette(routes=routes, middleware=[Middleware(_Headers)])

    def close(self) -> None:
        self.tasks.close()

    # Sessions ---------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.sessions.load(request.cookies.get(COOKIE))

    def user(self, request: Request) -> User | None:
        session = self.session(request)
        if session is None or session.user is None:
            return None
        return self.directory.user(session.user)

    def set_session(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.sessions.dump(session),
            max_age=int(self.sessions.lifetime_s),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    # Answers ----------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        status: int = 200,
    ) -> HTMLResponse:
        """The page; a visitor without a session gets one (its CSRF token is in forms)."""
        session = self.session(request)
        fresh = session is None
        if session is None:
            session = self.sessions.new(None)
        user = self.directory.user(session.user) if session.user else None
        html = self.templates.get_template(template).render(
            {**context, "csrf": session.csrf, "user": user, "path": request.url.path}
        )
        response = HTMLResponse(html, status_code=status)
        if fresh:
            self.set_session(request, response, session)
        return response

    def error(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(request, "error.html", {"message": message, "status": status}, status)


async def form(request: Request) -> dict[str, str]:
    """The urlencoded form of a POST (no multipart library needed); at most 64 KiB."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def signed_in(ui: WebUi, handler: Callable[[Request, User], Awaitable[Response]]) -> Handler:
    """``handler`` for signed-in users; others go to the sign-in page (JSON: 401)."""

    async def guarded(request: Request) -> Response:
        user = ui.user(request)
        if user is not None:
            return await handler(request, user)
        if request.url.path.endswith(".json"):
            return JSONResponse({"error": "sign in first"}, status_code=401)
        if request.method == "GET":
            return redirect("/signin")
        return ui.error(request, 403, "Your session has ended. Sign in again.")

    return guarded


def posted(
    ui: WebUi, handler: Callable[[Request, User, dict[str, str]], Awaitable[Response]]
) -> Handler:
    """A form post of a signed-in user whose CSRF token matches its session."""

    async def checked(request: Request, user: User) -> Response:
        try:
            fields = await form(request)
        except FormTooLarge:
            return ui.error(request, 413, "The form is too large.")
        session = ui.session(request)
        if session is None or not session.csrf_ok(fields.get("csrf")):
            return ui.error(request, 403, "The form has expired. Reload the page and try again.")
        return await handler(request, user, fields)

    return signed_in(ui, checked)


class _Headers(BaseHTTPMiddleware):
    """Every answer of the UI: a strict Content-Security-Policy (nothing from other hosts)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response
