"""CloudEvents 1.0 over Kafka in binary content mode (attributes in ``ce_*`` headers).

The ``cloudevents`` package does the binding; this module fixes Threadline's use of it: the
event ``id`` is a UUID that never changes on redelivery, ``subject`` and the Kafka key are the
aggregate id, and the extensions ``correlationid``, ``causationid`` and ``traceparent`` carry
the request that caused the event.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event, to_binary_event
from cloudevents.core.v1.event import CloudEvent

from shared.context import TraceContext
from shared.events.registry import Event, spec_for
from shared.ids import uuid7

SOURCE_PREFIX = "/threadline/"
DATA_CONTENT_TYPE = "application/json"


class EnvelopeError(ValueError):
    """A Kafka record that is not a Threadline CloudEvent (missing header, bad JSON, ...)."""


@dataclass(frozen=True)
class Envelope:
    """An event as it travels: CloudEvents attributes plus JSON data."""

    id: uuid.UUID
    type: str
    source: str
    subject: str
    time: datetime
    data: dict[str, Any]
    correlation_id: str
    causation_id: str | None = None
    traceparent: str | None = None

    def attributes(self) -> dict[str, str]:
        attributes = {
            "specversion": "1.0",
            "id": str(self.id),
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "time": self.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "datacontenttype": DATA_CONTENT_TYPE,
            "correlationid": self.correlation_id,
        }
        if self.causation_id:
            attributes["causationid"] = self.causation_id
        if self.traceparent:
            attributes["traceparent"] = self.traceparent
        return attributes

    def trace(self) -> TraceContext:
        """The context for work caused by this event: same correlation, caused by this id."""
        return TraceContext(
            correlation_id=self.correlation_id,
            causation_id=str(self.id),
            traceparent=self.traceparent,
        )


def envelope_for(
    event: Event,
    *,
    service: str,
    trace: TraceContext,
    now: datetime,
    data: dict[str, Any] | None = None,
) -> Envelope:
    """The envelope of ``event``; ``data`` given (e.g. empty) skips serialising the event."""
    spec = spec_for(event)
    return Envelope(
        id=uuid7(),
        type=spec.type,
        source=f"{SOURCE_PREFIX}{service}",
        subject=event.partition_key(),
        time=now,
        data=event.model_dump(mode="json") if data is None else data,
        correlation_id=trace.correlation_id,
        causation_id=trace.causation_id,
        traceparent=trace.traceparent,
    )


def envelope_from_attributes(attributes: dict[str, Any], data: dict[str, Any]) -> Envelope:
    try:
        time = attributes["time"]
        if isinstance(time, str):
            time = datetime.fromisoformat(time.replace("Z", "+00:00"))
        return Envelope(
            id=uuid.UUID(str(attributes["id"])),
            type=str(attributes["type"]),
            source=str(attributes["source"]),
            subject=str(attributes["subject"]),
            time=time,
            data=data,
            correlation_id=str(attributes.get("correlationid") or attributes["id"]),
            causation_id=attributes.get("causationid"),
            traceparent=attributes.get("traceparent"),
        )
    except (KeyError, ValueError, TypeError) as error:
        raise EnvelopeError(f"not a Threadline CloudEvent: {error!r}") from error


@dataclass(frozen=True)
class KafkaRecord:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def to_kafka(envelope: Envelope) -> KafkaRecord:
    attributes: dict[str, Any] = dict(envelope.attributes())
    attributes["time"] = envelope.time.astimezone(UTC)  # the SDK wants a datetime here
    cloud_event = CloudEvent(attributes=attributes, data=envelope.data)
    message = to_binary_event(cloud_event)
    key = message.key if isinstance(message.key, bytes) else envelope.subject.encode()
    return KafkaRecord(key=key, value=message.value, headers=list(message.headers.items()))


def from_kafka(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | tuple[Any, ...]
) -> Envelope:
    """Decode a record; raises EnvelopeError for anything that is not a valid Threadline event."""
    if value is None:
        raise EnvelopeError("record has no value")
    header_map = {name: bytes(raw) for name, raw in headers}
    if "ce_id" not in header_map or "ce_type" not in header_map:
        raise EnvelopeError("record has no ce_id/ce_type headers (not a binary-mode CloudEvent)")
    try:
        cloud_event = from_binary_event(KafkaMessage(headers=header_map, key=key, value=value))
        attributes = dict(cloud_event.get_attributes())
        data = cloud_event.get_data()
    except Exception as error:  # the SDK raises several types for malformed input
        raise EnvelopeError(f"undecodable CloudEvent: {error}") from error
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError as error:
            raise EnvelopeError(f"event data is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise EnvelopeError("event data is not a JSON object")
    return envelope_from_attributes(attributes, data)
