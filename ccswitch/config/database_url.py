"""Where the usage ledger lives: a SQLite file (a path) or a PostgreSQL server (a URL).

``usage_db`` in rules.yaml and ``ccswitch report --db`` take either. A PostgreSQL URL may hold a
password (``postgresql://user:secret@host:5432/db``, usually through ``${VAR}``): it is kept for
connecting and shown nowhere — ``str()``, ``repr()`` and ``redacted`` give the URL without it.
Parsing never echoes the text it rejects, since that text may be the secret.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from ccswitch.config.secret_url import SecretURL
from ccswitch.net.addresses import url_port

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(text: str) -> bool:
    scheme, sep, _ = text.strip().partition("://")
    return bool(sep) and scheme.lower() in POSTGRES_SCHEMES


class PostgresURL(SecretURL):
    """A libpq connection URL. Equal URLs (password included) are the same database."""

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
            parts = urlsplit(text)
        except ValueError:          # an unbalanced [ or ] around the host
            raise ValueError("not a valid PostgreSQL URL (check the host)") from None
        if "," in parts.netloc:
            raise ValueError("one host per PostgreSQL URL (a list of hosts is not supported)")
        url_port(parts)
        return cls(url=SecretStr(text))


def parse_usage_db(text: str | Path) -> Path | PostgresURL:
    """A path (``~`` expanded) or a PostgreSQL URL, as ``usage_db`` and ``--db`` take them."""
    if isinstance(text, str) and is_postgres_url(text):
        return PostgresURL.parse(text)
    return Path(text).expanduser()
