"""`ccswitch` command line: init, check, env, run, report, activate, notify-test.

Every command that reads rules says on stderr which file it uses and why (stdout may be eval'ed
or parsed); it looks for ./rules.yaml, then ~/.ccswitch/rules.yaml, else uses the built-in example."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from ccswitch.cli.out_dir import cannot_write
from ccswitch.cli.output import quiet_on_broken_pipe
from ccswitch.cli.rules_file import MarkedEnv, find_announced, load_for_command, load_for_part, named_file
from ccswitch.config.database_url import PostgresURL
from ccswitch.config.load import BUILT_IN, is_there
from ccswitch.config.models import Rules
from ccswitch.config.needs import unmet_needs
from ccswitch.config.values import RulesError, shadowed_globs
from ccswitch.net.addresses import is_loopback_host
from ccswitch.vocab import Route


def _check(args: argparse.Namespace) -> int:
    if args.rules and args.rules_option and args.rules != args.rules_option:
        print("name the rules file once: as an argument or with --rules", file=sys.stderr)
        return 2
    try:
        rules, path = find_announced(args.rules or args.rules_option)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    # what the proxy would refuse to start on here (a missing package, a ledger it cannot write)
    if unmet := unmet_needs(rules):
        print(f"valid rules, but the proxy would refuse them on this machine, run as {getpass.getuser()} with "
              "the ledger on (--set ccswitch_ledger=false needs no usage_db):", file=sys.stderr)
        for key, problem in unmet:
            print(f"{path or BUILT_IN}: {key}: {problem}", file=sys.stderr)
        print(f"{len(unmet)} problem(s) found", file=sys.stderr)
        return 1
    where = str(path) if path else "the built-in default (no rules.yaml found)"
    routes = ", ".join(f"{route}: {len(rules.routes.for_route(route))}" for route in Route)
    count = len(rules.upstreams)
    print(f"{where}: OK ({count} upstream{'' if count == 1 else 's'}; routes {routes})")
    for note in check_notes(rules):
        print(f"note: {note}")
    return 0


def check_notes(rules: Rules) -> list[str]:
    """What valid rules do that their writer may not mean: nothing routed, upstreams in no route
    (an example copied without its route), a key sent unencrypted beyond this machine."""
    routed = {name for route in Route for name in rules.routes.for_route(route)}
    idle = [u.name for u in rules.upstreams if u.name not in routed]
    notes = (["no route lists an upstream: every request passes through untouched"] if not routed
             else [f"in no route (no request is routed to them): {', '.join(idle)}"] if idle else [])
    # a key sent as plain text to a host beyond this machine: anyone on the way reads it
    open_keys = [u.name for u in rules.upstreams
                 if u.api_key and u.base_url.lower().startswith("http://") and not is_loopback_host(u.base_url)]
    if open_keys:
        notes.append(f"send their key unencrypted (an http:// base_url beyond loopback): {', '.join(open_keys)}")
    # the first matching glob of `models:` wins: a narrower one after a wider one is never used
    notes += [f"upstreams[{u.name}].models: {glob!r} is never used: {by!r}, before it, takes every model it names"
              for u in rules.upstreams for glob, by in shadowed_globs(u.models)]
    # argparse reads `ccswitch activate -lead` as an option
    notes += [f"upstreams[{u.name}]: a name starting with '-' reads as an option on a command line: "
              f"`ccswitch activate -- {u.name}`" for u in rules.upstreams if u.name.startswith("-")]
    return notes


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number, 1..65535 (not {text})")
    return port


def _env(args: argparse.Namespace) -> int:
    from ccswitch.cli.env import LOOPBACK, env_lines, listening, mitmproxy_ca, unset_client_key
    # the clients' shell need not hold the relays' ${VAR} keys: env reads only routes, auth and client_keys
    rules = load_for_command(args.rules, env=MarkedEnv())
    if rules is None:
        return 1
    # absolute: the lines are eval'd, and a client started in another folder reads them
    confdir = Path(args.confdir).expanduser().absolute()
    bundle_dir = Path(args.bundle_dir).expanduser().absolute() if args.bundle_dir is not None else confdir
    try:
        lines = env_lines(confdir=confdir, port=args.port, reverse=args.reverse, codex_toml=args.codex_toml,
                          bundle_dir=bundle_dir, rules=rules)
    except OSError as exc:     # where the CA bundle goes: print no exports at all rather than half of them
        print(cannot_write("--bundle-dir" if args.bundle_dir else "--confdir", bundle_dir, exc), file=sys.stderr)
        return 1
    print(lines)
    failed = 0
    if not args.codex_toml and not listening(LOOPBACK, args.port):
        # a client pointed at nothing says so only after minutes of retries (Claude Code: 3)
        print(f"ccswitch: nothing listens on {LOOPBACK}:{args.port} yet: start ccswitch with its "
              f"{'reverse' if args.reverse else 'regular'} listener there (ccswitch run), or pass --port with "
              "the port it listens on", file=sys.stderr)
    ca = mitmproxy_ca(confdir)
    if not args.reverse and not args.codex_toml and not ca.is_file():
        # `eval` drops the comment that says so, and the clients would then refuse ccswitch's certificates
        print(f"ccswitch: mitmproxy's CA {ca} does not exist yet, so the clients were not told "
              "to trust it: start ccswitch once (ccswitch run), then run `ccswitch env` again", file=sys.stderr)
        failed = 1
    if missing := unset_client_key(rules):
        print(f"ccswitch: {missing} of your client key (client_keys[0]) is not set in this shell, so no key "
              "was exported for the clients; set it and run again", file=sys.stderr)
        failed = 1
    return failed


def _init(args: argparse.Namespace) -> int:
    from ccswitch.cli.init import in_the_way, personal_rules_path, write_example_rules
    home = Path.home()
    try:
        path = write_example_rules(home)
    except FileExistsError as exc:
        print(in_the_way(Path(exc.filename), personal_rules_path(home)), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot write {exc.filename or home / '.ccswitch'}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(path)
    local = Path.cwd() / "rules.yaml"
    shadowed = is_there(local)      # chosen first in any form
    check = f"ccswitch check --rules {path}" if shadowed else "ccswitch check"
    print(f"wrote the example rules to {path}: edit it, then `{check}`", file=sys.stderr)
    if shadowed:
        print(f"note: {local} comes first while you run ccswitch in {local.parent}; "
              f"use --rules {path} (mitmdump: --set ccswitch_rules={path}) there", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from ccswitch.cli.report import run
    return run(args)


def _probe_texts(rules: Rules, name: str) -> list[str]:
    """What a probe of `name` sends or connects with: its key, headers and proxy, and the ledger."""
    try:
        upstream = rules.upstream(name)
    except KeyError:
        return []
    proxy = [upstream.proxy.shown, *upstream.proxy.secrets()] if upstream.proxy is not None else []
    ledger = rules.usage_db.conninfo if isinstance(rules.usage_db, PostgresURL) else str(rules.usage_db)
    return [*upstream.secret_texts(), *upstream.headers.values(), *proxy, ledger]


def _activate(args: argparse.Namespace) -> int:
    import asyncio

    from ccswitch.activation.probe import send_probe
    from ccswitch.ledger.writer import Ledger
    from ccswitch.net.http1 import UpstreamClient
    rules = load_for_part(args.rules, lambda rules: _probe_texts(rules, args.name), f"activating {args.name}")
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
    if lacking := upstream.lacks():
        print(f"{lacking}: nothing to activate with", file=sys.stderr)
        return 1

    async def probe():
        client = UpstreamClient()
        try:
            return await send_probe(client, upstream, connect_timeout=rules.timeouts.connect)
        finally:
            await client.aclose()

    result = asyncio.run(probe())
    ledger = Ledger(rules.usage_db).start()
    ledger.add("activations", result.row())
    ledger.close()
    verdict = "ok" if result.ok else f"failed: {result.error}"
    details = [f"{result.latency_ms} ms"]
    if result.status is not None and f"HTTP {result.status}" not in verdict:   # no answer: no status
        details.insert(0, f"status {result.status}")
    if upstream.proxy is not None and upstream.proxy.shown not in verdict:   # (an error may name it already)
        details.append(f"through {upstream.proxy.shown}")                     # never its credentials
    print(f"{upstream.name}: activation {verdict} ({', '.join(details)})")
    return 0 if result.ok else 1


def installed_version() -> str:
    """The version pip installed (setup.cfg's), and mitmproxy's beside it: the two an upgrade changes."""
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:       # run from a checkout that was never installed
            return "(not installed)"
    return f"{of('ccswitch')}, mitmproxy {of('mitmproxy')}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccswitch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ccswitch {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="write ~/.ccswitch/rules.yaml from the shipped example (never overwrites)")
    init.set_defaults(parser=init, func=_init)

    check = sub.add_parser("check", help="validate a rules file; print every problem")
    check.add_argument("rules", nargs="?", type=named_file, help="path of rules.yaml (default: as mitmdump would find it)")
    check.add_argument("--rules", dest="rules_option", metavar="RULES", type=named_file,
                       help="the same, as the other commands take it")
    check.set_defaults(parser=check, func=_check)

    env = sub.add_parser("env", help="print eval-able exports for Claude Code and Codex CLI")
    env.add_argument("--reverse", action="store_true", help="base-URL (reverse mode) variables instead of a proxy")
    env.add_argument("--port", type=_port, default=None, help="the proxy's port (default 8080; 8082 with --reverse)")
    env.add_argument("--codex-toml", action="store_true", help="print a Codex model_providers block instead")
    env.add_argument("--confdir", default="~/.mitmproxy", type=named_file, help="mitmproxy's confdir (where its CA lives)")
    env.add_argument("--bundle-dir", default=None, type=named_file, help="where to write the CA bundle (default: confdir)")
    env.add_argument("--rules", metavar="PATH", type=named_file,
                     help="rules.yaml deciding the clients' API keys (default: as mitmdump would find it)")
    env.set_defaults(parser=env, func=_env)

    # parsed by ccswitch.cli.run itself (every argument goes to mitmdump); listed here for --help
    sub.add_parser("run", add_help=False, help="run mitmdump with ccswitch (--web: mitmweb); other arguments go to it")

    activate = sub.add_parser("activate", help="send an upstream's activation probe now")
    activate.add_argument("name", help="the upstream's name in the rules")
    activate.add_argument("--rules", type=named_file, help="path of rules.yaml (default: as mitmdump would find it)")
    activate.set_defaults(parser=activate, func=_activate)

    from ccswitch.cli import notify_test
    notify = sub.add_parser("notify-test", help="send a test event to every notify hook; print each hook's result")
    notify_test.add_arguments(notify)
    notify.set_defaults(parser=notify, func=notify_test.run)

    from ccswitch.cli.report import add_arguments as report_arguments
    report = sub.add_parser("report", help="daily usage, cost, failovers and errors; charts and report.html with --out")
    report_arguments(report)
    report.set_defaults(parser=report, func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        from ccswitch.cli.run import run
        return run(argv[1:])
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:     # said with the command's own usage line, not the top level's
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "port", 0) is None:
        from ccswitch.cli.env import REGULAR_PORT, REVERSE_PORT
        args.port = REVERSE_PORT if args.reverse else REGULAR_PORT
    return quiet_on_broken_pipe(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
