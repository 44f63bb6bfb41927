"""Where instances share what they learn about upstreams: `state: redis://host:port/db` in
rules.yaml (``rediss://`` for TLS).  The URL may hold a password (``redis://:secret@host/0``,
usually through ``${VAR}``): it is kept for connecting and shown nowhere — ``str()``, ``repr()``
and ``redacted`` give the URL without it.  Parsing never echoes the text it rejects.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

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
        if parts.username and parts.password is None:
            # Redis has no login without a password: this is a password whose ':' was forgotten,
            # which would be shown wherever the URL is (only a password is masked)
            raise ValueError("a Redis URL's user name needs a password: a password alone is written "
                             "redis://:PASSWORD@host (with the ':'), a user's redis://USER:PASSWORD@host")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError("the path of a Redis URL is a database number (redis://host:port/0)")
        _check_options(parts.scheme.lower(), parts.query)
        return cls(url=SecretStr(text))

    @property
    def db(self) -> int:
        path = urlsplit(self.conninfo).path.strip("/")
        return int(path) if path else 0


# what ccswitch sets itself and works by: a URL's option would replace it
_SET_HERE = ("decode_responses", "encoding_errors", "retry")


def _check_options(scheme: str, query: str) -> None:
    """What redis-py would refuse at every connection (sharing that never starts, or fails for
    ever) is a mistake in the rules: an option's name it does not take, a value it cannot read.
    Read as redis-py reads a URL, the names checked against what its connections take (no
    connection is made: one made and dropped as the start is refused crashed the interpreter
    at its exit now and then), the value never repeated."""
    options = parse_qsl(query)      # as redis-py reads them: an option without a value is none
    if not options:
        return
    try:
        from redis.asyncio import connection
    except ImportError:         # the package is an extra: the rules' check names it missing
        return
    taken = _taken_options(connection, scheme == "rediss")
    for name, value in options:
        if name == "db":        # the channel is named after the path's number: instances would not hear each other
            raise ValueError("the database number goes in the path of a Redis URL (redis://host:port/db), "
                             "not its query")
        if name in _SET_HERE:
            raise ValueError(f"ccswitch sets `{name}` itself: leave it out of the Redis URL's query")
        if name not in taken:
            if not name.isidentifier():     # no option's name: the text may be anything, even a secret
                raise ValueError("the query holds an option redis-py does not take (check its "
                                 "percent-encoding)")
            hint = "TLS options want rediss://" if name.startswith("ssl") else "check its spelling"
            raise ValueError(f"`{name}` is not an option redis-py takes in a Redis URL ({hint})")
        try:
            connection.parse_url(f"{scheme}://localhost/?{urlencode({name: value})}")
        except ValueError:
            raise ValueError(f"redis-py cannot read the value of the option `{name}`") from None


def _taken_options(connection, tls: bool) -> frozenset[str]:
    """The keyword arguments a pool and its connections take (those of a URL among them)."""
    import inspect
    classes = [connection.ConnectionPool, connection.AbstractConnection,
               connection.SSLConnection if tls else connection.Connection]
    return frozenset(name for cls in classes for name, parameter in inspect.signature(cls.__init__).parameters.items()
                     if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) and name != "self")
