"""The ASGI app: CloudStack's query API at ``/client/api`` (GET, or POST as a form)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from vmsnap.api.commands import CloudStackApi

PATH = "/client/api"


def create_app(api: CloudStackApi) -> Starlette:
    """
    The app serving ``api``; nothing else is routed (other paths answer 404).
    """

    async def endpoint(request: Request) -> JSONResponse:
        params = dict(request.query_params)
        if request.method == "POST" and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            # CloudStack clients POST forms; parsed here, without a multipart library.
            form = (await request.body()).decode("utf-8", errors="replace")
            params.update(parse_qsl(form, keep_blank_values=True))
        remote = request.client.host if request.client else None
        # The Controller blocks (SQLite, drivers): answer from a worker thread.
        status, body = await run_in_threadpool(api.handle, params, remote)
        return JSONResponse(body, status_code=status)

    return Starlette(routes=[Route(PATH, endpoint, methods=["GET", "POST"])])
