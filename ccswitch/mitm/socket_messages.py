"""A bridged Codex socket's messages on its flow: only the newest ones are kept, and none holds
an upstream's key.

mitmproxy keeps every message of a WebSocket on its flow for the socket's life, and a Codex socket
can live for hours, each turn sending its whole input and getting its whole output back: megabytes
a turn, never let go, under plain mitmdump too.  The flow keeps its newest messages, up to a size
(what mitmweb shows of the socket); each turn's usage and outcome are in the ledger.

A frame of Codex's that quotes an upstream's key (it read the rules file or an .env into its
prompt) is scrubbed here, before mitmproxy sends it on to the bridge: so it goes to no upstream,
into no later turn's input, and onto no saved flow as it is.
"""

from __future__ import annotations

from mitmproxy import http

from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.quoted import QuotedKeys
from ccswitch.vocab import Endpoint

KEPT_BYTES = 4 * 1024 * 1024
_TRIM_TO = KEPT_BYTES * 3 // 4      # past the limit, down to this: a trim every few messages, not each
_SIZE = "ccswitch_socket_bytes"     # flow.metadata: the size of the messages the flow holds


class SocketMessages:
    def __init__(self, gateway: Gateway) -> None:
        self.quoted = QuotedKeys(gateway, "Codex frame")

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None or (flow.metadata.get("ccswitch") or {}).get("endpoint") != Endpoint.WEBSOCKET:
            return
        messages = flow.websocket.messages
        if messages[-1].from_client and (scrubbed := self.quoted.without(messages[-1].content)) is not None:
            messages[-1].content = scrubbed
        held = flow.metadata.get(_SIZE, 0) + len(messages[-1].content)
        if held > KEPT_BYTES:
            gone = 0
            while held > _TRIM_TO and gone < len(messages) - 1:     # the newest always stays
                held -= len(messages[gone].content)
                gone += 1
            del messages[:gone]
        flow.metadata[_SIZE] = held
