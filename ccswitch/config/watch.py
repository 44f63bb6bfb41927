"""The rules file on disk: where it is, the last good snapshot, reload on change.

A reload builds a whole new validated `Rules` and swaps one reference; requests
in flight keep the snapshot they started with.  An invalid edit is logged and
the last good rules stay in force.

A file being written in place passes through states that are valid rules (a prefix
that ends after a block) or empty (just truncated): a change is applied only once
two reads at least `SETTLE` seconds apart found the same bytes, and an empty file
never is.  Vetoes (e.g. the listener's exposure rule) may refuse new rules.
"""

from __future__ import annotations

import hashlib
import logging
import stat
import time
from collections.abc import Callable
from pathlib import Path

from ccswitch.config.load import (
    BUILT_IN,
    blank,
    default_rules_text,
    empty_file,
    parse_rules,
    resolve_rules_path,
    rules_origin,
    unreadable,
)
from ccswitch.config.models import ROUTE_PROTOCOLS, Rules
from ccswitch.config.values import RulesError

log = logging.getLogger("ccswitch.rules")

#: seconds the file's content must stay the same before a change is applied
SETTLE = 0.15
#: ...and before a change that leaves a route with upstreams with none: a file saved half-written
#: (its `routes:` not yet there) would send those requests on, with the clients' own keys
EMPTYING_SETTLE = 3.0

#: a check on new rules before they replace the old ones: a reason to refuse them, or None
Veto = Callable[[Rules], "str | None"]


class Settling:
    """Whether changed content has been seen unchanged by two reads `quiet` seconds apart."""

    def __init__(self, quiet: float = SETTLE, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet, self.clock = quiet, clock
        self._seen: bytes | None = None      # the signature first read at `_since`
        self._since: float | None = None     # None: no change is waiting

    @property
    def pending(self) -> bool:
        return self._since is not None

    def settled(self, signature: bytes | None) -> bool:
        """Record a read of changed content; True once it has stayed the same for `quiet` seconds."""
        now = self.clock()
        if self._since is None or signature != self._seen:
            self._seen, self._since = signature, now
            return False
        if now - self._since < self.quiet:
            return False
        self.forget()
        return True

    def forget(self) -> None:
        self._seen, self._since = None, None


class RulesFile:
    def __init__(self, settle: float = SETTLE, clock: Callable[[], float] = time.monotonic) -> None:
        self.path: Path | None = None
        self.rules: Rules = parse_rules(default_rules_text(), BUILT_IN)
        self.vetoes: list[Veto] = []
        #: what the machine lacks for rules to be put in force (`config.needs`), as (key, problem)
        self.needs: Callable[[Rules], list[tuple[str, str]]] = lambda rules: []
        self._signature: bytes | None = None    # the content last read (each outcome is logged once)
        self._in_force: bytes | None = None     # the content of the rules in force
        self._refused: bytes | None = None      # the content a change of the option just failed on
        self._opened = False    # the rules above are only a default until `open`
        self._settling = Settling(settle, clock)
        self._emptying: tuple[bytes | None, float] | None = None   # such a change, first read when
        #: why the file's last change is not in force, and since when (wall time), for the live
        #: page: in words without the file's text (it may hold a key); the log has the details
        self.not_applied: tuple[str, float] | None = None

    @property
    def pending(self) -> bool:
        """A change was seen and waits to prove stable: look again after `SETTLE` seconds."""
        return self._settling.pending

    def open(self, option_value: str | None) -> bool:
        """Load at start-up or when the option changes; raises RulesError if invalid.  False when
        the rules in force are what it names already (mitmproxy names the old file again when it
        takes back a refused change: nothing of the running rules, their switches included, goes)."""
        path = resolve_rules_path(option_value, Path.cwd(), Path.home())
        if path is None:
            if self._opened and self.path is None:
                return False
            rules = parse_rules(default_rules_text(), BUILT_IN)
            self._check_needs(rules, BUILT_IN)
            self._settling.forget()
            self.path, self._signature, self._in_force, self._opened = None, None, None, True
            self.rules, self.not_applied = rules, None
            log.info("ccswitch: rules loaded from %s", rules_origin(option_value, None))
            return True
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise RulesError([unreadable(path, exc)]) from None
        signature = _signature(content)
        if self._opened and path == self.path and signature in (self._in_force, self._refused):
            return False    # in force, or just refused: mitmproxy names it again as it takes the value back
        try:
            rules = self._checked(content, path)
        except RulesError:
            if self._opened and path == self.path:
                self._refused = signature
            raise
        self._settling.forget()
        self.path, self._signature, self._in_force, self._opened = path, signature, signature, True
        self.rules, self.not_applied, self._emptying = rules, None, None
        # which file and why, as every command says it: a ./rules.yaml of the current directory wins
        count = len(rules.upstreams)
        log.info("ccswitch: rules loaded from %s; %d upstream%s", rules_origin(option_value, path), count,
                 "" if count == 1 else "s")
        return True

    def _checked(self, content: bytes, path: Path) -> Rules:
        """The rules in `content` if they may be put in force, else RulesError: invalid, lacking
        what this machine has, or (while running) refused by a veto, as a reload would be."""
        if _is_empty(content):
            raise RulesError([empty_file(path)])
        rules = _parse(content, path)   # the bytes read once: what is checked is what is applied
        self._check_needs(rules, str(path))
        if self._opened and (reason := self._vetoed(rules)):
            raise RulesError([f"{path}: {reason}"])
        return rules

    def _vetoed(self, rules: Rules) -> str | None:
        return next((reason for veto in self.vetoes if (reason := veto(rules))), None)

    def _check_needs(self, rules: Rules, source: str) -> None:
        if problems := self.needs(rules):
            raise RulesError([f"{source}: {key}: {problem}" for key, problem in problems])

    def reload_if_changed(self) -> bool:
        """True if new rules took effect."""
        # on the built-in default: a rules file written since (`ccswitch init`, then the user's
        # edit) is taken up as an edit would be, and watched from then on
        path = self.path or resolve_rules_path(None, Path.cwd(), Path.home())
        if path is None:
            return False
        content = _read(path)
        signature = _signature(content)
        if self._emptying is not None and self._emptying[0] != signature:
            self._emptying = None      # that edit is gone: one emptying a route again waits afresh
        if signature == self._signature:
            self._settling.forget()   # changed and changed back: nothing to apply
            return False
        if not self._settling.settled(signature):
            return False
        if signature == self._in_force and path == self.path:
            # back to the rules in force (an edit undone, a file put back): nothing to reload, and
            # nothing of the running rules goes (the `ccswitch.disable` switches among them)
            self._signature, self.not_applied, self._emptying = signature, None, None
            log.info("ccswitch: rules file %s holds the rules in force again", path)
            return False
        before, self._signature = self._signature, signature   # each outcome below is logged once per content
        if content is None:
            what = _why_unread(path)
            log.error("ccswitch: rules file %s %s; keeping the last good rules", path, what)
            return self._not_applied(f"the rules file {what}")
        if _is_empty(content):
            log.error("ccswitch: rules file %s is empty; keeping the last good rules", path)
            return self._not_applied("the rules file is empty")
        try:
            rules = _parse(content, path)
        except RulesError as exc:
            # an environment variable cannot be set for a process already running
            restart = ("\n(this ccswitch took its environment when it started: an unset variable needs a "
                       "restart with it set)") if any("is not set" in p for p in exc.problems) else ""
            log.error("ccswitch: invalid edit of the rules, keeping the last good ones:\n%s%s", exc, restart)
            count = len(exc.problems)
            return self._not_applied(f"the rules file's last edit is invalid ({count} problem{'s' * (count != 1)})")
        try:
            self._check_needs(rules, str(path))
        except RulesError as exc:
            log.error("ccswitch: rules edit not applied, keeping the last good ones: this machine lacks what it "
                      "needs (once that is mended, set ccswitch_rules to the file again, or edit it):\n%s", exc)
            return self._not_applied("the rules file's last edit needs what this machine lacks")
        if reason := self._vetoed(rules):
            log.error("ccswitch: rules edit refused, keeping the last good ones: %s", reason)
            return self._not_applied("the rules file's last edit was refused")
        emptied = _routes_emptied(self.rules, rules)
        if emptied and self.path is not None and not self._emptied_long_enough(signature, emptied):
            self._signature = before     # read again: applied once it has stayed so
            return False
        self._emptying = None
        self.rules, self.path, self._in_force, self.not_applied = rules, path, signature, None
        log.info("ccswitch: rules reloaded from %s", path)
        for route in emptied:
            # a file saved half-written, or a routes: block lost in an edit, would send them on quietly
            log.warning("ccswitch: the %s route lists no upstream since this edit: its requests now go to their "
                        "original destination untouched, with the client's own credentials", route)
        return True

    def _emptied_long_enough(self, signature: bytes | None, emptied: list[str]) -> bool:
        now = self._settling.clock()
        if self._emptying is None or self._emptying[0] != signature:
            self._emptying = (signature, now)
            log.info("ccswitch: the rules file's edit leaves the %s route%s with no upstream: applied if it "
                     "stays so for %g s (not a file still being written)", " and ".join(emptied),
                     "s" * (len(emptied) > 1), EMPTYING_SETTLE)
            return False
        return now - self._emptying[1] >= EMPTYING_SETTLE

    def _not_applied(self, why: str) -> bool:
        # since the file's content stopped being in force: another bad save keeps that moment
        self.not_applied = (why, self.not_applied[1] if self.not_applied is not None else time.time())
        return False

    def fingerprints(self) -> dict[str, tuple]:
        return {u.name: u.fingerprint() for u in self.rules.upstreams}


def _routes_emptied(before: Rules, after: Rules) -> list[str]:
    """The routes that had upstreams and have none now."""
    return [route for route in ROUTE_PROTOCOLS
            if before.routes.for_route(route) and not after.routes.for_route(route)]


def _read(path: Path) -> bytes | None:
    """The file's content, None when there is none to read now: a pipe (a `mkfifo` put in the
    file's place) is not read while running, since opening it would stop the proxy until
    something writes to it (one given at the start, `<(…)`, is read then, once)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        return path.read_bytes()
    except OSError:
        return None


def _why_unread(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError as exc:     # a link's loop or its missing target is said as `check` says it
        return unreadable(path, exc).removeprefix(f"{path}: ") if path.is_symlink() else "disappeared"
    if stat.S_ISDIR(mode):
        return "is a folder now"
    return "cannot be read" if stat.S_ISREG(mode) else "is no regular file now (a pipe?), not read while ccswitch runs"


def _signature(content: bytes | None) -> bytes | None:
    """A digest of the content: edits within one mtime tick are still seen."""
    return None if content is None else hashlib.blake2b(content, digest_size=16).digest()


def _is_empty(content: bytes) -> bool:
    """Nothing but blank lines and comments: a truncated file, not rules."""
    return blank(content.decode("utf-8", "replace"))


def _parse(content: bytes, path: Path) -> Rules:
    """The rules in `content` as read from `path` (what was checked is what is applied)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise RulesError([f"{path}: cannot read (not UTF-8)"]) from None
    return parse_rules(text, str(path), base_dir=path.absolute().parent, source_path=path)
