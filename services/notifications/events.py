"""Events the notifications service emits (see docs/events.md).

They carry ids, kinds and organisations, never a message's text: the text may hold personal data,
and it stays in the recipient's inbox.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from shared.events import Event, Topic


class NotificationFailed(
    Event,
    type="notification.failed",
    topic=Topic.NOTIFICATIONS,
    key="message_id",
    producer="notifications",
):
    """A message could not be delivered after its retries (it waits in the dead-letter store to
    be re-sent), or no disclosure decision could be had for it."""

    message_id: UUID
    kind: str
    recipient_organisation: str
    sender_organisation: str
    reference: str | None = None
    channel: str | None = None  # email | webhook, or None when the decision point never answered
    attempts: int
    reason: str
    failed_at: datetime
