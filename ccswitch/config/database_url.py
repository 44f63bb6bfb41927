"""Where the usage ledger lives: a SQLite file (a path) or a PostgreSQL server (a URL).

``usage_db`` in rules.yaml and ``ccswitch report --db`` take either. A PostgreSQL URL may hold a
password (``postgresql://user:secret@host:5432/db``, usually through ``${VAR}``): it is kept for
connecting and shown nowhere — ``str()``, ``repr()`` and ``redacted`` give the URL without it.
Parsing never echoes the text it rejects, since that text may be the secret.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from pydantic import SecretStr

from ccswitch.config.secret_url import SecretURL
from ccswitch.net.addresses import refuse_unencoded_credentials, url_port

POSTGRES_SCHEMES = ("postgresql", "postgres")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}")
# libpq's key=value form ("host=db password=..."): a word that starts the text or follows a blank
_LIBPQ_KEYWORDS = re.compile(r"(?:^|\s)(?:host|hostaddr|dbname|user|password|port|sslmode|service)\s*=")


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
        refuse_unencoded_credentials(text, parts)
        url_port(parts)
        _check_options(parts.query)
        return cls(url=SecretStr(text))


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _check_options(query: str) -> None:
    """What libpq would refuse at every connection (an outage for ever, at run time) is a
    mistake in the rules: a misspelt option's name, an `sslmode` it does not know."""
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "sslmode" and value not in _SSLMODES:
            raise ValueError(f"sslmode must be one of {', '.join(_SSLMODES)}")
    try:
        from psycopg.conninfo import conninfo_to_dict
        from psycopg.errors import ProgrammingError
    except ImportError:         # the driver is an extra: the ledger names it missing when it starts
        return
    try:
        conninfo_to_dict("postgresql:///?" + query)   # the options alone: nothing secret in the message
    except ProgrammingError as exc:
        # only an unknown option's name is repeated: other messages may quote a value (`?password=`)
        said = str(exc).strip()
        raise ValueError("libpq refuses its options" + (f": {said}" if said.startswith("invalid URI query parameter")
                                                         else " (check their percent-encoding)")) from None


def refuse_other_databases(text: str) -> None:
    """A URL of another scheme (SQLAlchemy's ``postgresql+psycopg://``, ``sqlite://``) or a libpq
    ``key=value`` string would otherwise be taken for a file path: the ledger would go to a local
    file named after it, password and all.  Raises ValueError without the text."""
    scheme, sep, _ = text.strip().partition("://")
    if sep and not is_postgres_url(text):
        if not _SCHEME.fullmatch(scheme):   # not a scheme at all: the text may be the secret
            raise ValueError("takes a file path or a postgresql:// URL, not another kind of URL")
        hint = " (SQLAlchemy's driver suffix is not needed)" if scheme.lower().startswith("postgres") else ""
        raise ValueError(f"takes a file path or a postgresql:// URL, not a {scheme}:// URL{hint}")
    if _LIBPQ_KEYWORDS.search(text):
        raise ValueError("takes a file path or a postgresql:// URL: write a libpq key=value string as "
                         "postgresql://user:password@host:port/dbname")


def parse_usage_db(text: str | Path) -> Path | PostgresURL:
    """A path (``~`` expanded) or a PostgreSQL URL, as ``usage_db`` and ``--db`` take them."""
    if isinstance(text, str):
        if is_postgres_url(text):
            return PostgresURL.parse(text)
        refuse_other_databases(text)
    return Path(text).expanduser()
