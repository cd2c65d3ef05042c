"""Log lines carry the correlation and causation ids of the work they were written in."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from shared import context
from shared.logging import configure_logging, get_logger


def test_lines_inside_a_context_carry_its_ids_and_lines_outside_do_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("logtest", level="INFO", json=True)
    log = get_logger("test")
    trace = context.TraceContext(correlation_id="corr-1", causation_id="cause-1")
    try:
        with context.bound(trace):
            log.info("inside")
            logging.getLogger("stdlib").warning("inside from the standard library")
            with context.bound(context.TraceContext(correlation_id="corr-2")):
                log.info("nested")
            log.info("inside again")
        log.info("outside")
    finally:
        logging.getLogger().handlers.clear()
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
    lines = {line["event"]: line for line in map(json.loads, capsys.readouterr().out.splitlines())}
    assert lines["inside"]["correlation_id"] == "corr-1"
    assert lines["inside"]["causation_id"] == "cause-1"
    assert lines["inside"]["service"] == "logtest"
    assert lines["inside from the standard library"]["correlation_id"] == "corr-1"
    assert lines["nested"]["correlation_id"] == "corr-2"
    assert lines["nested"]["causation_id"] is None
    assert lines["inside again"]["correlation_id"] == "corr-1"
    assert "correlation_id" not in lines["outside"]
