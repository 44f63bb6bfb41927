"""What the tests share: mock upstreams, a real mitmdump in a subprocess, keys and paths."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
FIXTURES = TESTS / "fixtures"
SCRIPTS = REPO / "scripts"
