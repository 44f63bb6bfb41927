"""Chat Completions client <-> OpenAI Responses upstream (conversion spec §2-§7). Pure: no sockets."""

import copy
import json
import random
import re

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ccswitch.config.models import Upstream
from ccswitch.dial.render import render
from ccswitch.translate import translation_for
from ccswitch.translate.chat.responses import ChatToResponses, UpstreamFailed, aggregate, completion_from_response
from ccswitch.translate.chat.responses_request import build_request
from ccswitch.translate.chat.responses_stream import fold
from ccswitch.vocab import Protocol
from ccswitch.wire.exchange import ClientRequest, RenderError, Reply
from ccswitch.wire.sse import SSEParser, format_event
from tests.support import FIXTURES
from tests.support.node_sdk import node_message

RECORDED = (FIXTURES / "responses/reasoning_text_two_calls.sse").read_bytes()
API = Upstream(name="resp", protocol=Protocol.RESPONSES, base_url="https://api.openai.com/v1", api_key="sk-test-key-1")
CODEX = Upstream(name="codex", protocol=Protocol.RESPONSES, base_url="https://chatgpt.com/backend-api/codex/",
                 api_key="sk-test-key-2", models={"gpt-5": "gpt-5-codex"})
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "strict": True}}
HI = [{"role": "user", "content": "hi"}]


def creq(body):
    return ClientRequest(route="chat", endpoint="chat", method="POST", url="http://127.0.0.1/v1/chat/completions",
                         headers=[], body=json.dumps(body).encode(), json=body, model=body.get("model"),
                         stream=bool(body.get("stream")), client_protocol=Protocol.CHAT)


def convert(up=API, **body):
    return ChatToResponses().request(creq({"model": "gpt-5", "messages": HI, **body}), up)


def sse(*events):
    return b"".join(format_event({"type": kind, **data}, kind) for kind, data in events)


def parse(data, pieces=None):
    parser, events = SSEParser(), []
    for piece in pieces or [data]:
        events += parser.feed(piece)
    return events + parser.flush()


def run(upstream_bytes, body=None, pieces=None):
    """Feed an upstream SSE body through the converter; returns the client's chunk bodies."""
    stream = ChatToResponses().stream(creq(body or {"model": "gpt-x", "messages": HI, "stream": True}), API)
    out = b"".join(stream.feed(e) for e in parse(upstream_bytes, pieces)) + stream.finish()
    return [e.data if e.data == "[DONE]" else e.json() for e in parse(out)]


def norm(chunks):
    return [c if c == "[DONE]" or "error" in c else {**c, "id": "X", "created": 0} for c in chunks]


def deltas(chunks):
    return [c["choices"][0]["delta"] if c != "[DONE]" and c.get("choices") else c for c in chunks]


def created(model="gpt-x"):
    return ("response.created", {"response": {"id": "resp_1", "model": model, "status": "in_progress"}})


def text_delta(text):
    return ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text})


def completed(status="completed", reason=None, usage=None):
    return (f"response.{status}", {"response": {"status": status, "usage": usage,
                                                "incomplete_details": {"reason": reason} if reason else None}})


# ---------------------------------------------------------------- request (§2, §6, §7)

def test_golden_request_conversation():
    body = {"model": "gpt-5-thinking", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "system", "content": "  "},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                                         "detail": "low"}},
                                     {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                                                               "filename": "a.pdf"}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_B", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_A", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_B", "content": [{"type": "text", "text": "12:00"},
                                                                {"type": "text", "text": " CET"}]},
        {"role": "system", "content": "Answer in French."},
        {"role": "assistant", "content": [{"type": "text", "text": "Il fait beau."}]},
        {"role": "user", "content": "Merci", "name": "bob"}],
        "tools": [WEATHER, TIME], "tool_choice": "auto", "parallel_tool_calls": False,
        "max_completion_tokens": 500, "max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "stop": ["END"],
        "seed": 1, "logit_bias": {"1": 2}, "presence_penalty": 0.1, "frequency_penalty": 0.1, "n": 1,
        "stream": True, "stream_options": {"include_usage": True}, "user": "u-1", "prompt_cache_key": "pc",
        "metadata": {"a": "b"}, "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object"}, "strict": True}}}
    assert ChatToResponses().request(creq(body), API) == {
        "model": "gpt-5",
        "instructions": "You are terse.\n\nUse tools.",
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather?"},
                {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "auto"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}]},
            {"type": "function_call", "call_id": "call_A", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call", "call_id": "call_B", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_A", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_B", "output": "12:00 CET"},
            {"type": "message", "role": "developer", "content": "Answer in French."},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Il fait beau."}]},
            {"type": "message", "role": "user", "content": "Merci"}],
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather for a city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": False},
                  {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}},
                   "strict": True}],
        "tool_choice": "auto", "parallel_tool_calls": False, "max_output_tokens": 500,
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        "metadata": {"a": "b"}, "prompt_cache_key": "pc", "safety_identifier": "u-1",
        "store": False, "stream": True, "include": ["reasoning.encrypted_content"]}


def test_codex_backend_request_keeps_only_what_it_accepts():
    req = creq({"model": "gpt-5", "messages": HI, "max_tokens": 99, "temperature": 0.3, "metadata": {"a": 1},
                "reasoning_effort": "low", "logprobs": True, "top_logprobs": 2, "user": "u", "tools": [WEATHER]})
    body = ChatToResponses().request(req, CODEX)
    assert body == {"model": "gpt-5", "instructions": "", "input": [{"type": "message", "role": "user",
                                                                     "content": "hi"}],
                    "tools": [{"type": "function", "name": "get_weather", "description": "Weather for a city",
                               "parameters": WEATHER["function"]["parameters"], "strict": False}],
                    "reasoning": {"effort": "low", "summary": "auto"}, "store": False, "stream": True,
                    "include": ["reasoning.encrypted_content"]}
    out = render(CODEX, req, body)       # the dialer's next step: URL and model mapping
    assert out.url == "https://chatgpt.com/backend-api/codex/responses"
    assert json.loads(out.body)["model"] == "gpt-5-codex" and out.upstream_model == "gpt-5-codex"


def test_thinking_suffix_is_stripped_before_the_model_mapping():
    req = creq({"model": "gpt-5-thinking", "messages": HI, "reasoning_effort": "minimal", "temperature": 1})
    body = ChatToResponses().request(req, CODEX)
    assert body["reasoning"] == {"effort": "minimal", "summary": "auto"} and "temperature" not in body
    assert json.loads(render(CODEX, req, body).body)["model"] == "gpt-5-codex"
    assert convert(model="o3-thinking")["reasoning"]["effort"] == "high"
    assert "reasoning" not in convert(model="-thinking") and convert(model="-thinking")["model"] == "-thinking"


@pytest.mark.parametrize("extra,expected", [
    ({}, {}),
    ({"temperature": 0.5, "top_p": 0.8}, {"temperature": 0.5, "top_p": 0.8}),
    ({"reasoning_effort": "medium", "temperature": 0.5, "top_p": 0.8},
     {"reasoning": {"effort": "medium", "summary": "auto"}, "include": ["reasoning.encrypted_content"]}),
    ({"reasoning_effort": "none", "temperature": 0.5}, {"reasoning": {"effort": "none"}, "temperature": 0.5}),
    ({"max_tokens": 5}, {"max_output_tokens": 16}),
    ({"max_tokens": 300}, {"max_output_tokens": 300}),
    ({"logprobs": True, "top_logprobs": 3}, {"include": ["message.output_text.logprobs"], "top_logprobs": 3}),
    ({"response_format": {"type": "json_object"}, "verbosity": "low"},
     {"text": {"format": {"type": "json_object"}, "verbosity": "low"}}),
    ({"response_format": {"type": "text"}}, {"text": {"format": {"type": "text"}}}),
    ({"user": "u", "safety_identifier": "s", "service_tier": "flex"}, {"safety_identifier": "s",
                                                                       "service_tier": "flex"}),
    ({"stop": "x", "seed": 3, "presence_penalty": 1, "stream_options": {"include_usage": True},
      "prediction": {"type": "content", "content": "x"}}, {}),
])
def test_parameters(extra, expected):
    base = {"model": "gpt-5", "input": [{"type": "message", "role": "user", "content": "hi"}],
            "store": False, "stream": False}
    body = convert(**extra)
    assert body == {**base, **expected}


@pytest.mark.parametrize("choice,expected", [
    ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "function": {"name": "get_weather"}}, {"type": "function", "name": "get_weather"}),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}},
     {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]}),
])
def test_tool_choice(choice, expected):
    body = convert(tools=[WEATHER], tool_choice=choice, parallel_tool_calls=True)
    assert body["tool_choice"] == expected and body["parallel_tool_calls"] is True
    assert body["tools"][0]["name"] == "get_weather"        # "none" keeps the tools


def test_assistant_history_is_output_text_and_calls_carry_no_item_id():
    body = convert(messages=HI + [
        {"role": "assistant", "content": None, "refusal": "I can't.", "tool_calls": [
            {"id": "functions.Bash:0", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "functions.Bash:0", "content": "ok"},
        {"role": "assistant", "content": [{"type": "text", "text": "A"}, {"type": "refusal", "refusal": "B"}]},
        {"role": "assistant", "content": ""}])
    assert body["input"][1:] == [
        {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
        {"type": "function_call", "call_id": "functions.Bash:0", "name": "Bash", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "functions.Bash:0", "output": "ok"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A"},
                                                             {"type": "refusal", "refusal": "B"}]}]
    assert "input_text" not in json.dumps(body["input"][1:]) and '"id"' not in json.dumps(body["input"])


def test_an_assistant_turn_s_text_parts_stay_parts_of_their_own():
    """Joined, `part-a` and `part-b` would read `part-apart-b` to the model."""
    body = convert(messages=HI + [
        {"role": "assistant", "content": [{"type": "text", "text": "part-a"}, {"type": "text", "text": ""},
                                          {"type": "text", "text": "part-b"}], "refusal": None},
        {"role": "user", "content": "go on"}])
    assert body["input"][1] == {"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": "part-a"}, {"type": "output_text", "text": "part-b"}]}


@pytest.mark.parametrize("extra,message", [
    ({"n": 2}, "n must be 1"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}]}, "audio"),
    ({"modalities": ["text", "audio"]}, "audio"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tool type 'custom'"),
    ({"tools": [WEATHER], "tool_choice": {"type": "custom", "custom": {"name": "x"}}}, "tool_choice"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"functions": [{"name": "f"}]}, "legacy"),
    ({"messages": []}, "non-empty"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "role 'function'"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {}}]}]},
     "function name"),
    ({"max_completion_tokens": 0}, "positive"),
    ({"response_format": {"type": "grammar"}}, "response_format"),
    ({"temperature": "hot"}, "temperature must be a number from 0 to 2"),
    ({"top_p": -1}, "top_p must be a number from 0 to 1"),
])
def test_requests_that_cannot_be_converted(extra, message):
    with pytest.raises(RenderError, match=message):
        convert(**extra)


def test_wiring():
    assert isinstance(translation_for(Protocol.CHAT, Protocol.RESPONSES), ChatToResponses)
    tr, plain, streamed = ChatToResponses(), creq({"model": "m", "messages": HI}), creq({"stream": True})
    assert (tr.upstream_streams(plain, API), tr.upstream_streams(streamed, API)) == (False, True)
    assert tr.upstream_streams(plain, CODEX) is True
    assert tr.upstream_streams(plain, Upstream(name="x", protocol=Protocol.RESPONSES,
                                               base_url="https://h/backend-api/codexx")) is False
    assert tr.upstream_streams(plain, Upstream(name="x", protocol=Protocol.RESPONSES, base_url="https://h/codex")) is False


# ---------------------------------------------------------------- non-stream (§3.2-§3.4)

USAGE = {"input_tokens": 900, "input_tokens_details": {"cached_tokens": 768, "cache_write_tokens": 10},
         "output_tokens": 120, "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 1020}
CHAT_USAGE = {"prompt_tokens": 900, "completion_tokens": 120, "total_tokens": 1020,
              "prompt_tokens_details": {"cached_tokens": 768, "cache_write_tokens": 10},
              "completion_tokens_details": {"reasoning_tokens": 64}}
OUTPUT = [
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Two lookups"},
                                                    {"type": "summary_text", "text": "then answer"}]},
    {"type": "message", "id": "msg_1", "phase": "commentary", "content": [{"type": "output_text", "text": "Let me "}]},
    {"type": "message", "id": "msg_2", "content": [{"type": "output_text", "text": "check."}]},
    {"type": "function_call", "id": "fc_1", "call_id": "call_A", "name": "get_weather", "arguments": '{"city":"P"}'},
    {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    {"type": "function_call", "id": "fc_2", "call_id": "call_B", "name": "get_time", "arguments": ""}]


def reply(body_bytes, body=None, up=API):
    out = ChatToResponses().reply(creq(body or {"model": "gpt-x", "messages": HI}), up, 200,
                                  [("content-type", "x"), ("x-request-id", "r1")], body_bytes)
    return out.status, json.loads(out.body), out


def test_non_stream_tool_calls_reasoning_usage():
    status, body, out = reply(json.dumps({"id": "resp_1", "object": "response", "model": "gpt-x-2025",
                                          "status": "completed", "output": OUTPUT, "usage": USAGE}).encode())
    assert status == 200 and out.translated and ("x-request-id", "r1") in out.headers
    ChatCompletion.model_validate(body)
    assert body["id"] == "chatcmpl-resp_1" and body["model"] == "gpt-x-2025" and len(body["choices"]) == 1
    assert body["choices"][0] == {"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
        "role": "assistant", "content": "Let me check.", "refusal": None,
        "reasoning_content": "Two lookups\n\nthen answer",
        "tool_calls": [{"id": "call_A", "type": "function", "function": {"name": "get_weather",
                                                                         "arguments": '{"city":"P"}'}},
                       {"id": "call_B", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}}
    assert body["usage"] == CHAT_USAGE


@pytest.mark.parametrize("status,details,output,finish", [
    ("completed", None, [OUTPUT[2]], "stop"),
    ("incomplete", {"reason": "max_output_tokens"}, OUTPUT, "length"),     # length wins over tool_calls
    ("incomplete", {"reason": "content_filter"}, [OUTPUT[2]], "content_filter"),
    ("incomplete", {"reason": "something_new"}, [], "length"),
])
def test_non_stream_finish_reasons(status, details, output, finish):
    _, body, _ = reply(json.dumps({"status": status, "incomplete_details": details, "output": output}).encode())
    assert body["choices"][0]["finish_reason"] == finish and body["usage"] is None
    ChatCompletion.model_validate(body)


def test_non_stream_refusal_and_empty():
    refusal = {"type": "message", "content": [{"type": "refusal", "refusal": "No."}]}
    _, body, _ = reply(json.dumps({"status": "completed", "output": [refusal]}).encode())
    assert body["choices"][0]["message"] == {"role": "assistant", "content": None, "refusal": "No."}
    _, body, _ = reply(json.dumps({"status": "completed", "output": []}).encode(), {"model": "m-thinking"})
    assert body["choices"][0]["message"]["content"] == "" and body["model"] == "m"


def test_non_stream_failed_response_becomes_an_openai_error():
    failed = {"object": "response", "status": "failed", "output": [],
              "error": {"code": "rate_limit_exceeded", "message": "slow down"}}
    status, body, out = reply(json.dumps(failed).encode())
    assert status == 429 and body == {"error": {"message": "slow down", "type": "rate_limit_exceeded",
                                                "param": None, "code": "rate_limit_exceeded"}}
    assert out.reason == "stream error: slow down"
    silent = {**failed, "error": None}          # failed, and not a word of why: OpenAI's server_error
    status, body, _ = reply(json.dumps(silent).encode())
    assert status >= 500 and body == {"error": {"message": "upstream response failed, without an error",
                                                "type": "server_error", "param": None, "code": "server_error"}}


def test_error_statuses_use_the_openai_shape():
    upstream = Reply("resp", 529, [("retry-after", "3")],
                     b'{"error":{"message":"busy","type":"server_error","param":null,"code":"overloaded"}}')
    out = ChatToResponses().error_reply(creq({}), upstream)
    assert out.status == 503 and ("retry-after", "3") in out.headers
    assert json.loads(out.body)["error"] == {"message": "busy", "type": "server_error", "param": None,
                                             "code": "overloaded"}



def test_an_openai_error_keeps_its_null_code_and_an_anthropic_one_gets_its_type():
    openai_null = Reply("resp", 400, [], b'{"error":{"message":"bad","type":"invalid_request_error",'
                                          b'"param":"input","code":null}}')
    assert json.loads(ChatToResponses().error_reply(creq({}), openai_null).body)["error"] == {
        "message": "bad", "type": "invalid_request_error", "param": "input", "code": None}
    anthropic = Reply("anth", 429, [], b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}')
    assert json.loads(ChatToResponses().error_reply(creq({}), anthropic).body)["error"]["code"] == "rate_limit_error"


# ---------------------------------------------------------------- codex backend: aggregate the SSE body

def test_codex_non_stream_client_aggregates_the_completed_response():
    tr, req = ChatToResponses(), creq({"model": "gpt-5", "messages": HI})
    assert tr.check_body(req, CODEX, RECORDED, True) is None
    status, body, _ = reply(RECORDED, up=CODEX)
    assert status == 200
    ChatCompletion.model_validate(body)
    message = body["choices"][0]["message"]
    assert message["content"] == "Checking Paris (Île-de-France) and Tōkyō 🌤…"
    assert message["reasoning_content"] == "**Planning lookups**\n\nThe user wants Paris, Tōkyō.\n\n" \
                                           "**Calling tools** – both at once 🌤"
    assert [(c["id"], c["function"]["arguments"]) for c in message["tool_calls"]] == [
        ("call_Wx1PqRsT2uVw3XyZ", '{"city":"Paris"}'), ("call_Tm9AbCdE8fGh7IjK", '{"tz":"Asia/Tokyo"}')]
    assert body["choices"][0]["finish_reason"] == "tool_calls" and body["usage"]["prompt_tokens"] == 1834
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 1536


def test_codex_aggregation_falls_back_to_the_deltas_when_output_is_empty():
    stripped = re.sub(rb'("type":"response\.completed".*"output":)\[.*\](,"parallel_tool_calls")', rb"\1[]\2",
                      RECORDED)
    assert stripped != RECORDED
    from_deltas = reply(stripped, up=CODEX)[1]
    from_output = reply(RECORDED, up=CODEX)[1]
    assert from_deltas["choices"] == from_output["choices"] and from_deltas["usage"] == from_output["usage"]


@pytest.mark.parametrize("streamed, listed", [
    ([("response.output_item.added", {"output_index": 0, "item": {"type": "function_call", "id": "fc_1",
                                                                   "call_id": "call_1", "name": "f"}}),
      ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 0, "delta": '{"a":1}'})],
     [{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}]),
    ([text_delta("hello")], [{"type": "reasoning", "summary": []}]),
], ids=["a-call-the-list-forgot", "text-the-list-forgot"])
def test_a_whole_answer_from_a_stream_has_what_its_deltas_carried_when_the_final_list_leaves_it_out(streamed, listed):
    """A non-streaming client of a Codex upstream (which always streams) got only the final
    response's list: a tool call or text only its deltas carried was lost, where a streaming
    client of the same events got it."""
    done = ("response.completed", {"response": {"status": "completed", "output": listed}})
    body = sse(created(), *streamed, done)
    whole = aggregate(body, "gpt-5")
    message, reason = whole["choices"][0]["message"], whole["choices"][0]["finish_reason"]
    folded = fold(deltas(run(body))[:-1])
    assert (message.get("content") or "", [c["function"]["arguments"] for c in message.get("tool_calls") or []]) == \
        (folded["text"], [c["function"]["arguments"] for c in folded["tool_calls"]])
    assert reason == ("tool_calls" if folded["tool_calls"] else "stop")
    assert (message.get("content") or "", len(message.get("tool_calls") or [])) in (("ok", 1), ("hello", 0))


def test_an_aggregated_answer_is_named_by_the_upstream_s_model_when_the_last_event_names_none():
    done = ("response.completed", {"response": {"status": "completed", "output": [
        {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}]}})
    assert aggregate(sse(created("gpt-x"), done), "gpt-5")["model"] == "gpt-x"
    streamed = run(sse(created("gpt-x"), text_delta("Hi"), done))
    assert {chunk["model"] for chunk in streamed if isinstance(chunk, dict)} == {"gpt-x"}


def test_codex_aggregation_of_failures():
    tr, req = ChatToResponses(), creq({"model": "gpt-5", "messages": HI})
    cut = RECORDED[: RECORDED.index(b"event: response.completed")]
    assert tr.check_body(req, CODEX, cut, True) == "stream ended before its terminal event"
    assert tr.check_body(req, CODEX, b'{"object":"response","output":[]}', False) is not None
    assert tr.check_body(req, API, RECORDED, True) is not None         # API upstream was asked for JSON
    failed = cut + sse(("response.failed", {"response": {"status": "failed", "error": {
        "code": "server_error", "message": "boom"}}}))
    assert tr.check_body(req, CODEX, failed, True) is None             # a real answer: an error
    status, body, _ = reply(failed, up=CODEX)
    assert status == 500 and body["error"]["message"] == "boom" and body["error"]["code"] == "server_error"
    status, body, _ = reply(cut, up=CODEX)
    assert status == 502 and "terminal event" in body["error"]["message"]


# ---------------------------------------------------------------- streaming (§4.2, §5)

SPEC_EXAMPLE = sse(
    created(),
    ("response.output_item.added", {"output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
    ("response.reasoning_summary_text.delta", {"item_id": "rs_1", "summary_index": 0, "delta": "Need two lookups"}),
    ("response.output_item.done", {"output_index": 0, "item": {"type": "reasoning", "id": "rs_1",
                                                               "encrypted_content": "gAAA"}}),
    ("response.output_item.added", {"output_index": 1, "item": {"type": "function_call", "id": "fc_1",
                                    "call_id": "call_A", "name": "get_weather", "arguments": ""}}),
    ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 1, "delta": '{"city":"Paris"}'}),
    ("response.output_item.done", {"output_index": 1, "item": {"type": "function_call", "id": "fc_1",
                                   "call_id": "call_A", "name": "get_weather", "arguments": '{"city":"Paris"}',
                                   "status": "completed"}}),
    ("response.output_item.added", {"output_index": 2, "item": {"type": "function_call", "id": "fc_2",
                                    "call_id": "call_B", "name": "get_time", "arguments": ""}}),
    ("response.function_call_arguments.delta", {"item_id": "fc_2", "output_index": 2, "delta": "{}"}),
    completed(usage={k: v for k, v in USAGE.items() if k != "input_tokens_details"} | {
        "input_tokens_details": {"cached_tokens": 768}}))


def test_spec_example_two_parallel_calls():
    chunks = run(SPEC_EXAMPLE, {"model": "gpt-x", "messages": HI, "stream": True,
                                "stream_options": {"include_usage": True}})
    head = {"id": "X", "object": "chat.completion.chunk", "created": 0, "model": "gpt-x"}

    def chunk(delta, finish=None):
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": None}

    def call(k, args, call_id=None, name=None):
        fn = {"name": name, "arguments": args} if name else {"arguments": args}
        return {"tool_calls": [{"index": k, **({"id": call_id, "type": "function"} if name else {}),
                                "function": fn}]}
    assert norm(chunks) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Need two lookups"}),
        chunk(call(0, "", "call_A", "get_weather")),
        chunk(call(0, '{"city":"Paris"}')),
        chunk(call(1, "", "call_B", "get_time")),
        chunk(call(1, "{}")),
        chunk({}, "tool_calls"),
        {**head, "choices": [], "usage": {"prompt_tokens": 900, "completion_tokens": 120, "total_tokens": 1020,
                                          "prompt_tokens_details": {"cached_tokens": 768},
                                          "completion_tokens_details": {"reasoning_tokens": 64}}},
        "[DONE]"]


def test_text_stream_without_usage():
    chunks = run(sse(created(), ("response.in_progress", {}), text_delta("Hel"), text_delta(""), text_delta("lo"),
                     ("response.output_text.done", {"text": "Hello"}), completed(usage=USAGE)))
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {},
                              "[DONE]"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and "usage" not in chunks[-2]
    assert len({c["id"] for c in chunks[:-1]}) == 1


def test_every_chunk_carries_the_upstream_response_id_as_non_stream_does():
    chunks = run(sse(created(), text_delta("Hi"), completed(usage=USAGE)),
                 {"model": "gpt-x", "messages": HI, "stream": True, "stream_options": {"include_usage": True}})
    assert {c["id"] for c in chunks if c != "[DONE]"} == {"chatcmpl-resp_1"}


def test_arguments_only_on_done_are_sent_once_and_deltas_route_by_item_id():
    added = [("response.output_item.added", {"output_index": i, "item": {
        "type": "function_call", "id": f"fc_{i}", "call_id": f"call_{i}", "name": "f", "arguments": ""}})
        for i in (3, 5)]
    chunks = run(sse(created(), *added,
                     ("response.function_call_arguments.delta", {"item_id": "fc_5", "output_index": 3,
                                                                 "delta": '{"b":'}),   # item_id wins
                     ("response.function_call_arguments.done", {"item_id": "fc_3", "arguments": '{"a":1}'}),
                     ("response.output_item.done", {"output_index": 3, "item": {
                         "type": "function_call", "id": "fc_3", "arguments": '{"a":1}'}}),
                     ("response.function_call_arguments.delta", {"item_id": "fc_5", "delta": "2}"}),
                     ("response.function_call_arguments.done", {"item_id": "fc_5", "arguments": '{"b":2}'}),
                     ("response.output_item.done", {"output_index": 7, "item": {  # `added` never came
                         "type": "function_call", "id": "fc_7", "call_id": "call_7", "name": "g", "arguments": ""}}),
                     completed()))
    calls = [d["tool_calls"][0] for d in deltas(chunks) if isinstance(d, dict) and "tool_calls" in d]
    assert [(c["index"], c.get("id"), c["function"]["arguments"]) for c in calls] == [
        (0, "call_3", ""), (1, "call_5", ""), (1, None, '{"b":'), (0, None, '{"a":1}'), (1, None, "2}"),
        (2, "call_7", ""), (2, None, "{}")]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_reasoning_parts_refusal_and_lazy_role():
    def summary(i, text, item="rs_1"):
        return ("response.reasoning_summary_text.delta", {"item_id": item, "summary_index": i, "delta": text})
    chunks = run(sse(summary(0, "a"), summary(0, "b"), summary(1, "c"), summary(0, "d", "rs_2"),
                     ("response.reasoning_text.delta", {"item_id": "rs_3", "content_index": 0, "delta": "e"}),
                     ("response.refusal.delta", {"item_id": "m", "delta": "No"}), completed()))
    assert deltas(chunks)[:-2] == [{"role": "assistant", "content": ""}, {"reasoning_content": "a"},
                                   {"reasoning_content": "b"}, {"reasoning_content": "\n\nc"},
                                   {"reasoning_content": "\n\nd"}, {"reasoning_content": "\n\ne"}, {"refusal": "No"}]
    assert {c["choices"][0]["index"] for c in chunks[:-1]} == {0} and chunks[0]["model"] == "gpt-x"


@pytest.mark.parametrize("reason,finish", [("max_output_tokens", "length"), ("content_filter", "content_filter")])
def test_incomplete(reason, finish):
    added = ("response.output_item.added", {"output_index": 0, "item": {"type": "function_call", "id": "fc",
                                                                        "call_id": "c", "name": "f"}})
    chunks = run(sse(created(), added, completed("incomplete", reason)))
    assert chunks[-2]["choices"][0]["finish_reason"] == finish and chunks[-1] == "[DONE]"


@pytest.mark.parametrize("event,error", [
    (("response.failed", {"response": {"status": "failed", "error": {"code": "server_error", "message": "boom"}}}),
     {"message": "boom", "type": "server_error", "param": None, "code": "server_error"}),
    (("error", {"code": "rate_limit_exceeded", "message": "slow down", "param": None}),
     {"message": "slow down", "type": "rate_limit_exceeded", "param": None, "code": "rate_limit_exceeded"}),
    (("response.done", {"response": {"status": "cancelled"}}),
     {"message": "upstream response cancelled, without an error", "type": "server_error", "param": None,
      "code": "server_error"}),
])
def test_in_stream_errors_end_the_stream(event, error):
    stream = ChatToResponses().stream(creq({"model": "m", "stream": True}), API)
    events = parse(sse(created(), text_delta("Hi"), event, text_delta("more"), completed()))
    out = [stream.feed(e) for e in events]
    assert out[3:] == [b"", b""] and stream.finish() == b""
    chunks = [e.json() for e in parse(b"".join(out))]
    assert chunks[-1] == {"error": error} and not any(c.get("choices", [{}])[0].get("finish_reason")
                                                      for c in chunks[:-1])


def test_a_relay_s_bare_error_line_ends_the_stream_with_its_own_words():
    stream = ChatToResponses().stream(creq({"model": "m", "stream": True}), API)
    bare = b'data: {"error":{"type":"server_error","code":"server_error","message":"relay gave up"}}\n\n'
    out = [stream.feed(e) for e in parse(sse(created(), text_delta("Hi")) + bare + sse(completed()))]
    assert out[3] == b"" and stream.finish() == b""
    assert [e.json() for e in parse(out[2])] == [{"error": {"message": "relay gave up", "type": "server_error",
                                                           "param": None, "code": "server_error"}}]


def test_eof_without_terminal_event_is_an_error_and_comments_are_ignored():
    chunks = run(b": keep-alive\n\n" + sse(created(), text_delta("Hi")))
    assert deltas(chunks[:2]) == [{"role": "assistant", "content": ""}, {"content": "Hi"}]
    assert chunks[2]["error"]["code"] == "stream_truncated" and len(chunks) == 3


def test_recorded_stream_validates_and_accumulates_in_the_sdk():
    chunks = run(RECORDED, {"model": "gpt-5", "messages": HI, "stream": True, "tools": [WEATHER, TIME],
                            "stream_options": {"include_usage": True}})
    assert chunks[-1] == "[DONE]"
    state = ChatCompletionStreamState()
    for chunk in chunks[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Checking Paris (Île-de-France) and Tōkyō 🌤…"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("call_Wx1PqRsT2uVw3XyZ", "get_weather", {"city": "Paris"}),
        ("call_Tm9AbCdE8fGh7IjK", "get_time", {"tz": "Asia/Tokyo"})]
    assert final.choices[0].finish_reason == "tool_calls" and final.usage.total_tokens == 2121
    assert final.model == "gpt-5-2025-08-07"


# ---------------------------------------------------------------- chunk boundaries

CHUNK_HEAD = re.compile(rb'"object":"chat\.completion\.chunk","created":\d+,')


def new_stream():
    return ChatToResponses().stream(creq({"model": "gpt-x", "stream": True,
                                          "stream_options": {"include_usage": True}}), API)


def client_bytes(pieces):
    """The converter's output for an upstream body arriving in `pieces`, the clock's `created` removed."""
    stream, parser, out = new_stream(), SSEParser(), []
    for piece in pieces:
        out += [stream.feed(e) for e in parser.feed(piece)]
    out += [stream.feed(e) for e in parser.flush()]
    return CHUNK_HEAD.sub(b"", b"".join(out) + stream.finish())


def state(stream):
    return {**{k: v for k, v in vars(stream).items() if k != "writer"}, **vars(stream.writer)}


WHOLE = client_bytes([RECORDED])


def test_every_two_piece_split_gives_the_same_client_stream():
    """Every byte offset.  A complete event leaves the parser empty, so a run whose body is cut
    inside event j is the whole-body run up to j, event j's bytes in two pieces, then the
    whole-body run after j.  The middle part is replayed from a copy of the converter as it was
    before event j; its output and the converter's state after it must match the uncut run."""
    assert WHOLE.count(b"data: ") == 20 and WHOLE.endswith(b"data: [DONE]\n\n")
    stream, parser, start, outs, checked = new_stream(), SSEParser(), 0, [], 0
    for event in parser.feed(RECORDED):
        before, out = copy.deepcopy(stream), stream.feed(event)
        end, outs = start + len(event.raw), outs + [out]
        for cut in range(start + 1, end):
            replay, pieces = copy.deepcopy(before), SSEParser()
            got = [replay.feed(e) for e in pieces.feed(RECORDED[start:cut]) + pieces.feed(RECORDED[cut:end])]
            assert (b"".join(got), pieces.pending, state(replay)) == (out, b"", state(stream)), cut
            checked += 1
        start = end
    assert start == len(RECORDED) and checked == len(RECORDED) - len(outs)
    assert CHUNK_HEAD.sub(b"", b"".join(outs) + stream.finish()) == WHOLE


def test_two_piece_splits_through_the_whole_pipeline():
    boundaries = [m.start() for m in re.finditer(rb"\n\n", RECORDED)]
    cuts = sorted({c for b in boundaries for c in range(b - 2, b + 4)} | set(range(1, len(RECORDED), 97)))
    for cut in cuts:
        assert client_bytes([RECORDED[:cut], RECORDED[cut:]]) == WHOLE, cut


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_random_multi_splits(newline):
    data = RECORDED.replace(b"\n", newline)
    rng = random.Random(11)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(2, 60)))
        assert client_bytes([data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]) == WHOLE


def whole_items_only():
    """A relay that sends each output item only whole, on its `.done`, never as deltas."""
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Think A."},
                                                                {"type": "summary_text", "text": "Think B."}]}
    message = {"type": "message", "id": "msg_1", "role": "assistant",
               "content": [{"type": "output_text", "text": "Hello "}, {"type": "output_text", "text": "there."}]}
    refused = {"type": "message", "id": "msg_2", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_time", "arguments": "{}"}
    return [created(), *[(kind, {"output_index": i, "item": item})
                         for i, item in enumerate([reasoning, message, refused, call])
                         for kind in ("response.output_item.added", "response.output_item.done")],
            completed(usage={"input_tokens": 5, "output_tokens": 7})]


def test_items_sent_only_whole_lose_nothing_of_their_text():
    folded = fold([d for c in run(sse(*whole_items_only())) if c != "[DONE]" and c.get("choices")
                   for d in [c["choices"][0]["delta"]]])
    assert folded["text"] == "Hello there."
    assert folded["refusal"] == "No."
    assert folded["reasoning"] == "Think A.\n\nThink B."
    assert [c["function"]["name"] for c in folded["tool_calls"]] == ["get_time"]


def test_text_streamed_as_deltas_is_not_sent_again_by_its_done():
    message = {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "T"}]}
    chunks = run(sse(created(),
                     ("response.reasoning_summary_text.delta", {"item_id": "rs_1", "output_index": 0,
                                                                "summary_index": 0, "delta": "T"}),
                     ("response.output_item.done", {"output_index": 0, "item": reasoning}),
                     text_delta("Hi"), ("response.output_item.done", {"output_index": 1, "item": message}),
                     completed()))
    folded = fold([c["choices"][0]["delta"] for c in chunks if c != "[DONE]" and c.get("choices")])
    assert (folded["text"], folded["reasoning"]) == ("Hi", "T")


def test_an_empty_delta_does_not_stand_for_the_text_and_a_done_without_an_id_is_matched_by_its_index():
    message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Whole."}]}
    empty_first = run(sse(created(),
                          ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "delta": ""}),
                          ("response.output_item.done", {"output_index": 0, "item": {**message, "id": "msg_1"}}),
                          completed()))
    no_id = run(sse(created(), ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "delta": "Hi"}),
                    ("response.output_item.done", {"output_index": 0, "item": message}), completed()))
    assert [fold([c["choices"][0]["delta"] for c in chunks if c != "[DONE]" and c.get("choices")])["text"]
            for chunks in (empty_first, no_id)] == ["Whole.", "Hi"]


HI_LOGPROBS = [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}]}]
THERE_LOGPROBS = [{"token": " there", "logprob": -0.5, "bytes": [32, 116, 104, 101, 114, 101], "top_logprobs": []}]


def test_token_log_probabilities_asked_for_come_back_where_chat_has_them():
    asked = {"model": "gpt-x", "messages": HI, "logprobs": True, "top_logprobs": 1}
    message = {"type": "message", "content": [{"type": "output_text", "text": "Hi", "logprobs": HI_LOGPROBS},
                                              {"type": "output_text", "text": " there", "logprobs": THERE_LOGPROBS}]}
    _, body, _ = reply(json.dumps({"status": "completed", "output": [message]}).encode(), asked)
    ChatCompletion.model_validate(body)
    assert body["choices"][0]["logprobs"] == {"content": HI_LOGPROBS + THERE_LOGPROBS, "refusal": None}

    with_logprobs = [(kind, {**data, "logprobs": probs}) for (kind, data), probs in
                     ((text_delta("Hi"), HI_LOGPROBS), (text_delta(" there"), THERE_LOGPROBS))]
    chunks = run(sse(created(), *with_logprobs, completed(usage=USAGE)), {**asked, "stream": True})
    for chunk in chunks[:-1]:
        ChatCompletionChunk.model_validate(chunk)
    assert [c["choices"][0].get("logprobs") for c in chunks[1:3]] == [
        {"content": HI_LOGPROBS, "refusal": None}, {"content": THERE_LOGPROBS, "refusal": None}]
    assert deltas(chunks)[1:3] == [{"content": "Hi"}, {"content": " there"}]
    state = ChatCompletionStreamState()
    for chunk in chunks[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    assert [t.token for t in state.get_final_completion().choices[0].logprobs.content] == ["Hi", " there"]


def test_no_log_probabilities_is_null_as_before():
    _, body, _ = reply(json.dumps({"status": "completed", "output": [OUTPUT[2]]}).encode())
    assert body["choices"][0]["logprobs"] is None
    chunks = run(sse(created(), text_delta("Hi"), completed(usage=USAGE)))
    assert all("logprobs" not in c["choices"][0] for c in chunks[:-1] if c["choices"])


def test_an_anthropic_context_overflow_carries_openais_code_for_it_and_a_bare_4xx_is_the_clients():
    too_long = Reply("anth", 400, [], b'{"type":"error","error":{"type":"invalid_request_error",'
                                      b'"message":"prompt is too long: 250000 tokens > 200000 maximum"}}')
    error = json.loads(ChatToResponses().error_reply(creq({}), too_long).body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
    for status, kind in ((400, "invalid_request_error"), (422, "invalid_request_error"), (502, "server_error")):
        error = json.loads(ChatToResponses().error_reply(creq({}), Reply("x", status, [], b"<html>no</html>")).body)
        assert error["error"]["type"] == kind      # OpenAI's type for the status
        assert error["error"]["message"] == f"upstream answered HTTP {status} with a web page: no"


def test_an_error_page_in_front_of_the_upstream_is_told_by_its_words_and_plain_text_as_it_is():
    page = b"<html><head><title>502 Bad Gateway</title></head>\r\n<body><h1>502 Bad Gateway</h1>nginx</body></html>"
    said = json.loads(ChatToResponses().error_reply(creq({}), Reply("x", 503, [], page)).body)["error"]
    assert said["message"] == "upstream answered HTTP 503 with a web page: 502 Bad Gateway 502 Bad Gateway nginx"
    for body, message in ((b"  no such route\n", "no such route"), (b"", "upstream answered HTTP 503"),
                          (b"<html></html>", "upstream answered HTTP 503 with a web page")):
        assert json.loads(ChatToResponses().error_reply(creq({}), Reply("x", 503, [], body)).body)["error"][
            "message"] == message


def test_url_citations_come_back_as_chat_annotations_at_their_place_in_the_whole_text():
    cite = {"type": "url_citation", "start_index": 0, "end_index": 4, "url": "https://example.com/a", "title": "A"}
    message = {"type": "message", "content": [
        {"type": "output_text", "text": "Intro. ", "annotations": []},
        {"type": "output_text", "text": "Fact here.", "annotations": [cite, {"type": "file_citation", "index": 1}]}]}
    _, body, _ = reply(json.dumps({"status": "completed", "output": [message]}).encode())
    ChatCompletion.model_validate(body)
    assert body["choices"][0]["message"]["annotations"] == [{"type": "url_citation", "url_citation": {
        "url": "https://example.com/a", "title": "A", "start_index": 7, "end_index": 11}}]
    assert body["choices"][0]["message"]["content"][7:11] == "Fact"
    _, body, _ = reply(json.dumps({"status": "completed", "output": [OUTPUT[2]]}).encode())
    assert "annotations" not in body["choices"][0]["message"]


def test_a_cancelled_response_is_a_failure_not_an_empty_answer_and_raw_reasoning_is_kept():
    import pytest as _pytest

    from ccswitch.translate.chat.responses import UpstreamFailed, completion_from_response
    with _pytest.raises(UpstreamFailed):
        completion_from_response({"status": "cancelled", "output": []}, "m")
    done = completion_from_response({"status": "completed", "output": [
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "think"}]},
        {"type": "message", "content": [{"type": "output_text", "text": "ok"}]}]}, "m")
    assert done["choices"][0]["message"]["reasoning_content"] == "think"


@pytest.mark.parametrize(("reasoning", "said"), [
    ({"summary": [{"type": "summary_text", "text": ""}, {"type": "summary_text", "text": "A"}]}, "A"),
    ({"summary": [{"type": "summary_text", "text": ""}], "content": [{"type": "reasoning_text", "text": "raw"}]},
     "raw"),                                    # a summary of empty parts is none: the raw text stands
    ({"summary": [], "content": 7}, None),
])
def test_a_whole_answer_s_reasoning_is_its_summary_s_text_else_its_raw_text(reasoning, said):
    done = completion_from_response({"status": "completed", "output": [
        {"type": "reasoning", **reasoning},
        {"type": "message", "content": [{"type": "output_text", "text": "ok"}, {"type": "refusal", "refusal": 7}]}]},
        "m")
    message = done["choices"][0]["message"]
    assert (message.get("reasoning_content"), message["content"], message["refusal"]) == (said, "ok", None)


def test_a_stream_s_values_of_another_type_read_as_none():
    """A delta that is no text marks nothing as sent (the `.done` gives the text); an output index
    that is a list, content or a summary that is no list, a `response` that is no object: no exception."""
    chunks = run(sse(created(),
                     ("response.refusal.delta", {"item_id": "msg_1", "output_index": 0, "delta": 7}),
                     ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "delta": 7}),
                     ("response.output_item.done", {"output_index": 0, "item": {
                         "type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "Hi"}]}}),
                     ("response.output_item.done", {"output_index": [1], "item": {
                         "type": "message", "id": "msg_2", "content": 7}}),
                     ("response.output_item.done", {"output_index": 2, "item": {
                         "type": "reasoning", "id": "rs_1", "summary": 7,
                         "content": [{"type": "reasoning_text", "text": "raw"}]}}),
                     ("response.completed", {"response": 7})))
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hi"}, {"reasoning_content": "raw"},
                              {}, "[DONE]"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_the_upstream_s_own_total_tokens_is_kept():
    from ccswitch.translate.chat.responses_stream import response_usage
    assert response_usage({"input_tokens": 10, "output_tokens": 5, "total_tokens": 20})["total_tokens"] == 20


def test_allowed_tools_without_a_mode_is_the_client_s_400_not_an_error_of_ours():
    import pytest as _pytest

    from ccswitch.translate.chat.responses_request import build_request
    from ccswitch.wire.exchange import RenderError
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "allowed_tools",
                            "allowed_tools": {"tools": [{"type": "function", "function": {"name": "f"}}]}}}
    with _pytest.raises(RenderError):
        build_request(body, stream=False)
    body["tool_choice"]["allowed_tools"]["mode"] = "auto"
    assert build_request(body, stream=False)["tool_choice"]["mode"] == "auto"


def test_a_translated_error_keeps_what_says_when_and_whether_to_retry():
    # without x-should-retry: false the client's SDK retried an answer its upstream said not to
    from ccswitch.translate.chat.common import _json_headers
    assert _json_headers([("retry-after-ms", "1500"), ("x-other", "1"), ("X-Should-Retry", "false"),
                          ("anthropic-ratelimit-requests-remaining", "0"), ("content-length", "9")]) == [
        ("retry-after-ms", "1500"), ("X-Should-Retry", "false"), ("content-type", "application/json")]


@pytest.mark.parametrize("data", [{"response": {}}, {}, {"response": {"status": None, "incomplete_details": None}}],
                         ids=["empty-response", "no-response", "nulls"])
def test_a_bare_response_incomplete_still_finishes_as_length(data):
    """Its event alone says the answer was cut short, whatever the response object holds."""
    chunks = run(sse(created(), text_delta("Hi"), ("response.incomplete", data)))
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hi"}, {}, "[DONE]"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_text_deltas_that_name_no_item_are_not_sent_again_by_the_items_done():
    message = {"type": "message", "id": "msg_1", "role": "assistant",
               "content": [{"type": "output_text", "text": "Hello"}]}
    chunks = run(sse(created(), ("response.output_text.delta", {"delta": "Hel"}),
                     ("response.output_text.delta", {"content_index": 0, "delta": "lo"}),
                     ("response.output_item.done", {"output_index": 0, "item": message}), completed()))
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {},
                              "[DONE]"]


def test_reasoning_deltas_that_name_no_item_leave_a_message_sent_only_whole_its_text():
    message = {"type": "message", "id": "msg_1", "role": "assistant",
               "content": [{"type": "output_text", "text": "The answer."}]}
    chunks = run(sse(created(), ("response.reasoning_summary_text.delta", {"delta": "thinking"}),
                     ("response.output_item.done", {"output_index": 1, "item": message}), completed()))
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"reasoning_content": "thinking"},
                              {"content": "The answer."}, {}, "[DONE]"]


@pytest.mark.parametrize("keys", [{"item_id": "msg_1", "output_index": 0, "content_index": 0}, {}],
                         ids=["keyed", "unkeyed"])
def test_a_refusal_that_came_as_deltas_is_not_sent_again_by_the_items_done(keys):
    message = {"type": "message", "id": "msg_1", "role": "assistant",
               "content": [{"type": "refusal", "refusal": "I can't."}]}
    chunks = run(sse(created(), ("response.refusal.delta", {**keys, "delta": "I can't."}),
                     ("response.output_item.done", {"output_index": 0, "item": message}), completed()))
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"refusal": "I can't."}, {}, "[DONE]"]


def test_a_late_response_created_neither_opens_again_nor_renames_the_chunks_sent():
    chunks = run(sse(text_delta("Hi"), ("response.created", {"response": {"id": "resp_late", "model": "gpt-other",
                                                                          "status": "in_progress"}}),
                     text_delta(" there"), completed()))
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hi"}, {"content": " there"}, {},
                              "[DONE]"]
    assert len({(c["id"], c["model"]) for c in chunks[:-1]}) == 1 and chunks[0]["model"] == "gpt-x"


def test_an_aggregated_stream_keeps_the_url_citations_of_its_final_response():
    cite = {"type": "url_citation", "start_index": 0, "end_index": 4, "url": "https://example.com/a", "title": "A"}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "content": [
        {"type": "output_text", "text": "Intro. ", "annotations": []},
        {"type": "output_text", "text": "Fact here.", "annotations": [cite]}]}
    body = sse(created(), text_delta("Intro. "), text_delta("Fact here."),
               ("response.output_item.done", {"output_index": 0, "item": message}),
               ("response.completed", {"response": {"id": "resp_1", "status": "completed", "output": [message],
                                                    "usage": USAGE}}))
    status, out, _ = reply(body, up=CODEX)
    assert status == 200
    ChatCompletion.model_validate(out)
    got = out["choices"][0]["message"]
    assert got["content"] == "Intro. Fact here." and got["content"][7:11] == "Fact"
    assert got["annotations"] == [{"type": "url_citation", "url_citation": {
        "url": "https://example.com/a", "title": "A", "start_index": 7, "end_index": 11}}]


@pytest.mark.parametrize("given, named", [({"max_tokens": 0}, "max_tokens"),
                                          ({"max_completion_tokens": -1, "max_tokens": 5}, "max_completion_tokens")])
def test_a_bad_token_limit_is_named_as_the_client_wrote_it(given, named):
    with pytest.raises(RenderError, match=f"^{named} must be a positive integer$"):
        build_request({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}], **given}, stream=False)


def test_a_tool_the_conversion_cannot_carry_is_said_to_be_ccswitchs_limit_not_the_models():
    with pytest.raises(RenderError, match="'custom' cannot be sent to an OpenAI Responses upstream by ccswitch"):
        build_request({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}],
                       "tools": [{"type": "custom", "custom": {"name": "x"}}]}, stream=False)


def test_a_response_without_usage_is_null_usage_not_zero_tokens():
    # zero tokens would be a false count to a client that tracks its context or bill by it
    chunks = run(sse(created(), text_delta("Hi"), completed(usage=None)),
                 {"model": "gpt-x", "messages": HI, "stream": True, "stream_options": {"include_usage": True}})
    assert chunks[-1] == "[DONE]" and chunks[-2]["choices"] == [] and chunks[-2]["usage"] is None
    state = ChatCompletionStreamState()
    for chunk in chunks[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    assert state.get_final_completion().usage is None


def test_usage_counts_written_as_text_or_odd_values_do_not_break_the_conversion():
    from ccswitch.translate.chat.responses_stream import response_usage
    usage = response_usage({"input_tokens": "12.5", "output_tokens": "7", "input_tokens_details": None,
                            "output_tokens_details": {"reasoning_tokens": "x"}})
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (12, 7)
    assert not (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")


def tool_result_input(content: list[dict]) -> list:
    """The Responses input of a Chat conversation whose tool call `c` returned `content` parts."""
    body = {"model": "gpt-5", "messages": [
        {"role": "user", "content": "Go"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                              "function": {"name": "tool", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": content}]}
    return ChatToResponses().request(creq(body), API)["input"]


def test_a_tool_result_with_an_image_goes_as_the_output_list_a_responses_tool_output_takes():
    # refused before with "content part 'image_url' is not allowed here" (the Anthropic path took it)
    items = tool_result_input([{"type": "text", "text": "the screen:"},
                               {"type": "image_url", "image_url": {"url": "https://x.test/s.png"}}])
    assert items[-1] == {"type": "function_call_output", "call_id": "c", "output": [
        {"type": "input_text", "text": "the screen:"},
        {"type": "input_image", "image_url": "https://x.test/s.png", "detail": "auto"}]}
    from openai.types.responses.response_input_item_param import FunctionCallOutput
    from pydantic import TypeAdapter
    TypeAdapter(FunctionCallOutput).validate_python(items[-1])


def test_a_call_streamed_without_an_item_id_is_not_sent_again_from_a_final_list_that_moved_it():
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""}
    body = sse(created(),
               ("response.output_item.added", {"output_index": 1, "item": call}),
               ("response.function_call_arguments.delta", {"output_index": 1, "delta": '{"a":1}'}),
               # the final list leaves the reasoning item out: the call is at 0 there, with an id
               ("response.completed", {"response": {"id": "resp_1", "status": "completed", "output": [
                   {**call, "id": "fc1", "arguments": '{"a":1}'}], "usage": USAGE}}))
    calls = [piece for d in deltas(run(body)) if isinstance(d, dict) for piece in d.get("tool_calls") or ()]
    assert [c.get("id") for c in calls if "id" in c] == ["c1"]
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a":1}'


def test_usage_details_that_are_no_object_are_read_as_none():
    from ccswitch.translate.chat.responses_stream import response_usage
    usage = response_usage({"input_tokens": 5, "output_tokens": 2, "input_tokens_details": "n/a",
                            "output_tokens_details": [64]})
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (5, 2)
    assert not (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")


def test_a_tool_result_with_a_file_goes_as_the_output_list_too():
    items = tool_result_input([{"type": "text", "text": "the report:"},
                               {"type": "file", "file": {"file_id": "file-1"}}])
    assert items[-1] == {"type": "function_call_output", "call_id": "c", "output": [
        {"type": "input_text", "text": "the report:"}, {"type": "input_file", "file_id": "file-1"}]}


def _tool_calls_of(*events) -> list[dict]:
    return [piece for d in deltas(run(sse(created(), *events))) if isinstance(d, dict)
            for piece in d.get("tool_calls") or ()]


def test_a_call_streamed_with_an_item_id_only_is_known_by_it_in_a_final_list_that_moved_it():
    # its call_id came only with the final list, where the call sits elsewhere (no reasoning there)
    calls = _tool_calls_of(
        ("response.output_item.added", {"output_index": 1, "item": {"type": "function_call", "id": "fc1", "name": "f",
                                                                    "arguments": ""}}),
        ("response.function_call_arguments.delta", {"item_id": "fc1", "output_index": 1, "delta": '{"a":1}'}),
        ("response.completed", {"response": {"id": "resp_1", "status": "completed", "output": [
            {"type": "function_call", "id": "fc1", "call_id": "c1", "name": "f", "arguments": '{"a":1}'}],
            "usage": USAGE}}))
    assert len([c for c in calls if "id" in c]) == 1
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a":1}'


def test_a_call_streamed_without_any_id_is_known_by_its_place_in_the_final_list():
    calls = _tool_calls_of(
        ("response.output_item.added", {"output_index": 0, "item": {"type": "function_call", "name": "f",
                                                                    "arguments": ""}}),
        ("response.function_call_arguments.delta", {"output_index": 0, "delta": '{"a":1}'}),
        ("response.completed", {"response": {"id": "resp_1", "status": "completed", "output": [
            {"type": "function_call", "id": "fc1", "call_id": "c1", "name": "f", "arguments": '{"a":1}'}],
            "usage": USAGE}}))
    assert len([c for c in calls if "id" in c]) == 1
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a":1}'



SEAL = "gAAAAABowfKlQ3xR7Q3xR7Q3xR7Q3xR7Q3xR7Q3xR7=="
CARRIED = {"type": "reasoning", "encrypted_content": SEAL, "summary": [
    {"type": "summary_text", "text": "**Planning lookups**\n\nThe user wants Paris, Tōkyō."},
    {"type": "summary_text", "text": "**Calling tools** – both at once 🌤"}]}


def next_turn_input(message: dict, effort: str | None = "medium") -> list:
    """The upstream input of the turn after `message`: it, then each call's result, as SDK users send them."""
    results = [{"role": "tool", "tool_call_id": call["id"], "content": "ok"} for call in message["tool_calls"]]
    return convert(messages=HI + [message] + results, tools=[WEATHER, TIME], reasoning_effort=effort)["input"]


def test_every_sealed_item_reaches_a_node_client_s_message():
    """openai-node sets a delta's unknown field on its message: items sent one a delta left it only the last."""
    def sealed(n):
        return ("response.output_item.done", {"output_index": n, "item": {
            "type": "reasoning", "id": f"rs_{n}", "summary": [], "encrypted_content": f"seal-{n}"}})
    chunks = run(sse(created(), sealed(0), text_delta("Hi"), sealed(2), completed()),
                 {"model": "gpt-5", "messages": HI, "stream": True, "reasoning_effort": "medium"})
    items = node_message([c for c in chunks if isinstance(c, dict)])["reasoning_items"]
    assert [(item["index"], item["encrypted_content"]) for item in items] == [(0, "seal-0"), (1, "seal-2")]


def test_seals_only_the_terminal_response_lists_reach_the_client_once():
    """A relay that sends the answer only in its terminal response: its seals come as a whole body's
    would, and a seal both a `.done` and the terminal response gave comes once."""
    item = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "seal-1"}
    done = ("response.completed", {"response": {"status": "completed", "output": [
        item, {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}]}})
    asked = {"model": "gpt-5", "messages": HI, "stream": True, "reasoning_effort": "medium"}
    items = node_message([c for c in run(sse(created(), done), asked) if isinstance(c, dict)])["reasoning_items"]
    assert [i["encrypted_content"] for i in items] == ["seal-1"]
    both = sse(created(), ("response.output_item.done", {"output_index": 0, "item": item}), done)
    items = node_message([c for c in run(both, asked) if isinstance(c, dict)])["reasoning_items"]
    assert [i["encrypted_content"] for i in items] == ["seal-1"]


def test_a_terminal_event_whose_data_is_no_object_is_an_error_not_an_exception():
    cut = sse(created(), text_delta("Hi")) + b"event: response.completed\ndata: [1]\n\n"
    with pytest.raises(UpstreamFailed):
        aggregate(cut, "gpt-5")


def test_sealed_reasoning_streamed_goes_back_with_the_message_the_sdk_assembled():
    """The model goes on from its own reasoning after its tool calls (Chat has no field for it:
    `reasoning_items`, as `thinking_blocks` for Claude), placed where it stood in the output."""
    chunks = run(RECORDED, {"model": "gpt-5", "messages": HI, "stream": True, "tools": [WEATHER, TIME],
                            "reasoning_effort": "medium"})
    state = ChatCompletionStreamState()
    for chunk in chunks[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    message = state.get_final_completion().choices[0].message.model_dump(exclude_none=True)   # `messages.append(message)`
    assert [{k: v for k, v in item.items() if k != "index"} for item in message["reasoning_items"]] == [CARRIED]
    sent = next_turn_input(message)
    assert [item["role"] if item["type"] == "message" else item["type"] for item in sent] == [
        "user", "reasoning", "assistant", "function_call", "function_call", "function_call_output", "function_call_output"]
    assert sent[1] == {"type": "reasoning", "summary": CARRIED["summary"], "encrypted_content": SEAL}   # no id, no index
    # a turn that asks for no reasoning sends none back (a model that does not reason refuses it),
    # and a stream that asked for none carries none
    assert [item["type"] for item in next_turn_input(message, None)].count("reasoning") == 0
    assert not any("reasoning_items" in str(chunk) for chunk in run(RECORDED, {"model": "gpt-5", "messages": HI,
                                                                               "stream": True}))


def test_sealed_reasoning_of_a_whole_answer_goes_back_with_its_message():
    final = next(e.json()["response"] for e in parse(RECORDED) if e.type == "response.completed")
    message = completion_from_response(final, "gpt-5", sealed=True)["choices"][0]["message"]
    assert "reasoning_items" not in completion_from_response(final, "gpt-5")["choices"][0]["message"]
    assert message["reasoning_items"] == [{"type": "reasoning", "summary": CARRIED["summary"], "encrypted_content": SEAL}]
    assert next_turn_input(message)[1] == message["reasoning_items"][0]
    # a stream-only upstream's answer folded into one whole (the terminal event listing no output)
    folded = RECORDED.replace(b'"output":[{"id":"rs_', b'"output":[],"was":[{"id":"rs_')
    assert aggregate(folded, "gpt-5", sealed=True)["choices"][0]["message"]["reasoning_items"] == message["reasoning_items"]
    # reasoning without a seal (effort none, or not asked for) gives none to carry
    unsealed = {**final, "output": [{k: v for k, v in final["output"][0].items() if k != "encrypted_content"}]}
    assert "reasoning_items" not in completion_from_response(unsealed, "gpt-5", sealed=True)["choices"][0]["message"]


@pytest.mark.parametrize(("model", "effort", "back"), [
    ("gpt-5", "none", False),                # effort none: no reasoning asked, none sent back
    ("gpt-5-thinking", "none", False),       # an explicit none wins over the suffix
    ("gpt-5-thinking", None, True),          # the suffix alone asks for it
    ("gpt-5", "low", True),
])
def test_sealed_reasoning_goes_back_only_when_the_turn_asks_for_reasoning(model, effort, back):
    message = {"role": "assistant", "content": "Checked.", "reasoning_items": [CARRIED]}
    body = convert(model=model, messages=HI + [message, {"role": "user", "content": "go on"}],
                   **({"reasoning_effort": effort} if effort else {}))
    assert [item["type"] for item in body["input"]].count("reasoning") == (1 if back else 0)


def test_a_refusal_in_both_the_parts_and_the_field_goes_once():
    """The SDK's message carries the refusal in `refusal`; a client echoing it in the parts too sends it twice."""
    body = convert(messages=HI + [
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}], "refusal": "No."},
        {"role": "user", "content": "go on"}])
    assert body["input"][1]["content"] == [{"type": "refusal", "refusal": "No."}]


def test_a_whole_answer_carries_sealed_reasoning_only_for_a_request_that_asked_for_it():
    """The converter's own wiring: JSON and SSE (Codex) answers, reasoning asked for or not."""
    final = next(e.json()["response"] for e in parse(RECORDED) if e.type == "response.completed")
    asked = {"model": "gpt-5", "messages": HI, "reasoning_effort": "medium"}
    plain = {"model": "gpt-5", "messages": HI}
    for up, answer in ((API, json.dumps(final).encode()), (CODEX, RECORDED)):
        assert "reasoning_items" in reply(answer, asked, up)[1]["choices"][0]["message"]
        assert "reasoning_items" not in reply(answer, plain, up)[1]["choices"][0]["message"]


def test_two_sealed_reasoning_items_streamed_stay_two_in_the_sdk_s_message():
    """Each seal has its own index: at one index the SDK would run the two into one."""
    def done(i, seal):
        return ("response.output_item.done", {"output_index": i, "item": {
            "type": "reasoning", "id": f"rs_{i}", "summary": [], "encrypted_content": seal}})
    chunks = run(sse(created(), done(0, "SEAL-A"), done(1, "SEAL-B"), text_delta("ok"), completed()),
                 {"model": "gpt-5", "messages": HI, "stream": True, "reasoning_effort": "low"})
    state = ChatCompletionStreamState()
    for chunk in chunks[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    message = state.get_final_completion().choices[0].message.model_dump(exclude_none=True)
    assert [item["encrypted_content"] for item in message["reasoning_items"]] == ["SEAL-A", "SEAL-B"]


def test_a_function_call_item_added_twice_is_one_call():
    # a relay repeating `output_item.added`: a second call at index 1, the first left with "" arguments
    added = ("response.output_item.added", {"output_index": 0, "item": {"type": "function_call", "id": "fc_1",
                                                                         "call_id": "c1", "name": "f"}})
    args = ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 0, "delta": "{}"})
    got = fold(deltas(run(sse(created(), added, added, args, completed())))[:-1])
    assert [(c["id"], c["function"]["arguments"]) for c in got["tool_calls"]] == [("c1", "{}")]
