"""Who tells a notification, when several instances share one Redis: claims of occurrences
(`SET NX`) and of an upstream's told state (`SET … GET`).  A part of `RedisState`, apart for
reading: it uses the state's client, its `up` flag and its instance id."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from ccswitch.shared import layout

log = logging.getLogger("ccswitch.state")
#: what an unreachable (or failing) Redis raises
OUTAGES = (RedisError, OSError, asyncio.TimeoutError)

STATE_CLAIM_TTL = 7 * 86400   # an upstream's last told state (cooldown, recovered) is kept this long
# the same state claimed again within this long is the same news (instances that saw it at once,
# each naming the outage its own way, before either heard of the other's)
SAME_NEWS = 10.0


# the state this instance told while Redis could not be asked, unless Redis holds one told later
_HAND_ON = """
local held = redis.call('GET', KEYS[1])
if held then
  local at = tonumber(string.match(held, ' ([%d%.]+)$'))
  if at and at >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


def _told(value: object) -> tuple[str | None, str, float]:
    """(state, episode, when) of a stored state claim; (None, "", 0) for none or one not ours."""
    text = value.decode() if isinstance(value, bytes) else value
    parts = text.split(" ") if isinstance(text, str) else []
    if len(parts) == 1 and parts[0]:
        return parts[0], "", 0.0        # an older ccswitch's: the state alone
    try:
        return parts[0], parts[1], float(parts[2])
    except (IndexError, ValueError):
        return None, "", 0.0


#: how long a claim made while the first connection is still being tried waits for its outcome
FIRST_LOOK_WAIT = 5.0
#: occurrences decided through Redis kept in memory before the ended ones are let go
_DECIDED_KEPT = 1000


class Claims:
    """The claims of `RedisState` (whose `_client`, `up`, `instance`, `wall`, `where`,
    `_describe`, `_told_unshared`, `_decided` and `_first_look` they use)."""

    async def _after_first_look(self) -> None:
        """Right after the start, before Redis was first tried: a claim waits for that (at most
        FIRST_LOOK_WAIT), or an instance (re)starting beside others would take it for its own,
        as if Redis were down (a missed activation time probed once by each)."""
        if not self.up and not self._first_look.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_look.wait(), FIRST_LOOK_WAIT)

    async def first_look(self) -> None:
        await self._after_first_look()

    async def claim(self, name: str, until: float) -> bool:
        """One SET NX per occurrence told: the instance whose claim lands first tells it.  An
        occurrence claimed once through Redis is remembered here until `until`: Redis restarted
        empty (no persistence) would let every instance claim it again, and tell it again."""
        await self._after_first_look()
        now = self.wall()
        if self._decided.get(name, 0.0) > now:     # Redis restarting empty, or down meanwhile
            return False
        client = self._client
        if not self.up or client is None:
            return True
        try:
            ours = bool(await client.set(layout.claim_key(name), self.instance, nx=True,
                                         px=max(1000, int((until - now) * 1000))))
        except OUTAGES as exc:
            log.debug("ccswitch: could not claim %r in %s (%s): told here", name, self.where, self._describe(exc))
            return True
        if len(self._decided) >= _DECIDED_KEPT:
            self._decided = {key: end for key, end in self._decided.items() if end > now}
        self._decided[name] = until
        return ours

    async def claim_state(self, name: str, state: str, episode: str, *, absorbed: bool = False) -> bool:
        """One SET … GET per state told (`state episode time`): the instance that finds another
        state there tells it, or the same state of another episode claimed over `SAME_NEWS` ago
        (a change no instance told: a recovery lost to a restart).  So does one that told a state
        of it while Redis could not be asked (what Redis holds is from before).  An `absorbed`
        cooldown is told only if Redis holds another state."""
        await self._after_first_look()
        client = self._client
        if not self.up or client is None:
            return self._unshared(name, state, episode, absorbed)
        now = self.wall()
        try:
            before = await client.set(layout.claim_key(name), f"{state} {episode} {now:.3f}", get=True,
                                      ex=STATE_CLAIM_TTL)
        except OUTAGES as exc:
            log.debug("ccswitch: could not claim %r in %s (%s)", name, self.where, self._describe(exc))
            return self._unshared(name, state, episode, absorbed)
        told_state, told_episode, told_at = _told(before)
        if absorbed:
            if self._told_unshared.pop(name, None) is not None:   # the hooks' last word was told here: a cooldown
                return False
            return told_state is not None and told_state != state
        stale = self._told_unshared.pop(name, None) is not None
        # (the instances' clocks are taken to agree, as NTP keeps them; a stored time is rounded
        # to the millisecond, so a moment later can read as a moment before)
        same_news = told_state == state and (told_episode == episode or abs(now - told_at) < SAME_NEWS)
        return stale or not same_news

    def _unshared(self, name: str, state: str, episode: str, absorbed: bool) -> bool:
        """Redis cannot be asked: told here (but an absorbed cooldown), remembered as such."""
        if absorbed:
            return False
        self._told_unshared[name] = f"{state} {episode} {self.wall():.3f}"
        return True

    async def _hand_on_told(self, client) -> None:
        """Back in touch with Redis: what this instance told meanwhile becomes each upstream's told
        state there, unless Redis holds a later one (another instance, cut off from this one
        only, told one since).  Else another instance, finding no claim (Redis lost its data) or
        an old one, would tell the next change of that upstream again beside this one."""
        for name, claim in list(self._told_unshared.items()):
            await client.eval(_HAND_ON, 1, layout.claim_key(name), claim, _told(claim)[2], STATE_CLAIM_TTL)
            if self._told_unshared.get(name) == claim:
                del self._told_unshared[name]
