import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent))

from mock_upstream import MockUpstream  # noqa: E402


@pytest.fixture
def mock_a():
    with MockUpstream("A") as up:
        yield up


@pytest.fixture
def mock_b():
    with MockUpstream("B") as up:
        yield up
