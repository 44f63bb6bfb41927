"""Writing a command's output to a reader that may stop early."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def quiet_on_broken_pipe(command: Callable[[], int]) -> int:
    """`ccswitch env | head`: the reader has gone, so say nothing more (and no traceback)."""
    try:
        return command()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
