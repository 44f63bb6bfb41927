"""A request ccswitch does not route: it goes on as it came, with a word for whoever looks.

Its flow's comment says why (no route takes its path, or the route lists no upstream), and a
path that a client's wrong base URL explains (`/v1/v1/messages`, `/chat/completions` without its
`/v1`) says what ccswitch routes instead, in the comment and, once per path, in the log. With
`ccswitch_offline`, one to an `intercept` host is answered at once instead of going nowhere.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, http

from ccswitch.config.models import ROUTE_PROTOCOLS
from ccswitch.mitm.flows import answer_error, comment_on, likely_protocol, without_placeholders
from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.held import HELD_COMMENT
from ccswitch.mitm.planner import NO_END_RETRY_AFTER
from ccswitch.mitm.scope import host_named, is_api_flow, route_of, why_unrouted
from ccswitch.report.terminal import printable
from ccswitch.routing.classify import base_url_hint
from ccswitch.wire.redact import target_without

log = logging.getLogger("ccswitch")

#: unrouted paths a base-URL hint is logged for, at most (a client can send any)
HINTED_PATHS = 64


class Unrouted:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.hinted: set[str] = set()    # the paths whose base-URL hint the log has had

    def passed_on(self, flow: http.HTTPFlow, replayed: bool = False) -> None:
        """`replayed`: a routed flow's replay, edited into a request no route takes: it goes where
        the flow points, without the credentials it shows as `<redacted>` (ccswitch keeps none)."""
        rules = self.gateway.rules
        if replayed:
            without_placeholders(flow.request)
        elif not is_api_flow(flow, rules):     # nor an `intercept` host: nothing offline answers
            return
        # its path as it may be shown: a client key in it (`/x;key=…`) is taken off by the gate
        # only after the router's hook
        shown = printable(target_without(flow.request.path, rules.secret_texts()))
        hint = base_url_hint(shown, [r for r in ROUTE_PROTOCOLS if rules.routes.for_route(r)])
        if replayed or not flow.comment or HELD_COMMENT in flow.comment:    # a replay's is the original's
            comment_on(flow, f"ccswitch: not routed ({why_unrouted(flow, shown)}{'; ' + hint if hint else ''}): "
                             "passed on as it came")
        if not self._offline(flow, hint) and hint and len(self.hinted) < HINTED_PATHS \
                and (path := shown.split("?", 1)[0]) not in self.hinted:
            self.hinted.add(path)    # once a path: a client sends it again and again
            log.warning("ccswitch: %s %s was not routed and went on to %s (%s)", flow.request.method,
                        path[:200], printable(flow.request.pretty_host), hint)

    def _offline(self, flow: http.HTTPFlow, hint: str | None) -> bool:
        """With `ccswitch_offline`, an unrouted request to an `intercept` host answered at once
        (True): a 400 for a base URL to mend, whose message Claude Code shows (it reads any 404
        as a model the account lacks); for a route that lists no upstream, a 503 it shows at once
        (`x-should-retry: false`) naming that route."""
        if not ctx.options.ccswitch_offline or host_named(flow.request.pretty_host) not in self.gateway.rules.intercept:
            return False
        said, protocol = "ccswitch is offline: this host is not reachable", likely_protocol(flow.request)
        if hint:
            answer_error(flow, protocol, 400, f"{said} ({hint})")
        elif (match := route_of(flow, self.gateway.rules)) is not None:
            answer_error(flow, protocol, 503, f"{said}, and the {match.route} route lists no upstream (see the rules file)",
                         {"x-should-retry": "false", "retry-after": str(NO_END_RETRY_AFTER)})
        else:
            answer_error(flow, protocol, 404, said)
        return True
