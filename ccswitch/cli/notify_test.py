"""`ccswitch notify-test`: a test event to every notify hook in the rules, each hook's result
printed by its host (never its URL, which often carries a token); exit 1 if any failed."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ccswitch.cli.rules_file import load_for_part, named_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", metavar="PATH", type=named_file, help="path of rules.yaml (default: as mitmdump would find it)")


def run(args: argparse.Namespace) -> int:
    from ccswitch.net.http1 import UpstreamClient
    from ccswitch.notify.webhook import WebhookPoster, hook_lines, send_test  # only when this command runs
    # the hooks' URLs alone: the relays' keys need not be set in the shell it is run from
    rules = load_for_part(args.rules, lambda rules: [hook.url.get_secret_value() for hook in rules.notify],
                          "notify-test")
    if rules is None:
        return 1
    if not rules.notify:
        print("the rules have no notify hooks: nothing to test", file=sys.stderr)
        return 1

    async def send() -> list:
        client = UpstreamClient()
        try:
            return await send_test(WebhookPoster(client), rules)
        finally:
            await client.aclose()

    results = asyncio.run(send())
    for line in hook_lines(rules, results):
        print(line)
    return 0 if all(result.ok for result in results) else 1
