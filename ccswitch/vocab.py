"""The words ccswitch's modules share: routes, endpoints, protocols and failover actions.

They are `StrEnum`s, so each compares equal to the plain string users write in rules.yaml
and that the ledger stores (`Route.CLAUDE == "claude"`).
"""

from __future__ import annotations

from enum import StrEnum


class Route(StrEnum):
    """Which client API a request speaks, decided by its path."""
    CLAUDE = "claude"
    CODEX = "codex"
    CHAT = "chat"


class Endpoint(StrEnum):
    MESSAGES = "messages"
    COUNT_TOKENS = "count_tokens"
    RESPONSES = "responses"
    CHAT = "chat"
    WEBSOCKET = "websocket"


class Protocol(StrEnum):
    """What an upstream (or a client) speaks."""
    ANTHROPIC = "anthropic"
    RESPONSES = "openai-responses"
    CHAT = "openai-chat"


class Strategy(StrEnum):
    """How a route orders its available upstreams."""
    PRIORITY = "priority"
    WEIGHTED = "weighted"
    QUOTA = "quota"


class Action(StrEnum):
    """What to do after an upstream status or network error."""
    SWITCH = "switch"
    RETRY = "retry"
    PASS = "pass"


#: the protocol a route's clients speak
CLIENT_PROTOCOL = {Route.CLAUDE: Protocol.ANTHROPIC, Route.CODEX: Protocol.RESPONSES, Route.CHAT: Protocol.CHAT}
