"""Which rules a command uses: loading them for a command, and the line saying which file and why."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
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


#: how an unset ${VAR} reads under MarkedEnv: a marker naming it
_MARK = re.compile(r"ccswitch-unset-([A-Za-z_][A-Za-z0-9_]*)-variable")


class MarkedEnv(AnyEnv):
    """Every ${VAR} counts as set, an unset one to a marker naming it: a command that uses part of
    the rules can tell which variables that part lacks."""

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, f"ccswitch-unset-{key}-variable")


def named_file(text: str) -> str:
    """A file or folder named on the command line (`--rules`, `--db`, `--out`, `env`'s `--confdir`
    and `--bundle-dir`): an empty name, as an unset
    shell variable gives, names none; taken for no name, another file would be used unsaid."""
    if not text:
        raise argparse.ArgumentTypeError("an empty name (an unset shell variable?)")
    return text


def unset_in(text: str) -> list[str]:
    """The names of the ${VAR}s unset under MarkedEnv that `text` holds."""
    return sorted(set(_MARK.findall(text)))


def load_for_part(option_value: str | None, used: Callable[[Rules], list[str]], what: str) -> Rules | None:
    """The rules for a command that uses part of them (one upstream's probe, the notify hooks),
    announced; None after printing why not.  A ${VAR} unset elsewhere in the rules (another
    relay's key, in a shell that holds only this one's) does not stop it; one whose value is in
    `used(rules)` (the texts the command sends or connects with) is named."""
    announce_rules(option_value, resolve_rules_path(option_value, Path.cwd(), Path.home()))
    try:
        return find_rules(option_value)[0]
    except RulesError as exc:
        strict = exc
    try:
        rules = find_rules(option_value, env=MarkedEnv())[0]
    except RulesError:               # a problem beyond unset variables
        print(str(strict), file=sys.stderr)
        return None
    missing = sorted({name for text in used(rules) for name in unset_in(text)})
    if missing:
        print(f"{what} needs {', '.join('${' + name + '}' for name in missing)}, which "
              f"{'is' if len(missing) == 1 else 'are'} not set in this shell", file=sys.stderr)
        return None
    return rules


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
