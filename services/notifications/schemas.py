from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.schemas import RequestModel


class Audience(StrEnum):
    MASH_WORKER = "mash_worker"
    MASH_MANAGER = "mash_manager"
    REFERRER = "referrer"


class ItemStatus(StrEnum):
    OPEN = "open"
    DONE = "done"


class InboxItemOut(BaseModel):
    id: UUID
    kind: str
    audience: Audience
    organisation_code: str | None
    referral_id: UUID
    referral_reference: str
    title: str
    body: str
    due_at: datetime | None
    status: ItemStatus
    created_at: datetime
    resolved_at: datetime | None


class InboxPage(BaseModel):
    items: list[InboxItemOut]
    total: int


# -- messages -------------------------------------------------------------------------------------


class MessageStatus(StrEnum):
    QUEUED = "queued"  # waiting for the decision point, or for its first dispatch
    REFUSED = "refused"  # the disclosure was refused: not sent
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"  # a channel ran out of attempts (see the dead letters), or no decision


class Party(BaseModel):
    organisation_code: str
    agency: str
    role: str
    name: str | None = None


class DisclosureOut(BaseModel):
    decision_id: UUID | None
    outcome: str | None
    lawful_basis: str | None
    reasons: list[str]


class DeliveryOut(BaseModel):
    id: UUID
    channel: str
    address: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    failed_at: datetime | None


class MessageOut(BaseModel):
    id: UUID
    kind: str
    title: str
    body: str
    status: MessageStatus
    recipient: Party
    sender: Party
    reference: str | None
    referral_id: UUID | None
    contact_id: UUID | None
    details: dict[str, Any]
    disclosure: DisclosureOut | None
    deliver_by: datetime | None
    acknowledge_by: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    escalated_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    deliveries: list[DeliveryOut]


class MessagePage(BaseModel):
    items: list[MessageOut]
    total: int


class AcknowledgementIn(RequestModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    acknowledged_by: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ResendIn(RequestModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    resent_by: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class DeadLetterOut(BaseModel):
    id: UUID
    message_id: UUID
    kind: str
    title: str
    recipient: Party
    sender: Party
    reference: str | None
    channel: str
    address: str
    attempts: int
    last_error: str
    failed_at: datetime
    resent_at: datetime | None
    resent_by: str | None


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    total: int


Channel = Literal["email", "webhook"]


class PreferenceIn(RequestModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    channels: list[Channel] = Field(
        max_length=2,
        description="The channels besides the portal inbox (always on); [] for the inbox only",
    )
    updated_by: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class PreferenceOut(BaseModel):
    organisation_code: str
    role: str
    kind: str
    channels: list[str]
    updated_at: datetime
    updated_by: str
