"""What one hook receives for one event, per its `format`:

* `json`    — ``{"event", "upstream", "route", "reason", "until", "ts", "id"}`` (ISO times, `until` may be
  null; `id` the same on every retry of one notification)
* `slack`   — ``{"text": <summary>}`` (an incoming-webhook message), its `&`, `<` and `>` escaped
* `discord` — ``{"content": <summary>, "allowed_mentions": {"parse": []}}`` (a webhook message;
  Discord takes at most 2000 characters)
* `text`    — the summary as text/plain

Every text field is scrubbed of the rules' key text first: the reasons are ccswitch's own
sentences, but some quote what an upstream answered.  So a chat message shows the summary as
text, never as the chat's markup: a quoted `<!channel>` or `@everyone` pings nobody, a quoted
`<https://…|re-enter your key>` is no link."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ccswitch.report.data import shortened
from ccswitch.routing.events import Event
from ccswitch.wire.exchange import json_bytes
from ccswitch.wire.redact import scrub_text

TEST_EVENT = "test"          # the kind `ccswitch notify-test` sends; every hook gets it
_MAX_REASON = 1000
_DISCORD_LIMIT = 2000
# Slack's control characters: it reads `<…>` as a mention or a link, and decodes these three
# (and only these) for display, so the text reads as it was
_SLACK_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_NO_MENTIONS = {"parse": []}    # Discord pings nobody, whatever `@everyone` or `<@id>` the text holds


def clean(event: Event, secrets: list[str]) -> Event:
    """The event with key text replaced in every text field, the reason cut to a sane length."""
    def scrubbed(text: str | None) -> str | None:
        if text is None:
            return None
        return scrub_text(text, secrets)
    reason = scrubbed(event.reason) or ""      # whole, then cut: a key cut in two would not be found
    return replace(event, upstream=scrubbed(event.upstream), route=scrubbed(event.route),
                   reason=shortened(reason, _MAX_REASON))


def _to_second(moment: datetime) -> datetime:
    """To the nearest second, as the live page and `ccswitch.status` show it (an end read back from a
    clock lands a few ms before the second it was set for)."""
    return (moment.astimezone(UTC) + timedelta(microseconds=500_000)).replace(microsecond=0)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else _to_second(moment).isoformat()


def as_json(event: Event) -> dict:
    return {"event": event.kind, "upstream": event.upstream, "route": event.route,
            "reason": event.reason, "until": _iso(event.until), "ts": _iso(event.ts), "id": event_id(event)}


def event_id(event: Event) -> str:
    """One notification's name: a hook that answered too slowly gets it again (a retry), and can
    tell the copy by it."""
    named = "\0".join((event.kind, event.upstream or "", event.route or "", event.episode, _iso(event.ts) or ""))
    return hashlib.blake2b(named.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def summary(event: Event) -> str:
    """One line for people: `ccswitch cooldown: relay-a (route claude): <reason> (until 18:10:05 UTC)`."""
    subject = event.upstream or (f"route {event.route}" if event.route else "")
    if event.upstream and event.route:
        subject += f" (route {event.route})"
    if event.reason.startswith(f"upstream {event.upstream} ") or (  # the reason names it already: said once
            not event.upstream and event.route and f"the {event.route} route" in event.reason):
        subject = ""
    head = f"ccswitch {event.kind}" + (f": {subject}" if subject else "")
    until = "" if event.until is None else f" (until {_to_second(event.until):%Y-%m-%d %H:%M:%S} UTC)"
    return f"{head}: {event.reason}{until}"


def slack_text(text: str) -> str:
    """`text` as a Slack message shows it, letter for letter."""
    return text.translate(_SLACK_ESCAPES)


def render(event: Event, fmt: str, secrets: list[str]) -> tuple[str, bytes]:
    """(content type, body) of the POST for a hook of format `fmt`."""
    event = clean(event, secrets)
    if fmt == "text":
        return "text/plain; charset=utf-8", summary(event).encode()
    if fmt == "slack":
        document: dict = {"text": slack_text(summary(event))}
    elif fmt == "discord":
        document = {"content": shortened(summary(event), _DISCORD_LIMIT), "allowed_mentions": _NO_MENTIONS}
    else:
        document = as_json(event)
    return "application/json", json_bytes(document, compact=False)
