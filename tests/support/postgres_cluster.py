"""A throwaway PostgreSQL cluster on loopback, for the tests, the benchmark and `.ci/run`.

`initdb` in a directory of its own, listening on 127.0.0.1 only at a free port (its socket file
in that directory too), a superuser `ccswitch` with a random password (password auth over TCP,
so the tests carry a real secret), fsync off unless asked (nothing here outlives the machine).  As root,
the server runs as the `postgres` user that Debian's package creates (initdb refuses root), or
as a system user made for it.  Standard library only: `.ci/run` uses it before the venv exists.

    python3 tests/support/postgres_cluster.py start DIR    # prints the admin URL; runs until `stop`
    python3 tests/support/postgres_cluster.py stop DIR

The server binaries: `initdb` on PATH, else the newest /usr/lib/postgresql/*/bin (Debian's
`postgresql` package; `.ci/run` installs it when missing).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

SUPERUSER = "ccswitch"
SERVICE_USER = "postgres"            # Debian's; made (as a system user) when missing
STATE_FILE = "cluster.json"


def bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are, or None when the server is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return candidates[-1].parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _service_user() -> str | None:
    """The user the server runs as when we are root (None: we are not root, run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                       check=True, capture_output=True)
    return SERVICE_USER


class Cluster:
    """One cluster in ``base`` (a directory of its own): ``start``, ``stop``, ``start`` again (same port)."""

    def __init__(self, base: Path, *, port: int | None = None, password: str | None = None,
                 throwaway: bool = True) -> None:
        self.base = Path(base).resolve()
        self.throwaway = throwaway      # False: the server's own durability settings (the benchmark)
        self.data = self.base / "data"
        self.port = port or free_port()
        self.password = password or secrets.token_urlsafe(18)
        bins = bindir()
        if bins is None:
            raise RuntimeError("PostgreSQL's server is not installed (Debian: apt-get install postgresql)")
        self.bins = bins
        self.user = _service_user()

    @classmethod
    def load(cls, base: Path) -> Cluster:
        state = json.loads((Path(base) / STATE_FILE).read_text())
        return cls(base, port=state["port"], password=state["password"])

    @property
    def url(self) -> str:
        """The superuser's URL, to the `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bins / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, stdin=subprocess.DEVNULL)

    def _init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            shutil.chown(self.base, self.user)
            shutil.chown(pwfile, self.user)
        os.chmod(self.base, 0o700)
        try:
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}", "-E", "UTF8",
                      "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        finally:
            pwfile.unlink()
        (self.base / STATE_FILE).write_text(json.dumps({"port": self.port, "password": self.password}))

    def start(self) -> Cluster:
        if not (self.data / "PG_VERSION").exists():
            self._init()
        options = " ".join([f"-c listen_addresses=127.0.0.1 -c port={self.port}",
                            f"-c unix_socket_directories={self.base}",
                            # a commit the server acknowledged survives a crash of the server (not of the
                            # machine): the outage tests stop it as if it crashed and count every row
                            "-c fsync=off -c full_page_writes=off" if self.throwaway else "",
                            "-c max_connections=200"])
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-w", "-t", "60",
                         "-o", options, "start", check=False)
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {done.stdout}{done.stderr}\n{self.server_log()}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop it, cutting clients off (``immediate``: as if it crashed); a stopped cluster stays so."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def server_log(self) -> str:
        path = self.base / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    command, base = argv[0], Path(argv[1])
    if command == "start":
        print(Cluster(base).start().url)
    else:
        Cluster.load(base).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
