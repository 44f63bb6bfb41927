"""The rules file on disk: where it is, the last good snapshot, reload on change.

A reload builds a whole new validated `Rules` and swaps one reference; requests
in flight keep the snapshot they started with.  An invalid edit is logged and
the last good rules stay in force.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ccswitch.config.load import BUILT_IN, default_rules_text, find_rules, load_rules, parse_rules, resolve_rules_path
from ccswitch.config.models import Rules, RulesError

log = logging.getLogger("ccswitch.rules")


class RulesFile:
    def __init__(self) -> None:
        self.path: Path | None = None
        self.rules: Rules = parse_rules(default_rules_text(), BUILT_IN)
        self._signature: bytes | None = None

    def open(self, option_value: str | None) -> None:
        """Load at start-up or when the option changes; raises RulesError if invalid."""
        path = resolve_rules_path(option_value, Path.cwd(), Path.home())
        if path is None:
            self.path, self._signature = None, None
            self.rules = find_rules(None)[0]
            log.info("ccswitch: no rules.yaml found; using the built-in default "
                     "(official upstreams, the client's own credentials)")
            return
        signature = _signature(path)
        self.rules = load_rules(path)
        self.path, self._signature = path, signature
        log.info("ccswitch: rules loaded from %s (%d upstreams)", path, len(self.rules.upstreams))

    def reload_if_changed(self) -> bool:
        """True if new rules took effect."""
        if self.path is None:
            return False
        signature = _signature(self.path)
        if signature == self._signature:
            return False
        self._signature = signature
        if signature is None:
            log.error("ccswitch: rules file %s disappeared; keeping the last good rules", self.path)
            return False
        try:
            self.rules = load_rules(self.path)
        except RulesError as exc:
            log.error("ccswitch: invalid edit of the rules, keeping the last good ones:\n%s", exc)
            return False
        log.info("ccswitch: rules reloaded from %s", self.path)
        return True

    def fingerprints(self) -> dict[str, tuple]:
        return {u.name: u.fingerprint() for u in self.rules.upstreams}


def _signature(path: Path) -> bytes | None:
    """A digest of the content: edits within one mtime tick are still seen."""
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
    except OSError:
        return None
