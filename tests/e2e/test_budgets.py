"""End to end: named client keys and budgets through a real mitmdump — a client over its budget
never reaches an upstream, an upstream over its budget is skipped, and a restart keeps the day's
spend (read back from the ledger)."""

import anthropic
import pytest

from tests.e2e.test_failover import ledger, wait_rows
from tests.support.helpers import KEY_A, KEY_B, zone_at_noon
from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import Proxy

ALICE, BOB = "ccsw-ALICE-0000000000", "ccsw-BOB-00000000000"
RULES = f"""
timezone: UTC
client_keys:
  - {{name: alice, key: "{ALICE}", budget: {{daily: 0.00005}}}}
  - {{name: bob, key: "{BOB}"}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{{a}}', api_key: '{KEY_A}', budget: {{daily: 0.0003}}}}
  - {{name: b, protocol: anthropic, base_url: '{{b}}', api_key: '{KEY_B}'}}
routes: {{claude: [a, b]}}
"""
MODEL = "claude-sonnet-4-5"        # priced: the mock's usage costs $0.0002025 a request on it


def ask(proxy, key):
    client = anthropic.Anthropic(api_key=key, base_url=proxy.reverse_url, max_retries=0)
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=5,
                                                   messages=[{"role": "user", "content": "hi"}])
    return raw.headers["x-ccswitch-upstream"]


def test_budgets_hold_across_requests_and_a_restart(tmp_path):
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        # budget days in a zone where it is noon: the day does not end within the test
        rules.write_text(RULES.replace("{a}", a.base_url).replace("{b}", b.base_url)
                         .replace("timezone: UTC", f"timezone: {zone_at_noon()}"))
        with Proxy(rules, tmp_path) as proxy:
            assert ask(proxy, ALICE) == "a"                 # alice's first request costs over her budget
            wait_rows(proxy, 1)
            with pytest.raises(anthropic.RateLimitError) as err:
                ask(proxy, ALICE)
            headers = err.value.response.headers
            assert "client key alice has spent $" in err.value.message and "daily budget of $0.00" in err.value.message
            assert headers["x-should-retry"] == "false" and int(headers["retry-after"]) > 60
            assert ask(proxy, BOB) == "a"                   # bob has no budget; a is now over its own
            assert ask(proxy, BOB) == "b"                   # a skipped until tomorrow
            sent = len(a.requests) + len(b.requests)
            wait_rows(proxy, 4)
        rows = ledger(proxy, "SELECT client, upstream, status, model FROM requests ORDER BY id")
        # the refusal's row keeps the model the client named
        assert rows == [("alice", "a", 200, MODEL), ("alice", None, 429, MODEL), ("bob", "a", 200, MODEL),
                        ("bob", "b", 200, MODEL)]
        with Proxy(rules, tmp_path) as proxy:               # a restart: the day's spend is read back
            with pytest.raises(anthropic.RateLimitError):
                ask(proxy, ALICE)
            assert ask(proxy, BOB) == "b"
            assert len(a.requests) + len(b.requests) == sent + 1   # alice's refusal reached no upstream
