import pytest

from tests.support.mock_upstream import MockUpstream
from tests.support.redis_server import own_redis, redis_server, redis_url  # noqa: F401  (redis fixtures)

# fixtures of real servers the tests use: postgres_server, postgres_url, own_postgres
pytest_plugins = ["tests.support.postgres"]


@pytest.fixture
def mock_a():
    with MockUpstream("A") as up:
        yield up


@pytest.fixture
def mock_b():
    with MockUpstream("B") as up:
        yield up
