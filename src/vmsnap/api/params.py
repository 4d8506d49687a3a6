"""
Request parameters checked as CloudStack checks them: every bad value is a 431 with a
clean text (no Python error text), and lists are paged as CloudStack pages them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from vmsnap.api.errors import PARAM_ERROR, ApiError

Params = Mapping[str, str]
Doc = dict[str, Any]
#: CloudStack's default.page.size: the default and the largest ``pagesize``.
PAGE_SIZE = 500
SHOWN = 40  # the most of a caller's value an error text repeats
_NUMBER = re.compile(r"-?[0-9]{1,9}")


def shown(value: str) -> str:
    """A caller's value as an error text repeats it: printable ASCII, at most 40 chars."""
    text = "".join(c if " " <= c <= "~" else "?" for c in value[:SHOWN])
    return text + ("..." if len(value) > SHOWN else "")


def invalid(name: str, value: str, why: str) -> ApiError:
    return ApiError(PARAM_ERROR, f"Invalid parameter {name} value={shown(value)}: {why}")


def no_such(name: str, value: str) -> ApiError:
    return invalid(name, value, "no such entity")


def required(p: Params, name: str) -> str:
    value = p.get(name)
    if not value:
        raise ApiError(
            PARAM_ERROR, f"Unable to execute API command due to missing parameter {name}"
        )
    return value


def boolean(p: Params, name: str) -> bool:
    value = p.get(name, "false").lower()
    if value not in ("true", "false"):
        raise invalid(name, p[name], "not a boolean")
    return value == "true"


def integer(p: Params, name: str) -> int | None:
    value = p.get(name)
    if value is None:
        return None
    if not _NUMBER.fullmatch(value):
        raise invalid(name, value, "not a number")
    return int(value)


def id_list(p: Params, name: str) -> set[str] | None:
    value = p.get(name)
    if value is None:
        return None
    ids = {v.strip() for v in value.split(",") if v.strip()}
    if not ids:
        raise invalid(name, value, "not a list of ids")
    return ids


def page(items: Sequence[Doc], p: Params) -> tuple[int, list[Doc]]:
    """
    ``(count, the page)``: ``pagesize`` from 1 to 500 or -1 (all), ``page`` from 1; a
    page without a page size is a page of 500 (CloudStack's default.page.size).
    """
    size, number = integer(p, "pagesize"), integer(p, "page")
    if size is not None and size != -1 and not 1 <= size <= PAGE_SIZE:
        raise invalid("pagesize", p["pagesize"], f"from 1 to {PAGE_SIZE}, or -1 for all")
    if number is not None and number < 1:
        raise invalid("page", p["page"], "a page number starts at 1")
    if size == -1 or (size is None and number is None):
        return len(items), list(items)
    size = size or PAGE_SIZE
    start = ((number or 1) - 1) * size
    return len(items), list(items[start : start + size])


def keyword_match(p: Params, *texts: str | None) -> bool:
    """Whether ``keyword`` (absent: anything) is in one of ``texts``, ignoring case."""
    keyword = p.get("keyword")
    if not keyword:
        return True
    return any(keyword.lower() in t.lower() for t in texts if t)
