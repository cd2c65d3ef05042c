"""Docs that are generated from code must match it."""

from __future__ import annotations

from deploy.local.stack import REPO_ROOT
from services.catalogue import SERVICES, load_events
from shared.events.catalogue import render_catalogue
from shared.events.registry import all_events


def test_the_event_catalogue_matches_the_registry() -> None:
    current = (REPO_ROOT / "docs" / "events.md").read_text()
    assert current == render_catalogue(), "docs/events.md is out of date: run `make docs`"


def test_every_registered_event_is_in_the_catalogue() -> None:
    load_events()
    text = (REPO_ROOT / "docs" / "events.md").read_text()
    for spec in all_events():
        if spec.producer not in SERVICES:
            continue  # events that tests define for themselves
        assert f"## `{spec.type}`" in text
