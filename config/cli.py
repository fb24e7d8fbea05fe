"""The `tally` command: run Tally, its tests or manage.py, on embedded services if need be.

    tally run [--host H] [--port P]   migrate, load the demo, serve web + worker + beat
    tally test [pytest args...]       run the test suite
    tally manage <args...>            manage.py with the same environment as `run`
    tally services                    only start the embedded PostgreSQL and Redis

PostgreSQL and Redis come from DATABASE_URL / REDIS_URL when set, otherwise they are
started from the data folder (TALLY_HOME, default `.tally/`), see config/embedded.py.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from config.embedded import (
    REPO,
    embedded_services,
    persistent_parameter_keys,
    persistent_secret_key,
    tally_home,
)

# The venv's own gunicorn and celery, never whichever ones happen to be on PATH.
BIN = Path(sys.executable).parent
STOP_TIMEOUT = 10.0
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    # Closing the terminal or `kill` must stop the servers too, like Ctrl-C does.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    try:
        # pytest and manage.py options must reach them untouched, so these bypass argparse.
        if argv[:1] == ["test"]:
            return test(argv[1:])
        if argv[:1] == ["manage"]:
            return manage(argv[1:])
        args = parser.parse_args(argv)
        if args.command == "run":
            return run(args.host, args.port)
        return services()
    except KeyboardInterrupt:
        return INTERRUPTED
    except RuntimeError as exc:
        print(f"tally: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tally", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_parser = commands.add_parser("run", help="serve Tally with its worker and scheduler")
    run_parser.add_argument("--host", default=os.environ.get("TALLY_HOST", "127.0.0.1"))
    run_parser.add_argument("--port", type=int, default=int(os.environ.get("TALLY_PORT", 8000)))
    commands.add_parser("test", help="run pytest (arguments are passed on)", add_help=False)
    commands.add_parser("manage", help="run manage.py (arguments are passed on)", add_help=False)
    commands.add_parser("services", help="start PostgreSQL and Redis until Ctrl-C")
    return parser


# --- commands -------------------------------------------------------------------------------


def run(host: str, port: int) -> int:
    home = tally_home()
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    base_url = f"http://{address}"
    with embedded_services(home) as started:
        env = _env(home, started, os.environ.get("SECRET_KEY") or persistent_secret_key(home))
        env.setdefault("TALLY_API_AUDIENCE", base_url)
        env["ALLOWED_HOSTS"] = _with_host(env.get("ALLOWED_HOSTS"), host)
        for step in (["migrate", "--noinput"], ["collectstatic", "--noinput"], ["setup_schedules"]):
            code, _ = _foreground(_manage(*step), env)
            if code:
                raise RuntimeError(f"manage.py {step[0]} failed (exit code {code}).")
        code, output = _foreground(_manage("load_demo"), env, capture=True)
        if code:
            raise RuntimeError(f"manage.py load_demo failed (exit code {code}).")
        _announce_demo(output)
        children = _start_app(home, address, env)
        return _supervise(children, host, port, base_url)


def test(pytest_args: list[str]) -> int:
    home = tally_home()
    with embedded_services(home) as started:
        env = _env(home, started, os.environ.get("SECRET_KEY") or f"test-{secrets.token_hex(16)}")
        code, _ = _foreground([sys.executable, "-m", "pytest", *pytest_args], env)
        return code


def manage(manage_args: list[str]) -> int:
    home = tally_home()
    with embedded_services(home) as started:
        env = _env(home, started, os.environ.get("SECRET_KEY") or persistent_secret_key(home))
        code, _ = _foreground(_manage(*manage_args), env)
        return code


def services() -> int:
    home = tally_home()
    with embedded_services(home) as started:
        if "SECRET_KEY" not in os.environ:
            started = {**started, "SECRET_KEY": persistent_secret_key(home)}
        if "TALLY_PARAMETER_KEYS" not in os.environ:
            started = {**started, "TALLY_PARAMETER_KEYS": persistent_parameter_keys(home)}
        for name, value in started.items():
            _say(f"export {name}={shlex.quote(value)}")
        _say("# Services are running; Ctrl-C stops them.")
        try:
            signal.pause()
        except KeyboardInterrupt:
            _ignore_signals()
        return 0


# --- helpers --------------------------------------------------------------------------------


def _say(message: str) -> None:
    # Flushed at once: our lines interleave with the children's output on the same stream.
    print(message, flush=True)


def _env(home: Path, started: dict[str, str], secret_key: str) -> dict[str, str]:
    env = {**os.environ, **started}
    env.setdefault("SECRET_KEY", secret_key)
    env.setdefault("STATIC_ROOT", str(home / "static"))
    if not env.get("TALLY_PARAMETER_KEYS"):
        env["TALLY_PARAMETER_KEYS"] = persistent_parameter_keys(home)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    return env


def _with_host(allowed_hosts: str | None, host: str) -> str:
    hosts = (allowed_hosts or "localhost,127.0.0.1,[::1]").split(",")
    entry = f"[{host}]" if ":" in host else host
    return ",".join(hosts if entry in hosts else [*hosts, entry])


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "manage.py"), *args]


def _ignore_signals() -> None:
    """Shutdown has begun: a second Ctrl-C must not cut it short and leave servers behind."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def _foreground(command: list[str], env: dict[str, str], capture: bool = False) -> tuple[int, str]:
    """Run a one-off command in our process group, so that Ctrl-C reaches it directly."""
    process = subprocess.Popen(  # noqa: S603
        command, env=env, cwd=REPO, stdout=subprocess.PIPE if capture else None, text=True
    )
    try:
        output, _ = process.communicate()
    except KeyboardInterrupt:
        _ignore_signals()
        # Passed on in case the signal was sent to us alone (kill, make forwarding SIGTERM).
        _stop([process], signal.SIGINT, group=False)
        raise
    return process.returncode, output or ""


def _announce_demo(output: str) -> None:
    if '"application"' in output:
        _say("Demo data loaded. Its credentials are printed this once only, keep them:")
    else:
        _say("Demo data already loaded (its credentials were printed on the first run):")
    _say(output.strip())


def _start_app(home: Path, address: str, env: dict[str, str]) -> dict[str, subprocess.Popen[str]]:
    workers = env.get("TALLY_WEB_WORKERS", "2")
    (home / "run").mkdir(parents=True, exist_ok=True)
    commands = {
        "web (gunicorn)": [
            str(BIN / "gunicorn"), "-c", "python:config.gunicorn", "config.wsgi:application",
            "--bind", address,
            "--workers", workers, "--graceful-timeout", "5", "--access-logfile", "-",
        ],
        "worker (celery)": [
            str(BIN / "celery"), "-A", "config", "worker", "--loglevel", "INFO",
            "--concurrency", "2",
        ],
        "beat (celery)": [
            str(BIN / "celery"), "-A", "config", "beat", "-S", "django", "--loglevel", "INFO",
            # The database scheduler needs no file, but celery beat defaults one into the cwd.
            "--schedule", str(home / "run" / "celerybeat-schedule"),
        ],
    }  # fmt: skip
    # Each child leads its own process group: Ctrl-C reaches only us, so we stop them in
    # order, and can kill a whole tree (gunicorn and celery workers) if it hangs.
    return {
        name: subprocess.Popen(  # noqa: S603
            command, env=env, cwd=REPO, stdin=subprocess.DEVNULL, process_group=0, text=True
        )
        for name, command in commands.items()
    }


def _supervise(
    children: dict[str, subprocess.Popen[str]], host: str, port: int, base_url: str
) -> int:
    announced = False
    try:
        while True:
            for name, process in children.items():
                if process.poll() is not None:
                    _ignore_signals()
                    print(
                        f"tally: {name} exited unexpectedly (exit code {process.returncode});"
                        " stopping everything.",
                        file=sys.stderr,
                        flush=True,
                    )
                    _stop(children.values(), signal.SIGTERM, group=True)
                    return 1
            if not announced and _listening(host, port):
                announced = True
                _say(f"Tally is running at {base_url}/")
                _say(f"  sign in:   {base_url}/login/")
                _say(f"  dashboard: {base_url}/dashboard/")
                _say(f"  platform:  {base_url}/platform/")
                _say(f"  admin:     {base_url}/admin/")
                _say(f"  API docs:  {base_url}/api/docs/")
                _say("Press Ctrl-C to stop.")
            time.sleep(0.5)
    except KeyboardInterrupt:
        _ignore_signals()
        _say("Stopping Tally...")
        _stop(children.values(), signal.SIGTERM, group=True)
        return 0


def _listening(host: str, port: int) -> bool:
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(processes: Iterable[subprocess.Popen[str]], signum: int, group: bool) -> None:
    """Signal each process, give them STOP_TIMEOUT together, then kill what is left."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            _signal(process, signum, group)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"tally: {process.args[0]} did not stop in time; killing it.", file=sys.stderr)
            _signal(process, signal.SIGKILL, group)
            process.wait()
        if group:
            # Sweep stragglers whose leader is gone (e.g. orphaned pool processes).
            _signal(process, signal.SIGKILL, group)


def _signal(process: subprocess.Popen[str], signum: int, group: bool) -> None:
    try:
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
    except ProcessLookupError:
        pass
