import pytest

from tests.support.mock_upstream import MockUpstream


@pytest.fixture
def mock_a():
    with MockUpstream("A") as up:
        yield up


@pytest.fixture
def mock_b():
    with MockUpstream("B") as up:
        yield up
