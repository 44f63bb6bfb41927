"""Which rules a command uses: loading them for a command, and the line saying which file and why."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from ccswitch.config.load import find_rules, resolve_rules_path, rules_origin
from ccswitch.config.models import Rules
from ccswitch.config.values import RulesError

#: what an unset ${VAR} reads as under AnyEnv (a command that needs that value tells so)
UNSET = "ccswitch-unset-variable"


class AnyEnv(Mapping[str, str]):
    """Every ${VAR} counts as set (unset ones to `UNSET`): for commands that never use an upstream's
    key, such as `ccswitch env` run in the clients' shell, which need not hold the relays' keys."""

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, UNSET)

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def announce_rules(option_value: str | None, path: Path | None) -> None:
    """The line every command prints on stderr (stdout may be eval'ed or parsed)."""
    print(f"ccswitch: rules from {rules_origin(option_value, path)}", file=sys.stderr)


def find_announced(option_value: str | None, env: Mapping[str, str] | None = None) -> tuple[Rules, Path | None]:
    """``find_rules``, saying first which file it reads (also when that file turns out invalid)."""
    announce_rules(option_value, resolve_rules_path(option_value, Path.cwd(), Path.home()))
    return find_rules(option_value, env=env)


def load_for_command(option_value: str | None, env: Mapping[str, str] | None = None) -> Rules | None:
    """The rules, announced; None after printing every problem on stderr."""
    try:
        return find_announced(option_value, env)[0]
    except RulesError as exc:
        print(str(exc), file=sys.stderr)
        return None
