"""Reading rules.yaml: YAML -> ``${VAR}`` expansion -> pydantic validation -> cross-checks.

This file owns turning rules *text* into a ``Rules`` (models in config.models): a YAML loader with
YAML 1.2-ish scalars that notes duplicate keys, ``${VAR}`` expansion in api_key and header
values (also client keys in either form, notify URLs, proxies), pydantic errors rewritten as ``FILE: field.path: message``
(worded in config.problems; upstreams named by name, see config.crosscheck, which also holds the checks that
span fields), and where rules.yaml is looked for.
Public: ``find_rules`` (what every command and the proxy load), ``parse_rules``, ``load_rules``,
``resolve_rules_path``, ``rules_origin``, ``default_rules_text``, ``example_rules_text``. Every
problem is collected into one ``RulesError``; secrets never appear in a message.
"""
from __future__ import annotations

import copy
import errno
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ccswitch.config.crosscheck import cross_check, label_path, upstream_labels
from ccswitch.config.expand import expand_keys_and_hooks, expand_proxies, expand_upstreams
from ccswitch.config.models import Rules, Upstream
from ccswitch.config.problems import duplicate, format_loc, message, shown_loc, yaml_problem
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


#: values the rules may hold once their aliases are expanded: a few hundred in the largest real
#: file; a "billion laughs" of nested aliases would stall the load (and a reload, the proxy) for minutes
MAX_VALUES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` holds with every alias expanded (an alias is its anchor's node
    again), each shared node counted once per use but sized once."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1         # a node within itself: the constructor names that error
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value)
    else:
        size = 1
    sizes[id(node)] = min(size, MAX_VALUES + 1)
    return sizes[id(node)]


def _str_keys(obj: Any) -> Any:
    """Every mapping key in rules.yaml is a string (``400: pass`` means "400")."""
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else str(k).lower() if isinstance(k, bool) else str(k)): _str_keys(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_str_keys(v) for v in obj]
    return obj


def _parse(text: str, source: str, env: Mapping[str, str] | None, base_dir: Path | None,
           source_path: Path | None) -> Rules:
    env = os.environ if env is None else env
    labels: dict[int, str] = {}   # filled once the data is known: upstreams by name, not position

    def where(path: str, msg: str) -> str:
        return f"{source}: {label_path(path, labels)}: {msg}" if path else f"{source}: {msg}"

    try:
        loader = _Loader(text)       # its reader refuses a control character at once (a pasted BEL)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        said = f"a character YAML does not allow (#x{e.character:04x}, unseen in most editors): delete it"
        raise RulesError([where(f"line {line}, column {column}", said)]) from None
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_VALUES:
            raise RulesError([where("", f"the rules hold more than {MAX_VALUES:,} values once their aliases "
                                        "(*name) are expanded: an alias nested in aliases multiplies them")])
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        pos = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = yaml_problem(e)
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
    problems = [where(f"line {line}", duplicate(str(key))) for line, key in loader.duplicates]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RulesError(problems + [where("", "the rules must be a mapping (key: value lines)")])
    try:
        data = _str_keys(copy.deepcopy(data))
    except RecursionError:   # a structure that contains itself (`&x [*x]`)
        raise RulesError(problems + [where("", "invalid YAML: an alias refers to itself")]) from None
    labels.update(upstream_labels(data))
    for key in [key for key in data if key.startswith("x-")]:
        del data[key]     # docker-compose's habit: a top-level `x-…` key holds anchors (&name) to merge, no rule
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
        problems += [where(loc, message(err)) for err in e.errors(include_url=False)
                     if (loc := format_loc(shown_loc(err))) not in env_paths]
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


# what a pipe gave (`ccswitch check <(envsubst < rules.tmpl)`, /dev/stdin): it can be read only once,
# and a command reads its rules more than once (whether they are the example, then to load them)
_read_once: dict[Path, str] = {}


def read_rules_text(path: Path) -> str:
    """The text of the rules file at `path` (OSError, UnicodeDecodeError as `read_text`)."""
    if path in _read_once:
        return _read_once[path]
    text = path.read_text(encoding="utf-8")
    if not stat.S_ISREG(path.stat().st_mode):
        _read_once[path] = text
    return text


def load_rules(path: str | Path, env: Mapping[str, str] | None = None) -> Rules:
    path = Path(path).expanduser()
    try:
        text = read_rules_text(path)
    except UnicodeDecodeError:     # has no strerror; say it as the proxy's own reload does (config.watch)
        raise RulesError([f"{path}: cannot read (not UTF-8)"]) from None
    except OSError as e:
        raise RulesError([unreadable(path, e)]) from None
    if blank(text):
        raise RulesError([empty_file(path)])
    return _parse(text, str(path), env, path.absolute().parent, path)


def blank(text: str) -> bool:
    """Nothing but blank lines, comments and YAML's document markers: a file cut short or not
    written yet, not rules (which would route nothing, every request passing through untouched)."""
    return all(_says_nothing(line) for line in text.splitlines())


def _says_nothing(line: str) -> bool:
    bare = line.strip()
    return not bare or bare.startswith("#") or bare.split(" #", 1)[0].strip() in ("---", "...")


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
    if not is_there(path):
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
        return read_rules_text(path) == example_rules_text()
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
        if is_there(candidate):
            return candidate
    return None


def is_there(path: Path) -> bool:
    """Whether something is at `path` in any form (a link to nothing, a folder): a rules path
    chosen so that its fault is said, not passed over for the next one or the built-in default."""
    return path.is_symlink() or path.exists()


def unreadable(path: Path, exc: OSError) -> str:
    """Why the rules file at `path` cannot be read, as a problem line."""
    if exc.errno == errno.ELOOP:    # the loop may be a folder's on the way, not the file's own
        through = f" (it leads back to itself through {os.readlink(path)})" if path.is_symlink() else ""
        return f"{path}: is a link in a loop of links{through}"
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
