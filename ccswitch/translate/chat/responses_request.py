"""Chat Completions request -> OpenAI Responses request.

Pure functions over dicts.  A request that cannot be expressed raises
`RenderError` (the client gets a 400 in the OpenAI format).
"""

from __future__ import annotations

import json
from typing import Any

from ccswitch.translate.chat.common import refuse_alike
from ccswitch.translate.chat.models import split_model
from ccswitch.wire.exchange import RenderError, array_at, function_name, object_at
from ccswitch.wire.reasoning import REASONING_ITEMS, carried_reasoning

#: what the ChatGPT Codex backend accepts (openai/codex `ResponsesApiRequest`); it answers
#: 400 "Unsupported parameter" to anything else (temperature, max_output_tokens, metadata…)
CODEX_FIELDS = frozenset({"model", "instructions", "input", "tools", "tool_choice", "parallel_tool_calls",
                          "reasoning", "store", "stream", "include", "prompt_cache_key", "text"})
ENCRYPTED_REASONING = "reasoning.encrypted_content"
_EMPTY_SCHEMA = {"type": "object", "properties": {}}


def is_codex_backend(upstream) -> bool:
    """The ChatGPT Codex backend (`…/backend-api/codex`): stream-only, store=false, strict fields."""
    return str(getattr(upstream, "base_url", "") or "").rstrip("/").endswith("/backend-api/codex")


def _effort(body: dict[str, Any]) -> Any:
    """The reasoning effort asked for: `reasoning_effort`, else `high` for a `-thinking` model."""
    effort = body.get("reasoning_effort")
    return "high" if effort is None and split_model(body.get("model"))[1] else effort


def reasoning_asked(body: dict[str, Any]) -> bool:
    """The request asks for reasoning (an effort other than `none`): only then is sealed
    reasoning asked for, carried to the client and sent back (a model that does not reason
    refuses reasoning items in its input)."""
    return _effort(body) not in (None, "none")


def build_request(body: dict[str, Any], *, stream: bool, codex: bool = False) -> dict[str, Any]:
    """The Responses body for a Chat Completions body."""
    _reject_unsupported(body)
    model = split_model(body.get("model"))[0]
    effort = _effort(body)
    reasoning = effort not in (None, "none")
    instructions, items = _convert_messages(body.get("messages"), sealed=reasoning)
    out: dict[str, Any] = {"model": model}
    if instructions or codex:                    # the Codex backend requires the field
        out["instructions"] = instructions
    out["input"] = items
    tools = array_at(body.get("tools"), "tools")
    if tools:
        out["tools"] = [_convert_tool(tool) for tool in tools]
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _convert_tool_choice(body["tool_choice"])
    if body.get("parallel_tool_calls") is not None:
        out["parallel_tool_calls"] = bool(body["parallel_tool_calls"])
    named = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    limit = body.get(named)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise RenderError(f"{named} must be a positive integer")
        out["max_output_tokens"] = max(16, limit)   # the Responses API minimum
    include: list[str] = []
    if effort is not None:
        # policy: effort "none" asks for no reasoning, so no summary and no encrypted content
        out["reasoning"] = {"effort": effort, "summary": "auto"} if reasoning else {"effort": effort}
    if reasoning:
        include.append(ENCRYPTED_REASONING)
    else:                                        # reasoning models reject sampling knobs (policy)
        for key in ("temperature", "top_p"):
            if body.get(key) is not None:
                out[key] = body[key]
    text: dict[str, Any] = {}
    if body.get("response_format") is not None:
        text["format"] = _convert_response_format(body["response_format"])
    if body.get("verbosity") is not None:
        text["verbosity"] = body["verbosity"]
    if text:
        out["text"] = text
    if body.get("logprobs"):
        include.append("message.output_text.logprobs")
        if body.get("top_logprobs") is not None:
            out["top_logprobs"] = body["top_logprobs"]
    for key in ("metadata", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "moderation",
                "safety_identifier", "service_tier"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("user") is not None and "safety_identifier" not in out:
        out["safety_identifier"] = body["user"]
    out["store"] = False                         # stateless: ccswitch keeps no server-side conversation
    out["stream"] = stream
    if include:
        out["include"] = include
    if codex:
        out = {k: v for k, v in out.items() if k in CODEX_FIELDS}
        kept = [i for i in out.pop("include", ()) if i == ENCRYPTED_REASONING]
        if kept:
            out["include"] = kept
    return out


def _reject_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise RenderError("n must be 1: a Responses upstream returns a single choice")
    refuse_alike(body)


# ------------------------------------------------------------------ messages

def _convert_messages(messages: Any, sealed: bool = False) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(messages, list) or not messages:
        raise RenderError("messages must be a non-empty array")
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    leading = True
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RenderError(f"messages[{i}] must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _text_of(msg.get("content"), f"messages[{i}]")
            if leading:
                if text.strip():
                    instructions.append(text)
            elif text.strip():
                items.append({"type": "message", "role": "developer", "content": text})
            continue
        leading = False
        if role == "user":
            items.append({"type": "message", "role": "user",
                          "content": _user_content(msg.get("content"), f"messages[{i}]")})
        elif role == "assistant":
            items.extend(_assistant_items(msg, f"messages[{i}]", sealed))
        elif role == "tool":
            if not msg.get("tool_call_id"):
                raise RenderError(f"messages[{i}].tool_call_id is required")
            items.append({"type": "function_call_output", "call_id": msg["tool_call_id"],
                          "output": _tool_output(msg.get("content"), f"messages[{i}]")})
        else:
            raise RenderError(f"messages[{i}].role {role!r} is not supported for this model")
    return "\n\n".join(instructions), items


def _text_of(content: Any, where: str) -> str:
    """String content, or the text parts of an array concatenated as the model reads them."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RenderError(f"{where}: content part {kind!r} is not allowed here")
            texts.append(str(part.get("text") or ""))
        return "".join(texts)
    raise RenderError(f"{where}.content must be a string or an array")


def _tool_output(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A tool's result: text as one string; with an image or a file among its parts, the parts
    as a user message's (a Responses tool output takes the same input_text/image/file list)."""
    if isinstance(content, list) and any(not isinstance(part, dict) or part.get("type") != "text"
                                          for part in content):
        return _user_content(content, where)
    return _text_of(content, where)


def _user_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise RenderError(f"{where}.content must be a string or an array")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "input_text", "text": str(part.get("text") or "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url, detail = (image.get("url"), image.get("detail")) if isinstance(image, dict) else (image, None)
            if not isinstance(url, str) or not url:
                raise RenderError(f"{where}: image_url.url is required")
            parts.append({"type": "input_image", "image_url": url, "detail": detail or "auto"})
        elif kind == "file":
            file = part.get("file") if isinstance(part.get("file"), dict) else {}
            converted = {"type": "input_file", **{k: file[k] for k in ("file_id", "file_data", "filename")
                                                  if file.get(k) is not None}}
            if "file_data" not in converted and "file_id" not in converted:   # a filename alone is no file
                raise RenderError(f"{where}: a file part needs file_data or file_id")
            parts.append(converted)
        elif kind == "input_audio":
            raise RenderError(f"{where}: audio input is not supported for this model")
        else:
            raise RenderError(f"{where}: content part {kind!r} is not supported")
    return parts


def _assistant_items(msg: dict[str, Any], where: str, sealed: bool = False) -> list[dict[str, Any]]:
    content = msg.get("content")
    texts, refusals = [], []
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text") or ""))     # a part each, as sent: no words run together
            elif kind == "refusal":
                refusals.append(str(part.get("refusal") or ""))
            else:
                raise RenderError(f"{where}: assistant content part {kind!r} is not supported")
    elif content is not None:
        texts.append(_text_of(content, where))
    if msg.get("refusal") and str(msg["refusal"]) not in refusals:
        refusals.append(str(msg["refusal"]))
    # assistant history is output_text, never input_text
    parts = [{"type": "output_text", "text": text} for text in texts if text] + \
        [{"type": "refusal", "refusal": r} for r in refusals if r]
    # the reasoning this turn's answer came from, sealed, as the client got it with the message:
    # before the message and its calls, where it stood in the upstream's output
    carried_back = array_at(msg.get(REASONING_ITEMS), f"{where}.{REASONING_ITEMS}") if sealed else ()
    items: list[dict[str, Any]] = [carried for item in carried_back if (carried := carried_reasoning(item)) is not None]
    if parts:
        items.append({"type": "message", "role": "assistant", "content": parts})
    for j, call in enumerate(array_at(msg.get("tool_calls"), f"{where}.tool_calls")):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or call.get("type", "function") != "function":
            raise RenderError(f"{where}.tool_calls[{j}] must be a function call")
        if not call.get("id") or not fn.get("name"):
            raise RenderError(f"{where}.tool_calls[{j}] needs an id and a function name")
        args = fn.get("arguments")
        # no `id`: an input item id must be an `fc_` id that exists server-side
        if isinstance(args, dict | list):       # lenient clients send the object itself: keep it
            args = json.dumps(args, ensure_ascii=False)
        items.append({"type": "function_call", "call_id": call["id"], "name": fn["name"],
                      "arguments": args if isinstance(args, str) and args else "{}"})
    return items


# ------------------------------------------------------------------ tools and formats

def _convert_tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise RenderError(f"tool type {kind!r} cannot be sent to an OpenAI Responses upstream by ccswitch "
                          "(only function tools)")
    fn = tool["function"]
    if not fn.get("name"):
        raise RenderError("a function tool needs a name")
    out: dict[str, Any] = {"type": "function", "name": fn["name"]}
    if fn.get("description") is not None:
        out["description"] = fn["description"]
    out["parameters"] = fn.get("parameters") or dict(_EMPTY_SCHEMA)
    out["strict"] = bool(fn.get("strict"))       # always explicit: endpoint defaults differ
    return out


def _convert_tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = function_name(choice)
        if name:
            return {"type": "function", "name": name}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = object_at(choice.get("allowed_tools"), "tool_choice.allowed_tools")
        tools = [{"type": "function", "name": function_name(t)}
                 for t in array_at(allowed.get("tools"), "tool_choice.allowed_tools.tools")
                 if isinstance(t, dict) and t.get("type") == "function"]
        if allowed.get("mode") in ("auto", "required") and tools and all(t["name"] for t in tools):
            return {"type": "allowed_tools", "mode": allowed["mode"], "tools": tools}
    raise RenderError(f"tool_choice {choice!r} is not supported for this model")


def _convert_response_format(fmt: Any) -> dict[str, Any]:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        spec = fmt["json_schema"]
        out: dict[str, Any] = {"type": "json_schema", "name": spec.get("name") or "response",
                               "schema": spec.get("schema") or dict(_EMPTY_SCHEMA)}
        for key in ("strict", "description"):
            if spec.get(key) is not None:
                out[key] = spec[key]
        return out
    raise RenderError(f"response_format {kind!r} is not supported for this model")
