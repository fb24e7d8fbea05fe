"""`make run` works on a machine with no PostgreSQL or Redis running.

Starts `make run` on spare ports with an empty data folder and none of the service URLs in
its environment, waits for the API to answer, gets a token with the printed demo
credentials, signs in with the printed demo logins, stops it with Ctrl-C (SIGINT to its
process group) and checks nothing is left running. A second start on the same folder must
reuse the data.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
# What the test run itself may have set (CI points these at its own servers): the child
# must pick everything from its own data folder instead.
STRIPPED_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "SECRET_KEY",
    "STATIC_ROOT",
    "ALLOWED_HOSTS",
    "TALLY_API_AUDIENCE",
    "TALLY_HOST",
    "MAKEFLAGS",
    "MAKELEVEL",
)


def _spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MakeRun:
    """`make run` in its own process group, its output collected line by line."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = _spare_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {name: value for name, value in os.environ.items() if name not in STRIPPED_ENV}
        env.update(
            TALLY_HOME=str(home),
            TALLY_PORT=str(self.port),
            TALLY_REDIS_PORT=str(_spare_port()),
            PYTHONUNBUFFERED="1",
        )
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            ["make", "run"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.descendants: set[psutil.Process] = set()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines[-300:])

    def wait_for(self, what: str, check: Callable[[], Any]) -> Any:
        """Poll `check` until it returns something truthy; fail with the output otherwise."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.remember_descendants()
            result = check()
            if result:
                return result
            code = self.process.poll()
            if code is not None:
                pytest.fail(f"make run exited ({code}) before {what}:\n{self.output()}")
            time.sleep(0.5)
        pytest.fail(f"Timed out after {START_TIMEOUT:.0f} s waiting for {what}:\n{self.output()}")

    def demo_output(self) -> dict[str, Any] | None:
        for line in self.lines:
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if "application" in data or "demo" in data:
                    return data
        return None

    def schema_answers(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/api/schema/", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def remember_descendants(self) -> None:
        # gunicorn and celery lead their own process groups, so they are tracked one by one.
        with contextlib.suppress(psutil.NoSuchProcess):
            self.descendants.update(psutil.Process(self.process.pid).children(recursive=True))

    def interrupt(self) -> None:
        """Ctrl-C, as a terminal sends it: SIGINT to the whole foreground process group."""
        self.remember_descendants()
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run did not exit within {STOP_TIMEOUT:.0f} s:\n{self.output()}")
        _, alive = psutil.wait_procs(list(self.descendants), timeout=5)
        assert not alive, f"left running: {alive}\n{self.output()}"
        assert not _servers_using(self.home), self.output()

    def kill(self) -> None:
        """Last resort, also after a failure: nothing may outlive the test."""
        self.remember_descendants()
        for process in [*self.descendants, *_servers_using(self.home)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _servers_using(home: Path) -> list[psutil.Process]:
    """PostgreSQL and Redis processes working in the data folder (both chdir into it)."""
    found = []
    for process in psutil.process_iter():
        try:
            # Zombies (already exited, not yet reaped by init) have no cwd and run nothing.
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if Path(process.cwd()).is_relative_to(home):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _token(base_url: str, application: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{base_url}/oauth/token",
        json={
            "client_id": application["clientId"],
            "client_secret": application["clientSecret"],
            "grant_type": "client_credentials",
            "audience": base_url,
        },
        timeout=10,
    )


def _sign_in(base_url: str, username: str, password: str) -> tuple[requests.Session, str]:
    """Sign in at /login/ as a browser does; returns the session and where it landed."""
    session = requests.Session()
    form = session.get(f"{base_url}/login/", timeout=10)
    assert form.status_code == 200, form.text[:500]
    landed = session.post(
        f"{base_url}/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base_url}/login/"},
        timeout=30,
    )
    assert landed.status_code == 200, landed.text[:500]
    return session, landed.url


def _look_around(base_url: str, demo: dict[str, Any]) -> None:
    """What README's "Look around" promises: the printed logins open the dashboards, and
    the demo's usage is there to see."""
    users = {user["username"]: user["password"] for user in demo["users"]}
    _, landed = _sign_in(base_url, "demo-admin", users["demo-admin"])
    assert landed == f"{base_url}/dashboard/"
    session, _ = _sign_in(base_url, "both", users["both"])
    dashboard = session.get(f"{base_url}/dashboard/", timeout=30)
    # A member of both operators can switch to the second one.
    assert dashboard.status_code == 200 and demo["secondOperator"]["name"] in dashboard.text
    staff, _ = _sign_in(base_url, "admin", demo["staff"]["password"])
    platform = staff.get(f"{base_url}/platform/", timeout=30)
    assert platform.status_code == 200 and platform.url == f"{base_url}/platform/"
    token = _token(base_url, demo["application"]).json()["access_token"]
    meters = requests.get(
        f"{base_url}/usage-metering/v1/meters",
        params={"userId": "carol@example.com"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()["meters"]
    assert {meter["meterTypeName"] for meter in meters} == {"API calls", "Storage", "Pages printed"}
    # Storage is measured every three hours from midnight: today's meter has a value.
    assert any(meter["value"] > 0 for meter in meters if meter["meterTypeName"] == "Storage")


def test_make_run_starts_serves_and_stops_on_embedded_services(tmp_path: Path) -> None:
    home = tmp_path / "home"

    first = MakeRun(home)
    try:
        demo = first.wait_for("the demo credentials", first.demo_output)
        assert "application" in demo, f"expected fresh demo credentials:\n{first.output()}"
        first.wait_for("GET /api/schema/ to answer 200", first.schema_answers)
        response = _token(first.base_url, demo["application"])
        assert response.status_code == 200, response.text
        assert response.json()["access_token"]
        _look_around(first.base_url, demo)
        first.interrupt()
    finally:
        first.kill()

    second = MakeRun(home)
    try:
        again = second.wait_for("the demo message", second.demo_output)
        assert again == {"demo": "already present"}, second.output()
        second.wait_for("GET /api/schema/ to answer 200", second.schema_answers)
        # The data folder kept the application: the first run's credentials still work.
        response = _token(second.base_url, demo["application"])
        assert response.status_code == 200, response.text
        second.interrupt()
    finally:
        second.kill()
