"""A month of a ledger's priced requests, summed per upstream, client and local day before the
proxy's loop counts them (pure)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from ccswitch.report.spend import by_day
from ccswitch.routing.budget import CLIENT, UPSTREAM, SpendBoard

TZ = ZoneInfo("Asia/Shanghai")      # a local day starts at 16:00 UTC the day before


def test_sums_per_upstream_client_and_local_day_count_as_the_rows_one_by_one():
    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    rows = [(start + timedelta(minutes=7 * i), ("a", "b")[i % 2], (None, "alice", "bob")[i % 3], 0.01 * (i % 5))
            for i in range(3000)]                                    # about two weeks, both sides of 16:00
    grouped = by_day(rows, TZ)
    assert len(grouped) < 100 and abs(sum(r[3] for r in grouped) - sum(r[3] for r in rows)) < 1e-9
    now = start + timedelta(days=14, hours=20)
    one_by_one, summed = SpendBoard(lambda: now), SpendBoard(lambda: now)
    for board, source in ((one_by_one, rows), (summed, grouped)):
        board.tz = TZ
        board.load(amount for ts, upstream, client, usd in source
                   for amount in ((UPSTREAM, upstream, usd, ts), (CLIENT, client, usd, ts)))
    for who, name in ((UPSTREAM, "a"), (UPSTREAM, "b"), (CLIENT, "alice"), (CLIENT, "bob")):
        for kind in ("daily", "monthly"):
            assert abs(one_by_one.spent(who, name, kind) - summed.spent(who, name, kind)) < 1e-9


def test_rows_of_one_utc_date_on_two_local_days_are_two_sums():
    # 15:00 and 17:00 UTC are the 10th and the 11th in Shanghai: one sum would count the 11th's
    # spend in the 10th's daily budget
    early, late = datetime(2026, 3, 10, 15, 0, tzinfo=UTC), datetime(2026, 3, 10, 17, 0, tzinfo=UTC)
    assert sorted(by_day([(early, "a", "alice", 1.0), (late, "a", "alice", 2.0)], TZ)) == [
        (early, "a", "alice", 1.0), (late, "a", "alice", 2.0)]
