"""The soak test, short: 5 clients for 20 s against flipping upstreams and live rule edits
(atomic, in place with a pause after a valid prefix, invalid, emptied), then SIGTERM to the
proxy while they still send.

scripts/soak.py does the work and the audit (well-formed answers, failover whenever an
upstream was healthy, one ledger row per request, a clean log, bounded memory, a clean
shutdown under load); this runs it in-process and fails with its report.  About 28 s.
"""

import importlib.util
import sys

from tests.support import SCRIPTS

SCRIPT = SCRIPTS / "soak.py"


def load_soak():
    spec = importlib.util.spec_from_file_location("ccswitch_soak", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_short_soak_holds_every_invariant(tmp_path):
    soak = load_soak()
    args = soak.parse_args(["--clients", "5", "--seconds", "20", "--seed", "7", "--workdir", str(tmp_path)])
    report = soak.run(args, out=lambda line: None)
    text = report.text()
    print(text)
    assert report.ok, text
    stats = report.stats
    # the run did what it claims: traffic, chaos, live edits, and something to assert on
    assert stats["requests"] >= 200
    assert sum(stats["flips"].values()) >= 5
    assert stats["valid_edits"] >= 2
    assert stats["partial_edits"] >= 1 and stats["empty_edits"] >= 1   # in-place writes and empty files
    assert stats["covered"] >= 0.1 * stats["requests"]
    assert stats["shutdown"]["in_flight"] >= 1   # the proxy was stopped under load
