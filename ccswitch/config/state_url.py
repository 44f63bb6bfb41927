"""Where instances share what they learn about upstreams: `state: redis://host:port/db` in
rules.yaml (``rediss://`` for TLS).  The URL may hold a password (``redis://:secret@host/0``,
usually through ``${VAR}``): it is kept for connecting and shown nowhere — ``str()``, ``repr()``
and ``redacted`` give the URL without it.  Parsing never echoes the text it rejects.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import SecretStr

from ccswitch.config.secret_url import SecretURL
from ccswitch.net.addresses import refuse_unencoded_credentials, url_port

REDIS_SCHEMES = ("redis", "rediss")


class RedisURL(SecretURL):
    """A Redis connection URL. Equal URLs (password included) are the same shared state."""

    @classmethod
    def parse(cls, text: str) -> RedisURL:
        """Raises ValueError (without the text) when it is not a usable Redis URL."""
        text = text.strip()
        scheme, sep, _ = text.partition("://")
        if not sep or scheme.lower() not in REDIS_SCHEMES:
            raise ValueError("must be a redis:// or rediss:// URL (e.g. redis://127.0.0.1:6379/0)")
        if any(c.isspace() for c in text) or "#" in text:
            raise ValueError("a Redis URL has no spaces or '#' (percent-encode them in a password)")
        try:
            parts = urlsplit(text)
        except ValueError:          # an unbalanced [ or ] around the host
            raise ValueError("not a valid Redis URL (check the host)") from None
        refuse_unencoded_credentials(text, parts)
        url_port(parts)
        if not parts.hostname:
            raise ValueError("a Redis URL names a host (redis://host:port/db)")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError("the path of a Redis URL is a database number (redis://host:port/0)")
        return cls(url=SecretStr(text))

    @property
    def db(self) -> int:
        path = urlsplit(self.conninfo).path.strip("/")
        return int(path) if path else 0
