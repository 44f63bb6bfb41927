"""How the shared state sits in Redis: one key per thing, each expiring on its own.

    ccswitch:h:<upstream>                      health (JSON)      until the cooldown ends (else HEALTH_MEMORY)
    ccswitch:sw:<upstream>                     enable / disable   SWITCH_MEMORY
    ccswitch:use                               ccswitch.use       until the preference ends
    ccswitch:q:<upstream>                      hash: window → JSON, until the latest window's reset
    ccswitch:qf:<upstream>                     its last ccswitch.reset (JSON)   FORGET_MEMORY from it
    ccswitch:b:<route>:<hash of session>       binding (JSON)     the sticky idle time from its last use
    ccswitch:r:<hash of response id>           its issuer (JSON)  a day (routing.issued.SHARED_FOR)
    ccswitch:s:<who>:<name>:<period>:<start>:<end>   spend (a float, INCRBYFLOAT)   until the period ends
    ccswitch:n:<occurrence>                    the instance telling it (SET NX)   until it ends

and one pub/sub channel per database, ``ccswitch:changes:<db>``, on which each instance
publishes what it wrote (routing.changes in their dict form).  Values are the records' dict
form as ASCII JSON, so reading one back needs nothing but the value (and, for spend, the key).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ccswitch.routing.changes import (
    BindChange,
    Change,
    HealthChange,
    IssueChange,
    PreferChange,
    QuotaForget,
    SpendAdded,
    SpendTotal,
    SwitchChange,
    WindowChange,
    decode,
    encode,
    merge,
)
from ccswitch.routing.issued import SHARED_FOR

PREFIX = "ccswitch:"
#: a health record without a running cooldown (failures below the threshold, a recovery) is kept
#: this long: an instance back from an outage still learns that the upstream answered since
HEALTH_MEMORY = 600.0
#: ccswitch.enable / disable last until the next reload; in Redis at most this long
SWITCH_MEMORY = 86400.0
#: a `ccswitch.reset` is kept this long (a week's window and a day): an instance that missed it,
#: back later with windows learnt before it, drops them instead of writing them back
FORGET_MEMORY = 8 * 86400.0


def channel(db: int) -> str:
    # pub/sub ignores database numbers: the channel carries it, so fleets on other databases stay apart
    return f"{PREFIX}changes:{db}"


def _session_part(session: str) -> str:
    # a session key is client text of any length and alphabet: the key holds a digest, the value the text
    return hashlib.blake2b(session.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def claim_key(occurrence: str) -> str:
    """Where instances claim the telling of an occurrence (`Event.claim`)."""
    return f"{PREFIX}n:{occurrence}"


def key_of(change: Change) -> str:
    if isinstance(change, HealthChange):
        return f"{PREFIX}h:{change.upstream}"
    if isinstance(change, SwitchChange):
        return f"{PREFIX}sw:{change.upstream}"
    if isinstance(change, PreferChange):
        return f"{PREFIX}use"
    if isinstance(change, WindowChange):
        return f"{PREFIX}q:{change.upstream}"
    if isinstance(change, QuotaForget):
        return f"{PREFIX}qf:{change.upstream}"
    if isinstance(change, BindChange):
        return f"{PREFIX}b:{change.route}:{_session_part(change.session)}"
    if isinstance(change, IssueChange):
        return f"{PREFIX}r:{_session_part(change.response_id)}"
    return f"{PREFIX}s:{change.who}:{change.name}:{change.period}:{change.start:.0f}:{change.end:.0f}"


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _ms(epoch: float) -> int:
    return int(epoch * 1000)


def queue_write(pipe: Any, change: Change, now: float) -> None:
    """Queue on a Redis pipeline the commands that store `change` (SpendTotal excepted: it is
    raised by a script, see redis_state).  `now` is epoch seconds."""
    key = key_of(change)
    if isinstance(change, HealthChange):
        ends = change.cooling_end if change.cooling_end > now else now + HEALTH_MEMORY
        pipe.set(key, dumps(encode(change)), pxat=_ms(ends))
    elif isinstance(change, SwitchChange):
        if change.enabled is None:
            pipe.delete(key)
        else:
            pipe.set(key, dumps(encode(change)), px=_ms(SWITCH_MEMORY))
    elif isinstance(change, PreferChange):
        if change.upstream is None or change.until <= now:
            pipe.delete(key)
        else:
            pipe.set(key, dumps(encode(change)), pxat=_ms(change.until))
    elif isinstance(change, WindowChange):
        if change.until <= now:
            pipe.hdel(key, change.window)
        else:
            pipe.hset(key, change.window, dumps(encode(change)))
            # the hash lives as long as its latest window: set an expiry if it has none, then raise it
            pipe.pexpireat(key, _ms(change.until), nx=True)
            pipe.pexpireat(key, _ms(change.until), gt=True)
    elif isinstance(change, QuotaForget):
        pipe.delete(f"{PREFIX}q:{change.upstream}")
        if change.at + FORGET_MEMORY > now:
            pipe.set(key, dumps(encode(change)), pxat=_ms(change.at + FORGET_MEMORY))
    elif isinstance(change, BindChange):
        left = change.at + change.ttl - now
        if left <= 0:
            pipe.delete(key)
        else:
            pipe.set(key, dumps(encode(change)), px=max(1, _ms(left)))
    elif isinstance(change, IssueChange):
        left = change.at + SHARED_FOR - now
        if left > 0:            # else it has expired (or never was): nothing to store
            pipe.set(key, dumps(encode(change)), px=max(1, _ms(left)))
    elif isinstance(change, SpendAdded):
        pipe.incrbyfloat(key, change.usd)
        pipe.pexpireat(key, _ms(change.end))
    else:
        raise TypeError(f"{type(change).__name__} is not written with queue_write")


async def newer_words(pipe: Any, changes: list[Change]) -> list[Change]:
    """Of `changes` (no spend), those to write: an upstream's health only when it is a newer word
    than the one Redis holds (`routing.changes.merge`), its key watched on the pipeline from here
    to its MULTI/EXEC.  Two instances' words on it may arrive in either order, a catch-up's
    write-back after another's write, and a cooldown Redis kept for an upstream the live
    instances took back would hold off every newcomer until it ends.  The other records are
    written as they come: a window is told again by its upstream's every answer (and a newer
    reading of a sliding window may reset sooner, which the merge takes for older), a binding's
    new idle time keeps its last use, a deletion leaves nothing to weigh against."""
    weighed = [change for change in changes if isinstance(change, HealthChange)]
    if not weighed:
        return changes
    keys = [key_of(change) for change in weighed]
    await pipe.watch(*set(keys))
    held = dict(zip(keys, await pipe.mget(keys), strict=True))
    older = set()
    for change, key in zip(weighed, keys, strict=True):
        stored = _record_in(held[key])
        if stored is not None and type(stored) is type(change) and merge(stored, change) is not change:
            older.add(id(change))
    return [change for change in changes if id(change) not in older]


def _record_in(value: str | None) -> Change | None:
    """A stored JSON record; None when there is none or ccswitch cannot read it (ours replaces it)."""
    if value is None:
        return None
    try:
        return decode(json.loads(value))
    except ValueError:
        return None


def is_hash(key: str) -> bool:
    return key.startswith(f"{PREFIX}q:")


def spend_from(key: str, value: str) -> SpendTotal:
    """A spend key and its value as a SpendTotal (ValueError when it is not one)."""
    parts = key[len(PREFIX):].split(":")
    if len(parts) != 6 or parts[0] != "s":
        raise ValueError("not a spend key")
    _, who, name, period, start, end = parts
    return SpendTotal(who, name, period, float(start), float(end), float(value))


def read_back(key: str, value: Any, now: float) -> list[Change]:
    """What one stored key holds, as records (windows past their time left out).  Raises
    ValueError (or a JSON error, a ValueError too) for a value ccswitch did not write."""
    if value is None:
        return []
    if key.startswith(f"{PREFIX}s:"):
        return [spend_from(key, value)]
    if is_hash(key):
        windows = [decode(json.loads(text)) for text in value.values()]
        return [w for w in windows if isinstance(w, WindowChange) and w.until > now]
    return [decode(json.loads(value))]
