"""A single-node Apache Kafka broker (KRaft, combined broker and controller) on the machine's Java.

The jars come from Maven Central via ``deploy/local/pom.xml`` (``make install``); storage is
formatted with ``kafka.tools.StorageTool format --standalone`` and the broker runs ``kafka.Kafka``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c{1})%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="stdout"/></Root>
    <Logger name="kafka" level="WARN"/>
    <Logger name="org.apache.kafka" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
  </Loggers>
</Configuration>
"""


def new_cluster_id() -> str:
    """A random KRaft cluster id that the storage tool's argument parser accepts.

    One in 64 URL-safe base64 UUIDs begins with "-", which ``kafka-storage format -t`` reads
    as an option (CI failed on exactly that). Kafka's own ``Uuid.randomUuid`` draws again in
    that case, and so do we.
    """
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


class LocalKafka:
    def __init__(
        self,
        libs_dir: Path,
        data_dir: Path,
        *,
        port: int,
        controller_port: int,
        log_file: Path,
        pid_file: Path,
        heap: str = "512m",
    ) -> None:
        self.libs_dir = libs_dir.resolve()
        self.data_dir = data_dir.resolve()
        self.port = port
        self.controller_port = controller_port
        self.log_file = log_file.resolve()
        self.pid_file = pid_file.resolve()
        self.heap = heap

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    def _check_libs(self) -> None:
        if not any(self.libs_dir.glob("kafka_2.13-*.jar")):
            raise RuntimeError(
                f"No Kafka jars in {self.libs_dir}: run `make install` (Maven fetches them)."
            )

    def _java(self, main_class: str, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",  # two cores: no parallel GC threads fighting the services
            "-XX:TieredStopAtLevel=1",  # start fast; a test broker never runs long enough to gain
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}",
            "-cp",
            f"{self.libs_dir}/*",
            main_class,
            *args,
        ]

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "log4j2.xml").write_text(LOG4J2)
        self.config_file.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir / 'logs'}",
                    "num.partitions=3",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=3",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=3",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=-1",  # a local event log is kept: rebuilds read it whole
                    "",
                ]
            )
        )

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "logs" / "meta.properties").exists()

    def format(self) -> None:
        self._check_libs()
        self._write_config()
        if self.formatted:
            return
        cluster_id = new_cluster_id()
        formatted = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(self.config_file),
            ),
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if formatted.returncode != 0:
            raise RuntimeError(
                f"kafka-storage format failed (exit {formatted.returncode}): "
                f"{(formatted.stderr or formatted.stdout).strip()}"
            )

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        """Format if needed and start the broker; does nothing if it is already running."""
        if self.is_running():
            return
        for port in (self.port, self.controller_port):
            if _listening(port):
                # Without this check, wait_ready would mistake another broker for ours.
                raise RuntimeError(
                    f"port {port} is already in use by another process: stop it, or choose other "
                    "ports (THREADLINE_KAFKA_PORT / THREADLINE_KAFKA_CONTROLLER_PORT)"
                )
        self.format()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self._java("kafka.Kafka", str(self.config_file)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                tail = self.log_file.read_text()[-3000:] if self.log_file.exists() else ""
                raise RuntimeError(f"Kafka exited during start-up:\n{tail}")
            if _listening(self.port):
                return
            time.sleep(0.3)
        raise TimeoutError(f"Kafka on port {self.port} not ready after {timeout}s")

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.2)
            _reap(pid)
        if self.pid() is not None:
            os.killpg(pid, signal.SIGKILL)
            time.sleep(0.5)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would."""
        pid = self.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
            time.sleep(0.3)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)

    def wipe(self) -> None:
        self.stop(timeout=10)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _reap(pid: int) -> None:
    """Collect a child's exit status so it does not linger as a zombie that looks alive."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
