"""How a problem of rules.yaml is said: a field's path as users read it, pydantic's and YAML's
messages in plain words with what to do, and never a secret (a value a typo ran into a key's name
is not shown, nor a key pasted where a name or a choice belongs)."""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel

from ccswitch.config.models import Failover, Routes, Rules, Timeouts, Upstream
from ccswitch.config.values import SHORT_VALUE, SHOWN_AT_MOST

_FIELD_NAMES = sorted({f for m in (Rules, Failover, Timeouts, Upstream, Routes) for f in m.model_fields} - {"source"})
_PLAIN_MESSAGES = {
    "missing": "required", "model_type": "must be a mapping", "dict_type": "must be a mapping",
    "tuple_type": "must be a list", "list_type": "must be a list", "frozen_set_type": "must be a list",
    "string_type": "must be a string", "int_type": "must be an integer", "int_parsing": "must be an integer",
    "int_from_float": "must be an integer", "bool_type": "must be true or false",
    "bool_parsing": "must be true or false", "float_type": "must be a number", "float_parsing": "must be a number",
    "path_type": "must be a path", "string_pattern_mismatch": "may contain only letters, digits, '.', '_', '-'",
    "string_too_short": "must not be empty",
}


def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _section_keys(loc: tuple) -> list[str]:
    """The keys valid where the unknown key at `loc` was typed: the fields of the model at that
    path (a hint must name a key valid there); none when the path leads to no model."""
    model: Any = Rules
    for part in loc[:-1]:
        if isinstance(part, int) or part == "[key]":
            continue
        hints = typing.get_type_hints(model) if isinstance(model, type) and issubclass(model, BaseModel) else {}
        model = _model_in(hints[part]) if part in hints else None
        if model is None:
            return []
    return sorted(set(model.model_fields) - {"source"})


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field's type holds (itself, or in a tuple, dict, union or Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (model := _model_in(arg)) is not None:
            return model
    return None


#: what a key of the rules' own sections looks like; an unknown one unlike it may be text that a
#: typo turned into a key (`api_key "sk-…"` without its colon, a client key ending in `:`)
_FIELD_LIKE = re.compile(r"[a-z_][a-z0-9_]{0,23}")
#: a header's name (words and dashes, no digit: a key has some), put where a field belongs
_HEADER_LIKE = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)+")
UNSHOWN = "<unknown key>"


def shown_loc(err: Mapping[str, Any]) -> tuple:
    """The error's location as a message may show it: an unknown key, or a name that no name is
    like (a space or a quote in it: a value run into its key), that may hold a secret stands as
    `UNSHOWN` (every message and the log are read by others; no key may be in one)."""
    loc = tuple(UNSHOWN if isinstance(part, str) and _run_together(part) else part for part in err["loc"])
    if err["type"] == "extra_forbidden" and loc and _unshowable(str(loc[-1]), loc):
        return loc[:-1] + (UNSHOWN,)
    return loc


def _run_together(name: str) -> bool:
    """A name with a value run into it: a space or a quote, and longer than a name (`bad header`
    is a name typed wrong; `x-api-key "sk-…"` a value that lost its colon)."""
    return len(name) > 24 and any(c.isspace() or c in "\"'" for c in name)


def _name_like(text: str) -> bool:
    """Reads as a field's or a header's name, which a message may show (never a key)."""
    return bool(_FIELD_LIKE.fullmatch(text) or _HEADER_LIKE.fullmatch(text))


def _unshowable(key: str, loc: tuple) -> bool:
    return not (_name_like(key) or difflib.get_close_matches(key, _section_keys(loc), n=1, cutoff=0.75))


def duplicate(key: str) -> str:
    """A key written twice, named when it reads as a name (a model's may be long and a pasted key
    looks like one: its line says which)."""
    return f"duplicate key {key!r}" if _name_like(key) else "duplicate key"


def message(err: Mapping[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1]) if err["loc"] else ""
        if _unshowable(key, tuple(err["loc"])):
            head = re.match(r"[A-Za-z_]+", key)
            if head and head.group(0) in _section_keys(tuple(err["loc"])) and key[head.end():][:1] in (" ", '"', "'"):
                return (f"unknown key: {head.group(0)} and its value run together, not shown "
                        f"(a ':' missing after {head.group(0)}?)")
            return f"unknown key of {len(key)} characters, not shown: it may hold a secret (a ':' where none belongs?)"
        close = difflib.get_close_matches(key, _section_keys(tuple(err["loc"])), n=1, cutoff=0.75)
        if close:
            return f"unknown key (did you mean {close[0]!r}?)"
        if _HEADER_LIKE.fullmatch(key) and key not in _FIELD_NAMES:
            return "unknown key (a header? headers go under headers:)"
        if key in _FIELD_NAMES:
            return "unknown key here (it belongs to another section)"
        elsewhere = difflib.get_close_matches(key, _FIELD_NAMES, n=1, cutoff=0.75)
        return "unknown key" + (f" ({elsewhere[0]!r}, a key of another section, is not valid here either)"
                                if elsewhere else "")
    named_by = next((part for part in reversed(err["loc"]) if isinstance(part, str)), None)   # events[0]: events
    if kind in ("list_type", "tuple_type") and named_by in _LISTS_OF_NAMES and isinstance(err.get("input"), str):
        given = err["input"]
        at_most = SHOWN_AT_MOST if named_by in ("only_models", "intercept") else SHORT_VALUE   # names, or times
        return "must be a list, even of one: " + (f"[{json.dumps(given)}]" if len(given) <= at_most else "[...]")
    if kind == "dict_type" and err.get("input", 0) is None and named_by:
        # `models:` with its entries at its own indentation: YAML reads it empty, the entries beside it
        # (a list's `- item` may stand at its key's indentation: no such slip for lists)
        return f"is empty: a mapping is wanted (its entries indented under {named_by}:?)"
    if kind in _PLAIN_MESSAGES:
        return _PLAIN_MESSAGES[kind]
    choice = named_by in _NAMED_CHOICES or "on_status" in err["loc"]
    if kind in ("literal_error", "enum") and choice and isinstance(err.get("input"), str):
        # a choice among names (never a secret): the value given, and the name it is closest to
        named = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        close = difflib.get_close_matches(err["input"], named, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        given = err["input"]
        # a key pasted where a choice belongs is not repeated
        said = repr(given) if _name_like(given.lower()) else f"a value of {len(given)} characters"
        return f"{said} is not one of " + msg.removeprefix("Input should be ") + hint
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg.replace("Input should be", "must be")  # pydantic messages never carry the input


_NAMED_CHOICES = frozenset({"protocol", "auth", "strategy", "format", "codex_websocket", "events"})
#: lists of names or times (never a secret), often written as one bare value
_LISTS_OF_NAMES = frozenset({"days", "hours", "only_models", "intercept", "activate_at", "events"})
_QUOTED = re.compile(r"'([^'\s]{8,})'")


def yaml_problem(e: yaml.MarkedYAMLError) -> str:
    """The parser's message without the text it quotes beyond a few characters: an unquoted key
    starting with `*` or `!` is read as an alias or a tag, and quoted as one."""
    text = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
    text = _QUOTED.sub(lambda m: f"'{m.group(1)[:3]}…'", text)
    if "alias" in text or " tag " in text:
        text += " (a value starting with *, & or ! needs quotes)"
    if "flow mapping" in text and "but got '{'" in text:       # `{api_key: ${KEY}}`: `${` opens a mapping
        text += " (a ${VAR} inside { } needs quotes: api_key: \"${VAR}\")"
    if "'\\t'" in text:
        text += " (indent with spaces: YAML does not allow tabs)"
    elif any(said in text for said in _INDENT_SAID):
        text += (" (check this line's indentation against the lines above it: the keys of one entry line up;"
                 " a value holding ': ' needs quotes)")
    return text


#: what the parser says of a line indented more or less than its neighbours
_INDENT_SAID = ("expected <block end>", "mapping values are not allowed here", "could not find expected ':'")
