"""
The TOML document structured into :mod:`vmsnap.config_schema` by a cattrs converter, and
the one line a refused config gets.

The converter is strict where cattrs is lenient: a string is not a number, a number is
not a boolean, a boolean is not a whole number, a string is not an array. The rules of the
schema's ``Annotated`` marks are checked here. cattrs reports every problem with its path
(an exception group with notes); the first one becomes the ConfigError, an unknown key
before anything else, since a misspelt key is usually why a value is missing.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_mapping_structure_fn

from vmsnap import config_schema as schema
from vmsnap.domain.exceptions import ConfigError

KeyPath = tuple[str | int, ...]
Hook = Callable[[Any, Any], Any]
# difflib's ratio for a suggestion: 0.5 lets a two-letter key with one letter wrong ("ib"
# for "id") still find its match.
CUTOFF = 0.5


class Invalid(ValueError):
    """A value a rule refuses; ``at`` continues its path (a key of the table at hand)."""

    def __init__(self, message: str, at: KeyPath = ()) -> None:
        super().__init__(message)
        self.message = message
        self.at = at


class UnknownKey(Invalid):
    """A key of a mapping whose keys are names (operations, capabilities) that is none."""

    def __init__(self, known: tuple[str, ...], at: tuple[str, ...] = ()) -> None:
        super().__init__("unknown key", at)
        self.known = known


def structure(raw: Mapping[str, Any]) -> schema.Document:
    """
    Raises:
        ConfigError: one line, ``config: `` and the first problem with its key's path.
    """
    try:
        return _converter().structure(raw, schema.Document)
    except (BaseValidationError, Invalid) as e:
        raise ConfigError(error_line(e)) from None


def error_line(exc: BaseException) -> str:
    """The first problem of a cattrs error (an unknown key first), with its path."""
    leaves = list(_leaves(exc, ()))
    unknown = [(p, e) for p, e in leaves if isinstance(e, ForbiddenExtraKeysError | UnknownKey)]
    path, first = (unknown or leaves)[0]
    if isinstance(first, ForbiddenExtraKeysError):
        return _extra_key(path, first.cl, min(first.extra_fields))
    if isinstance(first, UnknownKey):
        return f"config: unknown key {render(path)}{hint(str(path[-1]), first.known)}"
    if isinstance(first, Invalid):
        return f"config: {render(path)} {first.message}"
    if isinstance(first, KeyError):
        return f"config: {render(path)} is required"
    return f"config: {render(path)}: {first}"


def _leaves(exc: BaseException, path: KeyPath) -> Iterator[tuple[KeyPath, BaseException]]:
    if isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            yield from _leaves(sub, path + _step(sub))
    else:
        yield path + getattr(exc, "at", ()), exc


def _step(exc: BaseException) -> KeyPath:
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            return (note.name,)
        if isinstance(note, IterableValidationNote):
            return (note.index,)
    return ()


def _extra_key(path: KeyPath, cl: type, key: str) -> str:
    where = render((*path, key))
    forbidden: dict[str, str] = getattr(cl, "FORBIDDEN", {})
    if key in forbidden:
        return f"config: {where}: {forbidden[key]}"
    for field, kinds in schema.KINDS.values():
        owners = [k for k, c in kinds.items() if key in attrs.fields_dict(c)]
        if cl in kinds.values() and owners:
            only = " or ".join(f"{field} = {json.dumps(k)}" for k in owners)
            mine = next(k for k, c in kinds.items() if c is cl)
            this = f"{field} = {json.dumps(mine)}"
            return f"config: {where} applies only to {only} (this one has {this})"
    return f"config: unknown key {where}{hint(key, tuple(attrs.fields_dict(cl)))}"


def hint(word: str, known: tuple[str, ...]) -> str:
    """``" (did you mean 'x'?)"``, or the known names when none is close."""
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=CUTOFF)
    if close:
        return f" (did you mean {lowered[close[0]]!r}?)"
    return f" (expected one of: {', '.join(known)})"


def render(path: KeyPath) -> str:
    """``[limits] quiesce_deadline_s``, ``[[pools]][1].faults.take_snapshot``, ``limits``."""
    if not path:
        return "the config"
    if len(path) == 1:
        return _key(path[0])
    if path[:2] == ("api", "keys") and len(path) > 2 and isinstance(path[2], int):
        head, rest, sep = f"[[api.keys]][{path[2]}]", path[3:], "."
    elif isinstance(path[1], int):
        head, rest, sep = f"[[{path[0]}]][{path[1]}]", path[2:], "."
    else:
        head, rest, sep = f"[{path[0]}]", path[1:], " "
    parts = [
        f"[{s}]" if isinstance(s, int) else (sep if i == 0 else ".") + _key(s)
        for i, s in enumerate(rest)
    ]
    return head + "".join(parts)


def _key(segment: str | int) -> str:
    text = str(segment)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else json.dumps(text)


def show(value: Any) -> str:
    """A value as the error line shows it after ``got``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- the rules ------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string (got {show(value)})")
    return value


def _bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false (got {show(value)})")
    return value


def _int(value: Any, _: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"must be a whole number (got {show(value)})")
    return value


def _float(value: Any, _: Any) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise Invalid(f"must be a finite number (got {show(value)})")
    return float(value)


def _one_of(mark: schema.OneOf, value: Any) -> str:
    if not isinstance(value, str) or value not in mark.choices:
        close = (
            difflib.get_close_matches(value, mark.choices, 1, CUTOFF)
            if isinstance(value, str)
            else []
        )
        also = f"; did you mean {close[0]!r}?" if close else ""
        raise Invalid(f"must be one of {', '.join(mark.choices)} (got {show(value)}{also})")
    return value


def _key_of(mark: schema.KeyOf, value: Any) -> str:
    if value not in mark.names:
        raise UnknownKey(mark.names)
    return str(value)


def _at_least(mark: schema.AtLeast, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < mark.minimum:
        raise Invalid(f"must be a whole number >= {mark.minimum} (got {show(value)})")
    if mark.maximum is not None and value > mark.maximum:
        raise Invalid(f"must be a whole number <= {mark.maximum} (got {show(value)})")
    return value


def _seconds(mark: schema.Seconds, value: Any) -> float:
    number = _is_number(value) and math.isfinite(value)
    if not (number and (value > 0 or (mark.zero_ok and value == 0))):
        bound = ">= 0" if mark.zero_ok else "> 0"
        raise Invalid(f"must be a finite number {bound} (got {show(value)})")
    if value > schema.MAX_SECONDS:
        raise Invalid(f"must be at most {schema.MAX_SECONDS:.0f} seconds (got {show(value)})")
    return float(value)


def _non_blank(_: schema.NonBlank, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a non-empty string (got {show(value)})")
    return value


def _argv(_: schema.Argv, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise Invalid(f"must be an array of strings (got {show(value)})")
    if not value:
        raise Invalid("must not be empty (the program to run, then its arguments)")
    for i, arg in enumerate(value):
        if not isinstance(arg, str):
            raise Invalid(f"must be a string (got {show(arg)})", at=(i,))
    if not value[0].startswith("/"):
        raise Invalid(f"must be an absolute path (got {show(value[0])})", at=(0,))
    return list(value)


RULES: dict[type, Callable[[Any, Any], Any]] = {
    schema.OneOf: _one_of,
    schema.KeyOf: _key_of,
    schema.AtLeast: _at_least,
    schema.Seconds: _seconds,
    schema.NonBlank: _non_blank,
    schema.Argv: _argv,
}


def _annotated(value: Any, annotated: Any) -> Any:
    _, *marks = get_args(annotated)
    for mark in marks:
        value = RULES[type(mark)](mark, value)
    return value


# -- the converter --------------------------------------------------------------------------


def _checked(kind: type, what: str, structure_fn: Hook) -> Hook:
    """``structure_fn`` for a value that must be ``kind`` (a table, an array) first."""

    def hook(value: Any, cl: Any) -> Any:
        if not isinstance(value, kind):
            raise Invalid(f"must be {what} (got {show(value)})")
        return structure_fn(value, cl)

    return hook


def _by_kind(converter: cattrs.Converter, field: str, kinds: dict[str, type]) -> Hook:
    """The table class of a pool or a hypervisor: the one its ``field`` names."""
    names = tuple(kinds)

    def hook(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise Invalid(f"must be a table (got {show(value)})")
        if field not in value:
            known = tuple(dict.fromkeys(f for c in kinds.values() for f in attrs.fields_dict(c)))
            strays = [k for k in value if k not in known]
            if strays:  # "tpye": say so rather than that type is missing
                raise UnknownKey(known, at=(strays[0],))
            raise Invalid(f"is required (one of {', '.join(names)})", at=(field,))
        try:
            kind = _one_of(schema.OneOf(names), value[field])
        except Invalid as e:
            raise Invalid(e.message, at=(field,)) from None
        return converter.structure(value, kinds[kind])

    return hook


def _origin(t: Any) -> object:
    return get_origin(t)


@functools.cache
def _converter() -> cattrs.Converter:
    """Built on first use: ``vmsnap --help`` does not pay for it."""
    c = cattrs.Converter(forbid_extra_keys=True)
    for cl, fn in ((str, _str), (bool, _bool), (int, _int), (float, _float)):
        c.register_structure_hook(cl, fn)
    c.register_structure_hook_func(lambda t: _origin(t) is Annotated, _annotated)
    c.register_structure_hook_factory(
        lambda t: _origin(t) is list,
        lambda t: _checked(list, "an array", list_structure_factory(t, c)),
    )
    c.register_structure_hook_factory(
        lambda t: _origin(t) is dict,
        lambda t: _checked(Mapping, "a table", make_mapping_structure_fn(t, c)),
    )
    c.register_structure_hook_factory(
        attrs.has, lambda cl: _checked(Mapping, "a table", make_dict_structure_fn(cl, c))
    )
    for union, (field, kinds) in schema.KINDS.items():
        c.register_structure_hook(union, _by_kind(c, field, kinds))
    return c
