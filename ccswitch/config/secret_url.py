"""A connection URL whose password is a secret: the whole URL goes to the driver only; logs,
messages and reprs see it with the password (in the userinfo, or a `?password=` or
`?sslpassword=` query) as `***`."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

# `password=`, and libpq's `sslpassword=` (a client key's passphrase): any `…password=` key
_QUERY_PASSWORD = re.compile(r"((?:^|&)[a-z_]*password=)([^&]*)", re.IGNORECASE)


class SecretURL(BaseModel):
    """Equal URLs (password included) name the same service."""

    model_config = ConfigDict(frozen=True)
    url: SecretStr

    @property
    def conninfo(self) -> str:
        """The whole URL, password included: for the driver or client library only."""
        return self.url.get_secret_value()

    @property
    def redacted(self) -> str:
        """The URL with its password (if any) replaced by ``***``: for logs and messages."""
        parts = urlsplit(self.conninfo)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")

    def scrub(self, text: str) -> str:
        """``text`` (e.g. a driver's error message) with this URL's password, if it appears, as ``***``."""
        parts = urlsplit(self.conninfo)
        secrets = {parts.password, unquote(parts.password or "")}
        for match in _QUERY_PASSWORD.finditer(parts.query):
            secrets |= {match.group(2), unquote(match.group(2))}
        for secret in sorted(filter(None, secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.redacted!r})"
