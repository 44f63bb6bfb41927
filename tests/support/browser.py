"""Headless Chromium (Debian's `chromium` package) for the tests that look at a page in a real browser.

`.ci/run` installs it when it is missing, so in CI (CI=true) a missing browser is a failure;
elsewhere a test may skip with the reason `missing()` gives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

NAMES = ("chromium", "chromium-browser")


def binary() -> str | None:
    return next((found for name in NAMES if (found := shutil.which(name))), None)


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    if binary() is None:
        return "no chromium on PATH (Debian: apt-get install -y chromium; .ci/run installs it)"
    return None


def _run(profile: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    command = [binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--no-proxy-server", f"--user-data-dir={profile}", *args]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def dump_dom(url: str, profile: Path, budget_ms: int = 3000) -> str:
    """The DOM after the page's scripts ran for `budget_ms` of virtual time."""
    done = _run(profile, f"--virtual-time-budget={budget_ms}", "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def screenshot(url: str, profile: Path, path: Path, size: str = "1280,900", budget_ms: int = 3000) -> Path:
    done = _run(profile, f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", f"--window-size={size}",
                "--hide-scrollbars", url)
    assert done.returncode == 0 and path.exists(), done.stderr[-3000:]
    return path
