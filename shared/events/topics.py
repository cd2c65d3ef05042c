"""The versioned topics; each is keyed by aggregate id so one aggregate's events stay in order."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    REFERRALS = "threadline.referrals.v1"
    CONTACTS = "threadline.contacts.v1"
    IDENTITY = "threadline.identity.v1"
    CONSENT = "threadline.consent.v1"
    NOTIFICATIONS = "threadline.notifications.v1"
    LINKING = "threadline.linking.v1"

    @property
    def dlq(self) -> str:
        return dead_letter_topic(self.value)


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"
