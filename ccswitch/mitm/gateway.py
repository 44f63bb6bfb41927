"""The state ccswitch's addons share: the rules in force, the health board, the ledger;
and the TLS settings of ccswitch's own upstream connections, taken from mitmproxy's options."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable

from mitmproxy import ctx, exceptions

from ccswitch.config.models import Rules
from ccswitch.config.watch import RulesFile
from ccswitch.dial.job import Job
from ccswitch.ledger.rows import attempt_rows, request_row
from ccswitch.ledger.writer import Ledger
from ccswitch.net import http1
from ccswitch.report.live import LiveBoard
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.events import Events
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.quota import QuotaBoard

log = logging.getLogger("ccswitch")

UPSTREAM_TLS_OPTIONS = {"ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}


def upstream_tls() -> ssl.SSLContext:
    """TLS for ccswitch's own upstream connections, from mitmproxy's upstream TLS options."""
    options = ctx.options
    try:
        return http1.ssl_context_for(insecure=options.ssl_insecure, ca_file=options.ssl_verify_upstream_trusted_ca,
                                     ca_dir=options.ssl_verify_upstream_trusted_confdir)
    except (OSError, ssl.SSLError) as exc:
        raise exceptions.OptionsError(f"ccswitch: cannot load the upstream CA: {exc}") from exc


class Gateway:
    """State shared by the addon classes: the rules in force, what is known of each upstream
    (health, rate-limit windows, the sessions bound to it), the ledger."""

    def __init__(self) -> None:
        self.rules_file = RulesFile()
        self.health = HealthBoard()
        self.quota = QuotaBoard()
        self.sessions = SessionBindings()
        self.events = Events()         # cooldowns, recoveries, full windows, budgets: for the notifier
        self.ledger: Ledger | None = None
        self.live = LiveBoard()   # counters and the last requests since start, for the live page
        # every upstream URL ccswitch itself dials is asked here first; tests install a
        # loopback-only guard (tests/support/loopback_guard.py), production allows all
        self.allow_url: Callable[[str], bool] = lambda url: True

    @property
    def rules(self) -> Rules:
        return self.rules_file.rules

    def sync_upstreams(self) -> None:
        """After the rules were (re)loaded: what is known of upstreams that keep their name stays."""
        self.health.sync(self.rules_file.fingerprints())
        names = [u.name for u in self.rules.upstreams]
        self.quota.sync(names)
        self.sessions.sync(names)

    def open_ledger(self, enabled: bool) -> None:
        """(Re)open the ledger at the rules' `usage_db`; a moved database gets a new writer."""
        path = self.rules.usage_db if enabled else None
        old = self.ledger
        if old is not None and old.path == path:
            return
        self.ledger = Ledger(path).start() if path is not None else None
        if old is not None:  # flush the old one without holding up the event loop
            threading.Thread(target=old.close, name="ccswitch-ledger-close", daemon=True).start()
        if path is not None:
            log.info("ccswitch: usage ledger at %s", path)

    def record_job(self, job: Job) -> None:
        """Every finished routed request passes here: into the ledger and the live counters."""
        row, attempts = request_row(job), attempt_rows(job)
        if self.ledger is not None:
            self.ledger.add("requests", row)
            for attempt in attempts:
                self.ledger.add("attempts", attempt)
        self._note_live(row, attempts, job.rules)

    def record_own_answer(self, row: dict) -> None:
        """A request ccswitch answered itself (`ledger.rows.own_answer_row`): ledger and live counters."""
        if self.ledger is not None:
            self.ledger.add("requests", row)
        self._note_live(row, [], self.rules)

    def _note_live(self, row: dict, attempts: list[dict], rules: Rules) -> None:
        try:
            self.live.note(row, attempts, rules)
        except Exception:   # the page's counters must never cost a request its record or answer
            log.exception("ccswitch: could not count a request for the live page")

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
