"""`make up` as a newcomer runs it: everything starts, a referral posted reaches the inbox,
running it again does no harm, and `make down` stops everything it started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from deploy.local.stack import REPO_ROOT
from services.catalogue import SERVICES
from tests.services.factories import referral_body

BASE = int(os.environ.get("THREADLINE_SMOKE_PORT_BASE", 24350))
PORTS = {service: BASE + 10 + i for i, service in enumerate(SERVICES)}


def _environment(var: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "THREADLINE_VAR_DIR": str(var),
        "THREADLINE_PG_PORT": str(BASE),
        "THREADLINE_KAFKA_PORT": str(BASE + 1),
        "THREADLINE_KAFKA_CONTROLLER_PORT": str(BASE + 2),
        # A deployment with more than one process per service must work as well as one.
        "THREADLINE_REFERRALS_WORKERS": "2",
        # … and with its relay and timers in a process of their own (`threadline work`).
        "THREADLINE_REFERRALS_BACKGROUND": "separate",
    }
    for service, port in PORTS.items():
        env[f"THREADLINE_{service.upper()}_PORT"] = str(port)
    return env


def _make(
    target: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _token(identity: str, client_id: str) -> dict[str, str]:
    response = httpx.post(
        f"{identity}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, f"dev-secret-{client_id}"),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def smoke_var() -> Path:
    var = REPO_ROOT / "var" / "smoke"
    env = _environment(var)
    if var.exists():
        _make("down", env)
        shutil.rmtree(var)
    yield var
    _make("down", env)


def test_make_up_runs_everything_and_make_down_stops_it(smoke_var: Path) -> None:
    env = _environment(smoke_var)
    started = time.monotonic()
    up = _make("up", env)
    first_up_seconds = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    for service, port in PORTS.items():
        assert f"http://127.0.0.1:{port}" in up.stdout, f"{service} URL not printed"
    assert "MASH inbox: 3 item(s)" in up.stdout  # the demo was seeded

    for port in PORTS.values():
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200

    # As an agency would: a token from the identity provider, then the API.
    identity = f"http://127.0.0.1:{PORTS['identity']}"
    school, mash = (_token(identity, client) for client in ("oakfield-primary", "demo-mash"))
    unauthenticated = httpx.post(
        f"http://127.0.0.1:{PORTS['referrals']}/v1/referrals", json=referral_body(), timeout=10
    )
    assert unauthenticated.status_code == 401
    posted = httpx.post(
        f"http://127.0.0.1:{PORTS['referrals']}/v1/referrals",
        json=referral_body(),
        headers=school,
        timeout=10,
    )
    assert posted.status_code == 201, posted.text
    referral_id = posted.json()["id"]
    inbox_url = f"http://127.0.0.1:{PORTS['notifications']}/v1/inbox"
    deadline = time.monotonic() + 30
    items: list[dict] = []
    while time.monotonic() < deadline and not items:
        items = httpx.get(
            inbox_url, params={"referral_id": referral_id}, headers=mash, timeout=5
        ).json()["items"]
        time.sleep(0.3)
    assert [item["kind"] for item in items] == ["new_referral"]
    total = httpx.get(inbox_url, headers=mash, timeout=5).json()["total"]

    pids = {s: (smoke_var / "run" / f"{s}.pid").read_text() for s in SERVICES}
    again = _make("up", env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already there" in again.stdout
    assert {s: (smoke_var / "run" / f"{s}.pid").read_text() for s in SERVICES} == pids
    assert httpx.get(inbox_url, headers=mash, timeout=5).json()["total"] == total, (
        "a second up seeded twice"
    )

    status = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "threadline"), "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.stdout.count("ready (pid") == len(SERVICES), status.stdout

    # The referral above reached the inbox through the relay of the separate work process.
    work_pid = int((smoke_var / "run" / "referrals-work.pid").read_text())
    os.kill(work_pid, 0)
    for log in ("postgres.log", "kafka.log", "referrals-work.log", *(f"{s}.log" for s in SERVICES)):
        assert (smoke_var / "log" / log).exists(), f"no var/log/{log}"

    down = _make("down", env)
    assert down.returncode == 0, down.stdout + down.stderr
    still = [port for port in [BASE, BASE + 1, *PORTS.values()] if _listening(port)]
    assert still == [], f"ports still listening after make down: {still}"
    assert not list((smoke_var / "run").glob("*.pid"))
    print(f"first make up took {first_up_seconds:.1f}s")
