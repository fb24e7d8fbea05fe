"""Real servers for end-to-end tests: gunicorn serving Tally, started and stopped."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for a child process on the same database as this test run. The
    embedded PostgreSQL listens on a socket directory, which goes percent-encoded in the
    host part (as `tally` itself writes it)."""
    host = settings_dict["HOST"] or "127.0.0.1"
    if host.startswith("/"):
        host = quote(host, safe="")
    return (
        f"postgres://{settings_dict['USER']}@{host}:{settings_dict['PORT'] or 5432}/"
        f"{settings_dict['NAME']}"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn(environment: dict[str, str], workers: int = 1):
    """Tally under gunicorn (with config/gunicorn.py) on a loopback port; yields the port."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "-c",
        "python:config.gunicorn",
        "config.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    with _serving(command, environment, port):
        yield port


@contextmanager
def runserver(environment: dict[str, str]):
    """Tally under Django's development server (`manage.py runserver`); yields the port."""
    port = free_port()
    command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    with _serving(command, environment, port):
        yield port


@contextmanager
def _serving(command: list[str], environment: dict[str, str], port: int):
    process = subprocess.Popen(command, cwd=ROOT, env=environment)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{command[0]} did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
