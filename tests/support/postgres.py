"""pytest fixtures for tests against a real PostgreSQL (registered in tests/conftest.py).

``postgres_server`` (session): the server named by ``CCSWITCH_TEST_POSTGRES`` (a superuser's URL;
`.ci/run` starts one), else a throwaway cluster started here when PostgreSQL's server binaries
are installed (tests/support/postgres_cluster.py), so a developer needs nothing else.  Without
either the tests skip, saying why — except under ``CI=true``, where a missing variable fails.
``postgres_url``: a fresh database on it for one test, dropped afterwards.
``own_postgres``: a cluster of the test's own, which the test may stop and start again.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.postgres_cluster import Cluster, bindir

ENV = "CCSWITCH_TEST_POSTGRES"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the PostgreSQL tests: {reason} (.ci/run starts a cluster and sets {ENV})",
                    pytrace=False)
    pytest.skip(reason)


def with_database(url: str, database: str) -> str:
    return urlsplit(url)._replace(path=f"/{database}").geturl()


@dataclass
class Server:
    url: str                       # a superuser's URL (to its `postgres` database)

    def admin(self):
        import psycopg
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return with_database(self.url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_cluster() -> Cluster:
    """A throwaway cluster in a new temp directory (/tmp: the server's user must reach it)."""
    if bindir() is None:
        _unavailable(f"PostgreSQL's server is not installed (apt-get install postgresql) and {ENV} is not set")
    return Cluster(Path(tempfile.mkdtemp(prefix="ccswitch-pg-"))).start()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test]')")
    if os.environ.get(ENV):
        yield Server(os.environ[ENV])
        return
    if os.environ.get("CI") == "true":      # .ci/run starts the cluster: without it, CI is not what it says
        pytest.fail(f"{ENV} is not set: .ci/run starts a PostgreSQL cluster and sets it", pytrace=False)
    cluster = start_cluster()
    try:
        yield Server(cluster.url)
    finally:
        cluster.remove()


@pytest.fixture
def postgres_url(postgres_server: Server) -> Iterator[str]:
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture
def own_postgres() -> Iterator[Cluster]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test]')")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()
