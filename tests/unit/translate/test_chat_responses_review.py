"""Chat Completions client <-> OpenAI Responses upstream: what a review against the SDK types
found (failure codes that are the request's fault, the upstream's `param`, streamed logprobs in
Chat's shape, an answer only in the terminal response, object arguments, file parts)."""

import json

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from ccswitch.translate.chat.responses_stream import fold
from ccswitch.wire.exchange import RenderError
from ccswitch.wire.protocols import in_stream_status
from tests.unit.translate.test_chat_responses import HI, completed, convert, created, reply, run, sse, text_delta


def folded(chunks):
    return fold([c["choices"][0]["delta"] for c in chunks if c != "[DONE]" and c.get("choices")])


@pytest.mark.parametrize("code, status, kind", [
    ("invalid_prompt", 400, "invalid_request_error"),
    ("invalid_image_url", 400, "invalid_request_error"),
    ("bio_policy", 400, "invalid_request_error"),
    ("context_length_exceeded", 400, "invalid_request_error"),
    ("rate_limit_exceeded", 429, "rate_limit_exceeded"),
    ("server_error", 500, "server_error"),
    ("vector_store_timeout", 500, "vector_store_timeout"),
])
def test_a_failed_response_the_request_is_at_fault_for_is_a_400_not_a_server_error(code, status, kind):
    failed = {"status": "failed", "output": [], "error": {"code": code, "message": "no"}}
    got, body, _ = reply(json.dumps(failed).encode())
    assert (got, body["error"]["type"], body["error"]["code"]) == (status, kind, code)
    # the dialer judges a stream's failure event the same way: a 400 is not failed over
    assert in_stream_status({"type": "response.failed", "response": failed}) == status


def sdk_failure_codes() -> list[str]:
    import typing

    from openai.types.responses import ResponseError
    return list(typing.get_args(ResponseError.model_fields["code"].annotation))


@pytest.mark.parametrize("code", [c for c in sdk_failure_codes()
                                  if c not in ("server_error", "rate_limit_exceeded", "vector_store_timeout")])
def test_every_failure_code_of_the_sdk_that_is_the_requests_fault_is_a_400(code):
    failed = {"status": "failed", "output": [], "error": {"code": code, "message": "no"}}
    got, body, _ = reply(json.dumps(failed).encode())
    assert (got, body["error"]["type"]) == (400, "invalid_request_error")
    assert in_stream_status({"type": "response.failed", "response": failed}) == 400


def test_a_failure_that_names_its_own_type_keeps_it_whatever_its_code():
    failed = {"status": "failed", "output": [], "error": {"type": "server_error", "code": "invalid_prompt",
                                                          "message": "no"}}
    got, body, _ = reply(json.dumps(failed).encode())
    assert (got, body["error"]["type"], body["error"]["code"]) == (500, "server_error", "invalid_prompt")


def test_a_streamed_failure_keeps_the_upstreams_param():
    event = ("error", {"code": "context_length_exceeded", "message": "too long", "param": "input",
                       "error": {"type": "invalid_request_error", "code": "context_length_exceeded",
                                 "message": "too long", "param": "input"}})
    chunks = run(sse(created(), event))
    assert chunks[-1] == {"error": {"message": "too long", "type": "invalid_request_error", "param": "input",
                                    "code": "context_length_exceeded"}}
    failed = {"status": "failed", "error": {"code": "invalid_prompt", "message": "no", "param": "input"}}
    assert reply(json.dumps(failed).encode())[1]["error"]["param"] == "input"


def test_streamed_logprobs_without_bytes_or_top_logprobs_are_chat_tokens_the_sdk_accepts():
    asked = {"model": "gpt-x", "messages": HI, "logprobs": True, "stream": True}
    delta = (text_delta("Hi")[0], {**text_delta("Hi")[1], "logprobs": [{"token": "Hi", "logprob": -0.1}]})
    chunks = run(sse(created(), delta, completed()), asked)
    state = ChatCompletionStreamState()
    for chunk in chunks[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    [token] = state.get_final_completion().choices[0].logprobs.content
    assert (token.token, token.logprob, token.bytes, token.top_logprobs) == ("Hi", -0.1, None, [])


def test_a_streamed_token_without_its_logprob_still_validates_as_a_chat_token():
    asked = {"model": "gpt-x", "messages": HI, "logprobs": True, "stream": True}
    delta = (text_delta("Hi")[0], {**text_delta("Hi")[1], "logprobs": [{"token": "Hi"}]})
    chunks = run(sse(created(), delta, completed()), asked)
    state = ChatCompletionStreamState()
    for chunk in chunks[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    [token] = state.get_final_completion().choices[0].logprobs.content
    assert (token.token, token.logprob) == ("Hi", 0.0)


def test_an_answer_only_in_the_terminal_response_is_streamed_as_the_whole_body_gives_it():
    output = [{"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]},
              {"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "hello"}]},
              {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_time", "arguments": '{"tz":"UTC"}'}]
    terminal = ("response.completed", {"response": {"status": "completed", "output": output}})
    chunks = run(sse(created(), terminal))
    got = folded(chunks)
    assert (got["text"], got["reasoning"]) == ("hello", "think")
    assert [(c["id"], c["function"]) for c in got["tool_calls"]] == [("call_1", {"name": "get_time",
                                                                                 "arguments": '{"tz":"UTC"}'})]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    whole = reply(json.dumps({"status": "completed", "output": output}).encode())[1]["choices"][0]["message"]
    assert (whole["content"], whole["reasoning_content"]) == ("hello", "think")


def test_an_answer_only_in_a_terminal_response_with_nothing_before_it_starts_with_the_role():
    output = [{"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "hello"}]}]
    chunks = run(sse(("response.completed", {"response": {"status": "completed", "output": output}})))
    deltas = [c["choices"][0]["delta"] for c in chunks if c != "[DONE]" and c.get("choices")]
    assert deltas[0] == {"role": "assistant", "content": ""} and folded(chunks)["text"] == "hello"


def test_what_came_as_events_is_not_sent_again_by_the_terminal_response():
    message = {"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "hello"}]}
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"}
    events = [created(), text_delta("hel"), text_delta("lo"),
              ("response.output_item.added", {"output_index": 1, "item": {**call, "arguments": ""}}),
              ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 1, "delta": "{}"}),
              ("response.output_item.done", {"output_index": 2, "item": {**message, "id": "msg_2"}}),
              ("response.completed", {"response": {"status": "completed",
                                                   "output": [message, call, {**message, "id": "msg_2"}]}})]
    got = folded(run(sse(*events)))
    assert got["text"] == "hellohello" and len(got["tool_calls"]) == 1
    assert got["tool_calls"][0]["function"]["arguments"] == "{}"


def test_a_reasoning_item_sent_only_whole_shows_its_summary_streamed_as_whole():
    item = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "SUMMARY"}],
            "content": [{"type": "reasoning_text", "text": "RAW"}]}
    chunks = run(sse(created(), ("response.output_item.done", {"output_index": 0, "item": item}), completed()))
    assert folded(chunks)["reasoning"] == "SUMMARY"
    whole = reply(json.dumps({"status": "completed", "output": [item]}).encode())[1]
    assert whole["choices"][0]["message"]["reasoning_content"] == "SUMMARY"


def test_past_call_arguments_sent_as_an_object_are_kept_as_json_text():
    history = HI + [{"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Zürich"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    items = convert(messages=history)["input"]
    [call] = [item for item in items if item["type"] == "function_call"]
    assert json.loads(call["arguments"]) == {"city": "Zürich"} and "Zürich" in call["arguments"]


def test_past_call_arguments_sent_as_an_array_are_kept_as_json_text():
    history = HI + [{"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "add", "arguments": [1, 2]}}]}, {"role": "tool", "tool_call_id": "call_1", "content": "3"}]
    [call] = [item for item in convert(messages=history)["input"] if item["type"] == "function_call"]
    assert json.loads(call["arguments"]) == [1, 2]


def test_a_file_part_with_only_a_filename_is_refused():
    part = {"type": "file", "file": {"filename": "a.pdf"}}
    with pytest.raises(RenderError, match="needs file_data or file_id"):
        convert(messages=[{"role": "user", "content": [part]}])
    ok = convert(messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}])
    assert ok["input"][0]["content"] == [{"type": "input_file", "file_id": "file-1"}]


def test_prompt_cache_and_moderation_settings_reach_the_responses_api():
    options = {"prompt_cache_retention": "24h", "prompt_cache_options": {"ttl": "1h"},
               "moderation": {"input": {"policy": "strict"}}}
    out = convert(**options)
    assert {key: out.get(key) for key in options} == options
