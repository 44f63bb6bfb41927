"""Run the real `mitmdump -s addon.py` as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support import REPO

MITMDUMP = Path(sys.executable).with_name("mitmdump")
CCSWITCH = Path(sys.executable).with_name("ccswitch")
GUARD = Path(__file__).resolve().parent / "loopback_guard.py"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` ports free now, all different: taken one after the other, the kernel may hand the
    same one out twice (a proxy told to listen twice on one port does not start)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Proxy:
    """mitmdump with ccswitch, a regular (HTTPS_PROXY) and a reverse listener.

    ``launch``: ``mitmdump -s addon.py`` (the checkout's entry), ``run`` (`ccswitch run`, the
    packaged entry) or ``run --web`` (`ccswitch run --web`: mitmweb, its UI on ``web_port``).
    ``guard``: load the test-only loopback guard beside it (tests always do; a benchmark whose
    rules name only loopback upstreams runs ccswitch as shipped, without that extra addon).
    ``quiet``: mitmproxy's terminal log at `error` instead of `info` (a benchmark measuring
    against a quiet bare mitmdump: no line per connection); it is then ready once both
    listeners take a connection, instead of once its log says they listen."""

    def __init__(self, rules_path: Path, workdir: Path, *, reverse_target: str = "https://api.anthropic.com",
                 extra_args: tuple[str, ...] = (), env: dict | None = None, launch: str = "addon.py",
                 guard: bool = True, quiet: bool = False) -> None:
        self.rules_path, self.workdir, self.quiet = rules_path, workdir, quiet
        self.confdir = workdir / "mitmproxy-conf"
        self.regular_port, self.reverse_port, web_port = free_ports(3)
        self.log_path = workdir / "mitmdump.log"
        self.web_port = web_port if launch == "run --web" else None
        head = {"addon.py": [str(MITMDUMP), "-s", str(REPO / "addon.py")],
                "run": [str(CCSWITCH), "run"],
                "run --web": [str(CCSWITCH), "run", "--web", "--set", f"web_port={self.web_port}",
                              "--set", "web_open_browser=false"]}[launch]
        self.args = [
            *head, *(("-s", str(GUARD)) if guard else ()),
            "--set", f"ccswitch_rules={rules_path}", "--set", f"confdir={self.confdir}",
            "--set", f"termlog_verbosity={'error' if quiet else 'info'}",
            "--mode", f"regular@{self.regular_port}",
            "--mode", f"reverse:{reverse_target}@{self.reverse_port}", *extra_args,
        ]
        # HOME in the work dir: the default usage_db (~/.ccswitch/usage.db) stays in the test's folder
        self.env = {**os.environ, "HOME": str(workdir), **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def usage_db(self) -> Path:
        return self.workdir / ".ccswitch" / "usage.db"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.regular_port}"

    @property
    def reverse_url(self) -> str:
        return f"http://127.0.0.1:{self.reverse_port}"

    def start(self, timeout: float = 20.0, tries: int = 3) -> Proxy:
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, cwd=self.workdir, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if tries > 1 and "address already in use" in self.log():
                    # a port free when asked may be taken by another process before mitmdump binds it
                    self.log_file.close()
                    self._move_to(*free_ports(2))
                    return self.start(timeout, tries - 1)
                raise RuntimeError(f"mitmdump exited {self.proc.returncode}:\n{self.log()}")
            if self._listening() and self.ca_cert.exists():
                return self
            time.sleep(0.05)
        raise RuntimeError("mitmdump did not start:\n" + self.log())

    def _move_to(self, regular: int, reverse: int) -> None:
        """The listeners on other ports (the arguments edited in place: a test may have edited them too)."""
        self.args = [re.sub(rf"@{self.regular_port}$", f"@{regular}", arg) if arg.startswith("regular@")
                     else re.sub(rf"@{self.reverse_port}$", f"@{reverse}", arg) if arg.startswith("reverse:")
                     else arg for arg in self.args]
        self.regular_port, self.reverse_port = regular, reverse

    def _listening(self) -> bool:
        """Both listeners are up: its log says so, or (quiet) each takes a connection."""
        ports = (self.regular_port, self.reverse_port)
        if not self.quiet:
            text = self.log()
            return all(re.search(rf"listening at 127\.0\.0\.1:{port}\b", text) for port in ports)
        try:
            for port in ports:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)   # requests in flight get ccswitch_shutdown_grace to finish
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log_file", None):
            self.log_file.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
