"""Which events the timeline projects: every referral and its lifecycle, every contact, links,
merges and unmerges, households, consent withdrawals and retention."""

from __future__ import annotations

from services.timeline.models import SCHEMA
from services.timeline.projection import Projector
from shared.consumer import HandlerRegistry


def build_registry(schema: str = SCHEMA) -> HandlerRegistry:
    """The handlers for one schema: the live one, or the one a rebuild fills. A fetched batch
    is applied at once (``Projector.apply_batch``: each table written once per batch)."""
    projector = Projector(schema)
    registry = HandlerRegistry()
    for event_type in projector.event_types:
        registry.on(event_type)(projector.handle)
    registry.batch = projector.apply_batch
    return registry


registry = build_registry()
