"""The mitmproxy glue: the only package that imports mitmproxy.

`make_addons()` builds ccswitch's addons around one shared `Gateway` (the rules in force,
the health board, the ledger); `addon.py` at the top of the checkout and the packaged
entry hand that list to mitmproxy.
"""

from __future__ import annotations

from ccswitch.mitm.activator import Activator
from ccswitch.mitm.collector import CollectorTuning
from ccswitch.mitm.commands import Commands
from ccswitch.mitm.early import EarlyRefusal
from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.head_guard import guard_request_heads
from ccswitch.mitm.key_shield import KeyShield
from ccswitch.mitm.lifecycle import log_refusals_as_messages
from ccswitch.mitm.live_page import LivePage
from ccswitch.mitm.notifier import Notifications
from ccswitch.mitm.relay_link import link_relays_in_memory
from ccswitch.mitm.router import Router
from ccswitch.mitm.rules_watcher import RulesWatcher
from ccswitch.mitm.safety import ClientKeyGate, InterceptScope, ListenSafety
from ccswitch.mitm.send_first import send_answers_first
from ccswitch.mitm.shared_state import SharedStateSync
from ccswitch.mitm.socket_messages import SocketMessages
from ccswitch.mitm.unload_guard import UnloadGuard
from ccswitch.mitm.unreachable import UnreachableHost
from ccswitch.mitm.wrong_listener import WrongListener


def make_addons() -> list:
    log_refusals_as_messages()
    guard_request_heads()
    send_answers_first()
    link_relays_in_memory()
    gateway = Gateway()
    # the shield gives a request its keys back before the others' request hooks (the early
    # refusal reads them from it, at the head, and answers a few from there); the live page
    # answers its own paths before the router and the gate see them; the gate follows the
    # router: it sees only the flows the router let pass untouched
    shield = KeyShield()
    # the unload guard first: its `load` may refuse a reload before the others load, its `done` is sure to run
    return [UnloadGuard(), shield, EarlyRefusal(gateway, shield), RulesWatcher(gateway), ListenSafety(gateway),
            InterceptScope(gateway), LivePage(gateway), WrongListener(),
            Router(gateway), SharedStateSync(gateway), ClientKeyGate(gateway), Commands(gateway), Activator(gateway),
            Notifications(gateway), CollectorTuning(), SocketMessages(gateway), UnreachableHost(gateway)]
