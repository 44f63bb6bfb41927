"""``${VAR}`` in rules.yaml: where it is expanded (keys, header values, client keys, notify URLs,
proxies, and the database and Redis URLs), and how a value goes in (as it is; in a URL's
``user:password@``, percent-encoded where it would end that part early).  What a variable put in
a credential is a secret from then on: never in a message."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import quote

_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


def _expand(text: str, env: Mapping[str, str], values: list[str] | None = None,
            written: Callable[[str], str] = str) -> tuple[str, list[str], bool]:
    """-> (expanded, missing variable names, malformed); `values` gets each variable's value,
    `written` makes it the text that stands in its place."""
    missing: list[str] = []
    malformed = False

    def sub(m: re.Match) -> str:
        nonlocal malformed
        if m.group(0) == "$${":
            return "${"
        if m.group(1) is None:
            malformed = True
            return ""
        if m.group(1) not in env:
            missing.append(m.group(1))
            return ""
        if values is not None:
            values.append(env[m.group(1)])
        return written(env[m.group(1)])

    return _ENV_RE.sub(sub, text), missing, malformed


def _in_userinfo(value: str) -> str:
    """A variable's value in a URL's `user:password@`, percent-encoded where the driver decodes it,
    so that it arrives as it is: `@` and `/ ? #` (which would end that part early) and `%` (a
    password `pass%41word` is not `passAword`, and `pa%ss` no error).  `:` stays, so a variable
    may still hold a whole `user:password`."""
    return quote(value, safe=":!$&'()*+,;=~")


def _expand_url(text: str, env: Mapping[str, str]) -> tuple[str, list[str], bool]:
    """`_expand` for a database or Redis URL: a password from the environment may hold any
    character (libpq would end the userinfo at a raw `@` in it, and take the rest for the host)."""
    scheme, sep, rest = text.partition("://")
    authority_end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    userinfo, at, host = rest[:authority_end].rpartition("@")
    if not sep or not at:
        return _expand(text, env)
    parts = [_expand(scheme + sep, env), _expand(userinfo, env, written=_in_userinfo),
             _expand(at + host + rest[authority_end:], env)]
    return ("".join(p[0] for p in parts), [n for p in parts for n in p[1]], any(p[2] for p in parts))


_SHELL_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
# what is copied along with a key from a curl line or a relay's page: a header's name or its scheme
_PASTED_HEADER = re.compile(r"(?i)(?:authorization|x-api-key|api-key)\s*:|bearer\s")


def _set_but_empty(written: str, value: str, values: list[str]) -> str | None:
    """A credential whose ${VAR} is set to nothing: sent empty, it is refused upstream."""
    if values and not value.strip():
        names = ", ".join(m.group(1) for m in _ENV_RE.finditer(written) if m.group(1))
        return f"environment variable {names} is set but empty (give it the key, or set enabled: false)"
    return None


def _key_mistake(written: str, value: str, values: list[str]) -> str | None:
    """An api_key that surely is not the key meant: a variable set to nothing, a shell-style `$NAME`,
    a key pasted with its header's name or `Bearer ` (sent as `Bearer Bearer …`, refused upstream)."""
    if empty := _set_but_empty(written, value, values):
        return empty
    if not values and (shell := _SHELL_VARIABLE.fullmatch(written.strip())):
        return f"reads as a shell variable, which ccswitch does not expand: write ${{{shell.group(1)}}}"
    if _PASTED_HEADER.match(value.strip()):
        names = ", ".join(m.group(1) for m in _ENV_RE.finditer(written) if m.group(1))
        where = f"environment variable {names} holds" if values else "has"
        return (f"{where} `Bearer ` or a header's name before the key: give the key alone (ccswitch "
                "writes the header itself, see `auth`)")
    return None


def expand_upstreams(data: dict, env: Mapping[str, str]) -> tuple[list[tuple[str, str]], set[str]]:
    """Expand ${VAR} in api_key and header values, in place. -> (problems, paths with problems)."""
    problems: list[tuple[str, str]] = []
    ups = data.get("upstreams")
    for i, up in enumerate(ups if isinstance(ups, list) else []):
        if not isinstance(up, dict):
            continue
        for note in ("unset_headers", "unset_vars", "env_secrets"):   # the loader's own notes, not settings
            if note in up:
                problems.append((f"upstreams[{i}].{note}", "unknown key"))
                del up[note]
        enabled = up.get("enabled", True) is not False
        fields: list[tuple[str, dict, str]] = []
        if isinstance(up.get("api_key"), str):
            fields.append((f"upstreams[{i}].api_key", up, "api_key"))
        if isinstance(up.get("headers"), dict):
            fields += [(f"upstreams[{i}].headers.{k}", up["headers"], k)
                       for k, v in up["headers"].items() if isinstance(v, str)]
        for path, holder, key in fields:
            values: list[str] = []
            value, missing, malformed = _expand(holder[key], env, values)
            if malformed:
                problems.append((path, "malformed ${...} reference (use ${NAME}, or $${ for a literal ${)"))
            elif not missing:
                if key != "api_key":    # what a ${VAR} put in a header is a secret, whatever the header
                    up["env_secrets"] = [*up.get("env_secrets", []), *values]
                    if enabled and (empty := _set_but_empty(holder[key], value, values)):
                        problems.append((path, empty))
                elif enabled and (mistake := _key_mistake(holder[key], value, values)):
                    problems.append((path, mistake))
                holder[key] = value
                continue
            if enabled:
                problems += [(path, not_set(n, env, "export it where ccswitch runs, or set enabled: false"))
                             for n in missing]
            up["unset_vars"] = [*up.get("unset_vars", []), *(n for n in missing if n not in up.get("unset_vars", []))]
            if key == "api_key":
                holder[key] = None
            else:
                del holder[key]
                up["unset_headers"] = [*up.get("unset_headers", []), key]
    return problems, {p for p, _ in problems}


def not_set(name: str, env: Mapping[str, str], fix: str = "export it where ccswitch runs") -> str:
    """What to say of a ${VAR} the environment lacks; a variable of the same name in other
    letters' case is named (`${relay_key}` for a set RELAY_KEY), never its value."""
    near = sorted(other for other in env if other.upper() == name.upper() and other != name)
    hint = f"; did you mean ${{{near[0]}}}?" if near else ""
    return f"environment variable {name} is not set ({fix}{hint})"


# usage_db, state: a PostgreSQL or Redis URL's password comes from the environment
_EXPANDED_TOP_LEVEL = ("usage_db", "state")


def expand_keys_and_hooks(data: dict, env: Mapping[str, str]) -> tuple[list[tuple[str, str]], set[str]]:
    """Expand ${VAR} in client keys (either form: a plain list entry or a mapping's `key`), notify
    URLs and the top-level fields of _EXPANDED_TOP_LEVEL, in place."""
    problems: list[tuple[str, str]] = []
    places: list[tuple[str, dict | list, str | int]] = [(name, data, name) for name in _EXPANDED_TOP_LEVEL
                                                        if isinstance(data.get(name), str)]
    for section, field in (("client_keys", "key"), ("notify", "url")):
        items = data.get(section)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict) and isinstance(item.get(field), str):
                places.append((f"{section}[{i}].{field}", item, field))
            elif section == "client_keys" and isinstance(item, str):   # the plain list form
                places.append((f"{section}[{i}]", items, i))
    for path, holder, key in places:
        # a URL's password from the environment arrives as it is (a hook's is its Basic login)
        expand = _expand_url if path in _EXPANDED_TOP_LEVEL or path.startswith("notify[") else _expand
        value, missing, malformed = expand(holder[key], env)
        if malformed:
            problems.append((path, "malformed ${...} reference (use ${NAME}, or $${ for a literal ${)"))
        problems += [(path, not_set(n, env)) for n in missing]
        if not malformed and not missing:
            holder[key] = value
    return problems, {p for p, _ in problems}


def expand_proxies(data: dict, env: Mapping[str, str]) -> tuple[list[tuple[str, str]], set[str]]:
    """Expand ${VAR} in `upstream_proxy` and each upstream's `proxy` (their passwords), in place.
    A proxy whose variable is missing is a problem even for a disabled upstream: dropped, it would
    silently mean the default proxy or none once the upstream is switched on."""
    places: list[tuple[str, dict, str]] = []
    if isinstance(data.get("upstream_proxy"), str):
        places.append(("upstream_proxy", data, "upstream_proxy"))
    ups = data.get("upstreams")
    for i, up in enumerate(ups if isinstance(ups, list) else []):
        if isinstance(up, dict) and isinstance(up.get("proxy"), str):
            places.append((f"upstreams[{i}].proxy", up, "proxy"))
    problems: list[tuple[str, str]] = []
    for path, holder, key in places:
        value, missing, malformed = _expand_url(holder[key], env)
        if malformed:
            problems.append((path, "malformed ${...} reference (use ${NAME}, or $${ for a literal ${)"))
        problems += [(path, not_set(n, env)) for n in missing]
        if malformed or missing:
            del holder[key]
        else:
            holder[key] = value
    return problems, {p for p, _ in problems}
