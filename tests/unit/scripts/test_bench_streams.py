"""The concurrent-streams figure's arithmetic and parsing (its runs are a script, never timed here)."""

import asyncio

import pytest

from scripts import bench
from scripts import bench_streams as bs


def test_clients_are_ramped_evenly_from_zero():
    assert bs.ramp_delays(4, 3.0) == [0.0, 0.75, 1.5, 2.25]
    assert bs.ramp_delays(0, 3.0) == []


def test_gaps_are_the_waits_between_arrivals():
    assert bs.gaps([1.0, 1.5, 3.0]) == [0.5, 1.5]
    assert bs.gaps([2.0]) == []


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_chunked_body_decodes_whatever_the_pieces(size):
    wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nb\r\nworld, done\r\n0\r\n\r\n"
    body = bs.ChunkedBody()
    out = b"".join(body.feed(wire[i:i + size]) for i in range(0, len(wire), size))
    assert out == b"hello world, done" and body.done


def test_chunked_body_is_not_done_before_its_last_chunk():
    body = bs.ChunkedBody()
    assert body.feed(b"3\r\nabc\r\n") == b"abc" and not body.done


def test_event_clock_notes_each_delta_once_even_split_across_reads():
    clock = bs.EventClock()
    clock.feed(b"event: message_start\ndata: {}\n\nevent: content_block_delta\ndata: {\"a\"", 1.0)
    clock.feed(b":1}\n\nevent: content_block_delta\ndata: {}\n\n", 2.0)
    assert clock.arrivals == [2.0, 2.0] and not clock.stopped
    clock.feed(b"event: message_stop\ndata: {}\n\n", 3.0)
    assert clock.stopped


def results() -> list[bs.StreamResult]:
    return [bs.StreamResult(True, 3, [0.1, 0.2]), bs.StreamResult(True, 3, [0.1, 0.4]),
            bs.StreamResult(False, 1, [], "status 502"), bs.StreamResult(True, 2, [0.1])]


def test_summary_counts_only_whole_streams_and_names_the_rest():
    summary = bs.summarize(results(), expected_events=3)
    assert summary["streams"] == 4 and summary["completed"] == 2
    assert summary["worst gap (ms)"] == pytest.approx(400)
    assert summary["errors"] == {"status 502": 1, "2 of 3 events": 1}


def test_summary_of_streams_without_events_has_no_gap():
    assert bs.summarize([bs.StreamResult(False, 0, [], "OSError")], 3)["worst gap (ms)"] == 0.0


def row(cpu: float, base_kb: int, peak_kb: int, completed: int = 1000) -> dict[str, float]:
    summary = {"streams": 1000, "completed": completed, "worst gap (ms)": 120.0, "p99 gap (ms)": 105.0}
    return bs.figures(summary, cpu, base_kb, peak_kb)


def test_figures_give_the_peak_over_idle_per_stream():
    f = row(5.0, 70 * 1024, 110 * 1024)
    assert f["peak RSS (MB)"] == 110 and f["peak RSS over idle, per stream (KB)"] == pytest.approx(40.96)
    assert f["proxy CPU (s)"] == 5.0 and f["streams completed"] == 1000


def test_memory_per_stream_over_bare_leaves_out_the_addons_fixed_size():
    bare = row(5.0, 70_000, 110_000)         # 40 KB per stream
    cc = row(6.0, 95_000, 160_000)           # 65 KB per stream, and 25 MB more at idle
    assert bs.rss_over_bare_per_stream(bare, cc) == pytest.approx(25)


def test_verdicts_name_what_was_met_and_what_was_missed():
    bare = row(5.0, 70_000, 110_000)
    met = bs.verdicts(bare, row(6.5, 95_000, 160_000), 1000)
    assert [line.split()[0] for line in met] == ["met", "met", "met"]
    missed = bs.verdicts(bare, row(6.6, 95_000, 161_000, completed=999), 1000)
    assert [line.split()[0] for line in missed] == ["MISSED"] * 3
    assert "+26.0 KB" in missed[1]


def test_rounds_combine_to_mean_cpu_and_memory_the_fewest_completed_and_the_worst_gap():
    first, second = row(5.0, 70_000, 110_000), row(7.0, 70_000, 130_000, completed=998)
    second["worst gap between events (ms)"] = 300.0
    both = bs.combine([first, second])
    assert both["proxy CPU (s)"] == 6.0 and both["peak RSS over idle, per stream (KB)"] == pytest.approx(50)
    assert both["streams completed"] == 998 and both["worst gap between events (ms)"] == 300.0
    assert both["p99 gap between events (ms)"] == 105.0


def test_each_rounds_ratios_are_noted_when_there_are_several():
    bare, cc = [row(5.0, 70_000, 110_000), row(4.0, 70_000, 110_000)], [row(6.0, 95_000, 160_000)] * 2
    assert bs.round_notes(bare, cc) == ["  by round: CPU 1.20x, 1.50x; RSS per open stream over bare's "
                                        "+25.0 KB, +25.0 KB"]
    assert bs.round_notes(bare[:1], cc[:1]) == []


def test_the_streams_table_has_ccswitchs_ratio_to_bare():
    header, *rows = bench.table({"bare mitmdump": row(5.0, 1, 2), "ccswitch reverse": row(7.5, 1, 2)}).splitlines()
    assert "ccswitch reverse / bare" in header
    assert next(r for r in rows if r.startswith("proxy CPU")).endswith("1.50x")


def test_the_mocks_stream_is_a_whole_anthropic_stream_with_the_asked_deltas():
    head, before, deltas, after = bs.sse_events(5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
    body = bs.ChunkedBody()
    clock = bs.EventClock()
    clock.feed(body.feed(before + b"".join(deltas) + after), 1.0)
    assert len(deltas) == 5 and len(clock.arrivals) == 5 and clock.stopped and body.done


def test_a_client_reads_a_whole_stream_from_the_mock():
    # the clients against a tiny in-process server of the mock's bytes
    async def run() -> dict:
        head, before, deltas, after = bs.sse_events(4)

        async def answer(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head + before + b"".join(deltas) + after)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await bs.run_clients(f"http://127.0.0.1:{port}", bs.Plan(streams=3, events=4, ramp=0.01))

    summary = asyncio.run(run())
    assert summary["completed"] == 3 and summary["errors"] == {}
