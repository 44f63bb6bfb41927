"""Credentials off every flow from its head on: mitmweb sends its browsers each flow after every
hook pass from `requestheaders` on (its view runs after the scripts), and `mitmdump -w` saves a
flow whose client left mid-body as it is.  A request's keys show `<redacted>` until the request
hook, where they are back for the addons that read them (the live page, the router, the
client-key gate), which leave none on the flow; the keys of a request passed on to its host
show again, as mitmproxy sends the flow's own headers (the router hides an API host's once
it is answered)."""

from __future__ import annotations

from mitmproxy import http

from ccswitch.mitm.flows import Hidden, redact_credentials, redact_proxy_login


class KeyShield:
    """First among ccswitch's addons: its request hook gives the keys back before the others'."""

    def __init__(self) -> None:
        self.hidden: dict[str, Hidden] = {}   # flow id -> its request's keys, from its head to its request hook

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._hide_logins(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self._hide_logins(flow):
            return
        hidden = Hidden(flow.request)
        if hidden.hid_anything:             # most flows of a reverse listener carry keys; others need no entry
            self.hidden[flow.id] = hidden

    def request(self, flow: http.HTTPFlow) -> None:
        hidden = self.hidden.pop(flow.id, None)
        if hidden is not None and not (flow.response or flow.error or not flow.live):
            hidden.restore(flow.request)

    def response(self, flow: http.HTTPFlow) -> None:
        self.hidden.pop(flow.id, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self.hidden.pop(flow.id, None)     # a client gone mid-body: its keys stay hidden

    @staticmethod
    def _hide_logins(flow: http.HTTPFlow) -> bool:
        """mitmproxy's `--proxyauth` keeps the login it took on the flow, and a refused one (its
        407) in the request's `Proxy-Authorization`: neither shows.  True when the flow is
        answered already (that 407): its credentials stay hidden for good."""
        redact_proxy_login(flow)
        if flow.response is None:
            return False
        redact_credentials(flow.request)
        return True
