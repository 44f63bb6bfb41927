"""Built-in list prices (USD per million tokens) and cost at report time.

Five rates per model: ``input`` (uncached input), ``output`` (reasoning included),
``cache_write`` (5-minute cache writes), ``cache_write_1h`` (1-hour cache writes) and
``cache_read``. Anthropic bills 5-minute writes at 1.25x input, 1-hour writes at 2x input
and cache hits at 0.1x input. OpenAI does not charge extra for writing its cache (written
tokens are plain input), so both cache_write rates equal input; cache_read is the model's
"cached input" price.

Not modelled: batch / flex / priority tiers, data-residency surcharges, long-prompt tiers
(e.g. Claude Sonnet 4.5 above 200K prompt tokens, Haiku 5.5 above 100K, GPT-5.4/5.5 above
270K) and fast modes. Override any of it in rules.yaml (``prices:``).

Model names are matched after lower-casing and dropping noise (provider prefixes like
``anthropic/``, Bedrock/Vertex decorations, ``[1m]``, dated snapshots like ``-20250929`` or
``-2025-08-07``, ``-latest``): an override of the exact name, then an override glob, then the
built-in exact name, then the longest known prefix that ends at a ``-`` — unless what follows names another version or tier
(``claude-opus-5-5`` is not ``claude-opus-5``, ``o3-deep-research`` is not ``o3``).
An unknown model has no price (None): the report shows "?" and never counts it as 0.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

PRICES_AS_OF = "2026-11-05"
PRICE_KEYS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cache_write: float
    cache_write_1h: float
    cache_read: float


def anthropic(inp: float, out: float, cache_read: float | None = None) -> Price:
    return Price(inp, out, round(inp * 1.25, 6), round(inp * 2, 6),
                 round(inp * 0.1, 6) if cache_read is None else cache_read)


def openai(inp: float, out: float, cached: float | None = None) -> Price:
    """``cached=None``: no cache discount (pro models)."""
    return Price(inp, out, inp, inp, inp if cached is None else cached)


BUILTIN: dict[str, Price] = {
    # ---- Anthropic (platform.claude.com pricing page)
    "claude-fable-5-1": anthropic(10, 50, 0.25),
    "claude-opus-5-5": anthropic(4, 20),
    "claude-opus-5": anthropic(5, 25),
    "claude-opus-4-8": anthropic(5, 25),
    "claude-opus-4-7": anthropic(5, 25),
    "claude-opus-4-6": anthropic(5, 25),
    "claude-opus-4-5": anthropic(5, 25),
    "claude-opus-4-1": anthropic(15, 75),
    "claude-opus-4": anthropic(15, 75),
    "claude-opus-4-0": anthropic(15, 75),
    "claude-sonnet-5-5": anthropic(2, 10, 0.10),    # cache hits cut from 0.20 on 2026-10-07
    "claude-sonnet-5": anthropic(2, 10),
    "claude-sonnet-4-6": anthropic(3, 15),
    "claude-sonnet-4-5": anthropic(3, 15),         # prompts > 200K: 6 / 22.50 (not modelled)
    "claude-sonnet-4": anthropic(3, 15),
    "claude-sonnet-4-0": anthropic(3, 15),
    "claude-3-7-sonnet": anthropic(3, 15),
    "claude-3-5-sonnet": anthropic(3, 15),
    "claude-haiku-5-5": anthropic(0.10, 0.50),     # prompts <= 100K; above: 5x (not modelled)
    "claude-haiku-4-5": anthropic(1, 5),
    "claude-3-5-haiku": anthropic(0.80, 4),
    "claude-3-haiku": Price(0.25, 1.25, 0.30, 0.50, 0.03),
    "claude-3-opus": anthropic(15, 75),
    # ---- OpenAI (developers.openai.com pricing, standard tier, short context)
    "gpt-5.5": openai(5, 30, 0.50),
    "gpt-5.5-pro": openai(30, 180),
    "gpt-5.4": openai(2.50, 15, 0.25),
    "gpt-5.4-mini": openai(0.75, 4.50, 0.075),
    "gpt-5.4-nano": openai(0.20, 1.25, 0.02),
    "gpt-5.4-pro": openai(30, 180),
    "gpt-5.3-codex": openai(1.75, 14, 0.175),
    "gpt-5.2": openai(1.75, 14, 0.175),
    "gpt-5.2-codex": openai(1.75, 14, 0.175),
    "gpt-5.2-pro": openai(21, 168),
    "gpt-5.1": openai(1.25, 10, 0.125),
    "gpt-5.1-codex": openai(1.25, 10, 0.125),
    "gpt-5.1-codex-max": openai(1.25, 10, 0.125),
    "gpt-5.1-codex-mini": openai(0.25, 2, 0.025),
    "gpt-5": openai(1.25, 10, 0.125),
    "gpt-5-codex": openai(1.25, 10, 0.125),
    "gpt-5-codex-mini": openai(0.25, 2, 0.025),
    "gpt-5-chat": openai(1.25, 10, 0.125),
    "gpt-5.1-chat": openai(1.25, 10, 0.125),
    "gpt-5-mini": openai(0.25, 2, 0.025),
    "gpt-5-nano": openai(0.05, 0.40, 0.005),
    "gpt-5-pro": openai(15, 120),
    "gpt-4.1": openai(2, 8, 0.50),
    "gpt-4.1-mini": openai(0.40, 1.60, 0.10),
    "gpt-4.1-nano": openai(0.10, 0.40, 0.025),
    "gpt-4o": openai(2.50, 10, 1.25),
    "gpt-4o-mini": openai(0.15, 0.60, 0.075),
    "o1": openai(15, 60, 7.50),
    "o1-mini": openai(1.10, 4.40, 0.55),
    "o1-pro": openai(150, 600),
    "o3": openai(2, 8, 0.50),
    "o3-mini": openai(1.10, 4.40, 0.55),
    "o3-pro": openai(20, 80),
    "o4-mini": openai(1.10, 4.40, 0.275),
    "codex-mini": openai(1.50, 6, 0.375),
}

_DATE_SUFFIX = re.compile(r"(?:[-@]\d{8}|-\d{4}-\d{2}-\d{2})$")
_DATED = re.compile(r"^-\d{8}-")          # a snapshot's date with more after it
_NOISE_SUFFIX = re.compile(r"(?:\[1m\]|-latest|-v\d+(?::\d+)?|:\d+)$")
# Bedrock ("us.anthropic.claude-..."), Vertex/OpenRouter-style ("anthropic/claude-...")
_PREFIX = re.compile(r"^(?:.*/)?(?:(?:[a-z]+\.)?anthropic\.)?")
# a remainder starting with one of these names a different price tier, not a variant
_TIER_WORDS = {"mini", "nano", "pro", "max", "deep", "turbo", "realtime", "audio", "search",
               "transcribe", "tts", "image", "instant", "lite", "fast", "preview", "chat"}


def normalize(model: str) -> str:
    """Lower-case, strip provider prefixes, ``[1m]``, dated snapshots and ``-latest``."""
    name = _PREFIX.sub("", model.strip().lower(), count=1)
    for _ in range(3):
        stripped = _DATE_SUFFIX.sub("", _NOISE_SUFFIX.sub("", name))
        if stripped == name:
            break
        name = stripped
    return name


def _safe_remainder(rest: str) -> bool:
    """True if ``rest`` (what follows a known name, starting with '-') is a harmless variant, also
    after a dated snapshot (``-20250929-thinking``)."""
    first = _DATED.sub("-", rest, count=1)[1:].split("-", 1)[0]
    return bool(first) and not first[0].isdigit() and first not in _TIER_WORDS


def _merge(base: Price | None, override: Mapping[str, float]) -> Price:
    """An override over a built-in price; for a model with no built-in price, missing
    cache rates default to input (no discount) and a missing input/output to 0."""
    if base is not None:
        return replace(base, **{k: float(v) for k, v in override.items() if k in PRICE_KEYS})
    inp = float(override.get("input", 0.0))
    write = float(override.get("cache_write", inp))
    return Price(inp, float(override.get("output", 0.0)), write,
                 float(override.get("cache_write_1h", write)), float(override.get("cache_read", inp)))


def _longest_prefix(name: str, keys) -> str | None:
    best = None
    for key in keys:
        if name.startswith(key + "-") and _safe_remainder(name[len(key):]):
            if best is None or len(key) > len(best):
                best = key
    return best


def _builtin(name: str) -> Price | None:
    if name in BUILTIN:
        return BUILTIN[name]
    key = _longest_prefix(name, BUILTIN)
    return BUILTIN[key] if key else None


def _is_glob(key: str) -> bool:
    return any(c in key for c in "*?[")


def price_table(overrides: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Price]:
    """Built-in prices with rules.yaml overrides merged in (glob keys left out). An override
    names only the rates it changes; the rest come from the model's built-in price."""
    table = dict(BUILTIN)
    for key, override in (overrides or {}).items():
        if not _is_glob(key):
            name = normalize(key)
            table[name] = _merge(_builtin(name), override)
    return table


def price_for(model: str | None, overrides: Mapping[str, Mapping[str, float]] | None = None) -> Price | None:
    """The price of ``model``: the user's first (an override of its exact name, then an override
    glob, longest pattern first), then the built-in list (exact name, then the longest safe
    prefix, overrides' names included); None if unknown.  A glob the user wrote for a family
    overrides its built-in prices: that is what it was written for."""
    if not model:
        return None
    overrides = overrides or {}
    raw = model.strip().lower()
    name = normalize(model)
    exact = {normalize(key): value for key, value in overrides.items() if not _is_glob(key)}
    for candidate in (raw, name):
        if candidate in exact:
            return _merge(_builtin(candidate), exact[candidate])
    for pattern in sorted((k for k in overrides if _is_glob(k)), key=len, reverse=True):
        if fnmatch.fnmatchcase(raw, pattern.lower()) or fnmatch.fnmatchcase(name, pattern.lower()):
            return _merge(_builtin(name), overrides[pattern])
    table = price_table(overrides)
    for candidate in (raw, name):
        if candidate in table:
            return table[candidate]
    key = _longest_prefix(name, table)
    return table[key] if key else None


def cost(model: str | None, input: int = 0, output: int = 0, cache_write: int = 0,
         cache_write_1h: int = 0, cache_read: int = 0, multiplier: float = 1.0,
         overrides: Mapping[str, Mapping[str, float]] | None = None) -> float | None:
    """USD for one request (or a sum of requests of one model and upstream).

    ``cache_write`` is every cache-creation token (the database's ``cache_creation_tokens``);
    ``cache_write_1h`` is the part of those written with a 1-hour TTL, so the 5-minute part
    is ``cache_write - cache_write_1h``. None if the model has no known price (even with no
    tokens: the caller decides whether that matters).
    """
    price = price_for(model, overrides)
    return None if price is None else cost_at(price, input, output, cache_write, cache_write_1h, cache_read,
                                              multiplier)


def cost_at(price: Price, input: int = 0, output: int = 0, cache_write: int = 0, cache_write_1h: int = 0,
            cache_read: int = 0, multiplier: float = 1.0) -> float:
    """USD at a known price (``cost`` without the look-up, for callers that price many rows of one model)."""
    one_hour = min(max(cache_write_1h, 0), max(cache_write, 0))
    five_min = max(cache_write, 0) - one_hour
    usd = (input * price.input + output * price.output + five_min * price.cache_write
           + one_hour * price.cache_write_1h + cache_read * price.cache_read) / 1_000_000
    return usd * multiplier
