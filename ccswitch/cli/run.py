"""`ccswitch run [--web] [ARGS...]`: mitmdump (or mitmweb) with the addon entry shipped in the package.

Installed without a checkout (``pip install .``, pipx) there is no ``addon.py`` to give to
``mitmdump -s``; the package carries the same entry as ``ccswitch/mitm/entry.py``. The process
is *replaced* (``os.execv``), so a supervisor's SIGTERM or a Ctrl-C reaches mitmdump itself
and ccswitch's graceful shutdown runs, with no wrapper in between.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ccswitch.config.load import find_rules
from ccswitch.config.values import RulesError

USAGE = """\
usage: ccswitch run [--web] [ARGS...]

Run mitmdump with ccswitch (mitmweb with --web); every other argument
goes to mitmdump / mitmweb unchanged, e.g.

  ccswitch run --mode regular@8080 --mode reverse:https://api.anthropic.com@8082
  ccswitch run --set ccswitch_rules=~/.ccswitch/rules.yaml
  ccswitch run --web --set web_port=8090

`ccswitch run -- --help` shows mitmdump's own options."""


def entry_path() -> Path:
    """The addon entry inside the installed package (what ``mitmdump -s`` loads)."""
    return Path(__file__).resolve().parent.parent / "mitm" / "entry.py"


def mitm_program(web: bool, python: str | None = None) -> Path | None:
    """mitmdump / mitmweb beside the Python running ccswitch (same venv), else on PATH, else None.

    ``python`` is not resolved: a venv's ``bin/python`` is a symlink to the system interpreter,
    while its mitmdump sits next to the link."""
    name = "mitmweb" if web else "mitmdump"
    beside = Path(python or sys.executable).with_name(name)
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def split_args(args: list[str]) -> tuple[bool, list[str]] | None:
    """-> (web, arguments for mitmproxy); None when ccswitch's own help was asked for.  `--web`
    anywhere before a `--` is ccswitch's (mitmproxy has no such option); after it, mitmproxy's."""
    cut = args.index("--") if "--" in args else len(args)
    ours, theirs = list(args[:cut]), list(args[cut + 1:])
    web = "--web" in ours
    rest = [arg for arg in ours if arg != "--web"]
    if rest[:1] in (["-h"], ["--help"]):
        return None
    return web, rest + theirs


def mitm_argv(program: Path, rest: list[str]) -> list[str]:
    # loopback from the first bind: mitmproxy binds its listeners before the script loaded, so a
    # listen host ccswitch sets itself comes a moment after they listened on every interface
    loopback = [] if _names_listen_host(rest) else ["--listen-host", "127.0.0.1"]
    return [str(program), "-s", str(entry_path()), *loopback, *rest]


def _names_listen_host(args: list[str]) -> bool:
    """Whether the user gave a listen host: on the command line, or in mitmproxy's config.yaml."""
    if any(setting.startswith("listen_host=") for setting in _settings(args)):
        return True
    if any(arg == "--listen-host" or arg.startswith("--listen-host=") for arg in args):
        return True
    return _config_names(_confdir(args), "listen_host")


def rules_problem(args: list[str]) -> str | None:
    """Why the proxy would refuse its rules at start, or None.  Told before anything listens:
    mitmproxy binds its listeners before it finds its script's error, and a client arriving in
    between gets a refused connection and the log a traceback.  Rules mitmproxy's config.yaml
    names are left to the proxy."""
    named = [setting.removeprefix("ccswitch_rules=") for setting in _settings(args)
             if setting.startswith("ccswitch_rules=")]
    if not named and _config_names(_confdir(args), "ccswitch_rules"):
        return None
    try:
        find_rules(named[-1] if named else None)
    except RulesError as exc:
        return str(exc)
    return None


def _confdir(args: list[str]) -> Path:
    confdir = "~/.mitmproxy"
    for setting in _settings(args):
        if setting.startswith("confdir="):
            confdir = setting.removeprefix("confdir=")
    return Path(confdir).expanduser()


def _settings(args: list[str]) -> list[str]:
    """The `name=value` of every `--set`."""
    found = []
    for i, arg in enumerate(args):
        if arg.startswith("--set="):
            found.append(arg.removeprefix("--set="))
        elif arg == "--set" and i + 1 < len(args):
            found.append(args[i + 1])
    return found


def _config_names(confdir: Path, option: str) -> bool:
    """Whether mitmproxy's config.yaml in `confdir` sets `option`."""
    for name in ("config.yaml", "config.yml"):
        try:
            text = (confdir / name).read_text(encoding="utf-8")
        except OSError:
            continue
        try:
            import yaml
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return True    # mitmproxy will say what is wrong with it; ccswitch adds nothing
        return isinstance(data, dict) and bool(data.get(option))
    return False


def run(args: list[str]) -> int:
    """Replace this process with mitmdump / mitmweb; returns only on an error (or for help)."""
    split = split_args(args)
    if split is None:
        print(USAGE)
        return 0
    web, rest = split
    program = mitm_program(web)
    if program is None:
        name = "mitmweb" if web else "mitmdump"
        print(f"ccswitch run: {name} not found beside {sys.executable} nor on PATH "
              "(it comes with mitmproxy, which ccswitch installs)", file=sys.stderr)
        return 127
    if (problem := rules_problem(rest)) is not None:
        print(f"invalid ccswitch rules:\n{problem}", file=sys.stderr)     # as the proxy words it
        return 1
    argv = mitm_argv(program, rest)
    # its log reaches a journal or a file line by line: with no terminal, Python writes stdout
    # in blocks, and a service's log said nothing until the first requests filled one
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(argv[0], argv)
    except OSError as exc:
        print(f"ccswitch run: cannot start {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 126
    return 0   # not reached: execv does not return
