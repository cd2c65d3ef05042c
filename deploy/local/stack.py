"""The local stack: where its data, logs and pids live, which ports it uses, and how to run it.

``make up`` uses the development stack (state in ``var/dev``, logs in ``var/log``); the test
suite builds its own with other ports and directories, so both can run at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.local.kafka import LocalKafka
from deploy.local.postgres import LocalPostgres
from services.catalogue import SERVICES

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_PORTS = {
    "identity": 8100,
    "referrals": 8101,
    "consent": 8102,
    "notifications": 8103,
    "linking": 8104,
    "portal": 8105,
    "timeline": 8106,
}


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class Stack:
    state_dir: Path
    log_dir: Path
    run_dir: Path
    pg_port: int
    kafka_port: int
    kafka_controller_port: int
    service_ports: dict[str, int]
    database: str = "threadline"
    durable: bool = True
    kafka_heap: str = "512m"
    calendar_file: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Further PostgreSQL settings for this stack's server (``LocalPostgres.settings``).
    postgres_settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def development(cls) -> Stack:
        var = Path(os.environ.get("THREADLINE_VAR_DIR", REPO_ROOT / "var"))
        return cls(
            state_dir=var / "dev",
            log_dir=var / "log",
            run_dir=var / "run",
            pg_port=_env_int("THREADLINE_PG_PORT", 24320),
            kafka_port=_env_int("THREADLINE_KAFKA_PORT", 19092),
            kafka_controller_port=_env_int("THREADLINE_KAFKA_CONTROLLER_PORT", 19093),
            service_ports={
                name: _env_int(f"THREADLINE_{name.upper()}_PORT", port)
                for name, port in DEFAULT_PORTS.items()
            },
            calendar_file=REPO_ROOT / "config" / "calendars" / "england.toml",
        )

    @classmethod
    def isolated(cls, name: str, *, base_port: int, durable: bool = False) -> Stack:
        """A throw-away stack under ``var/<name>`` on ports from ``base_port`` upwards
        (PostgreSQL, Kafka, its controller, then the services from ``base_port + 10``)."""
        var = REPO_ROOT / "var" / name
        return cls(
            state_dir=var,
            log_dir=var / "log",
            run_dir=var / "run",
            pg_port=base_port,
            kafka_port=base_port + 1,
            kafka_controller_port=base_port + 2,
            service_ports={service: base_port + 10 + i for i, service in enumerate(SERVICES)},
            database=f"threadline_{name}",
            durable=durable,
            kafka_heap="384m",
            calendar_file=REPO_ROOT / "config" / "calendars" / "england.toml",
        )

    @property
    def postgres(self) -> LocalPostgres:
        return LocalPostgres(
            self.state_dir / "postgres",
            port=self.pg_port,
            log_file=self.log_dir / "postgres.log",
            durable=self.durable,
            settings=self.postgres_settings,
        )

    @property
    def kafka(self) -> LocalKafka:
        return LocalKafka(
            REPO_ROOT / "var" / "kafka" / "libs",
            self.state_dir / "kafka",
            port=self.kafka_port,
            controller_port=self.kafka_controller_port,
            log_file=self.log_dir / "kafka.log",
            pid_file=self.run_dir / "kafka.pid",
            heap=self.kafka_heap,
        )

    @property
    def database_url(self) -> str:
        return self.postgres.url(self.database)

    def wipe(self) -> None:
        """Delete the stack's data: the database, the broker's log, and the consent ledger's
        signed checkpoints, which describe that database's ledger and no other (a checkpoint
        left by an earlier run makes a new ledger's check fail: "the chain was rewritten")."""
        self.postgres.wipe()
        self.kafka.wipe()
        shutil.rmtree(self.state_dir / "consent" / "checkpoints", ignore_errors=True)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.service_ports[service]}"

    def environment(self) -> dict[str, str]:
        """The environment every service process of this stack runs with."""
        env = {
            "THREADLINE_ENVIRONMENT": "development",
            "THREADLINE_DATABASE_URL": self.database_url,
            "THREADLINE_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "THREADLINE_HOST": "127.0.0.1",
        }
        for name, port in self.service_ports.items():
            env[f"THREADLINE_{name.upper()}_PORT"] = str(port)
            env[f"THREADLINE_{name.upper()}_URL"] = self.url(name)
        if self.calendar_file is not None:
            env["THREADLINE_CALENDAR_FILE"] = str(self.calendar_file)
        # Every service trusts this stack's development identity provider, and only it.
        issuer = self.url("identity")
        env["THREADLINE_IDENTITY_ISSUER"] = issuer
        env["THREADLINE_IDENTITY_SIGNING_KEY_FILE"] = str(
            self.state_dir / "identity" / "signing-key.pem"
        )
        # Each stack signs its own consent ledger's checkpoints, kept beside its own database.
        env["THREADLINE_CONSENT_CHECKPOINT_DIR"] = str(self.state_dir / "consent" / "checkpoints")
        env["THREADLINE_CONSENT_CHECKPOINT_KEY_FILE"] = str(
            self.state_dir / "consent" / "checkpoint-signing-key.pem"
        )
        env["THREADLINE_AUTH_ISSUERS"] = json.dumps(
            [{"issuer": issuer, "jwks_uri": f"{issuer}/jwks.json"}]
        )
        env.update(self.extra_env)
        return env

    # -- infrastructure -------------------------------------------------------------------------

    def start_infrastructure(self) -> None:
        postgres, kafka = self.postgres, self.kafka
        kafka.start()  # the JVM starts in the background while PostgreSQL initialises
        postgres.start()
        postgres.wait_ready()
        postgres.ensure_database(self.database)
        kafka.wait_ready()

    def stop_infrastructure(self) -> None:
        self.kafka.stop()
        self.postgres.stop()

    # -- services --------------------------------------------------------------------------------

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    def service_pid(self, service: str) -> int | None:
        try:
            pid = int(self.pid_file(service).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None  # a child that exited is a zombie until reaped

    def start_service(self, service: str, extra_env: Mapping[str, str] | None = None) -> int:
        """Start a service process unless one is already running; returns its pid.

        With ``THREADLINE_<SERVICE>_BACKGROUND=separate`` a second process, ``<service>-work``,
        runs the service's relay, consumers and timers (``threadline work``).
        """
        env = {**os.environ, **self.environment(), **(extra_env or {})}
        background = env.get(f"THREADLINE_{service.upper()}_BACKGROUND") or env.get(
            "THREADLINE_BACKGROUND", "in-process"
        )
        if background == "separate":
            self._start_process(f"{service}-work", ["work", service], env)
        return self._start_process(service, ["serve", service], env)

    def _start_process(self, name: str, command: list[str], env: Mapping[str, str]) -> int:
        running = self.service_pid(name)
        if running is not None:
            return running
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "deploy.local.cli", *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        self.pid_file(name).write_text(str(process.pid))
        return process.pid

    def wait_service_ready(self, service: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.service_pid(service) is None:
                raise RuntimeError(
                    f"{service} exited during start-up; the end of "
                    f"{self.log_dir / (service + '.log')}:\n{self.log_tail(service)}"
                )
            try:
                response = httpx.get(f"{self.url(service)}/readyz", timeout=3.0)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.3)
        raise TimeoutError(
            f"{service} not ready after {timeout}s: {last}; the end of its log:\n"
            f"{self.log_tail(service)}"
        )

    def log_tail(self, service: str, lines: int = 30) -> str:
        try:
            text = (self.log_dir / f"{service}.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop_service(self, service: str, timeout: float = 20.0) -> None:
        for name in (service, f"{service}-work"):
            self._stop_process(name, timeout)

    def _stop_process(self, service: str, timeout: float) -> None:
        pid = self.service_pid(service)
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        self.pid_file(service).unlink(missing_ok=True)

    def start_services(self, services: Sequence[str] = SERVICES) -> None:
        for service in services:
            self.start_service(service)
        for service in services:
            self.wait_service_ready(service)

    def stop_services(self) -> None:
        for service in reversed(SERVICES):
            self.stop_service(service)


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
