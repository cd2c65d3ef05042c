"""The local stack's own housekeeping: what a wipe deletes, and a service that dies at start-up
being reported as dead, with its log, rather than waited on."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from deploy.local.stack import Stack
from services.catalogue import SERVICES


def scratch_stack(tmp_path: Path, port: int) -> Stack:
    return Stack(
        state_dir=tmp_path / "state",
        log_dir=tmp_path / "log",
        run_dir=tmp_path / "run",
        pg_port=port,
        kafka_port=port + 1,
        kafka_controller_port=port + 2,
        service_ports=dict.fromkeys(SERVICES, port),
    )


def test_a_wipe_deletes_the_ledger_checkpoints_with_the_database(tmp_path: Path) -> None:
    """A checkpoint describes one database's ledger: one left from an earlier run would make the
    new ledger's first check report that the chain was rewritten."""
    stack = scratch_stack(tmp_path, 1)
    checkpoints = stack.state_dir / "consent" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "000033.json").write_text("{}")
    key = stack.state_dir / "consent" / "checkpoint-signing-key.pem"
    key.write_text("the key is kept: it names the signer, not the data")
    stack.wipe()
    assert not checkpoints.exists()
    assert key.exists()


def test_a_service_that_cannot_bind_its_port_is_reported_at_once_with_its_log(
    tmp_path: Path,
) -> None:
    """The port is taken (as an outgoing connection's local end can take one in the ephemeral
    range): the service exits, and the wait says so within seconds, quoting the log."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = scratch_stack(tmp_path, port)
        env = {
            "THREADLINE_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/nothing",
            "THREADLINE_REFERRALS_BACKGROUND": "in-process",
        }
        stack.start_service("referrals", env)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="exited during start-up") as failure:
            stack.wait_service_ready("referrals", timeout=60)
        assert time.monotonic() - started < 45
        assert "address already in use" in str(failure.value).lower()
