"""A throwaway `redis-server` on loopback for the tests and the benchmark (registered as pytest
fixtures in tests/conftest.py).

``redis_server`` (session): one server for the whole run, started here (`.ci/run` installs
Debian's redis-server when it is missing).  ``redis_url``: that server emptied for one test.
``own_redis``: a server of the test's own, which the test may kill and start again.  Without the
`redis-server` binary the tests skip, saying why — except under ``CI=true``, where that is a
failure.  Nothing is persisted (``--save '' --appendonly no``): a restart is an empty Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BINARY = "redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Redis tests: {reason} (.ci/run installs redis-server)", pytrace=False)
    pytest.skip(reason)


def command(port: int, *words: str, timeout: float = 2.0) -> bytes:
    """One inline command (PING, FLUSHALL, ...) over a plain socket: the answer's first line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall((" ".join(words) + "\r\n").encode())
        return conn.makefile("rb").readline().rstrip(b"\r\n")


class RedisServer:
    """`redis-server` on 127.0.0.1 at a free port; `kill` it (an outage) and `start` it again on
    the same port (empty: nothing is saved)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ccswitch-redis-"))
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which(BINARY)
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode}: {self.log()}")
            try:
                if command(self.port, "PING") == b"+PONG":
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """Gone at once, as in a crash: clients see their connections drop."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def flush(self) -> None:
        assert command(self.port, "FLUSHALL") == b"+OK"

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()


def _started() -> RedisServer:
    if shutil.which(BINARY) is None:
        _unavailable("redis-server is not installed (apt-get install redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        _unavailable("the redis package is not installed (pip install -e '.[test]')")
    return RedisServer().start()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = _started()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's server, empty, for one test."""
    redis_server.flush()
    return redis_server.url()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of the test's own: it may be killed and started again."""
    server = _started()
    try:
        yield server
    finally:
        server.remove()
