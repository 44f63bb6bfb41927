"""Model names: the `-thinking` suffix every converter honours, and what a Claude model
can take (adaptive thinking, structured outputs, default max_tokens)."""

from __future__ import annotations

import re
from typing import Any

from ccswitch.config.values import glob_lookup
from ccswitch.routing.plan import THINKING_SUFFIX
from ccswitch.wire.exchange import ClientRequest

# `claude-opus-4-7`, and the dotted `claude-opus-4.7` of OpenRouter-style names
_VERSION = re.compile(r"(opus|sonnet|haiku|mythos|fable)-(\d)(?:[-.](\d))?(?!\d)")
#: Claude models older than 3.7 (`claude-3-5-sonnet-…`, `claude-3-haiku-…`, `claude-2.1`): no
#: extended thinking, and their own output caps (wherever the name sits: `anthropic/…`, Bedrock's
#: `anthropic.claude-3-5-…`; OpenRouter's dotted `claude-3.5-sonnet` too)
_BEFORE_THINKING = re.compile(r"claude-(?:instant|2|3[-.](?!7)(5[-.])?)")

#: max_tokens sent when the client names none, by upstream model (first match wins;
#: `rules.max_tokens` overrides).  16384 fits every Claude 4.x output cap and stays under
#: ~21k, above which a non-streamed request risks Anthropic's 10-minute limit; Claude 3
#: models cap at 4096/8192; unknown (non-Claude) models behind an Anthropic-compatible API
#: get a conservative 8192.
DEFAULT_MAX_TOKENS: dict[str, int] = {
    "claude-3-7-*": 16384, "claude-3-5-*": 8192, "claude-3-*": 4096, "claude-*": 16384, "*": 8192,
}


def split_model(model: Any) -> tuple[Any, bool]:
    """(`model` without a `-thinking` suffix, whether the suffix was there)."""
    if isinstance(model, str) and model.endswith(THINKING_SUFFIX) and len(model) > len(THINKING_SUFFIX):
        return model[: -len(THINKING_SUFFIX)], True
    return model, False


def upstream_model(req: ClientRequest, upstream) -> str:
    """The model name the upstream will see (suffix stripped, then mapped)."""
    model = req.model or (req.json or {}).get("model") or ""
    return upstream.map_model(split_model(model)[0])


def _version(model: str) -> tuple[str, tuple[int, int]] | None:
    m = _VERSION.search(model.lower())
    if m:
        return m[1], (int(m[2]), int(m[3] or 0))
    if "mythos" in model or "fable" in model:
        return "mythos", (5, 0)
    return None


def adaptive_thinking(model: str) -> bool:
    """Claude 4.6 and later take `thinking:{type:adaptive}` + effort (4.7+ reject `enabled`)."""
    found = _version(model)
    return found is not None and found[1] >= (4, 6)


def extended_thinking(model: str) -> bool:
    """Whether the model may think (`thinking`): Claude 3.7 and later, and any model not known
    to be an older Claude (an Anthropic-compatible relay's own models take it or ignore it)."""
    return _BEFORE_THINKING.search(model.lower()) is None


def structured_outputs(model: str) -> bool:
    """Models with `output_config.format` (Opus 4.1, Claude 4.5 and later)."""
    found = _version(model)
    return found is not None and (found[1] >= (4, 5) or found == ("opus", (4, 1)))


_CLAUDE_3_OR_OLDER = re.compile(r"claude-(?:instant|2|3)\b")


def one_sampling_knob(model: str) -> bool:
    """Models that refuse `temperature` and `top_p` together (Opus 4.1, Claude 4.5 and later), and
    a Claude name whose version is not read (`claude-sonnet-latest`, a relay's alias): it may be one."""
    found = _version(model)
    if found is not None:
        return found[1] >= (4, 5) or found == ("opus", (4, 1))
    low = model.lower()
    return "claude" in low and _CLAUDE_3_OR_OLDER.search(low) is None


def json_tool_mode(body: dict[str, Any], model: str) -> bool:
    """Whether response_format travels as the forced `json_tool_call` tool."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return False
    # json_object: no JSON mode, and output_config.format takes only a closed schema
    return fmt.get("type") == "json_object" or (fmt.get("type") == "json_schema" and not structured_outputs(model))


def default_max_tokens(model: str, rules, thinking: int = 0) -> int:
    """max_tokens for a request that names none: the default (the rules', else built in), plus
    the `thinking` budget it adds, within the model's output cap."""
    configured = glob_lookup(dict(getattr(rules, "max_tokens", None) or {}), model)
    total = (configured if configured is not None else glob_lookup(DEFAULT_MAX_TOKENS, model) or 8192) + thinking
    cap = output_cap(model)
    return total if cap is None else min(total, cap)


def output_cap(model: str) -> int | None:
    """The most tokens a model answers, where a default (the rules' too) plus a thinking budget
    could pass it: Opus 4 and 4.1 answer at most 32,000 (the other Claude 4.x, 64,000 or more),
    Claude 3.5 8,192 and the Claude 3 before it 4,096."""
    if _version(model) in (("opus", (4, 0)), ("opus", (4, 1))):
        return 32000
    older = _BEFORE_THINKING.search(model.lower())
    if older is None:
        return None
    return 8192 if older[1] else 4096
