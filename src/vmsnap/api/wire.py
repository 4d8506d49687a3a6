"""
The answer on the wire: JSON with ``response=json``, XML when ``response`` is absent
(CloudStack's default), as CloudStack writes them.
"""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape, quoteattr

VERSION = "4.19.0.0-vmsnap"
JSON_TYPE = "application/json; charset=UTF-8"
XML_TYPE = "text/xml; charset=UTF-8"


def wants_json(params: dict[str, str]) -> bool:
    """
    ``response=json`` (any case); anything else, or nothing, is XML. CloudStack answers
    an unknown ``response`` in XML too.
    """
    value = next((v for k, v in params.items() if k.lower() == "response"), "xml")
    return value.lower() == "json"


def render(body: dict[str, Any], as_json: bool) -> tuple[bytes, str]:
    """``(content, media type)`` of ``body`` (``{"<command>response": {...}}``)."""
    if as_json:
        return json.dumps(body, separators=(",", ":")).encode(), JSON_TYPE
    [(root, doc)] = body.items()
    parts = ['<?xml version="1.0" encoding="UTF-8"?>']
    parts.append(f"<{_tag(root)} cloud-stack-version={quoteattr(VERSION)}>")
    _children(doc, parts)
    parts.append(f"</{_tag(root)}>")
    return "".join(parts).encode(), XML_TYPE


def _children(doc: dict[str, Any], parts: list[str]) -> None:
    for key, value in doc.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is None:
                continue
            tag = _tag(key)
            if isinstance(item, dict):
                parts.append(f"<{tag}>")
                _children(item, parts)
                parts.append(f"</{tag}>")
            else:
                parts.append(f"<{tag}>{escape(_text(item))}</{tag}>")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tag(name: str) -> str:
    """A key as an element name: letters, digits, ``_``, ``-`` and ``.`` only."""
    clean = "".join(c if c.isascii() and (c.isalnum() or c in "_-.") else "_" for c in name)
    return clean if clean and not clean[0].isdigit() and clean[0] not in "-." else f"_{clean}"
