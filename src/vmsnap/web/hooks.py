"""
A snapshot's hooks (issue #19) as the snapshot page shows them: the view's hook runs, the
pre-freeze hook first. Hook output is the guest's or a host command's text: it is shown
escaped (the templates autoescape) and with its control characters made visible.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from vmsnap.domain.values import PRE_FREEZE
from vmsnap.views import HookView

#: C0 and C1 controls but newline and tab, and the zero-width and bidirectional marks that
#: make text read other than it is.
_HIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")

TITLES = {PRE_FREEZE: "Pre-freeze hook"}


def visible(text: str) -> str:
    """
    ``text`` with every control character (but newline and tab) written as an escape
    (``\\x1b``, ``\\u202e``), so that hostile output cannot hide or reorder what is shown.
    """
    return _HIDDEN.sub(lambda m: ascii(m.group())[1:-1], text)


def in_order(hooks: Sequence[HookView]) -> list[HookView]:
    """
    The hook runs as they bracket the freeze: pre-freeze, then post-thaw (the view lists
    the post-thaw hook from the moment it became owed, before the pre-freeze hook ran).
    """
    return sorted(hooks, key=lambda h: h.hook != PRE_FREEZE)


def title(hook: str) -> str:
    return TITLES.get(hook, "Post-thaw hook")
