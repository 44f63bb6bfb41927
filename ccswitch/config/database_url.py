"""Where the usage ledger lives: a SQLite file (a path) or a PostgreSQL server (a URL).

``usage_db`` in rules.yaml and ``ccswitch report --db`` take either. A PostgreSQL URL may hold a
password (``postgresql://user:secret@host:5432/db``, usually through ``${VAR}``): it is kept for
connecting and shown nowhere — ``str()``, ``repr()`` and ``redacted`` give the URL without it.
Parsing never echoes the text it rejects, since that text may be the secret.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

POSTGRES_SCHEMES = ("postgresql", "postgres")
_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)([^&]*)", re.IGNORECASE)


def is_postgres_url(text: str) -> bool:
    scheme, sep, _ = text.strip().partition("://")
    return bool(sep) and scheme.lower() in POSTGRES_SCHEMES


class PostgresURL(BaseModel):
    """A libpq connection URL. Equal URLs (password included) are the same database."""

    model_config = ConfigDict(frozen=True)
    url: SecretStr

    @classmethod
    def parse(cls, text: str) -> PostgresURL:
        """Raises ValueError (without the text) when it is not a usable PostgreSQL URL."""
        text = text.strip()
        if not is_postgres_url(text):
            raise ValueError("must start with postgresql:// or postgres://")
        if any(c.isspace() for c in text):
            raise ValueError("a PostgreSQL URL must not contain spaces (percent-encode them as %20)")
        if "#" in text:
            raise ValueError("a PostgreSQL URL has no '#' (percent-encode it in a password as %23)")
        try:
            _ = urlsplit(text).port     # raises ValueError on a port that is not a number
        except ValueError:
            raise ValueError("not a valid PostgreSQL URL (check the host and port)") from None
        return cls(url=SecretStr(text))

    @property
    def conninfo(self) -> str:
        """The whole URL, password included: for the driver only."""
        return self.url.get_secret_value()

    @property
    def redacted(self) -> str:
        """The URL with its password (if any) replaced by ``***``: for logs and messages."""
        parts = urlsplit(self.conninfo)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = _QUERY_PASSWORD.sub(r"\1***", parts.query)      # libpq also takes ?password=...
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")

    def scrub(self, text: str) -> str:
        """``text`` (e.g. a driver's error message) with this URL's password, if it appears, as ``***``."""
        parts = urlsplit(self.conninfo)
        secrets = {parts.password, unquote(parts.password or "")}
        secrets |= {unquote(m.group(2)) for m in _QUERY_PASSWORD.finditer(parts.query)} | \
                   {m.group(2) for m in _QUERY_PASSWORD.finditer(parts.query)}
        for secret in sorted(filter(None, secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"PostgresURL({self.redacted!r})"


def parse_usage_db(text: str | Path) -> Path | PostgresURL:
    """A path (``~`` expanded) or a PostgreSQL URL, as ``usage_db`` and ``--db`` take them."""
    if isinstance(text, str) and is_postgres_url(text):
        return PostgresURL.parse(text)
    return Path(text).expanduser()
