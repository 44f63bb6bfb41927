"""Chat Completions request -> Anthropic Messages request.

Pure: the same client body, upstream and rules always give the same Anthropic body.
Anything that cannot be expressed raises `RenderError` (the client gets a 400).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from ccswitch.translate.chat.common import refuse_alike
from ccswitch.translate.chat.models import (
    adaptive_thinking,
    default_max_tokens,
    extended_thinking,
    json_tool_mode,
    one_sampling_knob,
    split_model,
)
from ccswitch.wire.exchange import ClientRequest, RenderError, array_at, client_json, function_name, object_at

log = logging.getLogger("ccswitch.convert")

JSON_TOOL = "json_tool_call"      # forced tool carrying response_format on older models
NOOP_TOOL = "ccswitch_noop"       # stands in when history has tool turns but the client sent no tools
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.DOTALL)
_ID_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_EMAIL_OR_PHONE = re.compile(r"@|^\+?[\d\s().-]{7,}$")
_BUDGET = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}
_ADAPTIVE_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high",
                    "xhigh": "xhigh", "max": "max"}
_THINKING_TYPES = ("thinking", "redacted_thinking")
_NOTHING_TO_SAY = "messages must contain at least one non-empty user or assistant message"
_EMPTY_TURN = "..."     # what stands for a user message left empty (Anthropic refuses empty text)



# ----------------------------------------------------------------------------- content

def _with_cache(block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise RenderError(f"{where}: image_url.url is required")
    if url.startswith("data:"):
        m = _DATA_URL.match(url)
        if not m or ";base64" not in m["params"]:
            raise RenderError(f"{where}: an image data URL must be base64 encoded")
        mime = m["mime"].lower().replace("image/jpg", "image/jpeg")
        if mime not in _IMAGE_TYPES:
            raise RenderError(f"{where}: image media type {mime or '(none)'!r} is not supported "
                              "(use image/jpeg, image/png, image/gif or image/webp)")
        return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": m["data"]}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise RenderError(f"{where}: image_url must be an http(s) URL or a base64 data URL")


def _document(part: dict[str, Any], where: str) -> dict[str, Any]:
    file = part.get("file") if isinstance(part.get("file"), dict) else {}
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        raise RenderError(f"{where}: only inline file_data (a base64 PDF) can be sent to an Anthropic upstream")
    if data.startswith("data:"):
        m = _DATA_URL.match(data)
        if not m or m["mime"].lower() != "application/pdf" or ";base64" not in m["params"]:
            raise RenderError(f"{where}: file_data must be a base64 application/pdf data URL")
        data = m["data"]
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}}


def content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """Chat content (string or parts) as Anthropic blocks; empty text is dropped."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    if not isinstance(content, list):
        raise RenderError(f"{where}: content must be a string or an array of content parts")
    out: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        here = f"{where}.content[{i}]"
        if kind == "text":
            text = part.get("text")
            if isinstance(text, str) and text.strip():
                out.append(_with_cache({"type": "text", "text": text}, part))
        elif kind == "image_url":
            out.append(_with_cache(_image(part, here), part))
        elif kind == "file":
            out.append(_with_cache(_document(part, here), part))
        elif kind in ("input_audio", "refusal"):
            log.warning("ccswitch: %s: dropped a %s part (no Anthropic equivalent)", here, kind)
        else:
            raise RenderError(f"{here}: unsupported content part type {kind!r}")
    return out


def _json_format(fmt: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A response_format's schema and what to tell the model about it (json_object: any object)."""
    if fmt.get("type") == "json_object":
        return {"type": "object"}, "Respond with a JSON object."
    spec = object_at(fmt.get("json_schema"), "response_format.json_schema")
    schema = object_at(spec.get("schema"), "response_format.json_schema.schema") or {"type": "object"}
    return schema, spec.get("description") or "Respond with a JSON object matching this schema."


def _has_audio(content: Any) -> bool:
    return isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "input_audio" for p in content)


def tool_id(value: Any, where: str) -> str:
    """A tool-call id Anthropic accepts; foreign ids are rewritten the same way everywhere."""
    if not isinstance(value, str) or not value:
        raise RenderError(f"{where}: a tool call id is required")
    if _ID_OK.match(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]   # JSON allows a lone one
    return re.sub(r"[^A-Za-z0-9_-]", "_", value) + "_" + digest


def _arguments(text: Any) -> dict[str, Any]:
    """Tool arguments as an object; "" is {} and anything unparseable is kept as {"_raw": text}."""
    if isinstance(text, dict):
        return text
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    try:
        value = client_json(text)     # no NaN or Infinity: no API would read them back
    except (TypeError, ValueError):
        value = None
    return value if isinstance(value, dict) else {"_raw": text if isinstance(text, str) else json.dumps(text)}


def _thinking_replay(msg: dict[str, Any], where: str) -> list[dict[str, Any]]:
    out = []
    for block in array_at(msg.get("thinking_blocks"), f"{where}.thinking_blocks"):
        if isinstance(block, dict) and block.get("type") == "thinking" and block.get("signature"):
            out.append({"type": "thinking", "thinking": block.get("thinking") or "",
                        "signature": block["signature"]})
        elif isinstance(block, dict) and block.get("type") == "redacted_thinking" and block.get("data"):
            out.append({"type": "redacted_thinking", "data": block["data"]})
    return out


def _assistant(msg: dict[str, Any], where: str) -> list[dict[str, Any]]:
    # a refusal the model gave stays in the conversation as its text: Claude has no refusal part,
    # and without it the turn would vanish (or two user turns merge) and the model forget it refused
    content = msg.get("content")
    if isinstance(content, list):
        content = [{"type": "text", "text": part.get("refusal")}
                   if isinstance(part, dict) and part.get("type") == "refusal" else part for part in content]
    blocks = _thinking_replay(msg, where) + content_blocks(content, where)
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal.strip() and not any(b.get("text") == refusal for b in blocks):
        blocks.append({"type": "text", "text": refusal})
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise RenderError(f"{where}: tool_calls must be an array")
    for j, call in enumerate(calls):
        here = f"{where}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or call.get("type", "function") != "function" \
                or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RenderError(f"{here}: only function tool calls with a name can be sent to an Anthropic upstream")
        blocks.append({"type": "tool_use", "id": tool_id(call.get("id"), here), "name": fn["name"],
                       "input": _arguments(fn.get("arguments"))})
    return blocks


def _tool_result(msg: dict[str, Any], where: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id(msg.get("tool_call_id"), where)}
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        parts = content_blocks(content, where)
        if parts:
            block["content"] = parts
    return block


def _merge(turns: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Drop empty turns, merge same-role neighbours, put tool results first in a user turn."""
    merged: list[dict[str, Any]] = []
    for role, blocks in turns:
        if not blocks:
            continue
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"].extend(blocks)
        else:
            merged.append({"role": role, "content": list(blocks)})
    for turn in merged:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")  # stable
    return merged


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _check_tool_pairs(turns: list[dict[str, Any]], messages: list[Any]) -> None:
    """Every tool_use is answered in the next turn, every tool_result answers the previous one.
    An error names the ids as the client sent them, not as `tool_id` rewrote them."""
    def said(ids: list[str]) -> str:     # only for an error: no cost to a request that has none
        sent = {tool_id(x, ""): x for msg in messages if isinstance(msg, dict)
                for x in [msg.get("tool_call_id"), *[c.get("id") for c in _listed(msg.get("tool_calls"))
                                                     if isinstance(c, dict)]]
                if isinstance(x, str) and x}
        return ", ".join(sent.get(x, x) for x in ids)

    asked: list[str] = []
    for turn in turns:
        ids = [b["tool_use_id"] if turn["role"] == "user" else b["id"] for b in turn["content"]
               if b["type"] == ("tool_result" if turn["role"] == "user" else "tool_use")]
        if turn["role"] == "user":
            unknown = [x for x in ids if x not in asked]
            missing = [x for x in asked if x not in ids]
            if unknown:
                raise RenderError(f"messages with role 'tool' must answer a preceding assistant message "
                                  f"with 'tool_calls' (unknown tool_call_id: {said(unknown)})")
        else:
            missing = asked
        if missing:
            raise RenderError("an assistant message with 'tool_calls' must be followed by tool messages "
                              f"responding to each 'tool_call_id' (missing: {said(missing)})")
        asked = ids if turn["role"] == "assistant" else []
    if asked:
        raise RenderError("an assistant message with 'tool_calls' must be followed by tool messages "
                          f"responding to each 'tool_call_id' (missing: {said(asked)})")


# ----------------------------------------------------------------------------- tools

def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise RenderError("tools must be an array")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise RenderError(f"tools[{i}]: only function tools can be sent to an Anthropic upstream "
                              f"(got {kind!r})")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RenderError(f"tools[{i}]: function.name is required")
        schema = fn.get("parameters")
        if not isinstance(schema, dict) or not schema:
            schema = {"type": "object", "properties": {}}
        elif "type" not in schema:
            schema = {"type": "object", **schema}
        converted = {"name": fn["name"]}
        if fn.get("description"):
            converted["description"] = fn["description"]
        converted["input_schema"] = schema
        out.append(_with_cache(converted, tool))
    return out


def _tool_choice(body: dict[str, Any], tools: list[dict[str, Any]]) -> tuple[dict | None, list]:
    """(Anthropic tool_choice or None, tools possibly filtered by allowed_tools), as OpenAI's tool_choice maps onto Anthropic's."""
    choice = body.get("tool_choice")
    names = {t["name"] for t in tools}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = object_at(choice.get("allowed_tools"), "tool_choice.allowed_tools")
        keep = {function_name(t) for t in array_at(allowed.get("tools"), "tool_choice.allowed_tools.tools")}
        tools = [t for t in tools if t["name"] in keep]
        choice = "required" if allowed.get("mode") == "required" else "auto"
    if choice is None:
        out = {"type": "auto"} if tools else None
    elif choice in ("auto", "none", "required"):
        out = {"type": {"auto": "auto", "none": "none", "required": "any"}[choice]}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = function_name(choice)
        if name not in names:
            raise RenderError(f"tool_choice names the function {name!r}, which is not in tools")
        out = {"type": "tool", "name": name}
    else:
        raise RenderError(f"tool_choice {choice!r} cannot be sent to an Anthropic upstream")
    if not tools:
        if out is not None and out["type"] in ("any", "tool"):
            raise RenderError("tool_choice requires tools")
        return None, tools
    if body.get("parallel_tool_calls") is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        out = None  # Anthropic's default is auto
    return out, tools


def _json_tool_choice(choice: dict | None, tools: list) -> tuple[dict | None, bool]:
    """(tool_choice, whether the JSON tool is offered) for response_format sent as `JSON_TOOL`.
    OpenAI's JSON mode shapes the text answer and leaves the client's tools callable: a choice
    that forces one of them stands (its call is the answer, no JSON tool beside it to answer
    with instead); with tools the model may call, it calls one tool, one of theirs or the JSON
    tool (`any`, one call: an answer written beside calls whose results it has not seen would
    be no answer); without, the JSON tool is forced."""
    if choice is not None and choice["type"] in ("any", "tool"):
        return choice, False
    if tools and (choice is None or choice["type"] == "auto"):
        return {"type": "any", "disable_parallel_tool_use": True}, True
    # one answer: two calls of it would be two JSON texts run together
    return {"type": "tool", "name": JSON_TOOL, "disable_parallel_tool_use": True}, True


# ----------------------------------------------------------------------------- the body

def _positive_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RenderError(f"{key} must be a positive integer")
    return value


def build(body: dict[str, Any], req: ClientRequest, upstream, rules) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RenderError("messages must be a non-empty array")
    if body.get("n") not in (None, 1):
        raise RenderError("n must be 1: an Anthropic upstream returns a single choice")
    refuse_alike(body)
    model, suffixed = split_model(str(body.get("model") or req.model or ""))
    target = upstream.map_model(model)

    system: list[dict[str, Any]] = []
    raw_turns: list[tuple[str, list[dict[str, Any]]]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RenderError(f"{where} must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            system += [b for b in content_blocks(msg.get("content"), where) if b["type"] == "text"]
        elif role == "user":
            raw_turns.append(("user", content_blocks(msg.get("content"), where)))
        elif role == "assistant":
            raw_turns.append(("assistant", _assistant(msg, where)))
        elif role == "tool":
            raw_turns.append(("user", [_tool_result(msg, where)]))
        else:
            raise RenderError(f"{where}: role {role!r} cannot be sent to an Anthropic upstream")
    turns = _merge(raw_turns)
    if turns and turns[-1]["role"] == "assistant" and raw_turns[-1][0] == "user":
        # the client's last word was empty once converted (whitespace, audio): without a user
        # turn of its own the assistant's would become a prefill for Claude to go on with
        turns.append({"role": "user", "content": [{"type": "text", "text": _EMPTY_TURN}]})
    if not turns:
        if any(_has_audio(msg.get("content")) for msg in messages):
            raise RenderError(f"audio input is not supported by an Anthropic upstream, and {_NOTHING_TO_SAY} "
                              "besides it")
        raise RenderError(_NOTHING_TO_SAY)
    _check_tool_pairs(turns, messages)

    out: dict[str, Any] = {"model": model}
    limit = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    out["max_tokens"] = limit or default_max_tokens(target, rules)

    tools = _tools(body)
    choice, tools = _tool_choice(body, tools)
    output_config: dict[str, Any] = {}
    fmt = body.get("response_format")
    if json_tool_mode(body, target):
        schema, about = _json_format(fmt)
        choice, with_json_tool = _json_tool_choice(choice, tools)
        if with_json_tool:
            tools = tools + [{"name": JSON_TOOL, "description": about, "input_schema": schema}]
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        output_config["format"] = {"type": "json_schema", "schema": _json_format(fmt)[0]}
    if not tools and any(b["type"] in ("tool_use", "tool_result") for t in turns for b in t["content"]):
        tools = [{"name": NOOP_TOOL, "description": "Placeholder; never call it.",
                  "input_schema": {"type": "object", "properties": {}}}]
        choice = {"type": "none"}

    # ---- thinking
    effort = body.get("reasoning_effort")
    if effort is None and suffixed:
        effort = "high"
    thinking = None
    if effort not in (None, "none"):
        last = next((t for t in reversed(turns) if t["role"] == "assistant"), None)
        if not extended_thinking(target):
            # OpenAI clients send reasoning_effort to any model; Claude before 3.7 refuses `thinking`
            log.info("ccswitch: thinking dropped: the model is a Claude before 3.7, which has no extended thinking")
        elif choice is not None and choice["type"] in ("any", "tool"):
            log.info("ccswitch: thinking dropped: %s", "response_format travels as a forced tool, which Claude "
                     "cannot think before" if choice.get("name") == JSON_TOOL else "tool_choice forces a tool")
        elif turns[-1]["role"] == "assistant":
            log.info("ccswitch: thinking dropped: the request ends with an assistant prefill")
        elif last and any(b["type"] == "tool_use" for b in last["content"]) \
                and last["content"][0]["type"] not in _THINKING_TYPES:
            log.info("ccswitch: thinking dropped: the last assistant tool call carries no thinking_blocks")
        elif adaptive_thinking(target):
            thinking = {"type": "adaptive"}
            output_config["effort"] = _ADAPTIVE_EFFORT[effort]
            out["max_tokens"] = limit or default_max_tokens(target, rules, _BUDGET[effort])
        else:
            budget = min(_BUDGET[effort], limit - 1) if limit else _BUDGET[effort]
            if budget >= 1024:
                thinking = {"type": "enabled", "budget_tokens": budget}
                out["max_tokens"] = limit or default_max_tokens(target, rules, budget)
            else:
                log.info("ccswitch: thinking dropped: max_tokens %s leaves no 1024-token budget", limit)
    if thinking is None:  # never send thinking blocks when thinking is off
        turns = _merge([(t["role"], [b for b in t["content"] if b["type"] not in _THINKING_TYPES])
                        for t in turns])
    if turns and turns[-1]["role"] == "assistant":  # prefill must not end with whitespace
        blocks = turns[-1]["content"]
        if blocks[-1]["type"] == "text":
            blocks[-1] = {**blocks[-1], "text": blocks[-1]["text"].rstrip()}
            if not blocks[-1]["text"]:
                blocks.pop()
        if not blocks:
            turns.pop()
    if not turns:   # the prefill was only whitespace
        raise RenderError(_NOTHING_TO_SAY)

    if system:
        out["system"] = system
    out["messages"] = turns
    if tools:
        out["tools"] = tools
    if choice is not None:
        out["tool_choice"] = choice
    if thinking is not None:
        out["thinking"] = thinking
    if output_config:
        out["output_config"] = output_config
    _sampling(body, out, thinking is not None, target)
    out["stream"] = bool(req.stream)
    return out


def _sampling(body: dict[str, Any], out: dict[str, Any], thinking: bool, model: str) -> None:
    temperature, top_p, top_k = body.get("temperature"), body.get("top_p"), body.get("top_k")
    if isinstance(temperature, (int, float)) and not thinking:
        out["temperature"] = min(temperature, 1)
    if isinstance(top_p, (int, float)) and (not thinking or 0.95 <= top_p <= 1):
        if "temperature" in out and one_sampling_knob(model):
            # they answer both with a 400, and OpenAI clients often send both
            log.info("ccswitch: top_p dropped: temperature is set, and %s takes only one of them", repr(model))
        else:
            out["top_p"] = top_p
    if isinstance(top_k, int) and not thinking:
        out["top_k"] = top_k
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str) and s.strip()]
    if stops:
        out["stop_sequences"] = stops
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user and not _EMAIL_OR_PHONE.search(user):
        out["metadata"] = {"user_id": user}
