"""`ccswitch` command line: check, env, report, activate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ccswitch.config.load import find_rules
from ccswitch.config.models import RulesError
from ccswitch.vocab import Route


def _check(args: argparse.Namespace) -> int:
    try:
        rules, path = find_rules(args.rules)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    where = str(path) if path else "the built-in default (no rules.yaml found)"
    routes = ", ".join(f"{route}: {len(rules.routes.for_route(route))}" for route in Route)
    print(f"{where}: OK ({len(rules.upstreams)} upstreams; routes {routes})")
    return 0


def _env(args: argparse.Namespace) -> int:
    from ccswitch.cli.env import env_lines
    confdir = Path(args.confdir).expanduser()
    print(env_lines(confdir=confdir, port=args.port, reverse=args.reverse, codex_toml=args.codex_toml,
                    bundle_dir=Path(args.bundle_dir).expanduser() if args.bundle_dir else confdir))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ccswitch.cli.report import run
    return run(args)


def _activate(args: argparse.Namespace) -> int:
    import asyncio

    from ccswitch.activation.probe import send_probe
    from ccswitch.ledger.writer import Ledger
    from ccswitch.net.http1 import UpstreamClient
    rules = _load_for_command(args.rules)
    if rules is None:
        return 1
    try:
        upstream = rules.upstream(args.name)
    except KeyError:
        print(f"no upstream named {args.name!r} (known: {', '.join(u.name for u in rules.upstreams)})",
              file=sys.stderr)
        return 1
    if upstream.auth == "client":
        print(f"{args.name} uses the client's credentials: nothing to activate with", file=sys.stderr)
        return 1

    async def probe():
        client = UpstreamClient()
        try:
            return await send_probe(client, upstream)
        finally:
            await client.aclose()

    result = asyncio.run(probe())
    ledger = Ledger(rules.usage_db).start()
    ledger.add("activations", result.row())
    ledger.close()
    verdict = "ok" if result.ok else f"failed: {result.error}"
    print(f"{upstream.name}: activation {verdict} (status {result.status}, {result.latency_ms} ms)")
    return 0 if result.ok else 1


def _load_for_command(path_arg: str | None):
    try:
        return find_rules(path_arg)[0]
    except RulesError as exc:
        print(str(exc), file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccswitch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a rules file; print every problem")
    check.add_argument("rules", nargs="?", help="path of rules.yaml (default: as mitmdump would find it)")
    check.set_defaults(func=_check)

    env = sub.add_parser("env", help="print eval-able exports for Claude Code and Codex CLI")
    env.add_argument("--reverse", action="store_true", help="base-URL (reverse mode) variables instead of a proxy")
    env.add_argument("--port", type=int, default=None, help="the proxy's port (default 8080; 8082 with --reverse)")
    env.add_argument("--codex-toml", action="store_true", help="print a Codex model_providers block instead")
    env.add_argument("--confdir", default="~/.mitmproxy", help="mitmproxy's confdir (where its CA lives)")
    env.add_argument("--bundle-dir", default=None, help="where to write the CA bundle (default: confdir)")
    env.set_defaults(func=_env)

    activate = sub.add_parser("activate", help="send an upstream's activation probe now")
    activate.add_argument("name", help="the upstream's name in the rules")
    activate.add_argument("--rules", help="path of rules.yaml (default: as mitmdump would find it)")
    activate.set_defaults(func=_activate)

    from ccswitch.cli.report import add_arguments as report_arguments
    report = sub.add_parser("report", help="daily usage, cost, failovers and errors; charts and report.html with --out")
    report_arguments(report)
    report.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "port", 0) is None:
        args.port = 8082 if args.reverse else 8080
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
