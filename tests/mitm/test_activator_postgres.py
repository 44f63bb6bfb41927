"""After a restart, the activation probes that already fired (read from a PostgreSQL ledger, as
from a SQLite one) are not sent again."""

from datetime import UTC, datetime

from ccswitch.activation.probe import Schedule
from ccswitch.config.load import parse_rules
from ccswitch.ledger.writer import Ledger
from ccswitch.mitm.activator import seed_from_ledger
from tests.unit.report.test_report_postgres import RULES, random_rows


def test_probes_that_fired_are_not_sent_again_after_a_restart_on_both(tmp_path, postgres_url):
    probes = [(table, row) for table, row in random_rows() if table == "activations"]
    now = datetime(2026, 3, 10, 23, 0, tzinfo=UTC)         # 07:00 on Mar 11 in Shanghai: its 06:00 fired
    schedules = []
    for usage_db in (tmp_path / "usage.db", postgres_url):
        rules = parse_rules(RULES + f"usage_db: '{usage_db}'\n")
        ledger = Ledger(rules.usage_db).start()
        for table, row in probes:
            ledger.add(table, row)
        ledger.close()
        schedule = Schedule()
        seed_from_ledger(schedule, rules, now.astimezone(rules.tz))
        schedules.append(schedule.slots)
    assert schedules[0] and schedules[1] == schedules[0]


def test_a_postgresql_ledger_without_tables_yet_seeds_nothing_and_says_nothing(postgres_url, caplog):
    rules = parse_rules(RULES + f"usage_db: '{postgres_url}'\n")
    schedule = Schedule()
    seed_from_ledger(schedule, rules, datetime(2026, 3, 10, 23, 0, tzinfo=UTC))
    assert schedule.slots == {} and "could not read" not in caplog.text
