"""The ceiling benchmark's least addons move what the upstream answered, on kept-alive connections
(its figures are a script's, never timed assertions here)."""

import httpx
import pytest

from scripts import bench_ceiling
from scripts.bench import BASE_BODY, HEADERS
from tests.support.mock_upstream import MockUpstream


@pytest.mark.parametrize("design", ["forward", "relay"])
def test_each_least_addon_passes_the_upstreams_answer_on(design, tmp_path):
    with MockUpstream("ceiling") as upstream:
        proc, url = bench_ceiling.start_design(design, upstream.port, tmp_path)
        try:
            with httpx.Client(trust_env=False) as client:
                answers = [client.post(url + "/v1/messages", json={**BASE_BODY, "model": f"m{i}"}, headers=HEADERS)
                           for i in range(3)]
        finally:
            proc.terminate()
            proc.wait(10)
    assert [a.json()["model"] for a in answers] == ["m0", "m1", "m2"]
    assert all(a.json()["content"][0]["text"] == "Hello from mock ceiling" for a in answers)
    # the start-up probe's request and these three, each sent once and by the addon (mitmproxy
    # would pass on the client's headers): the request hook had the whole body, nothing failed
    assert [r.headers["host"] for r in upstream.requests] == ["127.0.0.1"] * 4
    assert "Traceback" not in (tmp_path / f"{design}.log").read_text()


def test_the_answering_addon_never_reaches_the_upstream(tmp_path):
    with MockUpstream("ceiling") as upstream:
        proc, url = bench_ceiling.start_design("answer", upstream.port, tmp_path)
        try:
            answer = httpx.post(url + "/v1/messages", json={**BASE_BODY, "model": "m"}, headers=HEADERS, trust_env=False)
        finally:
            proc.terminate()
            proc.wait(10)
    assert answer.json() == {"type": "message"} and upstream.requests == []


def test_thread_cpu_tells_the_main_thread_from_the_others():
    import os
    import threading
    import time

    spun, measured = threading.Event(), threading.Event()

    def spin():            # then stays alive: an ended thread leaves /proc/<pid>/task
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        spun.set()
        measured.wait(10)

    main_before, others_before = bench_ceiling.thread_cpu(os.getpid())
    worker = threading.Thread(target=spin)
    worker.start()
    spun.wait(10)
    main_after, others_after = bench_ceiling.thread_cpu(os.getpid())
    measured.set()
    worker.join()
    assert others_after - others_before >= 0.25
    assert main_after - main_before < 0.1
