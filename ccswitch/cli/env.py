"""`ccswitch env`: the shell exports (or Codex TOML) that point Claude Code and Codex CLI at ccswitch.

Two ways in, both checked against the real CLIs (Claude Code 2.1.x, Codex CLI 0.169):

* regular proxy: ``HTTPS_PROXY`` plus trust in mitmproxy's CA. Claude Code (Bun) reads the CA from
  ``NODE_EXTRA_CA_CERTS`` (which *adds* to its built-in roots). Codex reads ``CODEX_CA_CERTIFICATE``
  (then ``SSL_CERT_FILE``), which *replaces* the roots, so it gets a bundle of the system CAs plus
  mitmproxy's CA -- other tools that honour ``SSL_CERT_FILE`` keep working too.
* reverse mode: plain-HTTP base URLs on loopback, no CA at all. Codex 0.169 ignores the
  ``OPENAI_BASE_URL`` environment variable, so it needs a provider block (``--codex-toml``) or
  ``-c openai_base_url=...``; the variable is still exported for OpenAI-SDK tools where the rules
  serve them with their upstreams' keys (else the listener's target would get the user's own key).

With the rules, it also gives each client an API key when the upstreams hold the real ones
(:func:`client_key_lines`): a fresh Claude Code with no key and no login says "Not logged in"
before it sends anything.

Everything here is pure text except :func:`write_ca_bundle`, which writes one file (only when its
content would change).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import ssl
import tempfile
from pathlib import Path

from ccswitch.cli.rules_file import unset_in
from ccswitch.config.models import Rules
from ccswitch.net.proxy import proxy_elsewhere
from ccswitch.vocab import Route

CA_FILE = "mitmproxy-ca-cert.pem"           # what mitmproxy writes into its confdir on first start
BUNDLE_FILE = "ccswitch-ca-bundle.pem"       # system CAs + mitmproxy CA, for SSL_CERT_FILE / CODEX_CA_CERTIFICATE
# where systems keep their CA bundle, CAs added locally included (Debian/Ubuntu, Fedora/RHEL, macOS/Alpine)
SYSTEM_BUNDLES = (Path("/etc/ssl/certs/ca-certificates.crt"), Path("/etc/pki/tls/certs/ca-bundle.crt"),
                  Path("/etc/ssl/cert.pem"))
LOOPBACK = "127.0.0.1"
NO_PROXY = "localhost,127.0.0.1,::1"
REGULAR_PORT, REVERSE_PORT = 8080, 8082     # ccswitch's default listeners (`ccswitch env --port`)
OWN_PORTS = (REGULAR_PORT, REVERSE_PORT)
DEFAULT_INTERCEPT = Rules.model_fields["intercept"].default     # the hosts ccswitch decrypts without rules
PROVIDER = "ccswitch"
OFFICIAL_OPENAI = "https://api.openai.com/v1"
#: the base-URL variables a client reads, each with the official value that leads through the proxy
BASE_URLS = (("ANTHROPIC_BASE_URL", "https://api.anthropic.com"), ("OPENAI_BASE_URL", OFFICIAL_OPENAI))
# what a client sends when ccswitch has no client_keys: visibly not a key, dropped before any upstream
PLACEHOLDER_KEY = "ccswitch-placeholder-not-a-real-key"
# each client's key variable and the routes its requests take: Claude Code -> claude; Codex CLI
# (built-in provider) -> codex; OpenAI SDKs, and Codex through the `--codex-toml` provider -> chat, codex
KEY_VARIABLES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("ANTHROPIC_API_KEY", (Route.CLAUDE,), "Claude Code"),
    ("CODEX_API_KEY", (Route.CODEX,), "Codex CLI"),
    ("OPENAI_API_KEY", (Route.CHAT, Route.CODEX), "OpenAI-SDK tools and Codex's ccswitch provider"),
)


def listening(host: str, port: int) -> bool:
    """Whether something accepts connections at host:port (a refusal is quick on loopback)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def mitmproxy_ca(confdir: Path) -> Path:
    """The mitmproxy CA certificate (PEM) inside ``confdir``."""
    return Path(confdir).expanduser() / CA_FILE


def system_ca_file() -> Path | None:
    """The system's CA bundle (a corporate CA added with `update-ca-certificates` is in it, and
    tools that read `SSL_CERT_FILE` must keep trusting it), else certifi's, else None."""
    for path in (openssl_default_bundle(), *SYSTEM_BUNDLES):
        if path is not None and path.is_file():
            return path
    try:
        import certifi
    except ImportError:
        return None
    path = Path(certifi.where())
    return path if path.is_file() else None


def openssl_default_bundle() -> Path | None:
    """The bundle OpenSSL was built to read; not `SSL_CERT_FILE`, which may be this very bundle."""
    cafile = ssl.get_default_verify_paths().openssl_cafile
    return Path(cafile) if cafile else None


def write_ca_bundle(confdir: Path, bundle_dir: Path, *, system_ca: Path | None = None) -> Path:
    """Write ``bundle_dir/ccswitch-ca-bundle.pem`` = system CAs + the mitmproxy CA; return its path.

    Idempotent: the file is rewritten (atomically) only when its content would change, e.g. after
    mitmproxy generated a new CA. ``system_ca`` overrides :func:`system_ca_file` (tests use it).
    Raises FileNotFoundError when the mitmproxy CA does not exist yet.
    """
    ca = mitmproxy_ca(confdir)
    ca_pem = ca.read_bytes()                 # FileNotFoundError if mitmdump never ran
    system = system_ca if system_ca is not None else system_ca_file()
    parts = []
    if system is not None and Path(system).is_file():
        parts.append(Path(system).read_bytes())
    parts.append(b"# mitmproxy CA (" + str(ca).encode() + b"), added by ccswitch\n" + ca_pem)
    content = b"".join(p if p.endswith(b"\n") else p + b"\n" for p in parts)

    bundle_dir = Path(bundle_dir).expanduser()
    bundle = bundle_dir / BUNDLE_FILE
    try:
        if bundle.read_bytes() == content:
            return bundle
    except OSError:
        pass
    bundle_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=bundle_dir, prefix=".ccswitch-ca-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, bundle)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return bundle


def _export(name: str, value: str | Path) -> str:
    return f"export {name}={shlex.quote(str(value))}"


def _toml_str(value: str) -> str:
    return json.dumps(value)                 # a JSON string is a valid TOML basic string


def codex_toml_block(base_url: str, websockets: bool = True) -> str:
    """A Codex ``config.toml`` snippet selecting a ``ccswitch`` Responses provider at ``base_url``.

    ``supports_websockets`` is ``websockets``: true lets Codex open its Responses WebSocket, which
    ccswitch bridges (``codex_websocket: bridge``); false keeps it on HTTPS POST /responses from the
    start (for ``codex_websocket: refuse``, which would answer the upgrade with a 426).
    ``env_key`` is what makes Codex send ``Authorization: Bearer $OPENAI_API_KEY`` -- without a key
    source Codex 0.169 sends no credentials at all.
    """
    flag = "true" if websockets else "false"
    inline = (f'{{name={_toml_str(PROVIDER)},base_url={_toml_str(base_url)},wire_api="responses",'
              f'env_key="OPENAI_API_KEY",supports_websockets={flag}}}')
    return "\n".join([
        "# Codex CLI provider for ccswitch: put this in $CODEX_HOME/config.toml (default ~/.codex/config.toml).",
        "# The top-level key must stay above the first [table] of the file.",
        f"# One-off instead: codex -c {shlex.quote('model_providers.' + PROVIDER + '=' + inline)}"
        f" -c model_provider={PROVIDER}",
        f"model_provider = {_toml_str(PROVIDER)}",
        "",
        f"[model_providers.{PROVIDER}]",
        f"name = {_toml_str(PROVIDER)}",
        f"base_url = {_toml_str(base_url)}",
        'wire_api = "responses"',
        'env_key = "OPENAI_API_KEY"',
        f"supports_websockets = {flag}",
    ])


def client_key_lines(rules: Rules) -> list[str]:
    """``export`` lines giving clients a key ccswitch accepts, where the upstreams hold the real keys.

    A variable is exported when one of its routes lists upstreams and none of those routes has an
    ``auth: client`` upstream (that one needs the client's own key or login, which a placeholder
    would override). Its value is the first of ``client_keys``, else :data:`PLACEHOLDER_KEY`
    (ccswitch drops client credentials before an upstream with its own key). An upstream's key is
    never printed.
    """
    lines: list[str] = []
    for variable, routes, clients in KEY_VARIABLES:
        used, own = _key_holders(rules, routes)
        if not used:
            continue
        if own:
            lines.append(f"# {variable} left as it is: the client's own key or login is needed by "
                         f"auth: client upstream(s) {', '.join(own)}")
            continue
        if missing := unset_client_key(rules):
            lines.append(f"# {variable} not set: {missing} of your ccswitch client key (client_keys[0]) "
                         "is not set in this shell")
        elif rules.client_keys:
            lines.append(f"# {variable}: your ccswitch client key (client_keys[0]) for {clients}")
            lines.append(_export(variable, rules.client_keys[0].get_secret_value()))
        else:
            lines.append(f"# {variable}: a placeholder for {clients} (the {'/'.join(used)} route's upstreams "
                         "hold the real keys)")
            lines.append(_export(variable, PLACEHOLDER_KEY))
    return lines


def unset_client_key(rules: Rules) -> str:
    """The ${VAR}s of the first client key that this shell lacks (rules read with `MarkedEnv`), as
    `${TEAM_KEY}`; "" when it has them all (or there are no client keys)."""
    if not rules.client_keys:
        return ""
    return ", ".join("${" + name + "}" for name in unset_in(rules.client_keys[0].get_secret_value()))


def _key_holders(rules: Rules, routes: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Of ``routes``: those that list upstreams, and their ``auth: client`` upstreams as
    ``"name (route)"`` (they need the client's own key)."""
    used = [route for route in routes if rules.routes.for_route(route)]
    own = [f"{name} ({route})" for route in used for name in rules.routes.for_route(route)
           if _auth(rules, name) == "client"]
    return used, own


def own_key_to_target(rules: Rules | None, routes: tuple[str, ...]) -> str | None:
    """Why a client of ``routes`` at a reverse listener would send its own key on to the listener's
    target (an ``original`` upstream, a route listing nothing, a path no route takes), or None
    when the routes' upstreams hold the keys and the client gets a key ccswitch drops.  To
    Anthropic or a relay, with the user's OpenAI key, for the README's listener."""
    if rules is None:
        return "no rules were read"
    used, own = _key_holders(rules, routes)
    if own:
        # a route of the client's own key, beside one whose upstreams hold theirs: emptying the
        # first (if unused) lets the second's clients through
        blocking = [route for route in used if any(o.endswith(f"({route})") for o in own)]
        unused = f"; a route you do not use can be emptied ({', '.join(f'{r}: []' for r in blocking)})" \
            if len(blocking) < len(used) else ""
        return f"auth: client upstream(s) {', '.join(own)} keep the client's own key{unused}"
    if not used:
        return f"no upstream of the {' or '.join(routes)} route takes these requests"
    if missing := unset_client_key(rules):
        return f"{missing} of your client key is not set in this shell, so the client keeps its own key"
    return None


def _openai_base_url_lines(rules: Rules | None, host: str, port: int) -> list[str]:
    """``OPENAI_BASE_URL`` at a reverse listener, only where the rules serve OpenAI requests with
    their upstreams' keys (see `own_key_to_target`); and what Codex CLI, which ignores it, needs."""
    origin = f"http://{host}:{port}"
    why = own_key_to_target(rules, (Route.CHAT, Route.CODEX))
    if why is not None:
        return [f"# OPENAI_BASE_URL not set: {why}, and this listener would send such a request, key and all,"
                " on to its target. Only for a listener whose target is OpenAI's API"
                f" (--mode reverse:https://api.openai.com@PORT): export OPENAI_BASE_URL=http://{host}:PORT/v1"]
    lines = [_export("OPENAI_BASE_URL", f"{origin}/v1")]
    if own_key_to_target(rules, (Route.CODEX,)) is None:
        lines.append("# Codex CLI ignores OPENAI_BASE_URL: see `ccswitch env --reverse --codex-toml`"
                     f" (or: codex -c openai_base_url={shlex.quote(origin + '/v1')})")
    else:
        lines.append("# OPENAI_BASE_URL serves the chat route (/v1/chat/completions) only: the codex route's"
                     " requests (/v1/responses) would go on to this listener's target")
    return lines


def _auth(rules: Rules, name: str) -> str | None:
    try:
        return rules.upstream(name).auth
    except KeyError:          # validated rules name only known upstreams; stay total anyway
        return None


def base_url_unsets(environ: dict[str, str]) -> list[str]:
    """For the proxy: `unset` lines for base URLs of the shell that would send a client past
    ccswitch (a relay's URL set from before: Claude Code would go there straight, through the
    proxy untouched).  Their values are not printed: a URL may hold a password."""
    lines = []
    for name, official in BASE_URLS:
        value = environ.get(name, "").strip().rstrip("/")
        if value and value != official:
            lines += [f"# {name} is set in this shell: clients would go there past ccswitch, so it is unset"
                      " (through the proxy they reach the official API, which ccswitch routes)", f"unset {name}"]
    return lines


def no_proxy_lines(environ: dict[str, str], intercept: tuple[str, ...] | None) -> list[str]:
    """NO_PROXY / no_proxy for the clients: this shell's entries kept (a company's hosts; both
    variables', as tools read one or the other) with loopback added.  For the proxy (`intercept`:
    the hosts ccswitch decrypts) an entry that would send one of them past ccswitch is left out,
    said in a comment; an entry with control characters is left out whatever the mode."""
    kept: list[str] = []
    dropped: list[str] = []
    unreadable = 0
    for entry in f"{environ.get('no_proxy', '')},{environ.get('NO_PROXY', '')}".split(","):
        entry = entry.strip()
        if not entry.isprintable() or " " in entry:
            unreadable += 1
        elif entry and entry not in kept and entry not in dropped:
            (dropped if intercept and _exempts(entry, intercept) else kept).append(entry)
    kept += [own for own in NO_PROXY.split(",") if own not in kept]
    value = ",".join(kept)
    told = [f"# NO_PROXY: {', '.join(dropped)} left out: clients would reach {', '.join(intercept or ())} past "
            "ccswitch"] if dropped else []
    if unreadable:
        told.append(f"# NO_PROXY: {unreadable} entry(ies) with spaces or control characters left out")
    return [*told, _export("NO_PROXY", value), _export("no_proxy", value)]


def _exempts(entry: str, hosts: tuple[str, ...]) -> bool:
    """Whether a NO_PROXY entry (`*`, `host`, `.domain`, `*.domain`, `host:port`) covers one of `hosts`."""
    if entry == "*":
        return True
    name = entry.lower().lstrip("*").lstrip(".")
    if name.count(":") == 1:        # host:port (an IPv6 address has more colons)
        name = name.split(":")[0]
    name = name.rstrip(".")
    return bool(name) and any(host == name or host.endswith("." + name) for host in hosts)


def replaced_proxy_lines(environ: dict[str, str], port: int) -> list[str]:
    """A comment when the shell's HTTPS_PROXY named another proxy (a company's, cntlm's on
    loopback): the clients go through ccswitch instead, and ccswitch itself reaches upstreams only
    through the rules' proxies.  Shown without its login; ccswitch's own (this port, or a default
    one from an earlier `eval`) is replaced without a word."""
    if (found := proxy_elsewhere(environ, ("HTTPS_PROXY", "https_proxy"), (port, *OWN_PORTS))) is None:
        return []
    name, proxy = found
    return [f"# {name} was {proxy.shown} in this shell: the clients now go through ccswitch, which does not "
            f"use that proxy by itself; to reach upstreams through it, write `upstream_proxy: "
            f"{proxy.suggestion}` in rules.yaml"]


def env_lines(*, confdir: Path, port: int, reverse: bool, codex_toml: bool, bundle_dir: Path,
              host: str = LOOPBACK, system_ca: Path | None = None, rules: Rules | None = None,
              environ: dict[str, str] | None = None) -> str:
    """The text `ccswitch env` prints: eval-able ``export`` lines and ``#`` comments, or Codex TOML.

    * proxy (default): HTTPS_PROXY, NO_PROXY, NODE_EXTRA_CA_CERTS (mitmproxy CA), SSL_CERT_FILE and
      CODEX_CA_CERTIFICATE (the bundle, written by :func:`write_ca_bundle`). A CA that does not
      exist yet gives a ``# start ccswitch once (ccswitch run) to create ...`` hint instead of the CA variables.
      Base URLs of ``environ`` (the shell's) that would lead past ccswitch are unset (:func:`base_url_unsets`).
    * ``reverse``: ANTHROPIC_BASE_URL=http://HOST:PORT, and OPENAI_BASE_URL=http://HOST:PORT/v1 when
      the rules serve OpenAI requests with their own upstreams' keys (:func:`_openai_base_url_lines`).
    * ``codex_toml``: a ``[model_providers.ccswitch]`` block (base_url is the reverse listener with
      ``reverse``, else the official URL reached through the proxy exports; WebSockets on unless
      ``rules`` say ``codex_websocket: refuse``).

    With ``rules``, the exports (not the TOML) end with :func:`client_key_lines`.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535, not {port!r}")
    origin = f"http://{host}:{port}"

    if codex_toml:
        websockets = rules is None or rules.codex_websocket == "bridge"
        if reverse:
            block = codex_toml_block(f"{origin}/v1", websockets)
            why = own_key_to_target(rules, (Route.CODEX,)) if rules is not None else None
            if why is not None:   # as OPENAI_BASE_URL: Codex's key would go on to the listener's target
                block = (f"# {why}, and this listener would send its requests on to its target: use this block"
                         " only with a listener whose target is OpenAI's API"
                         " (--mode reverse:https://api.openai.com@PORT) or ChatGPT's\n" + block)
            return block
        return "\n".join([
            f"# Codex reaches {OFFICIAL_OPENAI} through the proxy: also eval \"$(ccswitch env --port {port})\".",
            codex_toml_block(OFFICIAL_OPENAI, websockets),
        ])

    keys = client_key_lines(rules) if rules is not None else []
    shell = os.environ if environ is None else environ
    if reverse:
        return "\n".join([
            f"# ccswitch reverse listener at {origin} (plain HTTP on loopback: no proxy, no CA)",
            _export("ANTHROPIC_BASE_URL", origin),
            *_openai_base_url_lines(rules, host, port),
            *no_proxy_lines(shell, None),      # no proxy for the clients: the shell's exemptions stay
            *keys,
        ])

    lines = [
        f"# ccswitch as HTTPS proxy at {origin} (Claude Code, Codex CLI)",
        *replaced_proxy_lines(shell, port),
        _export("HTTPS_PROXY", origin),
        _export("https_proxy", origin),
        *no_proxy_lines(shell, rules.intercept if rules is not None else DEFAULT_INTERCEPT),
        *base_url_unsets(shell),
    ]
    ca = mitmproxy_ca(confdir)
    if not ca.is_file():
        lines.append(f"# start ccswitch once (ccswitch run) to create {shlex.quote(str(ca))} (the mitmproxy CA),"
                     " then run `ccswitch env` again for NODE_EXTRA_CA_CERTS, SSL_CERT_FILE and CODEX_CA_CERTIFICATE")
        return "\n".join(lines + keys)
    system = system_ca if system_ca is not None else system_ca_file()
    bundle = write_ca_bundle(confdir, bundle_dir, system_ca=system)
    lines.append(_export("NODE_EXTRA_CA_CERTS", ca))
    if system is None:
        lines.append("# no system CA bundle found (certifi or /etc/ssl/certs): the bundle holds only the mitmproxy CA")
    lines.append(_export("SSL_CERT_FILE", bundle))
    lines.append(_export("CODEX_CA_CERTIFICATE", bundle))
    return "\n".join(lines + keys)
