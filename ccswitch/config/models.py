"""rules.yaml data model: the pydantic models.

This file owns what valid rules *are*: ``Rules`` and its parts (``Upstream``, ``Routes``,
``Failover``, ``Timeouts``, ``Activation``, ``HourWindow``, client keys, budgets, hooks). The
value parsers they use (durations, ``HH:MM``, weekdays, status keys, ``RulesError``) are in
config.values; reading rules text (YAML, ``${VAR}``, readable field-path errors, cross-checks,
the built-in default) in config.load.

Pure module: no mitmproxy, no HTTP. Secrets (api_key, header values, client_keys) never
appear in an error message or a repr.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import hmac
from datetime import tzinfo
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    Strict,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ccswitch.clock import zone
from ccswitch.config.database_url import PostgresURL
from ccswitch.config.state_url import RedisURL
from ccswitch.config.values import (
    NAME_RE,
    SHORT_VALUE,
    activate_time,
    distinct_times,
    format_hhmm,
    glob_lookup,
    header_name,
    header_value,
    hidden,
    host_name,
    not_a_variable,
    parse_days,
    parse_duration,
    parse_hhmm,
    parse_sticky,
    proxy_setting,
    shown,
    some_hours,
    state_setting,
    status_key,
    usage_db_setting,
)
from ccswitch.net.addresses import url_port
from ccswitch.net.proxy import Proxy
from ccswitch.vocab import Action, Protocol, Route, Strategy
from ccswitch.wire.redact import (
    CREDENTIAL_HEADERS,
    CREDENTIAL_WORDS,
    credential_part,
    echo_forms,
    holds_secret,
    scrub_text,
)

AuthMode = Literal["x-api-key", "bearer", "client"]
ModelName = Annotated[str, Field(min_length=1), AfterValidator(not_a_variable)]
ModelGlob = Annotated[str, AfterValidator(not_a_variable)]      # a client's model, or a glob of them
ROUTE_PROTOCOLS: dict[str, frozenset[str]] = {
    Route.CLAUDE: frozenset({Protocol.ANTHROPIC}),
    Route.CODEX: frozenset({Protocol.RESPONSES}),
    Route.CHAT: frozenset(Protocol),
}
DEFAULT_ON_STATUS: dict[str, str] = {
    "400": "pass", "401": "switch", "403": "switch", "408": "retry",
    "429": "switch", "4xx": "pass", "5xx": "switch",
}
# A count or a number is a YAML number, as a switch is true or false: `true` is not 1 and `'4'` not 4
# (lax pydantic would read `cache_breakpoints: false` as 0, stripping every marker). Durations
# are parsed apart, text on purpose (`30s`).
Count = Annotated[int, Strict()]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
PriceKey = Literal["input", "output", "cache_write", "cache_write_1h", "cache_read"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HourWindow(_Model):
    """A local-time window [start, end); start > end wraps midnight."""
    start_minute: Count = Field(ge=0, le=1439)
    end_minute: Count = Field(ge=0, le=1440)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            start, sep, end = data.partition("-")
            try:
                if not sep or "-" in end:
                    raise ValueError('must look like "09:00-18:00": one start, one end')
                data = {"start_minute": parse_hhmm(start), "end_minute": parse_hhmm(end, allow_24=True)}
            except ValueError as e:
                raise ValueError(f"hours window {shown(data, SHORT_VALUE)}: {e}") from None
        elif not isinstance(data, (dict, HourWindow)):
            raise ValueError('hours window must look like "09:00-18:00"')
        return data

    @model_validator(mode="after")
    def _not_empty(self) -> HourWindow:
        if self.start_minute == self.end_minute:
            raise ValueError("hours window start and end must differ")
        return self

    @property
    def wraps(self) -> bool:
        return self.end_minute < self.start_minute

    def __str__(self) -> str:
        return f"{format_hhmm(self.start_minute)}-{format_hhmm(self.end_minute)}"


class Failover(_Model):
    threshold: Count = Field(default=3, ge=1)
    cooldown: Duration = 600.0
    max_attempts: Count = Field(default=4, ge=1)
    hold_back: Duration = 2.0
    on_status: dict[Annotated[str, AfterValidator(status_key)], Action] = Field(
        default_factory=lambda: dict(DEFAULT_ON_STATUS))
    # a network error leaves nothing to pass on: the attempt is tried again or the next one is
    on_network_error: Literal["switch", "retry"] = "switch"
    retry_backoff: Duration = 1.0
    drain_at: Number = Field(default=0.95, gt=0, le=1)   # utilization at which an upstream counts as full

    @field_validator("on_status", mode="after")
    @classmethod
    def _merge_defaults(cls, v: dict[str, str]) -> dict[str, str]:
        return {**DEFAULT_ON_STATUS, **v}

    def set_for(self, status: int) -> Action | None:
        """The action the rules set for `status` (exact code beats its class), or None."""
        return self.on_status.get(str(status)) or self.on_status.get(f"{status // 100}xx")  # type: ignore[return-value]

    def action_for(self, status: int) -> Action:
        """Exact code beats its class; 1xx/2xx/3xx with no entry pass (the dialer judges a 3xx with
        no entry itself: a redirect it does not follow), others switch."""
        action = self.set_for(status)
        if action:
            return action  # type: ignore[return-value]
        return "pass" if 100 <= status < 400 else "switch"


class Activation(_Model):
    retries: Count = Field(default=20, ge=0)    # further tries the same day after a failed probe
    retry_interval: PositiveDuration = 60.0     # 0 would send every retry at once
    grace: Duration = 900.0                   # starting this late after a missed time still fires once


class Timeouts(_Model):
    connect: PositiveDuration = 10.0
    first_byte: PositiveDuration = 60.0
    total: PositiveDuration = 600.0
    idle: PositiveDuration = 300.0


# `direct` is None; a Proxy prints and dumps without its credentials
ProxySetting = Annotated[Proxy | None, PlainValidator(proxy_setting), BeforeValidator(hidden),
                         PlainSerializer(lambda p: p.shown if p is not None else "direct")]


class Upstream(_Model):
    name: Annotated[str, Field(pattern=NAME_RE.pattern)]
    protocol: Protocol
    base_url: str
    api_key: SecretStr | None = None
    auth: AuthMode = "bearer"
    enabled: StrictBool = True
    days: Annotated[frozenset[int], BeforeValidator(parse_days)] = frozenset(range(7))
    hours: Annotated[tuple[HourWindow, ...], AfterValidator(some_hours)] = ()
    models: dict[ModelGlob, ModelName] = Field(default_factory=dict)   # "" would be sent as the model
    only_models: tuple[ModelName, ...] = ()
    headers: dict[Annotated[str, AfterValidator(header_name)],
                  Annotated[str, BeforeValidator(header_value)]] = Field(default_factory=dict)
    activate_at: Annotated[tuple[Annotated[str, BeforeValidator(activate_time)], ...],
                           AfterValidator(distinct_times)] = ()
    activation_model: ModelName | None = None
    price_multiplier: Number = Field(default=1.0, ge=0)
    weight: Number = Field(default=1.0, gt=0)   # the `weighted` strategy's share
    budget: Budget | None = None               # USD per day / month; over it the upstream is skipped
    websocket: StrictBool = False              # over its own Responses WebSocket (openai-responses only)
    # how it is reached, once in Rules: its own `proxy`, else the rules' upstream_proxy (None: directly)
    proxy: ProxySetting = None
    max_connections: Count | None = Field(default=None, ge=1)    # open at once; more requests wait
    cache_breakpoints: Count | None = Field(default=None, ge=0)  # cache_control markers kept (anthropic)
    # set by the loader, not in rules.yaml: the headers of a disabled upstream left out because
    # their ${VAR} is not set (`ccswitch.enable` refuses it, as it does one without its api_key)
    unset_headers: tuple[str, ...] = ()
    unset_vars: tuple[str, ...] = ()            # the ${VAR}s it names that are not set, to name them
    env_secrets: tuple[SecretStr, ...] = ()     # what ${VAR}s put in its headers: secrets, wherever

    def secret_texts(self) -> list[str]:
        """The key text of this upstream that an answer, a log line or an event may echo: its
        api_key, its credential headers, what every ${VAR} put in a header, its proxy's login."""
        found = self._keys()
        found += [value.get_secret_value() for value in self.env_secrets]
        found += self.proxy.secrets(user=False) if self.proxy is not None else []
        return [form for text in found for form in echo_forms(text)]

    def key_texts(self) -> list[str]:
        """Its keys proper (api_key, credential headers), in their echo forms: what a client's
        prompt is scrubbed of (not a header's ordinary ${VAR}, nor a proxy password that may be
        a word a prompt uses)."""
        return [form for text in self._keys() for form in echo_forms(text)]

    def _keys(self) -> list[str]:
        found = [self.api_key.get_secret_value()] if self.api_key else []
        for name, value in self.headers.items():
            low = name.lower()
            if low in CREDENTIAL_HEADERS or any(w in low for w in CREDENTIAL_WORDS):
                found.append(credential_part(value))
        return found

    def lacks(self) -> str | None:
        """What a disabled upstream lacks to be sent anything (its ${VAR}s unset), or None."""
        unset = ", ".join("${" + name + "}" for name in self.unset_vars)
        if self.auth != "client" and self.api_key is None:
            verb = "are" if len(self.unset_vars) > 1 else "is"
            return f"{self.name} has no api_key ({unset or 'its environment variable'} {verb} not set where ccswitch runs)"
        if self.unset_headers:
            return (f"{self.name} lacks its header(s) {', '.join(self.unset_headers)} "
                    f"({unset or 'their environment variables'} not set where ccswitch runs)")
        return None

    @model_validator(mode="before")
    @classmethod
    def _default_auth(cls, data: Any) -> Any:
        if isinstance(data, dict) and "auth" not in data and data.get("protocol") == "anthropic":
            data = {**data, "auth": "x-api-key"}
        return data

    @model_validator(mode="after")
    def _websocket_is_responses(self) -> Upstream:
        if self.websocket and self.protocol != Protocol.RESPONSES:
            raise ValueError(f"websocket: true needs protocol {Protocol.RESPONSES} (only the Responses API "
                             f"has a WebSocket), not {self.protocol}")
        return self

    @field_validator("api_key", mode="after")
    @classmethod
    def _check_api_key(cls, v: SecretStr | None) -> SecretStr | None:
        # it is sent as a header: a pasted key with a typographic dash or a line break cannot be
        if v is not None:
            header_value(v.get_secret_value())
        return v

    @field_validator("base_url", mode="after")
    @classmethod
    def _check_base_url(cls, v: str) -> str:
        v = v.strip()
        if v == "original":
            return v
        not_a_variable(v)
        msg = "must be 'original' or an http(s) URL like https://host[:port][/prefix]"
        try:
            parts = urlsplit(v)
        except ValueError:
            raise ValueError(msg) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(msg)
        url_port(parts)
        try:
            parts.hostname.encode("idna")
        except UnicodeError:
            raise ValueError(f"has a host name that cannot be looked up (an empty or over-long label): "
                             f"{parts.hostname}") from None
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials; use api_key")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query string or fragment")
        return v.rstrip("/")

    def map_model(self, model: str) -> str:
        """The `models` entry for `model` (see `glob_lookup`); no match -> unchanged."""
        target = glob_lookup(self.models, model)
        return model if target is None else target

    def admits_model(self, model: str) -> bool:
        return not self.only_models or any(fnmatch.fnmatchcase(model, p) for p in self.only_models)

    def fingerprint(self) -> tuple:
        """Changes when base_url, api_key or protocol changes (the key only as a digest)."""
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        return (self.base_url, _key_digest(key) if key is not None else None, self.protocol)


@functools.lru_cache(maxsize=256)
def _key_digest(key: str) -> str:
    # asked for on every attempt (whose answer counts for which key) and every sealed-reasoning look-up
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _route_form(value: Any) -> Any:
    """The list form of a route is its upstreams in priority order."""
    if isinstance(value, (list, tuple)):
        return {"upstreams": value}
    if isinstance(value, (dict, RouteSpec)):
        return value
    raise ValueError("must be a list of upstream names, or a mapping with upstreams, strategy and sticky")


class RouteSpec(_Model):
    upstreams: tuple[str, ...] = ()
    strategy: Strategy = Strategy.PRIORITY
    sticky: Annotated[float, BeforeValidator(parse_sticky), Field(ge=0)] = 3600.0   # 0: off


class Routes(_Model):
    claude: Annotated[RouteSpec, BeforeValidator(_route_form)] = RouteSpec()
    codex: Annotated[RouteSpec, BeforeValidator(_route_form)] = RouteSpec()
    chat: Annotated[RouteSpec, BeforeValidator(_route_form)] = RouteSpec()

    def spec(self, route: str) -> RouteSpec:
        if route not in ROUTE_PROTOCOLS:
            raise KeyError(route)
        return getattr(self, route)

    def for_route(self, route: str) -> tuple[str, ...]:
        return self.spec(route).upstreams

    def routes_of(self, upstream: str) -> tuple[str, ...]:
        """The routes that list `upstream` (none: it serves nothing)."""
        return tuple(route for route in ROUTE_PROTOCOLS if upstream in self.spec(route).upstreams)


class Budget(_Model):
    """USD per calendar day / month in the rules' time zone, at the report's prices."""
    daily: Number | None = Field(default=None, gt=0)
    monthly: Number | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some_amount(self) -> Budget:
        if self.daily is None and self.monthly is None:   # `budget: {}` would look set and limit nothing
            raise ValueError("a budget needs daily, monthly or both")
        return self


class ClientKey(_Model):
    """A key clients present to ccswitch: its name (for the ledger and reports) and budget."""
    name: Annotated[str, Field(pattern=NAME_RE.pattern)]
    key: SecretStr
    budget: Budget | None = None

    @field_validator("key", mode="after")
    @classmethod
    def _presentable(cls, v: SecretStr) -> SecretStr:
        # a client's key is read from its header stripped: one with a space or line break at
        # an end (an env file's) would validate and then let no request in
        if not v.get_secret_value():
            raise ValueError("client key must not be empty")
        header_value(v.get_secret_value())
        return v

    def get_secret_value(self) -> str:
        return self.key.get_secret_value()


def _client_key_forms(value: Any) -> Any:
    """The plain list form names its keys by position: key-1, key-2, …"""
    if not isinstance(value, (list, tuple)):
        return value
    return [{"name": f"key-{i}", "key": v} if isinstance(v, (str, SecretStr)) else v
            for i, v in enumerate(value, 1)]


NotifyEvent = Literal["cooldown", "recovered", "full", "budget", "exhausted", "activation_failed"]
NOTIFY_EVENTS: tuple[str, ...] = ("cooldown", "recovered", "full", "budget", "exhausted", "activation_failed")


class NotifyHook(_Model):
    url: SecretStr                                     # webhook URLs often carry a token
    format: Literal["json", "slack", "discord", "text"] = "json"
    events: tuple[NotifyEvent, ...] = NOTIFY_EVENTS
    timeout: PositiveDuration = 5.0

    @field_validator("url", mode="after")
    @classmethod
    def _http_url(cls, v: SecretStr) -> SecretStr:
        parts = urlsplit(v.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        url_port(parts)
        return v

    @field_validator("events", mode="after")
    @classmethod
    def _some_events(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("must name at least one event (leave it out for all; remove the hook to tell none)")
        return v


def _no_switch(value: Any) -> Any:
    """`version: true` is not version 1 (a Literal cannot be made strict)."""
    if isinstance(value, bool):
        raise ValueError("must be 1")
    return value


class Rules(_Model):
    #: the rules whose secret texts were asked for last, with them (see `secret_texts`)
    _secrets_of_last: ClassVar[tuple[Rules, list[str], tuple[str, ...]] | None] = None
    version: Annotated[Literal[1], BeforeValidator(_no_switch)] = 1
    timezone: str | None = None
    # a SQLite file (default) or a PostgreSQL URL, see config.database_url
    usage_db: Annotated[Path | PostgresURL, BeforeValidator(usage_db_setting)] = Field(
        default_factory=lambda: Path("~/.ccswitch/usage.db").expanduser())
    # shared with other instances through Redis (config.state_setting); None: in this instance's memory
    state: Annotated[RedisURL | None, BeforeValidator(state_setting)] = None
    client_keys: Annotated[tuple[ClientKey, ...], BeforeValidator(_client_key_forms)] = ()
    intercept: tuple[Annotated[str, AfterValidator(host_name)], ...] = (
        "api.anthropic.com", "api.openai.com", "chatgpt.com")
    failover: Failover = Field(default_factory=Failover)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    activation: Activation = Field(default_factory=Activation)
    upstreams: tuple[Upstream, ...] = ()
    routes: Routes = Field(default_factory=Routes)
    prices: dict[str, dict[PriceKey, Annotated[Number, Field(ge=0)]]] = Field(default_factory=dict)
    # chat route: max_tokens sent to an Anthropic upstream when the client gave none,
    # by upstream model (exact name or glob; "*" = any other); overrides the built-in table
    max_tokens: dict[str, Annotated[Count, Field(ge=1)]] = Field(default_factory=dict)
    notify: tuple[NotifyHook, ...] = ()
    upstream_proxy: ProxySetting = None        # the proxy of every upstream without its own `proxy`
    codex_websocket: Literal["bridge", "refuse"] = "bridge"   # Codex's Responses WebSocket: carried, or 426
    source: Path | None = None

    @field_validator("client_keys", mode="after")
    @classmethod
    def _one_client_per_key_and_name(cls, keys: tuple[ClientKey, ...]) -> tuple[ClientKey, ...]:
        """A presented key must name one client, and a name one budget and one ledger column value."""
        names: set[str] = set()
        owner: dict[str, str] = {}
        for client in keys:
            if client.name in names:
                raise ValueError(f"two keys are named {client.name!r}: give each its own name")
            names.add(client.name)
            secret = client.get_secret_value()
            if secret in owner:   # named by their clients, never shown
                raise ValueError(f"{client.name} has the same key as {owner[secret]}: a key must name one client")
            owner[secret] = client.name
        return keys

    @field_validator("timezone", mode="after")
    @classmethod
    def _check_tz(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v[:40]!r} ({_zone_hint(v)})") from None
        return v

    @field_validator("usage_db", mode="after")
    @classmethod
    def _resolve_db(cls, v: Path | PostgresURL, info: ValidationInfo) -> Path | PostgresURL:
        if isinstance(v, PostgresURL):
            return v
        v = v.expanduser()
        base = (info.context or {}).get("base_dir")
        return v if v.is_absolute() or base is None else Path(base) / v

    @model_validator(mode="after")
    def _default_proxy(self) -> Rules:
        """Each upstream holds the proxy it is reached through, so whoever dials it (requests,
        probes, `ccswitch activate`) needs no more than the upstream."""
        if self.upstream_proxy is not None and any("proxy" not in u.model_fields_set for u in self.upstreams):
            upstreams = tuple(u if "proxy" in u.model_fields_set else u.model_copy(update={"proxy": self.upstream_proxy})
                              for u in self.upstreams)
            object.__setattr__(self, "upstreams", upstreams)   # frozen; still being built here
        return self

    @property
    def tz(self) -> tzinfo:
        """`timezone:`, else the machine's zone: a named zone either way, so a day or month
        that spans a DST switch starts at its own local midnight."""
        return zone(self.timezone)

    def upstream(self, name: str) -> Upstream:
        for up in self.upstreams:
            if up.name == name:
                return up
        raise KeyError(name)

    def client_key_ok(self, presented: str | None) -> bool:
        """True if `presented` equals a client key (constant time); True if none are configured."""
        return not self.client_keys or self.client_named(presented) is not None

    def budgets_set(self) -> bool:
        return any(u.budget for u in self.upstreams) or any(c.budget for c in self.client_keys)

    def key_of_client(self, name: str | None) -> str | None:
        return next((c.get_secret_value() for c in self.client_keys if c.name == name), None)

    def client_key_texts(self) -> list[str]:
        return [client.get_secret_value() for client in self.client_keys]

    def secret_texts(self) -> list[str]:
        """Every key text the rules hold: each upstream's (keys, secret headers, proxy logins) and
        the client keys.  Built once per rules object (they are frozen; a copy with changes is
        another object), as every finished request asks for them."""
        return list(self._secrets()[1])

    def upstream_key_texts(self) -> tuple[str, ...]:
        """The upstreams' keys (`Upstream.key_texts`): what a client's request is scrubbed of (a
        key of `client_keys` it quotes is its own to send)."""
        return self._secrets()[2]

    def _secrets(self) -> tuple[Rules, list[str], tuple[str, ...]]:
        last = Rules._secrets_of_last
        if last is None or last[0] is not self:
            upstreams = [text for upstream in self.upstreams for text in upstream.secret_texts()]
            clients = [form for key in self.client_key_texts() for form in echo_forms(key)]
            keys = tuple(dict.fromkeys(text for upstream in self.upstreams for text in upstream.key_texts()))
            last = Rules._secrets_of_last = (self, upstreams + clients, keys)
        return last

    def scrub(self, text: str) -> str:
        """`text` without any key text of the rules: for what a client chose (its model, its
        session) and messages built from it, before they are shown, logged or stored."""
        secrets = self.secret_texts()
        return scrub_text(text, secrets, "surrogatepass") if holds_secret(text, secrets) else text

    def client_called(self, name: str | None) -> ClientKey | None:
        return next((c for c in self.client_keys if c.name == name), None) if name else None

    def client_named(self, presented: str | None) -> ClientKey | None:
        """The client key `presented` equals, compared in constant time with every key."""
        given = (presented or "").encode("utf-8", "surrogatepass")
        found = None
        for client in self.client_keys:
            if hmac.compare_digest(given, client.get_secret_value().encode("utf-8", "surrogatepass")):
                found = client
        return found if presented is not None else None


def _zone_hint(name: str) -> str:
    """What to write instead of an unknown zone: the zone it differs from by case or a typo."""
    known = available_timezones()
    by_case = {z.lower(): z for z in known}
    close = by_case.get(name.lower()) or next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.8)), None)
    return f"did you mean {close!r}?" if close else "use an IANA name like Europe/Berlin"
