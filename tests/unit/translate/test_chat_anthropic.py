"""Chat Completions client <-> Anthropic Messages upstream (conversion spec §1, §3, §4.1, §5, §7).

Pure tests: no sockets.  Request goldens, response goldens, the §4.1 example stream,
and a recorded stream cut at every byte offset and at random multi-splits.
"""

from __future__ import annotations

import json
import logging
import random
import re

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from ccswitch.config.models import Rules, Upstream
from ccswitch.dial.render import render
from ccswitch.translate import translation_for
from ccswitch.translate.chat.anthropic import ChatToAnthropic
from ccswitch.translate.chat.anthropic_request import NOOP_TOOL, tool_id
from ccswitch.wire.exchange import ClientRequest, RenderError, Reply
from ccswitch.wire.sse import Event, SSEParser, format_event
from tests.support import FIXTURES
from tests.support.node_sdk import node_message

FIXTURE = FIXTURES / "anthropic" / "thinking_text_two_tools.sse"
UP = Upstream(name="anth", protocol="anthropic", base_url="https://anthropic.example",
              models={"gpt-4o": "claude-sonnet-4-5", "big": "claude-opus-4-7"})
T = ChatToAnthropic()


def make_req(body: dict) -> ClientRequest:
    return ClientRequest(route="chat", endpoint="chat", method="POST",
                         url="https://api.openai.com/v1/chat/completions", headers=[],
                         body=json.dumps(body).encode(), json=body, model=body.get("model"),
                         stream=bool(body.get("stream")), client_protocol="openai-chat")


def convert(body: dict, upstream: Upstream = UP, rules=None, **extra) -> dict:
    body = {"model": "claude-sonnet-4-5", **extra, **body}
    return T.request(make_req(body), upstream, rules)


def user(content="hi"):
    return {"role": "user", "content": content}


def chat(*messages, **extra) -> dict:
    return convert({"messages": list(messages), **extra})


def call(id_, name="get_weather", arguments='{"city":"Paris"}'):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}
TIME = {"type": "function", "function": {"name": "get_time"}}


def text(t, **kw):
    return {"type": "text", "text": t, **kw}


# ============================================================ §1.1 system / developer

def test_translation_registry_and_minimal_body():
    assert isinstance(translation_for("openai-chat", "anthropic"), ChatToAnthropic)
    out = chat(user(), max_tokens=100, stream=True, stream_options={"include_usage": True})
    assert out == {"model": "claude-sonnet-4-5", "max_tokens": 100,
                   "messages": [{"role": "user", "content": [text("hi")]}], "stream": True}


def test_system_and_developer_are_hoisted_in_order_as_blocks():
    out = chat({"role": "system", "content": "one", "name": "ignored"}, user("a"),
               {"role": "developer", "content": [text("two", cache_control={"type": "ephemeral"}), text(" ")]},
               {"role": "system", "content": "   "}, {"role": "assistant", "content": "ok"}, user("b"))
    assert out["system"] == [text("one"), text("two", cache_control={"type": "ephemeral"})]
    assert [t["role"] for t in out["messages"]] == ["user", "assistant", "user"]


def test_no_system_key_when_all_system_text_is_blank():
    assert "system" not in chat({"role": "system", "content": " \n"}, user())


# ============================================================ §1.2 content parts

def test_multipart_user_content():
    out = chat(user([
        text("look"), text(""), text("  "),
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "a.pdf"}},
        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
    ]))
    assert out["messages"][0]["content"] == [
        text("look"),
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
    ]


@pytest.mark.parametrize("url, message", [
    ("data:image/bmp;base64,Qk0=", "image media type 'image/bmp' is not supported"),
    ("data:image/svg+xml;base64,PHN2", "image/svg+xml"),
    ("data:image/png,rawbytes", "must be base64"),
    ("ftp://example.com/a.png", "http(s) URL or a base64 data URL"),
    ("", "image_url.url is required"),
])
def test_bad_images_are_rejected_before_the_upstream(url, message):
    with pytest.raises(RenderError, match=re.escape(message)):
        chat(user([{"type": "image_url", "image_url": {"url": url}}]))


@pytest.mark.parametrize("part", [
    {"type": "file", "file": {"file_id": "file-abc"}},
    {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk="}},
    {"type": "video_url", "video_url": {"url": "https://x"}},
])
def test_unsupported_parts_are_rejected(part):
    with pytest.raises(RenderError):
        chat(user([part]))


# ============================================================ §1.3 tools and tool_choice

def test_tools_are_flattened():
    out = chat(user(), tools=[WEATHER, TIME, {"type": "function", "function": {
        "name": "strict_one", "parameters": {"properties": {"a": {"type": "integer"}}}, "strict": True}}])
    assert out["tools"] == [
        {"name": "get_weather", "description": "Weather", "input_schema": WEATHER["function"]["parameters"]},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        {"name": "strict_one", "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}}}},
    ]
    assert "tool_choice" not in out


@pytest.mark.parametrize("tool", [{"type": "custom", "custom": {"name": "x"}}, {"type": "web_search"}, "x"])
def test_non_function_tools_are_rejected(tool):
    with pytest.raises(RenderError, match="only function tools"):
        chat(user(), tools=[tool])


NAMED = {"type": "function", "function": {"name": "get_time"}}


@pytest.mark.parametrize("choice, parallel, expected", [
    (None, None, None),
    (None, True, None),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("auto", None, {"type": "auto"}),
    ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", None, {"type": "any"}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ("none", None, {"type": "none"}),
    ("none", False, {"type": "none"}),
    (NAMED, None, {"type": "tool", "name": "get_time"}),
    (NAMED, False, {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True}),
])
def test_tool_choice_table(choice, parallel, expected):
    extra = {k: v for k, v in (("tool_choice", choice), ("parallel_tool_calls", parallel)) if v is not None}
    out = chat(user(), tools=[WEATHER, TIME], **extra)
    assert out.get("tool_choice") == expected
    assert [t["name"] for t in out["tools"]] == ["get_weather", "get_time"]  # kept even for "none"


def test_allowed_tools_filters_then_maps_mode():
    allowed = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [NAMED]}}
    out = chat(user(), tools=[WEATHER, TIME], tool_choice=allowed)
    assert [t["name"] for t in out["tools"]] == ["get_time"] and out["tool_choice"] == {"type": "any"}
    allowed["allowed_tools"]["mode"] = "auto"
    assert chat(user(), tools=[WEATHER, TIME], tool_choice=allowed)["tool_choice"] == {"type": "auto"}


def test_tool_choice_errors():
    with pytest.raises(RenderError, match="not in tools"):
        chat(user(), tools=[WEATHER], tool_choice=NAMED)
    with pytest.raises(RenderError, match="requires tools"):
        chat(user(), tool_choice="required")
    with pytest.raises(RenderError):
        chat(user(), tools=[WEATHER], tool_choice={"type": "custom", "custom": {"name": "x"}})
    assert "tool_choice" not in chat(user(), tool_choice="auto")  # nothing to choose from


# ============================================================ §1.4 turn building

def test_assistant_tool_calls_and_tool_messages_build_turns():
    out = chat(
        user("weather and time?"),
        {"role": "assistant", "content": "", "tool_calls": [call("call_1"), call("call_2", "get_time", "")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [text("12:00"), text("")]},
        user("thanks; and tomorrow?"),
        tools=[WEATHER, TIME])
    assert out["messages"] == [
        {"role": "user", "content": [text("weather and time?")]},
        {"role": "assistant", "content": [  # §7.5: no empty text block for content ""
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]},  # §7.4: "" -> {}
        {"role": "user", "content": [  # rules 2+3: one user turn, results first, then the user text
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [text("12:00")]},
            text("thanks; and tomorrow?")]},
    ]


def test_assistant_text_then_tool_use_and_empty_tool_result():
    out = chat(user(), {"role": "assistant", "content": [text("Checking.")], "tool_calls": [call("c1")]},
               {"role": "tool", "tool_call_id": "c1", "content": ""}, tools=[WEATHER])
    assert out["messages"][1]["content"][0] == text("Checking.")
    assert out["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "c1"}]  # no content key


def test_consecutive_same_role_turns_merge_without_joining_text():
    out = chat(user("a"), user("b"), {"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"},
               user("c"))
    assert out["messages"] == [{"role": "user", "content": [text("a"), text("b")]},
                               {"role": "assistant", "content": [text("x"), text("y")]},
                               {"role": "user", "content": [text("c")]}]


def test_tool_results_come_first_even_when_user_text_precedes_them():
    out = chat(user(), {"role": "assistant", "tool_calls": [call("c1")]}, user("note"),
               {"role": "tool", "tool_call_id": "c1", "content": "ok"}, tools=[WEATHER])
    assert [b["type"] for b in out["messages"][2]["content"]] == ["tool_result", "text"]


@pytest.mark.parametrize("arguments, expected", [
    ('{"city": "Paris"}', {"city": "Paris"}), ("", {}), ("  ", {}), (None, {}),
    ('{"city": "Pa', {"_raw": '{"city": "Pa'}), ("[1, 2]", {"_raw": "[1, 2]"}), ("42", {"_raw": "42"}),
])
def test_tool_arguments_policy(arguments, expected):
    out = chat(user(), {"role": "assistant", "tool_calls": [call("c1", arguments=arguments)]},
               {"role": "tool", "tool_call_id": "c1", "content": "r"}, tools=[WEATHER])
    assert out["messages"][1]["content"][0]["input"] == expected  # never skipped (§1.4 rule 1)


def test_foreign_tool_ids_are_sanitised_identically():
    foreign = "functions.Bash:0"
    out = chat(user(), {"role": "assistant", "tool_calls": [call(foreign), call("call_ok")]},
               {"role": "tool", "tool_call_id": foreign, "content": "r1"},
               {"role": "tool", "tool_call_id": "call_ok", "content": "r2"}, tools=[WEATHER])
    used = out["messages"][1]["content"][0]["id"]
    assert used == out["messages"][2]["content"][0]["tool_use_id"] == tool_id(foreign, "x")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", used) and used.startswith("functions_Bash_0_")
    assert tool_id("functions.Bash-0", "x") != used  # the digest keeps distinct ids distinct
    assert out["messages"][1]["content"][1]["id"] == "call_ok"  # valid ids are untouched


def test_orphaned_tool_calls_and_results_are_rejected():
    with pytest.raises(RenderError, match="missing: c2"):
        chat(user(), {"role": "assistant", "tool_calls": [call("c1"), call("c2")]},
             {"role": "tool", "tool_call_id": "c1", "content": "r"}, user("go on"), tools=[WEATHER])
    with pytest.raises(RenderError, match="missing: c1"):
        chat(user(), {"role": "assistant", "tool_calls": [call("c1")]}, tools=[WEATHER])
    with pytest.raises(RenderError, match="missing: c1"):
        chat(user(), {"role": "assistant", "tool_calls": [call("c1")]},
             {"role": "assistant", "content": "x"}, user(), tools=[WEATHER])
    with pytest.raises(RenderError, match="unknown tool_call_id: zz"):
        chat(user(), {"role": "tool", "tool_call_id": "zz", "content": "r"})
    with pytest.raises(RenderError, match="tool call id is required"):
        chat(user(), {"role": "tool", "content": "r"})
    # named as the client sent them (Kimi-style ids are rewritten for Anthropic): findable in its history
    with pytest.raises(RenderError, match=r"\(missing: functions\.get_time:1\)"):
        chat(user(), {"role": "assistant", "tool_calls": [call("functions.get_time:1")]}, user("go on"),
             tools=[WEATHER])
    with pytest.raises(RenderError, match=r"\(unknown tool_call_id: functions\.x:2\)"):
        chat(user(), {"role": "tool", "tool_call_id": "functions.x:2", "content": "r"})
    with pytest.raises(RenderError, match=r"\(missing: functions\.get_time:1\)"):     # the last message
        chat(user(), {"role": "assistant", "tool_calls": [call("functions.get_time:1")]}, tools=[WEATHER])
    # a stray `tool_calls` where no tool call goes is ignored, and the error about the ids is still said
    with pytest.raises(RenderError, match=r"\(unknown tool_call_id: zz\)"):
        chat({**user(), "tool_calls": 5}, {"role": "tool", "tool_call_id": "zz", "content": "r"})


def test_history_with_tools_but_no_tools_gets_a_noop_tool():
    out = chat(user(), {"role": "assistant", "tool_calls": [call("c1")]},
               {"role": "tool", "tool_call_id": "c1", "content": "r"})
    assert [t["name"] for t in out["tools"]] == [NOOP_TOOL] and out["tool_choice"] == {"type": "none"}


def test_non_function_tool_calls_and_unknown_roles_are_rejected():
    with pytest.raises(RenderError, match="only function tool calls"):
        chat(user(), {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]})
    with pytest.raises(RenderError, match="role 'function'"):
        chat(user(), {"role": "function", "name": "f", "content": "x"})


def test_empty_user_messages_are_dropped_and_empty_requests_rejected():
    out = chat(user(""), user([text(" ")]), {"role": "assistant", "content": "hey"}, user("hi"))
    assert [t["role"] for t in out["messages"]] == ["assistant", "user"]
    for messages in ([], [user("")], [{"role": "system", "content": "s"}]):
        with pytest.raises(RenderError, match="messages"):
            convert({"messages": messages})
    with pytest.raises(RenderError, match="messages must be a non-empty array"):
        convert({})



@pytest.mark.parametrize("last", [" ", [], [text("  ")],
                                  [{"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}]])
def test_a_last_user_message_left_empty_stays_a_user_turn_not_a_prefill(last):
    # dropped, it left the assistant's words last: Claude went on with them, and thinking was off
    out = chat(user(), {"role": "assistant", "content": "Hello! How can I help?"}, user(last), reasoning_effort="high")
    assert [t["role"] for t in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][-1] == {"role": "user", "content": [text("...")]}
    assert out["messages"][1]["content"] == [text("Hello! How can I help?")]
    assert "thinking" in out

def test_final_assistant_prefill_loses_trailing_whitespace():
    out = chat(user(), {"role": "assistant", "content": [text("The answer is "), text("   ")]})
    assert out["messages"][-1] == {"role": "assistant", "content": [text("The answer is")]}
    out = chat(user(), {"role": "assistant", "content": "  \n"})
    assert out["messages"] == [{"role": "user", "content": [text("hi")]}]
    out = chat(user(), {"role": "assistant", "content": "mid "}, user("x"))
    assert out["messages"][1]["content"] == [text("mid ")]  # only the final one is a prefill


# ============================================================ §1.5 limits and sampling

def test_sampling_and_dropped_parameters():
    out = chat(user(), max_completion_tokens=50, max_tokens=999, temperature=1.7, top_p=0.9, top_k=40,
               stop=["END", " ", "\n"], n=1, seed=1, logprobs=True, top_logprobs=2, logit_bias={"1": 2},
               presence_penalty=1, frequency_penalty=1, metadata={"a": "b"}, store=True, service_tier="auto",
               prediction={"type": "content", "content": "x"}, modalities=["text"], user="user-123",
               stream_options={"include_usage": True})
    assert out == {"model": "claude-sonnet-4-5", "max_tokens": 50,
                   "messages": [{"role": "user", "content": [text("hi")]}],
                   "temperature": 1, "top_k": 40, "stop_sequences": ["END"],
                   "metadata": {"user_id": "user-123"}, "stream": False}


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5-20251001",
                                   "claude-opus-4.7", "anthropic/claude-sonnet-4.5", "claude-mythos-preview",
                                   "claude-sonnet-latest", "claude-4.5-sonnet"])
def test_top_p_goes_alone_and_never_beside_a_temperature_on_models_that_refuse_both(model):
    """Opus 4.1, Claude 4.5 and later refuse the two together (400); OpenAI clients often send both."""
    assert convert({"model": model, "messages": [user()], "top_p": 0.9})["top_p"] == 0.9
    out = convert({"model": model, "messages": [user()], "temperature": 0.3, "top_p": 0.9})
    assert out["temperature"] == 0.3 and "top_p" not in out


@pytest.mark.parametrize("model", ["claude-sonnet-4-20250514", "claude-3-7-sonnet-20250219", "claude-3-5-haiku",
                                   "claude-2.1", "glm-4.6", "deepseek-chat"])
def test_other_models_take_both_temperature_and_top_p(model):
    out = convert({"model": model, "messages": [user()], "temperature": 0.3, "top_p": 0.9})
    assert (out["temperature"], out["top_p"]) == (0.3, 0.9)


def test_top_p_beside_a_temperature_is_judged_by_the_model_the_upstream_is_sent():
    """The client's gpt-4o goes to this upstream as claude-sonnet-4-5 (its `models:`), which refuses both."""
    out = convert({"model": "gpt-4o", "messages": [user()], "temperature": 0.3, "top_p": 0.9})
    assert out["temperature"] == 0.3 and "top_p" not in out


@pytest.mark.parametrize(("model", "effort", "expected"), [
    ("claude-opus-4-1-20250805", "max", 32000), ("claude-opus-4-20250514", "max", 32000),
    ("claude-opus-4@20250514", "max", 32000), ("claude-opus-4-1", "max", 32000),
    ("claude-opus-4-1", "xhigh", 16384 + 8192), ("claude-sonnet-4-20250514", "max", 16384 + 16384),
])
def test_a_thinking_budget_added_to_the_default_stays_within_the_model_s_output_cap(model, effort, expected):
    out = convert({"model": model, "messages": [user()], "reasoning_effort": effort})
    assert out["max_tokens"] == expected and out["thinking"]["budget_tokens"] < out["max_tokens"]
    assert out["thinking"]["budget_tokens"] == {"max": 16384, "xhigh": 8192}[effort]


@pytest.mark.parametrize(("model", "cap"), [
    ("claude-3-haiku-20240307", 4096), ("claude-3-opus-20240229", 4096), ("claude-3-5-haiku-latest", 8192),
    ("claude-3-5-sonnet-20241022", 8192), ("anthropic.claude-3-5-sonnet-20240620-v1:0", 8192), ("claude-2.1", 4096),
    ("anthropic/claude-3.5-sonnet", 8192), ("claude-3.5-haiku", 8192), ("claude-3-5-sonnet@20240620", 8192),
])
def test_reasoning_effort_leaves_a_claude_before_3_7_without_thinking_and_within_its_cap(model, cap):
    """OpenAI clients send reasoning_effort to any model: Claude 3 and 3.5 have no thinking (400)."""
    out = convert({"model": model, "messages": [user()], "reasoning_effort": "high"})
    assert "thinking" not in out and out["max_tokens"] == cap
    rules = Rules(max_tokens={"*": 20000})      # a default of the rules past the model's cap
    assert convert({"model": model, "messages": [user()]}, rules=rules)["max_tokens"] == cap


@pytest.mark.parametrize("model", ["claude-3-7-sonnet-20250219", "claude-sonnet-4-5", "glm-4.6", "claude-3.7-sonnet",
                                   "us.anthropic.claude-3-7-sonnet-20250219-v1:0"])
def test_reasoning_effort_still_thinks_on_claude_3_7_later_and_unknown_models(model):
    out = convert({"model": model, "messages": [user()], "reasoning_effort": "high"})
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert out["max_tokens"] > 4096


def test_a_default_of_the_rules_plus_a_thinking_budget_stays_within_the_cap_too():
    rules = Rules(max_tokens={"claude-opus-*": 32000})
    out = convert({"model": "claude-opus-4-1", "messages": [user()], "reasoning_effort": "high"}, rules=rules)
    assert out["max_tokens"] == 32000 and out["thinking"]["budget_tokens"] == 4096


def test_a_whole_answer_s_tool_arguments_keep_their_characters_and_an_empty_text_is_no_content():
    body = {"model": "gpt-4o", "messages": [user()]}
    reply = {"id": "msg_1", "type": "message", "model": "claude-x", "stop_reason": "tool_use",
             "content": [{"type": "text", "text": ""},
                         {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "München"}}],
             "usage": {"input_tokens": 5, "output_tokens": 2}}
    message = T.convert_response(json.dumps(reply).encode(), make_req(body), UP)["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"]["arguments"] == '{"city": "München"}'


@pytest.mark.parametrize("stop, expected", [("END", ["END"]), ("  ", None), ([], None), (["a", "b"], ["a", "b"])])
def test_stop_sequences(stop, expected):
    assert chat(user(), stop=stop).get("stop_sequences") == expected


@pytest.mark.parametrize("temperature, expected", [(0, 0), (0.7, 0.7), (1, 1), (2, 1)])
def test_temperature_is_clamped(temperature, expected):
    assert chat(user(), temperature=temperature)["temperature"] == expected


@pytest.mark.parametrize("who", ["someone@example.com", "+1 415 555 0100"])
def test_user_that_looks_like_pii_is_not_forwarded(who):
    assert "metadata" not in chat(user(), user=who)


def test_n_must_be_one():
    with pytest.raises(RenderError, match="n must be 1"):
        chat(user(), n=2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_bad_max_tokens(bad):
    with pytest.raises(RenderError, match="positive integer"):
        chat(user(), max_tokens=bad)


@pytest.mark.parametrize("model, expected", [
    ("claude-sonnet-4-5", 16384), ("gpt-4o", 16384), ("claude-3-5-haiku-20241022", 8192),
    ("claude-3-haiku-20240307", 4096), ("claude-3-7-sonnet-latest", 16384), ("glm-4.6", 8192),
])
def test_default_max_tokens_builtin(model, expected):
    assert convert({"model": model, "messages": [user()]})["max_tokens"] == expected


def test_default_max_tokens_from_rules_exact_beats_glob_star_last():
    rules = Rules(max_tokens={"*": 1000, "claude-opus-*": 2000, "claude-opus-4-7": 3000})
    assert convert({"model": "big", "messages": [user()]}, rules=rules)["max_tokens"] == 3000  # mapped name
    assert convert({"model": "claude-opus-4-1", "messages": [user()]}, rules=rules)["max_tokens"] == 2000
    assert convert({"model": "gpt-4o", "messages": [user()]}, rules=rules)["max_tokens"] == 1000
    rules = Rules(max_tokens={"claude-haiku-*": 500})
    assert convert({"model": "gpt-4o", "messages": [user()]}, rules=rules)["max_tokens"] == 16384


# ============================================================ §1.6 thinking

@pytest.mark.parametrize("effort, budget, adaptive", [
    ("minimal", 1024, "low"), ("low", 1024, "low"), ("medium", 2048, "medium"), ("high", 4096, "high"),
    ("xhigh", 8192, "xhigh"), ("max", 16384, "max"),
])
def test_reasoning_effort_table(effort, budget, adaptive):
    out = chat(user(), reasoning_effort=effort)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert out["max_tokens"] == 16384 + budget and "output_config" not in out
    out = convert({"model": "big", "messages": [user()], "reasoning_effort": effort})
    assert out["thinking"] == {"type": "adaptive"} and out["output_config"] == {"effort": adaptive}
    assert out["max_tokens"] == 16384 + budget


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-opus-4-7", "claude-opus-5", "claude-mythos-preview",
                                   "claude-sonnet-5-5", "claude-opus-4.7", "anthropic/claude-sonnet-4.6"])
def test_adaptive_models(model):
    assert convert({"model": model, "messages": [user()], "reasoning_effort": "low"})["thinking"]["type"] == "adaptive"


@pytest.mark.parametrize("model", ["claude-opus-4-5-20251101", "claude-sonnet-4-20250514", "claude-haiku-4-5",
                                   "claude-3-7-sonnet-20250219", "deepseek-chat", "claude-opus-4.5",
                                   "anthropic/claude-sonnet-4"])
def test_budget_models(model):
    assert convert({"model": model, "messages": [user()], "reasoning_effort": "low"})["thinking"]["type"] == "enabled"


@pytest.mark.parametrize("effort", [None, "none"])
def test_no_thinking_without_effort(effort):
    out = chat(user(), reasoning_effort=effort, temperature=0.3)
    assert "thinking" not in out and out["temperature"] == 0.3


def test_thinking_suffix_strips_the_model_and_means_high():
    out = convert({"model": "claude-sonnet-4-5-thinking", "messages": [user()]})
    assert out["model"] == "claude-sonnet-4-5" and out["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    out = convert({"model": "gpt-4o-thinking", "messages": [user()], "reasoning_effort": "low"})
    assert out["model"] == "gpt-4o" and out["thinking"]["budget_tokens"] == 1024  # request's effort wins
    out = convert({"model": "claude-sonnet-4-5-thinking", "messages": [user()], "reasoning_effort": "none"})
    assert "thinking" not in out
    assert convert({"model": "-thinking", "messages": [user()]})["model"] == "-thinking"


def test_render_maps_the_stripped_model():
    body = {"model": "big-thinking", "messages": [user()], "stream": True}
    req = make_req(body)
    outgoing = render(UP, req, T.request(req, UP, None))
    sent = json.loads(outgoing.body)
    assert outgoing.upstream_model == sent["model"] == "claude-opus-4-7"
    assert sent["thinking"] == {"type": "adaptive"} and "stream_options" not in sent


def test_invalid_reasoning_effort():
    with pytest.raises(RenderError, match="reasoning_effort"):
        chat(user(), reasoning_effort="extreme")


@pytest.mark.parametrize("limit, budget", [(100000, 4096), (3000, 2999), (1025, 1024), (1024, None), (500, None)])
def test_budget_is_capped_by_the_clients_limit(limit, budget):
    out = chat(user(), reasoning_effort="high", max_tokens=limit)
    assert out["max_tokens"] == limit
    assert out.get("thinking") == (None if budget is None else {"type": "enabled", "budget_tokens": budget})


def test_thinking_removes_incompatible_sampling():
    out = chat(user(), reasoning_effort="low", temperature=0.2, top_k=5, top_p=0.5)
    assert not {"temperature", "top_k", "top_p"} & out.keys()
    assert chat(user(), reasoning_effort="low", top_p=0.97)["top_p"] == 0.97
    off = chat(user(), reasoning_effort="low", tools=[WEATHER], tool_choice="required", temperature=0.2)
    assert "thinking" not in off and off["temperature"] == 0.2  # forced tool: thinking dropped instead


@pytest.mark.parametrize("choice", ["required", NAMED])
def test_forced_tool_choice_drops_thinking(choice):
    out = chat(user(), tools=[WEATHER, TIME], tool_choice=choice, reasoning_effort="high")
    assert "thinking" not in out and out["max_tokens"] == 16384


def test_the_log_says_which_forced_tool_left_thinking_off(caplog):
    with caplog.at_level(logging.INFO, logger="ccswitch"):
        convert({"model": "claude-sonnet-4-20250514", "messages": [user()], "response_format": JSON_FORMAT,
                 "reasoning_effort": "high"})
        chat(user(), tools=[WEATHER], tool_choice="required", reasoning_effort="high")
    assert [r.getMessage() for r in caplog.records if "thinking dropped" in r.getMessage()] == [
        "ccswitch: thinking dropped: response_format travels as a forced tool, which Claude cannot think before",
        "ccswitch: thinking dropped: tool_choice forces a tool"]


SIGNED = {"type": "thinking", "thinking": "Let me look.", "signature": "sig=="}


def test_thinking_blocks_are_replayed_before_text_and_tool_use():
    out = chat(user(), {"role": "assistant", "content": "Checking.", "tool_calls": [call("c1")],
                        "thinking_blocks": [{**SIGNED, "index": 0}, {"type": "redacted_thinking", "data": "xx"},
                                            {"type": "thinking", "thinking": "unsigned"}]},
               {"role": "tool", "tool_call_id": "c1", "content": "r"}, tools=[WEATHER], reasoning_effort="high")
    assert out["thinking"]["type"] == "enabled"
    assert out["messages"][1]["content"][:3] == [SIGNED, {"type": "redacted_thinking", "data": "xx"},
                                                 text("Checking.")]


def test_tool_history_without_thinking_blocks_disables_thinking():
    out = chat(user(), {"role": "assistant", "tool_calls": [call("c1")]},
               {"role": "tool", "tool_call_id": "c1", "content": "r"}, tools=[WEATHER], reasoning_effort="high")
    assert "thinking" not in out


def test_thinking_blocks_are_never_sent_with_thinking_off():
    out = chat(user(), {"role": "assistant", "content": "hi", "thinking_blocks": [SIGNED]},
               {"role": "assistant", "thinking_blocks": [SIGNED]}, user("more"))
    assert out["messages"][1] == {"role": "assistant", "content": [text("hi")]}
    assert len(out["messages"]) == 3


def test_prefill_disables_thinking():
    assert "thinking" not in chat(user(), {"role": "assistant", "content": "{"}, reasoning_effort="high")


# ============================================================ response_format

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}


def test_response_format_on_structured_output_models():
    out = chat(user(), response_format=JSON_FORMAT, reasoning_effort="low")
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert out["thinking"]["type"] == "enabled"
    dotted = convert({"model": "anthropic/claude-sonnet-4.5", "messages": [user()], "response_format": JSON_FORMAT})
    assert dotted["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}} and "tools" not in dotted


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-sonnet-4-20250514"])
def test_json_object_is_the_forced_json_tool_on_every_model(model):
    """Anthropic has no JSON mode: a forced tool whose input is any object gives the client JSON."""
    body = {"model": model, "messages": [user()], "response_format": {"type": "json_object"}}
    out = convert(body)
    assert "output_config" not in out
    assert out["tools"][-1]["name"] == "json_tool_call" and out["tools"][-1]["input_schema"] == {"type": "object"}
    assert out["tool_choice"] == {"type": "tool", "name": "json_tool_call", "disable_parallel_tool_use": True}
    reply = {"id": "msg_1", "type": "message", "model": model, "stop_reason": "tool_use",
             "content": [{"type": "tool_use", "id": "toolu_1", "name": "json_tool_call", "input": {"x": [1]}}],
             "usage": {"input_tokens": 5, "output_tokens": 2}}
    done = T.convert_response(json.dumps(reply).encode(), make_req(body), UP)
    assert json.loads(done["choices"][0]["message"]["content"]) == {"x": [1]}
    assert done["choices"][0]["finish_reason"] == "stop"
    twice = {**reply, "content": [*reply["content"], {**reply["content"][0], "id": "toolu_2", "input": {"y": 2}}]}
    done = T.convert_response(json.dumps(twice).encode(), make_req(body), UP)
    assert json.loads(done["choices"][0]["message"]["content"]) == {"x": [1]}    # the first, as JSON
    accented = {**reply, "content": [{**reply["content"][0], "input": {"city": "München"}}]}
    done = T.convert_response(json.dumps(accented).encode(), make_req(body), UP)
    assert done["choices"][0]["message"]["content"] == '{"city": "München"}'      # its characters, as written


NOW_TOOL = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("tool_choice, sent, json_tool", [
    # a call of theirs, or the answer through the JSON tool: one, not an answer beside calls
    (None, {"type": "any", "disable_parallel_tool_use": True}, True),
    ("auto", {"type": "any", "disable_parallel_tool_use": True}, True),
    ("required", {"type": "any"}, False),          # one of theirs must be called: no JSON tool to escape to
    ({"type": "function", "function": {"name": "now"}}, {"type": "tool", "name": "now"}, False),
    ("none", {"type": "tool", "name": "json_tool_call", "disable_parallel_tool_use": True}, True),
])
def test_json_mode_leaves_the_clients_tools_callable_as_its_tool_choice_says(tool_choice, sent, json_tool):
    # the forced JSON tool overrode any tool_choice: a client forcing its function got JSON text back
    body = {"model": "claude-sonnet-4-5", "messages": [user()], "response_format": {"type": "json_object"},
            "tools": [NOW_TOOL], **({"tool_choice": tool_choice} if tool_choice is not None else {})}
    out = convert(body)
    assert out["tool_choice"] == sent
    assert [t["name"] for t in out["tools"]] == ["now", *(["json_tool_call"] if json_tool else [])]
    called = {"id": "msg_1", "type": "message", "model": "m", "stop_reason": "tool_use",
              "content": [{"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}],
              "usage": {"input_tokens": 5, "output_tokens": 2}}
    done = T.convert_response(json.dumps(called).encode(), make_req(body), UP)["choices"][0]
    assert done["finish_reason"] == "tool_calls" and done["message"]["tool_calls"][0]["function"]["name"] == "now"
    assert convert({**body, "parallel_tool_calls": False})["tool_choice"]["disable_parallel_tool_use"] is True


def test_response_format_as_forced_tool_on_older_models():
    body = {"model": "claude-sonnet-4-20250514", "messages": [user()], "response_format": JSON_FORMAT,
            "reasoning_effort": "high"}
    out = convert(body)
    assert out["tools"][-1]["name"] == "json_tool_call" and out["tools"][-1]["input_schema"] == SCHEMA
    assert out["tool_choice"] == {"type": "tool", "name": "json_tool_call", "disable_parallel_tool_use": True}
    assert "thinking" not in out
    reply = {"id": "msg_1", "type": "message", "model": "claude-sonnet-4-20250514", "stop_reason": "tool_use",
             "content": [{"type": "tool_use", "id": "toolu_1", "name": "json_tool_call", "input": {"a": 1}}],
             "usage": {"input_tokens": 5, "output_tokens": 2}}
    done = T.convert_response(json.dumps(reply).encode(), make_req(body), UP)
    assert done["choices"][0]["message"]["content"] == '{"a": 1}'
    assert done["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in done["choices"][0]["message"]
    conv = T.stream(make_req({**body, "stream": True}), UP)
    events = [sse("message_start", {"message": {"id": "m", "model": "x", "usage": {"input_tokens": 1}}}),
              sse("content_block_start", {"index": 0, "content_block": {"type": "tool_use", "id": "t",
                                                                        "name": "json_tool_call", "input": {}}}),
              sse("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}}),
              sse("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}}),
              sse("content_block_stop", {"index": 0}),
              sse("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
              sse("message_stop", {})]
    chunks = [c for e in events for c in parse_chunks(conv.feed(e))]
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": ""}, {"content": '{"a"'}, {"content": ": 1}"}, {}]
    assert chunks[-1] == "[DONE]" and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # an upstream that called it twice all the same: the first is the answer; one sent whole keeps its characters
    conv = T.stream(make_req({**body, "stream": True}), UP)
    again = [sse("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "t2",
                                                                       "name": "json_tool_call", "input": {}}}),
             sse("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"b": 2}'}}),
             sse("content_block_stop", {"index": 1})]
    events = [events[0], sse("content_block_start", {"index": 0, "content_block": {
        "type": "tool_use", "id": "t", "name": "json_tool_call", "input": {"a": "é"}}}), events[4], *again, *events[5:]]
    chunks = [c for e in events for c in parse_chunks(conv.feed(e))]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == '{"a": "é"}'


# ============================================================ §3 non-stream responses

MESSAGE = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "Think.", "signature": "sig1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Checking "},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "text", "text": "both."},
        {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_B", "name": "get_time", "input": {}},
    ],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 20, "cache_read_input_tokens": 400, "cache_creation_input_tokens": 30,
              "output_tokens": 31, "output_tokens_details": {"thinking_tokens": 12}},
}


def reply_of(message: dict, body: dict | None = None) -> dict:
    req = make_req(body or {"model": "gpt-4o", "messages": [user()]})
    reply = T.reply(req, UP, 200, [("request-id", "req_1"), ("x-other", "y")], json.dumps(message).encode())
    assert reply.translated and dict(reply.headers)["content-type"] == "application/json"
    assert "x-other" not in dict(reply.headers) and dict(reply.headers)["request-id"] == "req_1"
    return json.loads(reply.body)


def test_a_lone_surrogate_crosses_both_ways_escaped_as_it_came():
    # JSON allows "\ud83d" alone (a client or a model that cut an emoji in two); it has no UTF-8
    body = convert({"messages": [user("a\ud83db")]})
    assert body["messages"][0]["content"][0]["text"] == "a\ud83db"
    out = reply_of({**MESSAGE, "content": [{"type": "text", "text": "x\udc00y"}], "stop_reason": "end_turn"})
    assert out["choices"][0]["message"]["content"] == "x\udc00y"


def test_non_stream_message_to_chat_completion():
    out = reply_of(MESSAGE)
    ChatCompletion.model_validate(out)
    assert out["id"] == "chatcmpl-msg_01" and out["object"] == "chat.completion"
    assert out["model"] == "claude-sonnet-4-5-20250929"
    assert out["choices"] == [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
        "role": "assistant", "content": "Checking both.", "refusal": None,
        "tool_calls": [
            {"id": "toolu_A", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "toolu_B", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}],
        "reasoning_content": "Think.",
        "thinking_blocks": [{"type": "thinking", "thinking": "Think.", "signature": "sig1"},
                            {"type": "redacted_thinking", "data": "opaque"}]}}]
    assert out["usage"] == {"prompt_tokens": 450, "completion_tokens": 31, "total_tokens": 481,
                            "prompt_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 30},
                            "completion_tokens_details": {"reasoning_tokens": 12}}


def test_non_stream_content_null_only_with_tool_calls():
    only_tool = {**MESSAGE, "content": [MESSAGE["content"][-1]]}
    assert reply_of(only_tool)["choices"][0]["message"]["content"] is None
    empty = {**MESSAGE, "content": [], "stop_reason": "end_turn"}
    msg = reply_of(empty)["choices"][0]["message"]
    assert msg == {"role": "assistant", "content": "", "refusal": None}


def test_a_whole_answer_s_thinking_of_another_type_goes_back_as_empty_text():
    odd = {**MESSAGE, "stop_reason": "end_turn", "content": [
        {"type": "thinking", "thinking": 7, "signature": ["sig"]}, {"type": "redacted_thinking", "data": {"x": 1}},
        text("Hi")]}
    msg = reply_of(odd)["choices"][0]["message"]
    assert msg["content"] == "Hi" and msg["thinking_blocks"] == [
        {"type": "thinking", "thinking": "", "signature": ""}, {"type": "redacted_thinking", "data": ""}]


@pytest.mark.parametrize("stop_reason, tools, expected", [
    ("end_turn", False, "stop"), ("stop_sequence", False, "stop"), ("max_tokens", False, "length"),
    ("max_tokens", True, "length"),  # length wins: a cut tool call must not look executable
    ("model_context_window_exceeded", False, "length"), ("tool_use", True, "tool_calls"),
    ("refusal", False, "content_filter"), ("pause_turn", False, "stop"), ("brand_new", False, "stop"),
    ("brand_new", True, "tool_calls"), (None, False, "stop"),
])
def test_finish_reason_mapping(stop_reason, tools, expected):
    content = [MESSAGE["content"][-1]] if tools else [{"type": "text", "text": "x"}]
    out = reply_of({**MESSAGE, "content": content, "stop_reason": stop_reason})
    assert out["choices"][0]["finish_reason"] == expected


def test_usage_without_cache_fields():
    out = reply_of({**MESSAGE, "usage": {"input_tokens": 7, "output_tokens": 3}})
    assert out["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                            "prompt_tokens_details": {"cached_tokens": 0}}


# ============================================================ §5 errors

@pytest.mark.parametrize("status, client_status, kind", [
    (400, 400, "invalid_request_error"), (402, 402, "billing_error"), (429, 429, "rate_limit_error"),
    (529, 503, "overloaded_error")])
def test_error_reply_keeps_status_and_maps_shape(status, client_status, kind):
    body = json.dumps({"type": "error", "error": {"type": kind, "message": "nope"}, "request_id": "r"}).encode()
    out = T.error_reply(make_req({"messages": []}), Reply("anth", status, [("retry-after", "3")], body))
    assert out.status == client_status and ("retry-after", "3") in out.headers
    assert json.loads(out.body) == {"error": {"message": "nope", "type": kind, "param": None, "code": kind}}


# ============================================================ §4.1 streaming

def sse(name: str, data: dict) -> Event:
    data = {"type": name, **data}
    (event,) = SSEParser().feed(format_event(data, name))
    return event


def parse_chunks(out: bytes) -> list:
    """Client bytes -> list of JSON chunks (and "[DONE]")."""
    assert out == b"" or out.endswith(b"\n\n")
    events = SSEParser().feed(out)
    assert all(e.event == "message" for e in events)
    return [e.json() if e.data != "[DONE]" else "[DONE]" for e in events]


def strip_ids(chunks: list) -> list:
    return [{k: v for k, v in c.items() if k not in ("id", "created", "model", "object")}
            if isinstance(c, dict) else c for c in chunks]


SPEC_EXAMPLE = [
    ("message_start", {"message": {"id": "msg_1", "model": "claude-x", "usage": {
        "input_tokens": 20, "cache_read_input_tokens": 400, "cache_creation_input_tokens": 0, "output_tokens": 1}}}),
    ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Checking."}}),
    ("content_block_stop", {"index": 0}),
    ("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "toolu_A",
                                                           "name": "get_weather", "input": {}}}),
    ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":\"Pa"}}),
    ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
    ("content_block_stop", {"index": 1}),
    ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 31}}),
    ("message_stop", {}),
]
SPEC_EXPECTED = """
data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}
data: {"choices":[{"index":0,"delta":{"content":"Checking."},"finish_reason":null}],"usage":null}
data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"toolu_A","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}],"usage":null}
data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":\\"Pa"}}]},"finish_reason":null}],"usage":null}
data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ris\\"}"}}]},"finish_reason":null}],"usage":null}
data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}
data: {"choices":[],"usage":{"prompt_tokens":420,"completion_tokens":31,"total_tokens":451,"prompt_tokens_details":{"cached_tokens":400}}}
data: [DONE]
"""


def run_stream(events, body_extra=None, include_usage=True):
    body = {"model": "gpt-4o", "messages": [user()], "stream": True, **(body_extra or {})}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    conv = T.stream(make_req(body), UP)
    outs = [conv.feed(e if isinstance(e, Event) else sse(*e)) for e in events]
    return conv, outs


def test_spec_example_stream_exact_chunks():
    conv, outs = run_stream(SPEC_EXAMPLE)
    chunks = [c for out in outs for c in parse_chunks(out)]
    expected = [line[6:] for line in SPEC_EXPECTED.strip().splitlines()]
    assert strip_ids(chunks) == [json.loads(x) if x != "[DONE]" else x for x in expected]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks if isinstance(c, dict)} == {
        (chunks[0]["id"], chunks[0]["created"], "claude-x", "chat.completion.chunk")}
    assert chunks[0]["id"] == "chatcmpl-msg_1"
    assert outs[3] == b"" and outs[8] == b""  # a text block stop and message_delta emit nothing
    assert conv.finish() == b""  # message_stop already closed the stream


def test_stream_without_include_usage_has_no_usage_anywhere():
    _conv, outs = run_stream(SPEC_EXAMPLE, include_usage=False)
    chunks = [c for out in outs for c in parse_chunks(out)]
    assert chunks[-1] == "[DONE]" and all("usage" not in c for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_dense_tool_indices_noarg_tools_and_ignored_events():
    events = [
        ("message_start", {"message": {"id": "m", "model": "x", "usage": {"input_tokens": 3}}}),
        Event(event="", raw=b": keepalive\n\n"), ("ping", {}),
        ("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "s1"}}),
        ("content_block_stop", {"index": 0}),
        ("content_block_start", {"index": 1, "content_block": {"type": "text", "text": "Hi"}}),
        ("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": ""}}),
        ("content_block_stop", {"index": 1}),
        ("content_block_start", {"index": 2, "content_block": {"type": "redacted_thinking", "data": "R"}}),
        ("content_block_stop", {"index": 2}),
        ("content_block_start", {"index": 3, "content_block": {"type": "server_tool_use", "id": "srv",
                                                               "name": "web_search", "input": {}}}),
        ("content_block_delta", {"index": 3, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        ("content_block_stop", {"index": 3}),
        ("content_block_start", {"index": 4, "content_block": {"type": "text", "text": ""}}),
        ("content_block_stop", {"index": 4}),
        ("content_block_start", {"index": 5, "content_block": {"type": "tool_use", "id": "t1", "name": "a",
                                                               "input": {}}}),
        ("content_block_delta", {"index": 5, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ("content_block_stop", {"index": 5}),
        ("content_block_start", {"index": 6, "content_block": {"type": "tool_use", "id": "t2", "name": "b",
                                                               "input": {}}}),
        ("content_block_delta", {"index": 6, "delta": {"type": "input_json_delta", "partial_json": "{\"x\":1}"}}),
        ("content_block_stop", {"index": 6}),
        ("brand_new_event", {"foo": 1}),
        ("message_delta", {"delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 9}}),
        ("message_delta", {"delta": {}, "usage": {"output_tokens": 10, "input_tokens": None}}),
        ("message_stop", {}),
    ]
    _conv, outs = run_stream(events)
    empty = [i for i, out in enumerate(outs) if out == b""]
    # the signed blocks wait for the end: sent in pieces, openai-node's message kept only the last
    assert empty == [1, 2, 3, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 22, 23, 24, 25]
    deltas = [c["choices"][0]["delta"] for out in outs for c in parse_chunks(out)
              if isinstance(c, dict) and c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "hm"},
        {"content": "Hi"},
        {"tool_calls": [{"index": 0, "id": "t1", "type": "function", "function": {"name": "a", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
        {"tool_calls": [{"index": 1, "id": "t2", "type": "function", "function": {"name": "b", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "{\"x\":1}"}}]},
        {"thinking_blocks": [{"index": 0, "type": "thinking", "thinking": "hm", "signature": "s1"},
                             {"index": 1, "type": "redacted_thinking", "data": "R"}]},
        {},
    ]
    final = parse_chunks(outs[-1])
    assert final[1]["choices"][0]["finish_reason"] == "length"  # length wins over tool calls
    assert final[2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 10, "total_tokens": 13,
                                 "prompt_tokens_details": {"cached_tokens": 0}}


def test_stream_error_event_ends_without_finish_or_done():
    conv, outs = run_stream(SPEC_EXAMPLE[:3] + [
        ("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})] + SPEC_EXAMPLE[3:])
    assert parse_chunks(outs[3]) == [{"error": {"message": "Overloaded", "type": "overloaded_error",
                                                "param": None, "code": "overloaded_error"}}]
    assert all(out == b"" for out in outs[4:]) and conv.finish() == b""
    assert b"[DONE]" not in b"".join(outs) and b'"finish_reason":"' not in b"".join(outs)


def test_a_streamed_context_overflow_carries_openais_code_as_a_whole_one_does():
    too_long = {"type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000 maximum"}
    _, outs = run_stream(SPEC_EXAMPLE[:1] + [("error", {"type": "error", "error": too_long})])
    [chunk] = parse_chunks(outs[1])
    assert chunk["error"] == {"message": too_long["message"], "type": "invalid_request_error", "param": None,
                              "code": "context_length_exceeded"}


def test_a_relay_s_bare_error_line_ends_the_stream_with_its_own_words():
    (bare,) = SSEParser().feed(b'data: {"error":{"type":"overloaded_error","message":"Overloaded right now"}}\n\n')
    conv, outs = run_stream(SPEC_EXAMPLE[:3] + [bare] + SPEC_EXAMPLE[3:])
    assert parse_chunks(outs[3]) == [{"error": {"message": "Overloaded right now", "type": "overloaded_error",
                                                "param": None, "code": "overloaded_error"}}]
    assert all(out == b"" for out in outs[4:]) and conv.finish() == b""


def test_a_message_id_that_is_no_text_or_number_leaves_the_chat_id_as_made():
    start = ("message_start", {"message": {"id": {"id": "msg_1"}, "model": "claude-x", "usage": {"input_tokens": 1}}})
    conv, outs = run_stream([start, *SPEC_EXAMPLE[1:]])
    ids = {c["id"] for out in outs for c in parse_chunks(out) if isinstance(c, dict)}
    assert len(ids) == 1 and re.fullmatch(r"chatcmpl-[0-9a-f]{24}", ids.pop())


def test_stream_error_event_with_non_json_data():
    conv = T.stream(make_req({"model": "gpt-4o", "messages": [user()], "stream": True}), UP)
    (event,) = SSEParser().feed(b"event: error\ndata: upstream exploded\n\n")
    assert parse_chunks(conv.feed(event))[0]["error"]["message"] == "upstream exploded"


def test_stream_eof_without_message_stop_is_an_error():
    conv, outs = run_stream(SPEC_EXAMPLE[:-1])
    tail = conv.finish()
    assert parse_chunks(tail) == [{"error": {"message": "upstream stream ended before message_stop",
                                             "type": "api_error", "param": None, "code": "api_error"}}]
    assert b"[DONE]" not in b"".join(outs) + tail and conv.finish() == b""


def test_stream_without_message_start_still_opens_with_the_role():
    _conv, outs = run_stream(SPEC_EXAMPLE[1:3] + SPEC_EXAMPLE[-1:], include_usage=False)
    chunks = [c for out in outs for c in parse_chunks(out)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["model"] == "claude-sonnet-4-5"  # the mapped model until the upstream names one
    assert chunks[1]["choices"][0]["delta"] == {"content": "Checking."} and chunks[-1] == "[DONE]"


def test_a_signature_split_over_two_deltas_comes_back_whole():
    _conv, outs = run_stream([
        SPEC_EXAMPLE[0],
        ("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "Ck0Y=="}}),
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}),
        ("message_stop", {})])
    blocks = [d["thinking_blocks"] for out in outs for c in parse_chunks(out) if isinstance(c, dict) and c["choices"]
              for d in [c["choices"][0]["delta"]] if "thinking_blocks" in d]
    assert blocks == [[{"index": 0, "type": "thinking", "thinking": "hm", "signature": "EqQBCk0Y=="}]]
    assert outs[3] == outs[4] == b""        # a piece of a signature is nothing to send yet


def test_every_signed_block_reaches_a_node_client_s_message():
    """openai-node sets a delta's unknown field on its message: blocks sent one a delta left it
    only the last, and the next turn went upstream without the redacted one."""
    _conv, outs = run_stream([
        SPEC_EXAMPLE[0],
        ("content_block_start", {"index": 0, "content_block": {"type": "redacted_thinking", "data": "R"}}),
        ("content_block_stop", {"index": 0}),
        ("content_block_start", {"index": 1, "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"index": 1, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
        ("content_block_delta", {"index": 1, "delta": {"type": "signature_delta", "signature": "sig"}}),
        ("content_block_stop", {"index": 1}),
        *SPEC_EXAMPLE[4:]])
    chunks = [c for out in outs for c in parse_chunks(out) if isinstance(c, dict)]
    blocks = [{"index": 0, "type": "redacted_thinking", "data": "R"},
              {"index": 1, "type": "thinking", "thinking": "hm", "signature": "sig"}]
    assert node_message(chunks)["thinking_blocks"] == blocks
    state = ChatCompletionStreamState()          # and the Python SDK's, as before
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    assert state.get_final_completion().choices[0].message.model_dump()["thinking_blocks"] == blocks


def test_a_second_message_start_opens_nothing_again_and_keeps_the_first_id_and_model():
    again = ("message_start", {"message": {"id": "msg_2", "model": "claude-other", "usage": {
        "input_tokens": 20, "cache_read_input_tokens": 400, "cache_creation_input_tokens": 0, "output_tokens": 1}}})
    _conv, outs = run_stream(SPEC_EXAMPLE[:3] + [again] + SPEC_EXAMPLE[3:])
    chunks = [c for out in outs for c in parse_chunks(out)]
    assert outs[3] == b""
    assert strip_ids(chunks) == [json.loads(line[6:]) if line[6:] != "[DONE]" else "[DONE]"
                                 for line in SPEC_EXPECTED.strip().splitlines()]     # as if it never came
    assert {(c["id"], c["model"]) for c in chunks if isinstance(c, dict)} == {("chatcmpl-msg_1", "claude-x")}


# ============================================================ the recorded stream, cut everywhere

RECORDED = FIXTURE.read_bytes()
STREAM_BODY = {"model": "gpt-4o", "messages": [user("weather and time in Paris?")], "stream": True,
               "stream_options": {"include_usage": True}, "tools": [WEATHER, TIME]}
_ID = re.compile(rb'"id":"chatcmpl-[^"]*","object":"chat\.completion\.chunk","created":\d+')


def convert_pieces(pieces: list[bytes]) -> bytes:
    conv = T.stream(make_req(STREAM_BODY), UP)
    parser = SSEParser()
    out = b""
    for piece in pieces:
        for event in parser.feed(piece):
            produced = conv.feed(event)
            assert produced == b"" or produced.endswith(b"\n\n")
            out += produced
    for event in parser.flush():
        out += conv.feed(event)
    return out + conv.finish()


def normalize(out: bytes) -> bytes:
    return _ID.sub(b'"id":"X","object":"chat.completion.chunk","created":0', out)


WHOLE = convert_pieces([RECORDED])


def test_recorded_fixture_is_a_valid_anthropic_stream():
    from anthropic.types import RawMessageStreamEvent
    adapter = TypeAdapter(RawMessageStreamEvent)
    events = SSEParser().feed(RECORDED)
    for event in events:
        if event.type != "ping":
            assert adapter.validate_python(event.json()).type == event.event
    assert events[-1].type == "message_stop"


def test_recorded_stream_converts_to_valid_chunks_that_accumulate():
    chunks = parse_chunks(WHOLE)
    assert chunks[-1] == "[DONE]"
    state = ChatCompletionStreamState()
    for chunk in chunks[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.get_final_completion()
    choice = final.choices[0]
    assert final.id == "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL" and final.model == "claude-sonnet-4-5-20250929"
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check the weather in Paris and the time for you — 🌤️ un instant."
    calls = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
    assert calls == [("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather",
                      {"location": "Paris, France", "unit": "celsius"}),
                     ("toolu_01BDWBNiMRUnMZQVGmHVAN2y", "get_time", {})]
    extra = choice.message.model_extra or {}
    assert extra["reasoning_content"].startswith("The user wants the weather in Paris and the current time.")
    assert extra["thinking_blocks"][0]["signature"].startswith("EqQBCgIYAhIM")
    assert final.usage.prompt_tokens == 2008 and final.usage.completion_tokens == 187
    assert final.usage.prompt_tokens_details.cached_tokens == 1536


def test_line_separators_in_the_models_text_reach_the_client_intact():
    # JSON carries U+2028, U+2029 and U+0085 unescaped; to SSE they are text, not line ends
    odd = "un\u2028ins\u2029tant\x85."
    stream = RECORDED.replace(b'"text":"un instant."', f'"text":"{odd}"'.encode())
    assert stream != RECORDED
    state = ChatCompletionStreamState()
    for chunk in parse_chunks(convert_pieces([stream]))[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    assert state.get_final_completion().choices[0].message.content.endswith("🌤️ " + odd)


def test_recorded_stream_split_at_every_byte():
    expected = normalize(WHOLE)
    bad = [cut for cut in range(1, len(RECORDED))
           if normalize(convert_pieces([RECORDED[:cut], RECORDED[cut:]])) != expected]
    assert bad == []


def test_recorded_stream_random_multi_splits():
    rng = random.Random(20240611)
    expected = normalize(WHOLE)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(RECORDED)), rng.randint(2, 60)))
        pieces = [RECORDED[a:b] for a, b in zip([0] + cuts, cuts + [len(RECORDED)])]
        assert normalize(convert_pieces(pieces)) == expected


def test_recorded_stream_with_crlf_line_endings():
    assert normalize(convert_pieces([RECORDED.replace(b"\n", b"\r\n")])) == normalize(WHOLE)


def test_recorded_stream_truncated_anywhere_never_ends_cleanly():
    rng = random.Random(3)
    for cut in rng.sample(range(1, len(RECORDED) - 60), 60):
        out = convert_pieces([RECORDED[:cut]])
        assert b"[DONE]" not in out and b'"error"' in out


def test_a_message_that_is_not_an_object_is_named_as_such():
    with pytest.raises(RenderError, match=re.escape("messages[1] must be an object")):
        chat(user(), "hello")


def test_a_request_of_audio_alone_says_audio_is_what_cannot_be_sent():
    with pytest.raises(RenderError, match="audio input is not supported by an Anthropic upstream"):
        chat(user([{"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}]))


@pytest.mark.parametrize("extra, message", [
    ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "legacy functions/function_call"),
    ({"function_call": "auto"}, "legacy functions/function_call"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio output"),
    ({"web_search_options": {}}, "web_search_options"),
])
def test_what_would_change_the_answers_kind_is_refused_as_on_a_responses_upstream(extra, message):
    """Left out, a client's functions were never offered to the model, and its next turn (a
    `function` message) was refused: both upstream kinds refuse them alike, up front."""
    with pytest.raises(RenderError, match=message):
        chat(user(), **extra)


def test_a_prompt_too_long_in_any_letter_case_is_context_length_exceeded():
    from ccswitch.translate.chat.common import openai_error_from
    body = b'{"error":{"type":"invalid_request_error","message":"Prompt is too long: 250000 tokens > 200000 maximum"}}'
    assert openai_error_from(body, 400)["error"]["code"] == "context_length_exceeded"


def test_top_p_of_exactly_0_95_stays_with_thinking_on():
    out = chat(user(), reasoning_effort="high", top_p=0.95)
    assert "thinking" in out and out["top_p"] == 0.95


def test_render_sends_one_anthropic_version_no_proxy_login_and_the_rules_header_instead_of_the_client_s():
    upstream = Upstream(name="own", protocol="anthropic", base_url="https://a.example", auth="client",
                        headers={"User-Agent": "ours"})
    req = make_req({"model": "m", "messages": [user()]})
    req.headers = [("anthropic-version", "2023-01-01"), ("proxy-authorization", "Basic dTpw"),
                   ("user-agent", "theirs"), ("x-api-key", "sk-the-clients-own-key")]
    headers = render(upstream, req).headers
    assert [v for k, v in headers if k == "anthropic-version"] == ["2023-01-01"]
    assert "proxy-authorization" not in dict(headers) and ("x-api-key", "sk-the-clients-own-key") in headers
    assert [v for k, v in headers if k == "user-agent"] == ["ours"]


def test_tool_call_arguments_with_numbers_no_api_reads_are_kept_as_text():
    # NaN went on to Anthropic as `"input": {"x": NaN}`, which no API reads
    body = {"model": "claude-sonnet-4-5", "tools": [NOW_TOOL], "messages": [
        user(), {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": '{"x": NaN, "y": 1e400}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}]}
    [call] = [b for m in convert(body)["messages"] for b in m["content"] if b["type"] == "tool_use"]
    assert call["input"] == {"_raw": '{"x": NaN, "y": 1e400}'}
    json.dumps(convert(body), allow_nan=False)      # raises on a NaN or an infinity in it


def test_a_relay_s_answer_without_usage_is_null_usage_not_zero_tokens():
    # zero tokens would be a false count to a client that tracks its context or bill by it
    events = [("message_start", {"message": {"id": "m", "model": "x"}}), *SPEC_EXAMPLE[1:4],
              ("message_delta", {"delta": {"stop_reason": "end_turn"}}), ("message_stop", {})]
    _conv, outs = run_stream(events)
    chunks = [c for out in outs for c in parse_chunks(out)]
    assert chunks[-2] == {**chunks[-2], "choices": [], "usage": None}
    for chunk in chunks[:-1]:
        ChatCompletionChunk.model_validate(chunk)
    out = reply_of({k: v for k, v in MESSAGE.items() if k != "usage"})
    assert out["usage"] is None and ChatCompletion.model_validate(out).usage is None
    # nor is a usage that is no object at all a count (nor a crash)
    assert reply_of({**MESSAGE, "usage": ["x"]})["usage"] is None


def test_a_message_delta_with_zero_input_counts_does_not_lower_message_start_s():
    # some Anthropic-compatible servers repeat the input counts in message_delta as 0
    zeroed = ("message_delta", {"delta": {"stop_reason": "tool_use"},
                                "usage": {"input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 31}})
    _conv, outs = run_stream([*SPEC_EXAMPLE[:8], zeroed, SPEC_EXAMPLE[9]])
    usage = [c for out in outs for c in parse_chunks(out)][-2]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["prompt_tokens_details"]["cached_tokens"]) == \
        (420, 31, 400)


@pytest.mark.parametrize("refused", [
    {"role": "assistant", "content": None, "refusal": "I can't help with that."},
    {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
    {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}],
     "refusal": "I can't help with that."},
])
def test_an_assistant_refusal_in_the_history_stays_its_turn(refused):
    """Claude has no refusal part: the turn keeps its text, so the model knows it refused."""
    out = chat(user("bad"), refused, user("ok"))
    assert [(m["role"], m["content"]) for m in out["messages"]] == [
        ("user", [{"type": "text", "text": "bad"}]),
        ("assistant", [{"type": "text", "text": "I can't help with that."}]),
        ("user", [{"type": "text", "text": "ok"}])]


@pytest.mark.parametrize(("extra", "message"), [
    ({"temperature": "hot"}, 'temperature must be a number from 0 to 2, not "hot"'),
    ({"temperature": True}, "temperature must be a number from 0 to 2, not true"),
    ({"temperature": -0.1}, "temperature must be a number from 0 to 2, not -0.1"),
    ({"temperature": 2.5}, "temperature must be a number from 0 to 2, not 2.5"),
    ({"top_p": 1.5}, "top_p must be a number from 0 to 1, not 1.5"),
    ({"top_p": [0.5]}, r"top_p must be a number from 0 to 1, not \[0.5\]"),
])
def test_a_sampling_value_openai_would_refuse_is_refused_not_left_out(extra, message):
    with pytest.raises(RenderError, match=message):
        chat(user(), **extra)
    assert "temperature" not in chat(user(), temperature=None) and chat(user(), top_p=0)["top_p"] == 0


@pytest.mark.parametrize("model", ["claude-instant-1.2", "Claude-3-5-Sonnet-20241022", "anthropic/Claude-3-Haiku"])
def test_an_older_claude_is_known_by_an_instant_or_capitalised_name_too(model):
    """Claude Instant is before 3.7 too, and a name's case does not make a Claude 3 a newer one."""
    out = convert({"model": model, "messages": [user()], "reasoning_effort": "high"})
    assert "thinking" not in out and out["max_tokens"] == (8192 if "3-5" in model else 4096)


def test_whether_claude_thinks_is_the_model_the_upstream_maps_the_name_to():
    """The upstream's model, not the client's name, is the one that refuses `thinking`."""
    old = Upstream(name="anth", protocol="anthropic", base_url="https://anthropic.example",
                   models={"claude-sonnet-4-5": "claude-3-5-sonnet-20241022", "claude-3-5-sonnet": "claude-sonnet-4-5"})
    out = convert({"model": "claude-sonnet-4-5", "messages": [user()], "reasoning_effort": "high"}, upstream=old)
    assert "thinking" not in out and out["max_tokens"] == 8192
    out = convert({"model": "claude-3-5-sonnet", "messages": [user()], "reasoning_effort": "high"}, upstream=old)
    assert out["thinking"]["type"] == "enabled" and out["max_tokens"] > 8192


def test_a_refusal_beside_text_follows_it_and_the_turn_s_thinking():
    """Claude takes a turn's thinking first: the refusal's text goes after it and after the turn's own text."""
    out = chat(user(), {"role": "assistant", "content": "Partly.", "refusal": "I can't go on.",
                        "thinking_blocks": [SIGNED]}, user("more"), reasoning_effort="high")
    assert out["thinking"]["type"] == "enabled"
    assert out["messages"][1]["content"] == [SIGNED, text("Partly."), text("I can't go on.")]


@pytest.mark.parametrize("refusal", ["", "  "])
def test_an_empty_refusal_adds_no_text_block(refusal):
    """Anthropic refuses a text block with no text in it (a client may send back `refusal: ""`)."""
    out = chat(user(), {"role": "assistant", "content": "ok", "refusal": refusal}, user("more"))
    assert out["messages"][1]["content"] == [text("ok")]


def folded_calls_and_thinking(events):
    """The SDK's own accumulation of the converted stream: each call's arguments, and the
    signed thinking kept for a replay."""
    _conv, outs = run_stream(events)
    chunks = [c for out in outs for c in parse_chunks(out) if isinstance(c, dict) and c.get("choices")]
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    message = state.get_final_completion().choices[0].message
    kept = [b for c in chunks for b in c["choices"][0]["delta"].get("thinking_blocks", [])]
    return [json.loads(call.function.arguments) for call in message.tool_calls or []], kept


START = ("message_start", {"message": {"id": "m", "model": "x", "usage": {"input_tokens": 3}}})
STOP = [("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}), ("message_stop", {})]


def tool_block(index, **block):
    return ("content_block_start", {"index": index, "content_block": {"type": "tool_use", "id": f"toolu_{index}",
                                                                      "name": "f", **block}})


def json_delta(index, partial):
    return ("content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": partial}})


@pytest.mark.parametrize("events, arguments", [
    # a compatible relay sending the input up front and again in deltas: `{"a": 1}{"a":1}`, no JSON
    ([tool_block(0, input={"a": 1}), json_delta(0, '{"a":1}'), ("content_block_stop", {"index": 0})], [{"a": 1}]),
    # blanks alone are no arguments: " " was a call's arguments
    ([tool_block(0, input={}), json_delta(0, " "), ("content_block_stop", {"index": 0})], [{}]),
    # a block never closed before message_stop: its arguments stayed ""
    ([tool_block(0, input={})], [{}]),
], ids=["input-up-front-and-in-deltas", "blank-deltas", "never-closed"])
def test_every_converted_tool_call_has_json_arguments_whatever_a_relay_streams(events, arguments):
    assert folded_calls_and_thinking([START, *events, *STOP])[0] == arguments


def test_signed_thinking_of_a_block_never_closed_is_kept_for_the_replay():
    events = [START, ("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
              ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
              ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "s1"}}),
              tool_block(1, input={}), json_delta(1, "{}"), ("content_block_stop", {"index": 1}), *STOP]
    assert folded_calls_and_thinking(events)[1] == [{"index": 0, "type": "thinking", "thinking": "hm", "signature": "s1"}]
