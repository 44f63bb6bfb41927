"""Where instances share what they learn about upstreams: `state: redis://host:port/db` in
rules.yaml (``rediss://`` for TLS).  The URL may hold a password (``redis://:secret@host/0``,
usually through ``${VAR}``): it is kept for connecting and shown nowhere — ``str()``, ``repr()``
and ``redacted`` give the URL without it.  Parsing never echoes the text it rejects.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

REDIS_SCHEMES = ("redis", "rediss")
_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


class RedisURL(BaseModel):
    """A Redis connection URL. Equal URLs (password included) are the same shared state."""

    model_config = ConfigDict(frozen=True)
    url: SecretStr

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
            _ = parts.port          # raises ValueError on a port that is not a number
        except ValueError:
            raise ValueError("not a valid Redis URL (check the host and port)") from None
        if not parts.hostname:
            raise ValueError("a Redis URL names a host (redis://host:port/db)")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError("the path of a Redis URL is a database number (redis://host:port/0)")
        return cls(url=SecretStr(text))

    @property
    def conninfo(self) -> str:
        """The whole URL, password included: for the client library only."""
        return self.url.get_secret_value()

    @property
    def db(self) -> int:
        path = urlsplit(self.conninfo).path.strip("/")
        return int(path) if path else 0

    @property
    def redacted(self) -> str:
        """The URL with its password (if any) replaced by ``***``: for logs and messages."""
        parts = urlsplit(self.conninfo)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"RedisURL({self.redacted!r})"
