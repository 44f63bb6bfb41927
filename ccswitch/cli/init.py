"""`ccswitch init`: a personal rules file from the shipped example, never over an existing one."""

from __future__ import annotations

import os
from pathlib import Path

from ccswitch.config.load import example_rules_text


def personal_rules_path(home: Path) -> Path:
    return home / ".ccswitch" / "rules.yaml"


def write_example_rules(home: Path) -> Path:
    """Write the example rules to ``~/.ccswitch/rules.yaml``; return its path.

    Raises FileExistsError when the file exists: it may hold the user's edits, so it is never
    replaced (O_EXCL also settles a race with another writer). The file is private (0600): an
    ``api_key`` may be written into it literally.
    """
    path = personal_rules_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(example_rules_text())
    return path
