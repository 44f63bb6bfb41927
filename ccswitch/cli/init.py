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


def in_the_way(there: Path, path: Path) -> str:
    """What stops `write_example_rules` writing `path`: `there` (it, or its folder) exists."""
    if there.is_symlink() and not there.exists():
        return (f"{there} is a link to {os.readlink(there)}, which does not exist; ccswitch init never "
                "writes through a link (remove it, or create what it points to)")
    if there != path:
        return f"{there} is a file, where ccswitch keeps its folder; move it away and run ccswitch init again"
    if there.is_dir():
        return f"{there} is a folder, not a rules file; move it away and run ccswitch init again"
    return (f"{there} already exists; ccswitch init never overwrites it (edit it, or move it away and run "
            "ccswitch init again)")
