"""Small builders shared by the unit and addon tests."""

from __future__ import annotations

import asyncio
import datetime
import json
import textwrap
import time

from ccswitch.config.load import parse_rules
from ccswitch.config.models import Rules
from ccswitch.config.watch import SETTLE
from ccswitch.dial.job import Job
from ccswitch.routing.classify import classify
from ccswitch.vocab import CLIENT_PROTOCOL
from ccswitch.wire.exchange import ClientRequest

KEY_A = "fake-upstream-key-A-0123456789"
KEY_B = "fake-upstream-key-B-9876543210"
CLIENT_KEY = "fake-client-key-should-not-leak"


def hours_closed_now() -> str:
    """A one-minute `hours:` window half a day from now in the machine's zone (rules without
    `timezone:`): an upstream closed whenever the tests run.  A fixed "03:00-03:01" was open
    when they ran at 03:00, and opened within 20 s (worth a retry) at 02:59:40."""
    opens = datetime.datetime.now().astimezone() + datetime.timedelta(hours=12)
    return f"{opens:%H}:00-{opens:%H}:01"


def zone_at_noon() -> str:
    """A fixed-offset zone whose clock reads noon-something now (`Etc/GMT-3` is UTC+3): a day's
    budget counted in it does not end while a test runs.  In UTC, a run at 23:59 had the day's
    budget back within the minute (a short retry-after), and one across midnight had it back."""
    ahead = 12 - datetime.datetime.now(datetime.UTC).hour       # -11 to +12 hours
    return f"Etc/GMT{-ahead:+d}"


def rules_for(*upstreams: tuple[str, str, str], routes: dict | None = None, extra: str = "") -> Rules:
    """upstreams: (name, protocol, base_url); keys KEY_A, KEY_B... by position."""
    keys = [KEY_A, KEY_B, KEY_A + "c", KEY_B + "d"]
    lines = ["upstreams:"]
    for i, (name, protocol, base_url) in enumerate(upstreams):
        lines.append(f"  - {{name: {name}, protocol: {protocol}, base_url: '{base_url}', api_key: '{keys[i]}'}}")
    if routes is None:
        names = [u[0] for u in upstreams]
        routes = {"claude": names}
    lines.append("routes: " + json.dumps(routes))
    return parse_rules("\n".join(lines) + "\n" + textwrap.dedent(extra))


def one_upstream_rules(folder, base_url: str, head: str = ""):
    """`rules.yaml` in `folder`: one `anthropic` upstream `a` (KEY_A) at `base_url`, the claude
    route's only one; `head`: settings above it (`failover: {threshold: 1}`)."""
    path = folder / "rules.yaml"
    path.write_text(f"""{head}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
""")
    return path


def make_job(rules: Rules, path: str = "/v1/messages", body: dict | None = None,
             headers: list[tuple[str, str]] | None = None, host: str = "api.anthropic.com") -> Job:
    match = classify("POST", path)
    body = body if body is not None else {"model": "claude-x", "max_tokens": 10, "stream": True,
                                          "messages": [{"role": "user", "content": "hi"}]}
    raw = json.dumps(body).encode()
    headers = headers if headers is not None else [
        ("x-api-key", CLIENT_KEY), ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "fine-grained-tool-streaming-2025-05-14"), ("content-type", "application/json")]
    req = ClientRequest(route=match.route, endpoint=match.endpoint, method="POST",
                        url=f"https://{host}{path}", headers=headers, body=raw, json=body,
                        model=body.get("model"), stream=body.get("stream") is True,
                        client_protocol=CLIENT_PROTOCOL[match.route])
    candidates = [rules.upstream(n) for n in rules.routes.for_route(match.route)]
    return Job(request=req, rules=rules, candidates=candidates)


class MemorySink:
    def __init__(self):
        self.status = None
        self.headers = None
        self.length = None
        self.chunks: list[bytes] = []
        self.ended = False

    async def start(self, status, headers, length):
        assert self.status is None, "response started twice"
        self.status, self.headers, self.length = status, dict(headers), length

    async def write(self, data):
        assert self.status is not None and not self.ended
        self.chunks.append(data)

    async def end(self):
        self.ended = True

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def localhost_tls_server_context(directory, subject: str = "localhost"):
    """(server SSLContext, path of its self-signed certificate) for `localhost`; `subject`: its
    name as an issuer (two certificates with one name are one issuer to a verifier)."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "localhost.pem", directory / "localhost-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


async def eventually(check, timeout: float = 5.0) -> None:
    """Until `check()` holds, polled on the running loop; an AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not within the time allowed")
        await asyncio.sleep(0.01)


def reload_settled(rules_file) -> bool:
    """Reload as the watcher does after a change: one read, another once it has had time to settle."""
    rules_file.reload_if_changed()
    time.sleep(SETTLE)
    return rules_file.reload_if_changed()
