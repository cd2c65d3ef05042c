"""Event types, their registry, and the CloudEvents envelope."""

from shared.events.registry import Event, EventSpec, all_events, spec_for, spec_for_type
from shared.events.topics import Topic

__all__ = ["Event", "EventSpec", "Topic", "all_events", "spec_for", "spec_for_type"]
