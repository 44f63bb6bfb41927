"""What a command says when the directory it was told to write into cannot be written."""

from __future__ import annotations

from pathlib import Path


def cannot_write(option: str, path: Path | str, exc: OSError) -> str:
    """One line for the user, naming the option they gave: a wrong path is their mistake, not a crash."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        why = "a file is in the way: give a directory"
    else:
        why = exc.strerror or type(exc).__name__
    return f"{option} {path}: cannot write there ({why})"
