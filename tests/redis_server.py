"""A Redis server of a test's own, to stop, restart or roll back without touching the
suite's Redis (other tests and processes share that one)."""

from __future__ import annotations

import socket
import subprocess
import time

import redis

from config.embedded import _redis_executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A Redis that saves nothing by itself: stopped, it loses everything it held, unless
    the test took a `snapshot`, which the next start loads (Redis going back in time, as
    after a crash that restores the last snapshot, or a failover to a lagging replica)."""

    def __init__(self, directory) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [_redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("The test's Redis did not start.")

    def snapshot(self) -> None:
        """Write everything held now to the dump file the next start loads."""
        redis.Redis.from_url(self.url, socket_timeout=5).save()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def kill(self) -> None:
        """Stop as a crash does: nothing is written on the way out."""
        self.process.kill()
        self.process.wait(timeout=10)


def serve(settings, directory):
    """For a fixture: a RedisServer that every Redis client of the app (cache, rate
    limits, usage counts) points at while the test runs."""
    server = RedisServer(directory)
    server.start()
    settings.REDIS_URL = server.url
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": server.url}}
    yield server
    if server.process.poll() is None:
        server.stop()
