"""Checks of rules.yaml that span fields, and how a problem names the upstream it is about.

Pure: works on the raw YAML data (so it can speak about an upstream whose fields failed
validation) and the validated ``Upstream``s (``None`` where one failed). Every message says what
is wrong and what to do about it; none contains a key.

Paths name an upstream by its ``name`` -- ``upstreams[relay-a].api_key`` -- because that is what
a user searches rules.yaml for; an upstream without a usable name (missing, malformed, shared
with another upstream, or all digits, which would read as a position) is named by its position
from 0: ``upstreams[3].name``.
"""
from __future__ import annotations

import difflib
import re
from urllib.parse import urlsplit

from ccswitch.config.models import ROUTE_PROTOCOLS, Upstream
from ccswitch.config.values import shown
from ccswitch.vocab import Protocol

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_INDEX_PATH_RE = re.compile(r"^upstreams\[(\d+)\]")
_MAX_KNOWN = 8   # names listed after "unknown upstream" when nothing is close


def upstream_labels(data: dict) -> dict[int, str]:
    """Position -> the name that identifies that upstream unambiguously (absent: use the position)."""
    raw_ups = data.get("upstreams") if isinstance(data.get("upstreams"), list) else []
    names = [raw.get("name") if isinstance(raw, dict) else None for raw in raw_ups]
    usable = {i: n for i, n in enumerate(names)
              if isinstance(n, str) and _NAME_RE.match(n) and not n.isdigit() and names.count(n) == 1}
    return usable


def label_path(path: str, labels: dict[int, str]) -> str:
    """``upstreams[5].auth`` -> ``upstreams[relay-a].auth`` when upstream 5 has a usable name."""
    m = _INDEX_PATH_RE.match(path)
    if not m or int(m.group(1)) not in labels:
        return path
    return f"upstreams[{labels[int(m.group(1))]}]" + path[m.end():]


def _route_lists(data: dict) -> dict[str, tuple[str, list]]:
    """route -> (path prefix of its list, the names listed), for both the list and the mapping form."""
    routes = data.get("routes")
    out: dict[str, tuple[str, list]] = {}
    for route in ROUTE_PROTOCOLS:
        listed = routes.get(route) if isinstance(routes, dict) else None
        prefix = f"routes.{route}"
        if isinstance(listed, dict):   # the mapping form: {upstreams: [...], strategy, sticky}
            listed, prefix = listed.get("upstreams"), f"routes.{route}.upstreams"
        out[route] = (prefix, listed if isinstance(listed, list) else [])
    return out


def _unknown_upstream(name: str, known: list[str]) -> str:
    # names are compared as written: one that differs only in case is the one meant
    close = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    said = shown(name)
    if close:
        return f"unknown upstream {said} (did you mean {close[0]!r}?)"
    if not known:
        return f"unknown upstream {said} (no upstream is defined: add it under upstreams)"
    listed = ", ".join(known[:_MAX_KNOWN]) + (", ..." if len(known) > _MAX_KNOWN else "")
    return f"unknown upstream {said} (the upstreams are: {listed})"


def _client_auth_with_client_keys(up: Upstream, in_routes: list[str]) -> str:
    where = " and ".join(f"routes.{r}" for r in in_routes)
    message = (f"auth: client cannot be used with client_keys: client keys are never forwarded, so "
               f"{up.name} would reach its upstream without credentials. Give it an api_key (auth: "
               f"{'x-api-key' if up.protocol == 'anthropic' else 'bearer'}), or take it out of {where}")
    if not up.enabled:
        message += " (enabled: false is not enough: ccswitch.enable can switch it on)"
    return message


#: what ccswitch appends to each protocol's base_url, and the ends of a URL pasted with (part of)
#: it: each would be sent twice (`/v1/v1/messages`), which a relay answers with a 404 that
#: fails nothing over
_APPENDS = {
    Protocol.ANTHROPIC: ("/v1/messages", ("/v1/messages/count_tokens", "/v1/messages", "/v1")),
    Protocol.RESPONSES: ("/responses", ("/responses",)),
    Protocol.CHAT: ("/chat/completions", ("/chat/completions",)),
}


def _pasted_endpoint(protocol: str, base_url: str) -> str | None:
    """What is wrong with a base_url that holds the path ccswitch appends, or None."""
    if base_url == "original" or protocol not in _APPENDS:
        return None
    appended, ends = _APPENDS[protocol]
    try:
        parts = urlsplit(base_url)
    except ValueError:   # an upstream refused for its base_url already (`https://[relay`): that says it
        return None
    path = parts.path.rstrip("/")
    for end in ends:
        if path.lower().endswith(end):
            kept = base_url[:len(base_url) - len(end)]
            like = " (as the Anthropic SDK takes it, without /v1)" if protocol == Protocol.ANTHROPIC else ""
            return (f"ends in {end}, and ccswitch appends {appended} itself (it would call "
                    f"{path}{appended}): give {kept}{like}")
    if protocol != Protocol.ANTHROPIC and parts.hostname == "api.openai.com" and not path:
        return f"api.openai.com serves its API under /v1: give {base_url}/v1"
    return None


def cross_check(data: dict, ups: list[Upstream | None]) -> list[tuple[str, str]]:
    """Problems as (index path, message); ``label_path`` turns the paths into what users read."""
    problems: list[tuple[str, str]] = []
    raw_ups = data.get("upstreams") if isinstance(data.get("upstreams"), list) else []
    names: dict[str, str] = {}       # name -> protocol (or "")
    first_at: dict[str, int] = {}
    for i, raw in enumerate(raw_ups):
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            if name in names:
                problems.append((f"upstreams[{i}].name", f"duplicate upstream name {name!r} (also "
                                 f"upstreams[{first_at[name]}]): give each upstream its own name"))
            else:
                names[name], first_at[name] = (raw.get("protocol") if isinstance(raw.get("protocol"), str) else "",
                                               i)
    route_lists = _route_lists(data)
    routes_of: dict[str, list[str]] = {}
    for route, (_, listed) in route_lists.items():
        for name in listed:
            if isinstance(name, str) and route not in routes_of.setdefault(name, []):
                routes_of[name].append(route)
    keys = data.get("client_keys")
    has_client_keys = isinstance(keys, list) and len(keys) > 0
    for i, up in enumerate(ups):
        p = f"upstreams[{i}]"
        if up is None:   # refused for another setting: its base_url is worth a word all the same
            raw = raw_ups[i] if i < len(raw_ups) and isinstance(raw_ups[i], dict) else {}
            protocol, base_url = raw.get("protocol"), raw.get("base_url")
            if isinstance(protocol, str) and isinstance(base_url, str) \
                    and (pasted := _pasted_endpoint(protocol, base_url)) is not None:
                problems.append((f"{p}.base_url", pasted))
            continue
        # an upstream in no route is never dialled, so it cannot carry a client key anywhere
        if up.auth == "client" and has_client_keys and routes_of.get(up.name):
            problems.append((f"{p}.auth", _client_auth_with_client_keys(up, routes_of[up.name])))
        if (pasted := _pasted_endpoint(up.protocol, up.base_url)) is not None:
            problems.append((f"{p}.base_url", pasted))
        if up.base_url == "original" and up.auth != "client":
            problems.append((f"{p}.base_url", "base_url: original requires auth: client (keep the client's "
                                              "own credentials), or give the upstream's URL"))
        if up.activate_at and up.auth == "client":
            problems.append((f"{p}.activate_at", "activate_at cannot be used with auth: client (there is no "
                                                 "key to probe with): remove activate_at, or give the "
                                                 "upstream an api_key"))
        if up.enabled and up.auth != "client" and (up.api_key is None or not up.api_key.get_secret_value()):
            problems.append((f"{p}.api_key", f"required with auth: {up.auth}: give the upstream an api_key "
                                             "(e.g. ${VAR} from the environment), or set enabled: false"))
    for route, (prefix, listed) in route_lists.items():
        allowed = ROUTE_PROTOCOLS[route]
        seen: set[str] = set()
        for j, name in enumerate(listed):
            path = f"{prefix}[{j}]"
            if not isinstance(name, str):
                continue
            if name not in names:
                problems.append((path, _unknown_upstream(name, list(names))))
            elif name in seen:
                problems.append((path, f"upstream {name!r} is listed twice (a route tries each upstream once)"))
            elif names[name] in ROUTE_PROTOCOLS["chat"] and names[name] not in allowed:
                only = " or ".join(sorted(allowed))
                problems.append((path, f"upstream {name!r} speaks {names[name]}; "
                                       f"the {route} route takes only {only} upstreams (the chat route takes any)"))
            seen.add(name)
    return problems
