"""Transcodings for the domain's attrs values, so events holding them store as JSON."""

from __future__ import annotations

from typing import Any

import attrs
from eventsourcing.persistence import JSONTranscoder, Transcoding

from vmsnap.domain.values import ATTRS_VALUES


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def attrs_transcoding(cls: type) -> Transcoding:
    """
    Return a transcoding that stores an attrs value as a dict of its fields, named by
    the class name (stable across module moves).
    """

    class AttrsAsDict(Transcoding):
        type = cls
        name = cls.__name__

        def encode(self, obj: Any) -> dict[str, Any]:
            return {f.name: _plain(getattr(obj, f.name)) for f in attrs.fields(cls)}

        def decode(self, data: dict[str, Any]) -> Any:
            return cls(**data)

    return AttrsAsDict()


def register_domain_transcodings(transcoder: JSONTranscoder) -> None:
    for cls in ATTRS_VALUES:
        transcoder.register(attrs_transcoding(cls))
