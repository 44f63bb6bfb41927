"""Reading rules.yaml: YAML -> ``${VAR}`` expansion -> pydantic validation -> cross-checks.

This file owns turning rules *text* into a ``Rules`` (models in config.models): a YAML loader with
YAML 1.2-ish scalars that notes duplicate keys, ``${VAR}`` expansion in api_key and header
values (also client keys in either form, notify URLs, proxies), pydantic errors rewritten as ``FILE: field.path: message``
(upstreams named by name, see config.crosscheck, which also holds the checks that span fields), and where rules.yaml is looked for.
Public: ``find_rules`` (what every command and the proxy load), ``parse_rules``, ``load_rules``,
``resolve_rules_path``, ``rules_origin``, ``default_rules_text``, ``example_rules_text``. Every
problem is collected into one ``RulesError``; secrets never appear in a message.
"""
from __future__ import annotations

import copy
import difflib
import json
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ccswitch.config.crosscheck import cross_check, label_path, upstream_labels
from ccswitch.config.expand import expand_keys_and_hooks, expand_proxies, expand_upstreams
from ccswitch.config.models import Failover, Routes, Rules, Timeouts, Upstream
from ccswitch.config.values import RulesError


class _Loader(yaml.SafeLoader):
    """YAML 1.2-ish scalars (no sexagesimal 06:00, no yes/no booleans, no dates: `2023-06-01` is
    text, as a header value is); notes duplicate keys."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else []:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in seen:
                self.duplicates.append((key_node.start_mark.line + 1, key_node.value))
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if not tag.endswith((":bool", ":int", ":float", ":timestamp"))]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+)$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+)|[-+]?\.(?:inf|Inf|INF)"
               r"|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))
_Loader.add_constructor("tag:yaml.org,2002:int",
                        lambda loader, node: int(node.value, 16 if "x" in node.value else 10))


def _str_keys(obj: Any) -> Any:
    """Every mapping key in rules.yaml is a string (``400: pass`` means "400")."""
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else str(k).lower() if isinstance(k, bool) else str(k)): _str_keys(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_str_keys(v) for v in obj]
    return obj


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


def _format_loc(loc: tuple) -> str:
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


def _shown_loc(err: Mapping[str, Any]) -> tuple:
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


def _unshowable(key: str, loc: tuple) -> bool:
    return not (_FIELD_LIKE.fullmatch(key) or _HEADER_LIKE.fullmatch(key)
                or difflib.get_close_matches(key, _section_keys(loc), n=1, cutoff=0.75))


def _duplicate(key: str) -> str:
    """A key written twice, named when it reads as a field's or a header's name (a model's may be
    long and a pasted key looks like one: its line says which)."""
    return f"duplicate key {key!r}" if _FIELD_LIKE.fullmatch(key) or _HEADER_LIKE.fullmatch(key) else "duplicate key"


def _message(err: Mapping[str, Any]) -> str:
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
        return f"must be a list, even of one: [{json.dumps(err['input'][:60])}]"
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
        said = repr(given) if _FIELD_LIKE.fullmatch(given.lower()) or _HEADER_LIKE.fullmatch(given) \
            else f"a value of {len(given)} characters"
        return f"{said} is not one of " + msg.removeprefix("Input should be ") + hint
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg.replace("Input should be", "must be")  # pydantic messages never carry the input


_NAMED_CHOICES = frozenset({"protocol", "auth", "strategy", "format", "codex_websocket", "events"})
#: lists of names or times (never a secret), often written as one bare value
_LISTS_OF_NAMES = frozenset({"days", "hours", "only_models", "intercept", "activate_at", "events"})
_QUOTED = re.compile(r"'([^'\s]{8,})'")


def _yaml_problem(e: yaml.MarkedYAMLError) -> str:
    """The parser's message without the text it quotes beyond a few characters: an unquoted key
    starting with `*` or `!` is read as an alias or a tag, and quoted as one."""
    text = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
    text = _QUOTED.sub(lambda m: f"'{m.group(1)[:3]}…'", text)
    if "alias" in text or " tag " in text:
        text += " (a value starting with *, & or ! needs quotes)"
    if "'\\t'" in text:
        text += " (indent with spaces: YAML does not allow tabs)"
    return text


def _parse(text: str, source: str, env: Mapping[str, str] | None, base_dir: Path | None,
           source_path: Path | None) -> Rules:
    env = os.environ if env is None else env
    labels: dict[int, str] = {}   # filled once the data is known: upstreams by name, not position

    def where(path: str, msg: str) -> str:
        return f"{source}: {label_path(path, labels)}: {msg}" if path else f"{source}: {msg}"

    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        pos = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = _yaml_problem(e)
        began = e.context_mark
        if began is not None and mark is not None and began.line != mark.line:
            # where the parser gave up may be the file's end: where the broken part starts
            problem += f" (it starts at line {began.line + 1}, column {began.column + 1})"
        raise RulesError([where(pos, problem)]) from None
    except yaml.YAMLError as e:
        raise RulesError([where("", f"invalid YAML ({type(e).__name__})")]) from None
    except RecursionError:
        raise RulesError([where("", "invalid YAML: an alias refers to itself")]) from None
    except (ValueError, TypeError, OverflowError) as e:   # a tagged value its type refuses (`!!int abc`)
        raise RulesError([where("", f"invalid YAML value: {str(e)[:200]}")]) from None
    finally:
        loader.dispose()
    problems = [where(f"line {line}", _duplicate(str(key))) for line, key in loader.duplicates]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RulesError(problems + [where("", "the rules must be a mapping (key: value lines)")])
    try:
        data = _str_keys(copy.deepcopy(data))
    except RecursionError:   # a structure that contains itself (`&x [*x]`)
        raise RulesError(problems + [where("", "invalid YAML: an alias refers to itself")]) from None
    labels.update(upstream_labels(data))
    if "source" in data:
        problems.append(where("source", "unknown key"))
        del data["source"]
    env_problems, env_paths = expand_upstreams(data, env)
    for expand in (expand_keys_and_hooks, expand_proxies):
        more_problems, more_paths = expand(data, env)
        env_problems, env_paths = env_problems + more_problems, env_paths | more_paths
    problems += [where(p, m) for p, m in env_problems]
    ctx = {"base_dir": base_dir if base_dir is not None else Path.cwd()}
    rules: Rules | None = None
    try:
        rules = Rules.model_validate({**data, "source": source_path}, context=ctx)
        ups: list[Upstream | None] = list(rules.upstreams)
    except ValidationError as e:
        # a field whose ${VAR} is not set is said once, not again as the value left in its place
        problems += [where(loc, _message(err)) for err in e.errors(include_url=False)
                     if (loc := _format_loc(_shown_loc(err))) not in env_paths]
        ups = []
        for raw in data.get("upstreams") if isinstance(data.get("upstreams"), list) else []:
            try:
                ups.append(Upstream.model_validate(raw, context=ctx))
            except ValidationError:
                ups.append(None)
    problems += [where(p, m) for p, m in cross_check(data, ups) if p not in env_paths]
    if problems or rules is None:
        raise RulesError(list(dict.fromkeys(problems)))
    return rules


def parse_rules(text: str, source: str = "<rules>", env: Mapping[str, str] | None = None,
                base_dir: Path | None = None, source_path: Path | None = None) -> Rules:
    """Validate rules text. Raises RulesError listing every problem. Relative usage_db
    paths resolve against base_dir (default: the current directory)."""
    return _parse(text, source, env, base_dir, source_path)


def load_rules(path: str | Path, env: Mapping[str, str] | None = None) -> Rules:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:     # has no strerror; say it as the proxy's own reload does (config.watch)
        raise RulesError([f"{path}: cannot read (not UTF-8)"]) from None
    except OSError as e:
        raise RulesError([unreadable(path, e)]) from None
    if blank(text):
        raise RulesError([empty_file(path)])
    return _parse(text, str(path), env, path.resolve().parent, path)


def blank(text: str) -> bool:
    """Nothing but blank lines and comments: a file cut short or not written yet, not rules (which
    would route nothing, every request passing through untouched)."""
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def empty_file(path: Path) -> str:
    return (f"{path}: is empty (nothing but comments): ccswitch would route nothing; write rules into it "
            "(`ccswitch init` writes a commented example)")


BUILT_IN = "<built-in default>"


def find_rules(option_value: str | None, env: Mapping[str, str] | None = None,
               cwd: Path | None = None, home: Path | None = None) -> tuple[Rules, Path | None]:
    """The rules every command and the proxy use, and their file (None = the built-in default).

    A named file must exist; without a name, ./rules.yaml, then ~/.ccswitch/rules.yaml, then
    the built-in default.  Raises RulesError for a missing or invalid file."""
    path = resolve_rules_path(option_value, cwd or Path.cwd(), home or Path.home())
    if path is None:
        return parse_rules(default_rules_text(), BUILT_IN, env), None
    if not path.exists() and not path.is_symlink():
        raise RulesError([f"{path}: no such file"])
    return load_rules(path, env), path


def rules_origin(option_value: str | None, path: Path | None, cwd: Path | None = None,
                 home: Path | None = None) -> str:
    """Which rules are in use and why, for the line every command prints.

    The lookup order is fixed (docs/rules.md); this says plainly when a ``./rules.yaml`` of the
    current directory (a checkout's tracked example, say) wins over ``~/.ccswitch/rules.yaml``."""
    cwd, home = cwd or Path.cwd(), home or Path.home()
    personal = home / ".ccswitch" / "rules.yaml"
    if path is None:
        return (f"the built-in default (official upstreams, the client's own credentials): there is no "
                f"./rules.yaml here and no {personal}; `ccswitch init` writes one")
    if option_value:
        why = "as named"
    elif path == cwd / "rules.yaml":
        why = ("found as ./rules.yaml in the current directory, which comes before ~/.ccswitch/rules.yaml"
               + (f"; {personal} is not used" if personal.is_file() else "")
               + "; name a file to use another")
    else:
        why = "~/.ccswitch/rules.yaml; there is no ./rules.yaml here"
    if _is_example(path):
        why += "; it is the shipped example, unchanged"
    return f"{path} ({why})"


def _is_example(path: Path) -> bool:
    try:
        return path.read_text(encoding="utf-8") == example_rules_text()
    except (OSError, UnicodeDecodeError):
        return False


def resolve_rules_path(option_value: str | None, cwd: Path, home: Path) -> Path | None:
    """Explicit option; else ./rules.yaml; else ~/.ccswitch/rules.yaml; else None (built-in)."""
    if option_value:
        if option_value == "~" or option_value.startswith("~/"):
            p = home / option_value[2:]
        else:
            p = Path(option_value)
        return p if p.is_absolute() else cwd / p
    for candidate in (cwd / "rules.yaml", home / ".ccswitch" / "rules.yaml"):
        # there in any form (a link to nothing, a folder): chosen, so that its fault is said,
        # not passed over for the next file or the built-in default
        if candidate.is_symlink() or candidate.exists():
            return candidate
    return None


def unreadable(path: Path, exc: OSError) -> str:
    """Why the rules file at `path` cannot be read, as a problem line."""
    if path.is_symlink() and not path.exists():
        return f"{path}: is a link to {os.readlink(path)}, which does not exist"
    if path.is_dir():
        return f"{path}: is a folder, not a rules file"
    return f"{path}: cannot read ({exc.strerror or type(exc).__name__})"


DEFAULT_RULES_TEXT = """\
# ccswitch built-in default rules (same meaning as the shipped rules.yaml):
# the official APIs, with the client's own credentials.
version: 1
intercept: [api.anthropic.com, api.openai.com, chatgpt.com]
upstreams:
  - {name: anthropic-official, protocol: anthropic, base_url: "https://api.anthropic.com", auth: client}
  - {name: openai-official, protocol: openai-responses, base_url: "https://api.openai.com/v1", auth: client}
  - {name: chatgpt-codex, protocol: openai-responses, base_url: "https://chatgpt.com/backend-api/codex",
     auth: client}
  - {name: codex-original, protocol: openai-responses, base_url: original, auth: client}
routes:
  claude: [anthropic-official]
  codex: [codex-original]
  chat: []
"""


def default_rules_text() -> str:
    return DEFAULT_RULES_TEXT


EXAMPLE_RULES = "example-rules.yaml"   # package data of ccswitch.config; the repository's rules.yaml equals it


def example_rules_text() -> str:
    """The shipped, commented example rules (what `ccswitch init` writes)."""
    return (Path(__file__).with_name(EXAMPLE_RULES)).read_text(encoding="utf-8")
