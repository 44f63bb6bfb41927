"""SIGTERM to the real proxy while requests are in flight.

Those in flight finish (or, past `ccswitch_shutdown_grace`, end in their protocol: a stream
with its error event, a whole answer with a 503); new ones get a 503 in their API's format
with retry-after; every answer has its usage row; the proxy exits cleanly, with no traceback.
"""

import json
import signal
import sqlite3
import threading
import time

import httpx
import pytest

from ccswitch.wire.sse import parse_all
from tests.support.helpers import KEY_A
from tests.support.mock_upstream import MockUpstream, slow_stream
from tests.support.proxy_process import Proxy

LOG_PROBLEMS = ("Traceback", "CancelledError", "Exception in callback", "Unhandled error")
PATHS = {"msg": "/v1/messages", "chat": "/v1/chat/completions"}


def proxy_for(tmp_path, mock: MockUpstream, grace: int) -> Proxy:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [a], chat: [a]}}
timeouts: {{total: 60s, idle: 30s}}
""")
    return Proxy(rules, tmp_path, extra_args=("--set", f"ccswitch_shutdown_grace={grace}"))


class Call(threading.Thread):
    """One client request in its own thread: `result` is (status, reason, headers, body) or the error."""

    def __init__(self, proxy: Proxy, api: str, model: str, stream: bool) -> None:
        super().__init__(daemon=True)
        self.url = proxy.reverse_url + PATHS[api]
        self.body = {"model": model, "max_tokens": 16, "stream": stream,
                     "messages": [{"role": "user", "content": "hi"}]}
        self.result = None
        self.start()

    def run(self) -> None:
        try:
            with httpx.Client(timeout=30, trust_env=False) as client, \
                    client.stream("POST", self.url, json=self.body, headers={"x-api-key": "k"}) as r:
                self.result = (r.status_code, r.reason_phrase, r.headers, r.read())
        except httpx.HTTPError as exc:
            self.result = exc

    def answer(self):
        self.join(30)
        assert not isinstance(self.result, BaseException) and self.result is not None, self.result
        return self.result


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def rows(proxy: Proxy) -> dict[str, tuple]:
    conn = sqlite3.connect(proxy.usage_db)
    try:
        return {model: (status, error) for model, status, error in
                conn.execute("SELECT model, status, error FROM requests")}
    finally:
        conn.close()


def stream_text(api: str, body: bytes) -> tuple[str, list]:
    """(text of the deltas, the events) of a streamed answer."""
    events = parse_all(body)
    if api == "msg":
        text = "".join(e.json()["delta"].get("text", "") for e in events if e.type == "content_block_delta")
    else:
        text = "".join(c["delta"].get("content") or "" for e in events if isinstance(e.json(), dict)
                       for c in e.json().get("choices") or [])
    return text, events


def assert_clean_exit(proxy: Proxy, within: float) -> None:
    assert proxy.proc.wait(within) == 0
    log = proxy.log()
    assert not [p for p in LOG_PROBLEMS if p in log], log[-3000:]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_lets_requests_in_flight_finish_and_refuses_new_ones(tmp_path, stop):
    # SIGHUP: the terminal of a foreground `ccswitch run` closed; its default ended the process
    # at once, a stream cut short and the last rows lost
    with MockUpstream("A") as a:
        a.default = slow_stream(5, 0.2)           # about a second per answer
        with proxy_for(tmp_path, a, grace=10) as proxy:
            calls = {(api, stream): Call(proxy, api, f"{api}-{stream}", stream)
                     for api in PATHS for stream in (True, False)}
            wait_until(lambda: len(a.requests) == 4)   # all four reached the upstream
            proxy.proc.send_signal(stop)
            wait_until(lambda: "ccswitch: shutting down" in proxy.log())
            late = {api: Call(proxy, api, f"late-{api}", api == "chat") for api in PATHS}

            for api, call in late.items():
                status, _, headers, body = call.answer()
                assert (status, headers["retry-after"], headers["connection"]) == (503, "10", "close")
                error = json.loads(body)["error"]
                assert error["message"] == "ccswitch is shutting down"
                assert api == "chat" or json.loads(body)["type"] == "error"
            for (api, stream), call in calls.items():
                status, reason, _, body = call.answer()
                assert (status, reason) == (200, "OK")    # streamed ones too: the relay names its status
                if stream:
                    text, events = stream_text(api, body)
                    assert events[-1].type == "message_stop" if api == "msg" else events[-1].data == "[DONE]"
                else:
                    js = json.loads(body)
                    text = js["content"][0]["text"] if api == "msg" else js["choices"][0]["message"]["content"]
                assert text == "tok0 tok1 tok2 tok3 tok4 "
            assert_clean_exit(proxy, 15)
        assert rows(proxy) == {**{f"{api}-{stream}": (200, None) for api, stream in calls},
                               **{f"late-{api}": (503, "ccswitch is shutting down") for api in PATHS}}
        assert len(a.requests) == 4   # the late ones never reached the upstream


def test_past_the_grace_period_streams_end_with_their_error_event_and_the_rest_get_503(tmp_path):
    with MockUpstream("A") as a:
        a.default = slow_stream(40, 0.2)          # eight seconds per answer: longer than the grace
        with proxy_for(tmp_path, a, grace=1) as proxy:
            calls = {"msg-stream": Call(proxy, "msg", "msg-stream", True),
                     "chat-stream": Call(proxy, "chat", "chat-stream", True),
                     "msg-whole": Call(proxy, "msg", "msg-whole", False)}
            wait_until(lambda: len(a.requests) == 3)
            time.sleep(0.5)                         # the streams have started
            signalled = time.monotonic()
            proxy.proc.send_signal(signal.SIGTERM)

            for name in ("msg-stream", "chat-stream"):
                status, reason, _, body = calls[name].answer()
                assert (status, reason) == (200, "OK")
                text, events = stream_text(name.split("-")[0], body)
                assert text.startswith("tok0 tok1 ") and "tok39" not in text
                last = events[-1].json()
                error = last["error"]                  # Anthropic's `error` event, or Chat's error chunk
                assert "ccswitch is shutting down" in error["message"]
                assert name == "chat-stream" or (events[-1].event, last["type"]) == ("error", "error")
            status, _, headers, body = calls["msg-whole"].answer()
            assert (status, headers["retry-after"]) == (503, "10")
            assert json.loads(body)["type"] == "error"
            assert "ccswitch is shutting down" in json.loads(body)["error"]["message"]
            assert_clean_exit(proxy, 10)
            assert time.monotonic() - signalled < 5
        assert "still in flight after 1 s; ending them" in proxy.log()
        cut = "shutdown: not finished within the grace period"
        assert rows(proxy) == {"msg-stream": (200, cut), "chat-stream": (200, cut), "msg-whole": (503, cut)}
