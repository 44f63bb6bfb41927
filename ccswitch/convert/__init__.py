"""Conversions for the chat route: an OpenAI Chat Completions client served by an
Anthropic Messages or OpenAI Responses upstream (`translation(client, upstream)`)."""

from __future__ import annotations

from functools import cache

from ..protocols import ANTHROPIC, CHAT, RESPONSES


@cache
def translation(client_protocol: str, upstream_protocol: str):
    """The translation for a pair (stateless, so one each), or None when there is none."""
    if client_protocol != CHAT:
        return None
    if upstream_protocol == ANTHROPIC:
        from .anthropic import ChatToAnthropic
        return ChatToAnthropic()
    if upstream_protocol == RESPONSES:
        from .responses import ChatToResponses
        return ChatToResponses()
    return None
