"""
The ASGI app: CloudStack's query API at ``/client/api`` (GET, or POST as a form).

Bounded before authenticated (ADR 0022): a body longer than ``max_body_bytes`` is
refused (413) while it is read, before its signature is checked; a body that takes longer
than ``read_timeout_s`` is refused (408); parsing and answering run in worker threads,
and a submitted job is waited for without holding one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Sequence
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from vmsnap.api import responses, wire
from vmsnap.api.commands import CloudStackApi, Deferred
from vmsnap.api.errors import TOO_LARGE
from vmsnap.api.jobs import CLAIM_WAIT_S
from vmsnap.config import ApiSettings

PATH = "/client/api"
FORM = "application/x-www-form-urlencoded"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _TooLarge(Exception):
    pass


def create_app(api: CloudStackApi, settings: ApiSettings | None = None) -> Starlette:
    """
    The app serving ``api``; nothing else is routed (other paths answer 404).
    """
    limits = settings or ApiSettings()

    async def endpoint(request: Request) -> Response:
        query = request.url.query
        as_json = wire.wants_json(dict(request.query_params))
        try:
            form = await _read_body(request, limits)
        except _TooLarge:
            text = f"the request body is larger than {limits.max_body_bytes} bytes"
            return _answer(TOO_LARGE, responses.error(None, TOO_LARGE, text), as_json)
        except TimeoutError:
            return Response(status_code=408, headers={"connection": "close"})
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening any more
        remote = client_address(request, limits.trusted_proxies)
        loop = asyncio.get_running_loop()
        settled = asyncio.Event()

        def on_settled() -> None:
            loop.call_soon_threadsafe(settled.set)

        def answer() -> tuple[int, dict[str, object], bool] | Deferred:
            # Parsing too runs here, off the event loop.
            params = dict(parse_qsl(query, keep_blank_values=True))
            params.update(parse_qsl(form, keep_blank_values=True))
            done = api.handle(params, remote, on_settled)
            if isinstance(done, Deferred):
                return done
            return done[0], done[1], wire.wants_json(params)

        result = await run_in_threadpool(answer)
        if isinstance(result, Deferred):
            # Waiting for the claim holds no thread; a queued job is answered at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), CLAIM_WAIT_S)
            status, body = result.resolve()
            return _answer(status, body, as_json or _form_wants_json(form))
        status, body, json_wanted = result
        return _answer(status, body, json_wanted)

    return Starlette(routes=[Route(PATH, endpoint, methods=["GET", "POST"])])


async def _read_body(request: Request, limits: ApiSettings) -> str:
    """
    A form body, read at most ``max_body_bytes`` of it, within ``read_timeout_s``.
    A body of another type is not read (nothing in it is used).
    """
    if request.method != "POST":
        return ""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _TooLarge
    if not request.headers.get("content-type", "").startswith(FORM):
        return ""
    chunks: list[bytes] = []
    size = 0
    with anyio.fail_after(limits.read_timeout_s):
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _form_wants_json(form: str) -> bool:
    return wire.wants_json(dict(parse_qsl(form, keep_blank_values=True)))


def _answer(status: int, body: dict[str, object], as_json: bool) -> Response:
    content, media = wire.render(body, as_json)
    return Response(content, status_code=status, media_type=media)


def client_address(request: Request, trusted: Sequence[Network]) -> str | None:
    """
    The client's address: the peer's, or, when the peer is a trusted proxy, the last
    address in ``X-Forwarded-For`` that is not one of the trusted proxies.
    """
    peer = request.client.host if request.client else None
    if peer is None or not _trusted(peer, trusted):
        return peer
    forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",")]
    for address in reversed([a for a in forwarded if a]):
        if not _trusted(address, trusted):
            return address[:64]
    return peer


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)
