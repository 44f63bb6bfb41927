import pytest


@pytest.fixture(autouse=True)
def whole_lines(monkeypatch):
    """The report's tables as a file gets them: a `COLUMNS` in the tests' environment (some CI
    runners set one) would fit them to it (test_text_fit sets its own)."""
    monkeypatch.delenv("COLUMNS", raising=False)
