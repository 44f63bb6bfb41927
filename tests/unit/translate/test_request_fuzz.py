"""Any JSON object a client may send: every request conversion either builds a body or raises
`RenderError` (the client's 400).  Any other exception left the router with a request it
could neither route nor refuse.

Rich, valid requests of each client API, with one value somewhere in them (or a known
parameter added at the top) replaced by a value of another JSON type; seeded, so a failure
names the case that reproduces it."""

from __future__ import annotations

import json
import random

import pytest

from ccswitch.config.models import Upstream
from ccswitch.translate import translation_for
from ccswitch.vocab import Protocol
from ccswitch.wire.exchange import ClientRequest, RenderError
from tests.support.json_places import places, replaced

CASES_PER_PAIR = 1500

ANTHROPIC = Upstream(name="anth", protocol=Protocol.ANTHROPIC, base_url="https://anthropic.example",
                     models={"gpt-4o": "claude-sonnet-4-5"})
OLD_ANTHROPIC = Upstream(name="old", protocol=Protocol.ANTHROPIC, base_url="https://anthropic.example",
                         models={"gpt-4o": "claude-3-5-sonnet-20241022"})
RESPONSES = Upstream(name="resp", protocol=Protocol.RESPONSES, base_url="https://api.openai.com/v1")
CODEX = Upstream(name="codex", protocol=Protocol.RESPONSES, base_url="https://chatgpt.com/backend-api/codex/")
CHAT = Upstream(name="chat", protocol=Protocol.CHAT, base_url="https://api.openai.com/v1")

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
PDF = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}
CHAT_REQUESTS = [
    {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}, "reasoning_effort": "high",
     "max_completion_tokens": 4000, "temperature": 0.2, "stop": ["END"], "user": "u1", "n": 1,
     "messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                  {"role": "user", "content": [{"type": "text", "text": "look"}, IMAGE, PDF]},
                  {"role": "assistant", "content": "calling", "tool_calls": [
                      {"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}],
                   "thinking_blocks": [{"type": "thinking", "thinking": "hm", "signature": "sig"}],
                   "reasoning_items": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "hm"}],
                                        "encrypted_content": "enc"}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
                  {"role": "assistant", "content": "Paris is "}],
     "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
     "parallel_tool_calls": False},
    {"model": "gpt-4o-thinking", "max_tokens": 300, "top_p": 0.9, "top_k": 5,
     "response_format": {"type": "json_schema",
                         "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}},
     "messages": [{"role": "developer", "content": "json only"}, {"role": "user", "content": "hi"}],
     "tools": [WEATHER], "tool_choice": "auto", "logprobs": True, "top_logprobs": 2,
     "modalities": ["text"], "metadata": {"a": "b"}, "safety_identifier": "s", "seed": 3,
     "prediction": {"type": "content", "content": "x"}, "audio": {"voice": "alloy", "format": "mp3"}},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER],
     "response_format": {"type": "json_object"}, "store": True, "parallel_tool_calls": False,
     "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [WEATHER]}}},
]
ANTHROPIC_REQUESTS = [
    {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True, "system": [{"type": "text", "text": "s"}],
     "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}],
     "tools": [{"name": "f", "input_schema": {"type": "object"}}], "thinking": {"type": "enabled", "budget_tokens": 2000},
     "metadata": {"user_id": "u"}},
]
RESPONSES_REQUESTS = [
    {"model": "gpt-5", "stream": True, "instructions": "be brief", "store": False, "parallel_tool_calls": True,
     "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
               {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
               {"type": "function_call_output", "call_id": "c1", "output": "ok"},
               {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "enc"}],
     "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}], "tool_choice": "auto",
     "reasoning": {"effort": "high", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
     "text": {"verbosity": "low"}, "prompt_cache_key": "k", "max_output_tokens": 100},
]
ODD_VALUES = [None, True, 0, -1, 7, 1.5, "", "x", "high", [], ["x"], [1], [None], [{}], {}, {"a": 1},
              {"type": "function"}, {"type": "text"}, [{"type": "text"}], "data:image/png;base64,!!",
              "c\ud83d", "\udc00 x"]   # JSON allows a lone surrogate escape; it has no UTF-8
CHAT_KEYS = ["messages", "model", "tools", "tool_choice", "response_format", "reasoning_effort", "max_tokens",
             "max_completion_tokens", "stop", "n", "user", "temperature", "top_p", "top_k", "stream_options",
             "modalities", "parallel_tool_calls", "logprobs", "top_logprobs", "metadata", "seed", "audio",
             "prediction", "web_search_options", "service_tier", "verbosity", "functions", "function_call",
             "logit_bias", "presence_penalty", "frequency_penalty", "store", "safety_identifier"]


def mutants(bases: list[dict], keys: list[str], seed: int):
    rng = random.Random(seed)
    for _ in range(CASES_PER_PAIR):
        base = rng.choice(bases)
        if rng.random() < 0.2:
            yield replaced(base, (rng.choice(keys),), rng.choice(ODD_VALUES))
            continue
        body = base
        for _ in range(rng.choice((1, 1, 2, 3))):
            body = replaced(body, rng.choice(list(places(body))), rng.choice(ODD_VALUES))
        yield body


def request(body: dict, client_protocol: str, route: str) -> ClientRequest:
    model = body.get("model")
    return ClientRequest(route=route, endpoint=route, method="POST", url="http://127.0.0.1/v1/x", headers=[],
                         body=json.dumps(body).encode(), json=body, model=model if isinstance(model, str) else "m",
                         stream=body.get("stream") is True, client_protocol=client_protocol)


@pytest.mark.parametrize("client_protocol,route,upstream,bases,keys,seed", [
    (Protocol.CHAT, "chat", ANTHROPIC, CHAT_REQUESTS, CHAT_KEYS, 1),
    (Protocol.CHAT, "chat", OLD_ANTHROPIC, CHAT_REQUESTS, CHAT_KEYS, 2),
    (Protocol.CHAT, "chat", RESPONSES, CHAT_REQUESTS, CHAT_KEYS, 3),
    (Protocol.CHAT, "chat", CODEX, CHAT_REQUESTS, CHAT_KEYS, 4),
    (Protocol.CHAT, "chat", CHAT, CHAT_REQUESTS, CHAT_KEYS, 5),
    (Protocol.ANTHROPIC, "claude", ANTHROPIC, ANTHROPIC_REQUESTS, ["system", "messages", "tools", "thinking"], 6),
    (Protocol.RESPONSES, "codex", CODEX, RESPONSES_REQUESTS, ["input", "tools", "reasoning", "include"], 7),
], ids=["chat-anthropic", "chat-old-anthropic", "chat-responses", "chat-codex", "chat-chat", "anthropic",
        "codex"])
def test_any_json_object_is_converted_or_refused_with_a_400(client_protocol, route, upstream, bases, keys, seed):
    translation = translation_for(client_protocol, upstream.protocol)
    for case, body in enumerate(mutants(bases, keys, seed)):
        try:
            converted = translation.request(request(body, client_protocol, route), upstream, None)
        except RenderError:
            continue
        except Exception as exc:
            raise AssertionError(f"case {case} (seed {seed}) raised {exc!r} for {json.dumps(body)[:2000]}") from exc
        if converted is not None:
            json.dumps(converted)   # what goes upstream must be JSON
