"""The queues between the event bus and the hooks: filtering, de-duplication, one lane per
hook, the bounded queue, and that offering never waits."""

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime

from ccswitch.config.load import parse_rules
from ccswitch.notify.notifier import Notifier
from ccswitch.routing.events import Event, Events
from tests.support.helpers import KEY_A

SLOW, FAST = "http://127.0.0.1:9/slow", "http://127.0.0.1:8/fast"


class FakePoster:
    """Records deliveries; a hook whose URL contains 'slow' waits until released."""

    def __init__(self):
        self.delivered: list[tuple[str, Event, list[str]]] = []
        self.release = asyncio.Event()

    async def deliver(self, hook, event, secrets):
        url = hook.url.get_secret_value()
        if "slow" in url:
            await self.release.wait()
        self.delivered.append((url, event, secrets))

    def kinds(self, url):
        return [e.kind for u, e, _ in self.delivered if u == url]


def rules(text: str | None = None):
    return parse_rules(text or f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:1', api_key: '{KEY_A}'}}
notify:
  - {{url: '{FAST}'}}
  - {{url: '{SLOW}', events: [cooldown]}}
""")


def event(kind="cooldown", episode="1", reason="down") -> Event:
    return Event(kind=kind, upstream="a", reason=reason, episode=episode)


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def started(notifier_rules, **kw) -> tuple[Notifier, FakePoster]:
    poster = FakePoster()
    notifier = Notifier(lambda: notifier_rules, poster, **kw)
    notifier.start()
    return notifier, poster


async def test_each_occurrence_goes_once_to_each_hook_that_wants_its_kind():
    notifier, poster = await started(rules())
    for _ in range(50):
        notifier.offer(event())
    notifier.offer(event(kind="recovered"))
    notifier.offer(event(episode="2"))
    poster.release.set()
    await settle()
    assert poster.kinds(FAST) == ["cooldown", "recovered", "cooldown"]
    assert poster.kinds(SLOW) == ["cooldown", "cooldown"]
    await notifier.aclose()


async def test_a_stuck_hook_delays_neither_the_emitter_nor_the_other_hooks():
    notifier, poster = await started(rules(), capacity=1000)
    bus = Events()
    bus.subscribe(notifier.offer)
    began = time.perf_counter()
    for n in range(200):
        bus.emit(event(episode=str(n)))
    assert time.perf_counter() - began < 0.5      # emitting only queues
    await settle()
    assert len(poster.kinds(FAST)) == 200 and poster.kinds(SLOW) == []
    await notifier.aclose(grace=0.05)


async def test_a_full_lane_drops_its_oldest_events_with_one_log_line(caplog):
    caplog.set_level(logging.WARNING, "ccswitch.notify")
    notifier, poster = await started(rules(f"notify: [{{url: '{SLOW}'}}]"), capacity=3)
    notifier.offer(event(episode="0"))
    await settle()          # the lane took episode 0 and waits on the hook
    for n in range(1, 10):
        notifier.offer(event(episode=str(n)))
    [lane] = notifier.lanes.values()
    assert [e.episode for e in lane.queue] == ["7", "8", "9"]
    assert caplog.text.count("backed up") == 1
    poster.release.set()
    await settle()
    assert [e.episode for u, e, _ in poster.delivered if u == SLOW] == ["0", "7", "8", "9"]
    assert "caught up; 6 were dropped" in caplog.text
    await notifier.aclose()


async def test_events_no_hook_wants_are_not_remembered():
    notifier, poster = await started(rules(f"notify: [{{url: '{FAST}', events: [full]}}]"))
    notifier.offer(event())
    assert len(notifier.dedupe) == 0 and notifier.lanes == {}
    await notifier.aclose()


async def test_key_text_is_scrubbed_before_the_event_is_queued():
    notifier, poster = await started(rules())
    notifier.offer(event(reason=f"HTTP 401 invalid key {KEY_A}"))
    await settle()
    [(_, sent, secrets)] = [d for d in poster.delivered if d[0] == FAST]
    assert KEY_A not in sent.reason and "[redacted]" in sent.reason
    assert KEY_A in secrets                       # and the sender scrubs again with the rules in force
    poster.release.set()
    await notifier.aclose()


async def test_an_event_emitted_on_another_thread_is_handed_to_the_loop():
    notifier, poster = await started(rules())
    thread = threading.Thread(target=notifier.offer, args=(event(kind="budget"),))
    thread.start()
    thread.join()
    for _ in range(20):
        await asyncio.sleep(0.01)
        if poster.delivered:
            break
    assert poster.kinds(FAST) == ["budget"]
    await notifier.aclose()


async def test_a_failing_delivery_does_not_end_its_lane(caplog):
    class Broken(FakePoster):
        async def deliver(self, hook, event, secrets):
            if event.episode == "1":
                raise RuntimeError("bug")
            await super().deliver(hook, event, secrets)
    poster = Broken()
    notifier = Notifier(lambda: rules(f"notify: [{{url: '{FAST}'}}]"), poster)
    notifier.start()
    notifier.offer(event(episode="1"))
    notifier.offer(event(episode="2"))
    await settle()
    assert [e.episode for _, e, _ in poster.delivered] == ["2"]
    assert "posting a cooldown notification to 127.0.0.1:8 failed" in caplog.text
    await notifier.aclose()


async def test_a_removed_hook_loses_its_lane_once_idle():
    current = {"rules": rules()}
    poster = FakePoster()
    poster.release.set()
    notifier = Notifier(lambda: current["rules"], poster)
    notifier.start()
    notifier.offer(event())
    await settle()
    assert len(notifier.lanes) == 2
    current["rules"] = rules(f"notify: [{{url: '{FAST}'}}]")
    notifier.offer(event(episode="2"))
    assert [h.url.get_secret_value() for h in notifier.lanes] == [FAST]
    await notifier.aclose()


async def test_close_waits_briefly_for_queued_events_then_stops():
    notifier, poster = await started(rules())
    notifier.offer(event())
    began = time.monotonic()
    await notifier.aclose(grace=0.2)             # the slow hook never finishes
    assert 0.15 <= time.monotonic() - began < 1.0
    assert poster.kinds(FAST) == ["cooldown"] and notifier.lanes == {}
    notifier.offer(event(episode="9"))           # after close: ignored, no error
    assert notifier.lanes == {}


def test_offering_before_start_is_ignored():
    notifier = Notifier(rules, FakePoster())
    notifier.offer(event())
    assert notifier.lanes == {}


class Claims:
    """A shared state's claims: the first claim of a name wins; `fail` raises instead."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.asked: list[tuple[str, float]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, name, until):
        self.asked.append((name, until))
        await self.release.wait()
        if self.fail:
            raise RuntimeError("a bug in the claim")
        return [n for n, _ in self.asked].count(name) == 1


async def test_an_occurrence_with_a_claim_is_told_only_by_the_instance_that_claims_it_first():
    claims = Claims()
    notifier, poster = await started(rules(), claim=claims)
    until = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    notifier.offer(Event("cooldown", "a", "down", until=until, episode="ends 1", claim="cooldown:a"))
    notifier.offer(Event("cooldown", "a", "down", until=until, episode="ends 2", claim="cooldown:a"))
    notifier.offer(event(kind="recovered"))                     # no claim: this instance's own news
    poster.release.set()
    await settle()
    assert poster.kinds(FAST) == ["recovered", "cooldown"] and poster.kinds(SLOW) == ["cooldown"]
    assert claims.asked == [("cooldown:a", until.timestamp())] * 2
    await notifier.aclose()


async def test_a_claim_of_a_state_is_told_by_the_instance_that_changes_the_last_told_state():
    told_states: dict[str, str] = {}
    asked = []

    async def claim_state(name, state, episode, absorbed):
        asked.append((name, state))
        before, told_states[name] = told_states.get(name), state
        return before != state

    notifier, poster = await started(rules(), claim=Claims(fail=True), claim_state=claim_state)
    for kind, episode in (("cooldown", "1"), ("cooldown", "2"), ("recovered", "2"), ("cooldown", "3")):
        notifier.offer(Event(kind, "a", "r", episode=episode, claim="health:a", state=kind))
        await settle()
    assert poster.kinds(FAST) == ["cooldown", "recovered", "cooldown"]
    assert asked == [("health:a", "cooldown"), ("health:a", "cooldown"), ("health:a", "recovered"),
                     ("health:a", "cooldown")]
    await notifier.aclose()


async def test_a_claim_without_a_known_end_holds_an_hour_and_a_failing_claim_still_tells(caplog):
    claims = Claims(fail=True)
    notifier, poster = await started(rules(), claim=claims)
    notifier.offer(Event("exhausted", None, "nothing left", route="claude", episode="503", claim="exhausted:x"))
    await settle()
    [(name, until)] = claims.asked
    assert name == "exhausted:x" and 3590 < until - time.time() <= 3600
    assert poster.kinds(FAST) == ["exhausted"] and "claiming the exhausted notification failed" in caplog.text
    await notifier.aclose()


async def test_close_waits_for_a_claim_under_way():
    claims = Claims()
    claims.release.clear()
    notifier, poster = await started(rules(), claim=claims)
    notifier.offer(Event("cooldown", "a", "down", episode="1", claim="cooldown:a"))
    asyncio.get_running_loop().call_later(0.05, claims.release.set)
    poster.release.set()
    await notifier.aclose(grace=1.0)
    assert poster.kinds(FAST) == ["cooldown"]


async def test_with_a_shared_state_a_cooldown_the_damper_takes_back_is_told_if_another_instance_told_the_recovery():
    """A holds a flapping upstream's recovery; B tells one; A's next cooldown must be told, or
    the hooks' last word would be B's `recovered` while the upstream is down."""
    told_states: dict[str, str] = {}

    async def claim_state(name, state, episode, absorbed):
        before, told_states[name] = told_states.get(name), state
        return before != state

    def health(kind, episode):
        return Event(kind, "a", kind, episode=episode, claim="health:a", state=kind)

    a, a_poster = await started(rules(), claim_state=claim_state, settle=lambda: 60, shared=lambda: True)
    b, b_poster = await started(rules(), claim_state=claim_state, settle=lambda: 60, shared=lambda: True)
    for kind, episode in (("cooldown", "1"), ("recovered", "1"), ("cooldown", "2"), ("recovered", "2")):
        a.offer(health(kind, episode))
        await settle()
    assert a_poster.kinds(FAST) == ["cooldown", "recovered", "cooldown"]      # the last recovery held
    b.offer(health("recovered", "b1"))
    await settle()
    a.offer(health("cooldown", "3"))       # taken back by A's damper, but B told the recovery
    await settle()
    assert b_poster.kinds(FAST) == ["recovered"] and a_poster.kinds(FAST)[-1] == "cooldown"
    assert told_states == {"health:a": "cooldown"}
    a.offer(health("recovered", "3"))       # held again; a cooldown now, with nothing told between: quiet
    a.offer(health("cooldown", "4"))
    await settle()
    assert a_poster.kinds(FAST) == ["cooldown", "recovered", "cooldown", "cooldown"]
    await a.aclose()
    await b.aclose()


async def test_the_claims_of_one_name_are_made_and_told_in_the_order_their_events_came():
    """A 429's cooldown, then the 2xx of a request that was under way: were the recovery's claim
    to land first, the hooks' last word would be `cooldown` for a healthy upstream."""
    order, first_may_go = [], asyncio.Event()

    async def claim_state(name, state, episode, absorbed):
        if state == "cooldown":
            await first_may_go.wait()       # the first claim is the slow one
        order.append(state)
        return True

    notifier, poster = await started(rules(), claim_state=claim_state)
    notifier.offer(Event("cooldown", "a", "r", episode="1", claim="health:a", state="cooldown"))
    notifier.offer(Event("recovered", "a", "r", episode="1", claim="health:a", state="recovered"))
    await settle()
    assert order == [] and poster.kinds(FAST) == []
    first_may_go.set()
    await settle()
    assert order == ["cooldown", "recovered"] and poster.kinds(FAST) == ["cooldown", "recovered"]
    assert notifier._last_claim == {}
    await notifier.aclose()


async def test_each_backlog_of_a_lane_is_logged_and_counted_on_its_own(caplog):
    caplog.set_level(logging.WARNING, "ccswitch.notify")
    notifier, poster = await started(rules(f"notify: [{{url: '{SLOW}'}}]"), capacity=2)
    for episodes in ("abcd", "efg"):
        poster.release.clear()
        for episode in episodes:
            notifier.offer(event(episode=episode))
        await settle()
        poster.release.set()
        await settle()
    assert [e.episode for _, e, _ in poster.delivered] == ["c", "d", "f", "g"]
    assert caplog.text.count("backed up") == 2
    assert "caught up; 2 were dropped" in caplog.text and "caught up; 1 were dropped" in caplog.text
    await notifier.aclose()


async def test_without_a_shared_state_a_cooldown_the_damper_takes_back_is_not_told():
    notifier, poster = await started(rules(), settle=lambda: 60)
    for kind, episode in (("cooldown", "1"), ("recovered", "1"), ("cooldown", "2"), ("recovered", "2"),
                          ("cooldown", "3")):
        notifier.offer(Event(kind, "a", kind, episode=episode, claim="health:a", state=kind))
        await settle()
    poster.release.set()
    await settle()
    assert poster.kinds(FAST) == ["cooldown", "recovered", "cooldown"]     # the flapping's first cooldown only
    await notifier.aclose()


async def test_a_claim_waits_for_the_claim_made_just_before_it_whatever_came_earlier():
    gates = {"1": asyncio.Event(), "2": asyncio.Event()}
    order = []

    async def claim_state(name, state, episode, absorbed):
        if episode in gates:
            await gates[episode].wait()
        order.append((state, episode))
        return True

    notifier, poster = await started(rules(), claim_state=claim_state)
    notifier.offer(Event("cooldown", "a", "r", episode="1", claim="health:a", state="cooldown"))
    notifier.offer(Event("recovered", "a", "r", episode="2", claim="health:a", state="recovered"))
    gates["1"].set()
    await settle()                          # the first is told; the second's claim is under way
    notifier.offer(Event("cooldown", "a", "r", episode="3", claim="health:a", state="cooldown"))
    await settle()
    assert order == [("cooldown", "1")]
    gates["2"].set()
    await settle()
    assert order == [("cooldown", "1"), ("recovered", "2"), ("cooldown", "3")]
    assert poster.kinds(FAST) == ["cooldown", "recovered", "cooldown"]
    poster.release.set()
    await notifier.aclose()


async def slow_hook_removed(poster: FakePoster) -> tuple[Notifier, object]:
    """A notifier whose slow hook is posting an event when a reload removes that hook: (the
    notifier, the slow hook's lane)."""
    current = {"rules": rules()}
    notifier = Notifier(lambda: current["rules"], poster)
    notifier.start()
    notifier.offer(event())
    await settle()                          # the slow hook's lane is posting it (unless released)
    [slow] = [lane for hook, lane in notifier.lanes.items() if hook.url.get_secret_value() == SLOW]
    current["rules"] = rules(f"notify: [{{url: '{FAST}'}}]")
    notifier.offer(event(episode="2"))
    return notifier, slow


async def test_a_removed_hook_s_lane_posts_what_it_is_posting_then_ends():
    # it ended only at a later reload's first event: with no reload after, its task lived on
    poster = FakePoster()
    notifier, slow = await slow_hook_removed(poster)
    assert slow not in notifier.lanes.values() and not slow.task.done()    # busy: finishing its post
    poster.release.set()
    await settle()
    assert poster.kinds(SLOW) == ["cooldown"]                              # posted, nothing after
    assert slow.task.done() and not slow.task.cancelled()
    await notifier.aclose()


async def test_closing_waits_for_a_removed_hook_s_last_post():
    poster = FakePoster()
    notifier, slow = await slow_hook_removed(poster)
    asyncio.get_running_loop().call_later(0.1, poster.release.set)
    await notifier.aclose(grace=2.0)
    assert poster.kinds(SLOW) == ["cooldown"] and slow.task.done()


async def test_a_removed_hook_s_post_that_never_ends_is_stopped_at_close(caplog):
    caplog.set_level(logging.WARNING, "ccswitch.notify")
    notifier, slow = await slow_hook_removed(FakePoster())
    await notifier.aclose(grace=0.1)             # the slow hook never answers: not a task left behind
    assert slow.task.cancelled()
    # and what it was posting is named, as a configured hook's would be
    assert "stopping with 1 notification to 127.0.0.1:9 not delivered: cooldown (a)" in caplog.text


async def test_closing_after_a_removed_hook_s_lane_ended_does_not_wait_out_the_grace():
    # an ended lane is no longer one to wait for
    poster = FakePoster()
    poster.release.set()
    notifier, _ = await slow_hook_removed(poster)
    await settle()
    began = time.monotonic()
    await notifier.aclose(grace=2.0)
    assert time.monotonic() - began < 1.0


async def test_a_stop_that_leaves_notifications_undelivered_says_which(caplog):
    # the grace ran out on a hook that never answers: they were lost without a word
    caplog.set_level(logging.WARNING, "ccswitch.notify")
    notifier, poster = await started(rules())
    notifier.offer(event())
    notifier.offer(event(episode="2"))
    await settle()
    await notifier.aclose(grace=0.05)
    lines = [r.getMessage() for r in caplog.records if "stopping with" in r.getMessage()]
    assert lines == ["ccswitch: stopping with 2 notifications to 127.0.0.1:9 not delivered: cooldown (a), cooldown (a)"]
    assert poster.kinds(FAST) == ["cooldown", "cooldown"]       # the other hook's went out: no line for it


async def test_a_stop_that_leaves_many_notifications_undelivered_names_ten_and_counts_the_rest(caplog):
    # a hook down through a flapping upstream's hundred outages: one line several KB long
    caplog.set_level(logging.WARNING, "ccswitch.notify")
    notifier, _ = await started(rules())
    for n in range(25):
        notifier.offer(event(episode=str(n)))
    await settle()
    await notifier.aclose(grace=0.05)
    [line] = [r.getMessage() for r in caplog.records if "stopping with" in r.getMessage() and "127.0.0.1:9" in r.getMessage()]
    assert line.startswith("ccswitch: stopping with 25 notifications to 127.0.0.1:9 not delivered: cooldown (a), ")
    assert line.count("cooldown (a)") == 10 and line.endswith(", and 15 more")


async def test_a_stop_names_the_notification_being_posted_first_and_a_claim_not_answered(caplog):
    caplog.set_level(logging.WARNING, "ccswitch.notify")
    claims = Claims()
    claims.release.clear()      # the shared state never answers
    notifier, poster = await started(rules(), claim=claims)
    notifier.offer(event())                                         # being posted to the slow hook
    await settle()
    notifier.offer(Event(kind="cooldown", upstream="b", reason="down", episode="2"))     # queued behind it
    notifier.offer(Event("cooldown", "a", "down", episode="3", claim="cooldown:a"))     # its claim hangs
    await settle()
    await notifier.aclose(grace=0.05)
    lines = [r.getMessage() for r in caplog.records if "stopping with" in r.getMessage()]
    assert lines == [
        "ccswitch: stopping with 2 notifications to 127.0.0.1:9 not delivered: cooldown (a), cooldown (b)",
        "ccswitch: stopping with 1 notification not told: the instances' claim on them (Redis) had not answered"]


async def test_a_stop_that_leaves_one_notification_undelivered_says_it_in_the_singular(caplog):
    caplog.set_level(logging.WARNING, "ccswitch.notify")
    notifier, _ = await started(rules())
    notifier.offer(event())
    await settle()
    await notifier.aclose(grace=0.05)
    assert "stopping with 1 notification to 127.0.0.1:9 not delivered: cooldown (a)" in caplog.text
