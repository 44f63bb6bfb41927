"""The text report in a terminal narrower than its tables: each table comes in blocks of columns,
one under the other, each led by the rows' labels (every row was wrapped over two lines, its
columns out of line); a file or a pipe gets whole lines.  And what the report says of itself: when
it was made, and no "Sent upstream as" column when no model was renamed."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ccswitch.report import terminal, text
from ccswitch.report.html import render_html
from tests.unit.report.test_attempts import MAR1, make_db
from tests.unit.report.test_views import build, cli

NOW = datetime(2026, 3, 1, 12, 34, tzinfo=UTC)      # 20:34 in the rules' Asia/Shanghai


@pytest.mark.parametrize(("widths", "fit", "blocks"), [
    ([10, 8, 8, 8], None, [[0, 1, 2, 3]]),
    ([10, 8, 8, 8], 40, [[0, 1, 2, 3]]),              # 10 + 3 × (2 + 8) = 40: fits
    ([10, 8, 8, 8], 30, [[0, 1, 2], [0, 3]]),
    ([10, 30, 8], 20, [[0, 1], [0, 2]]),              # a column wider than the rest of the line: alone
])
def test_columns_fall_into_blocks_each_led_by_the_labels(widths, fit, blocks):
    assert terminal.column_blocks(widths, fit) == blocks


@pytest.mark.parametrize("fit", [60, 80])
def test_a_narrow_terminal_gets_every_table_in_blocks_that_fit_and_nothing_left_out(tmp_path, fit):
    report = build(make_db(tmp_path), MAR1, MAR1, by="model", now=NOW)
    whole, fitted = text.render_table(report).splitlines(), text.render_table(report, fit).splitlines()
    assert max(map(len, whole)) > 100
    assert not [line for line in fitted if len(line) > fit and " " in line]    # but a path, which is one word
    # the main table: each figure of its total still there, each head once, each block led by the label
    main = fitted[:fitted.index("By model:")]
    totals = [line.split() for line in main if line.startswith("Total")]
    assert len(totals) >= 2 and sum(len(t) - 1 for t in totals) == len(text.COLUMNS)
    heads = [line.split() for line in main if line.startswith("Day ")]
    assert [word for head in heads for word in head[1:]] == " ".join(text.COLUMNS).split()


def test_the_command_fits_its_terminal_and_a_pipe_gets_whole_lines(tmp_path, capsys, monkeypatch):
    db = make_db(tmp_path)
    monkeypatch.delenv("COLUMNS", raising=False)
    assert cli(tmp_path, db, "--since", str(MAR1), "--until", str(MAR1)) == 0     # captured: not a terminal
    assert max(map(len, capsys.readouterr().out.splitlines())) > 100
    monkeypatch.setenv("COLUMNS", "60")
    assert cli(tmp_path, db, "--since", str(MAR1), "--until", str(MAR1)) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if len(line) > 60 and " " in line]


def test_the_report_says_when_it_was_made_and_no_renaming_column_when_none_was_renamed(tmp_path):
    report = build(make_db(tmp_path), MAR1, MAR1, by="model", now=NOW)
    out = text.render_table(report)
    assert out.splitlines()[0].startswith("ccswitch usage 2026-03-01 .. 2026-03-01 (Asia/Shanghai), made 2026-03-01 20:34;")
    assert "Sent upstream as" not in out
    page = render_html(report, [])
    assert "made 2026-03-01 20:34" in page and "Sent upstream as" not in page


def test_two_long_names_that_would_shorten_alike_are_shown_whole(tmp_path):
    from tests.unit.report.test_views import make_db as make_rows_db
    opus41, opus45 = "vendor-org/claude-opus-4-1-finetune-05-20260101", "vendor-org/claude-opus-4-5-finetune-05-20260101"
    other = "vendor-org/some-other-model-with-a-rather-long-name-2026"
    db = make_rows_db(tmp_path, [dict(ts="2026-03-01T02:00:00.000+00:00", model=m) for m in (opus41, opus45, other)])
    out = text.render_table(build(db, MAR1, MAR1, by="model", now=NOW))
    summary = out.split("By model:\n")[1]
    assert opus41 in summary and opus45 in summary                 # the version is where they differ
    assert other not in summary and terminal.short_label(other) in summary      # a long name alone is still shortened
    assert f"  {opus41}" in out.split("By model:")[0]              # the day's group rows alike
    assert opus45 in render_html(build(db, MAR1, MAR1, by="model", now=NOW), [])


def test_reasoning_tokens_are_said_in_the_text_and_the_page(tmp_path):
    from tests.unit.report.test_views import make_db as make_rows_db
    db = make_rows_db(tmp_path, [dict(ts="2026-03-01T02:00:00.000+00:00", output_tokens=50_000, reasoning_tokens=12_000)])
    report = build(db, MAR1, MAR1, now=NOW)
    assert "Output includes 12.0K reasoning tokens." in text.render_table(report)
    assert "output includes 12.0K reasoning tokens" in render_html(report, [])


def test_labels_alike_when_shortened_are_shortened_less_but_not_without_end():
    head, tail = "m" * 150, "z" * 150
    one, two, alone = head + "-4-1-" + tail, head + "-4-5-" + tail, "solo-" + "q" * 200
    shown = terminal.short_labels([one, two, alone])
    assert shown[alone] == terminal.short_label(alone) and len(shown[alone]) == terminal.LABEL_WIDTH
    # alike even at the longest (they differ only at their middle): told apart by a number
    assert (shown[one], shown[two]) == (terminal.short_label(one, terminal.LONGEST_LABEL) + " (1)",
                                        terminal.short_label(two, terminal.LONGEST_LABEL) + " (2)")
    near = [head[:30] + "-4-1-" + tail[:30], head[:30] + "-4-5-" + tail[:30]]    # 65 long: 70 tells them apart
    assert list(terminal.short_labels(near).values()) == near


def test_labels_alike_even_at_the_longest_are_numbered_the_same_whatever_order_they_come_in():
    # the rows come costliest first, which changes from day to day: a name keeps its number
    head, tail = "m" * 150, "z" * 150
    one, two = head + "-4-1-" + tail, head + "-4-5-" + tail
    assert terminal.short_labels([two, one]) == terminal.short_labels([one, two])
    assert terminal.short_labels([two, one])[one].endswith(" (1)")


def test_a_text_column_alone_too_wide_is_wrapped_at_word_ends_to_at_least_20_columns_a_long_word_whole():
    rows = [["Name", "Note"], ["a" * 30, "word word word word word " + "x" * 30]]
    assert terminal.table_lines(rows, lambda i: True, fit=40) == [
        "Name" + " " * 28 + "Note",
        "-" * 30 + "  " + "-" * 20,
        "a" * 30 + "  word word word word",
        " " * 32 + "word",
        " " * 32 + "x" * 30,
    ]


def test_blocks_of_a_table_come_one_under_the_other_apart_each_with_its_rules():
    rows = [["L", "A", "B"], ["one", "1" * 10, "2" * 10], ["Total", "3" * 10, "4" * 10]]
    assert terminal.table_lines(rows, lambda i: i == 0, {1}, fit=18) == [
        "L" + " " * 15 + "A", "-----  ----------", "one    1111111111", "-----  ----------", "Total  3333333333",
        "",
        "L" + " " * 15 + "B", "-----  ----------", "one    2222222222", "-----  ----------", "Total  4444444444",
    ]


def test_a_note_too_wide_is_wrapped_at_spaces_only_its_lines_after_the_first_indented():
    # a name or a path is never cut: a terminal's copy of it still works
    said = "note: the relay-a-long-hyphenated-name missed /a/path/longer/than/twenty/columns in a row"
    assert terminal.prose(said, 24, indent="  ") == [
        "note: the", "  relay-a-long-hyphenated-name", "  missed", "  /a/path/longer/than/twenty/columns", "  in a row"]
    assert terminal.prose(said, None) == terminal.prose(said, len(said)) == [said]


def test_every_table_fits_the_terminal_the_blocks_and_the_cache_hit_grid_too(tmp_path):
    from tests.unit.report.test_views import make_db as make_rows_db
    db = make_rows_db(tmp_path, [dict(ts=f"2026-03-01T0{h}:00:00.000+00:00", input_tokens=1000, cache_read_tokens=9000,
                                      upstream=up, model="claude-haiku-4-5")
                                 for h, up in ((1, "relay-a"), (2, "anthropic-official"), (3, "some-third-upstream"))])
    report = build(db, MAR1, MAR1, by="model", blocks=True, now=NOW)
    whole = text.render_table(report)
    assert "5-hour blocks" in whole and "Cache hit % per day and upstream:" in whole
    assert max(map(len, whole.splitlines())) > 60
    assert not [line for line in text.render_table(report, 50).splitlines() if len(line) > 50 and " " in line]


def test_the_note_on_rescued_failures_comes_only_when_an_attempt_failed(tmp_path):
    from tests.unit.report.test_views import make_db as make_rows_db
    clean = make_rows_db(tmp_path, [dict(ts="2026-03-01T02:00:00.000+00:00", attempts=1)])
    assert text.RESCUED not in text.render_table(build(clean, MAR1, MAR1, now=NOW))
