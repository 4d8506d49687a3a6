"""
``json.dumps`` with its default settings, the same text, without what it redoes on every
call: it builds a new C encoder each time, which was about half of its cost for the
small documents vmsnap writes per event or row (profiled; ADR 0025).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any


def _encoder(sort_keys: bool) -> Callable[[Any], str]:
    if c_make_encoder is None:  # no C accelerator (another interpreter): json.dumps
        return lambda obj: json.dumps(obj, sort_keys=sort_keys)
    # markers, default, encoder, indent, separators, sort_keys, skipkeys, allow_nan. No
    # circular-reference markers: what is written here comes from JSON or is built from
    # plain values, and holds no cycle.
    encode = c_make_encoder(
        None,
        json.JSONEncoder().default,
        encode_basestring_ascii,
        None,
        ": ",
        ", ",
        sort_keys,
        False,
        True,
    )
    return lambda obj: "".join(encode(obj, 0))


#: ``json.dumps(obj)``
dumps = _encoder(False)
#: ``json.dumps(obj, sort_keys=True)``
dumps_sorted = _encoder(True)
