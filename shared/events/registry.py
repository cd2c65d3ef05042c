"""One explicit registry: event type → schema → topic.

An event class declares its CloudEvents ``type`` and topic where it is defined::

    class ReferralReceived(Event, type="referral.received", topic=Topic.REFERRALS,
                           key="referral_id", producer="referrals"):
        referral_id: UUID

and the registry is the single source for producers, consumers and ``docs/events.md``.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class EventSpec:
    type: str
    topic: str  # one of shared.events.topics.Topic for every service event
    schema: builtins.type[Event]
    producer: str
    summary: str


_REGISTRY: dict[str, EventSpec] = {}


class Event(BaseModel):
    """The data of one domain event: immutable, validated when written and when read.

    Readers ignore fields they do not know, so that adding an optional field is not a breaking
    change; writers are strict, so that a typo never reaches the topic.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    topic: ClassVar[str]
    key_field: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Take the registry's class keywords; registering waits until pydantic built the class."""
        for name in ("type", "topic", "key", "producer"):
            kwargs.pop(name, None)
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(
        cls,
        *,
        type: str | None = None,
        topic: str | None = None,
        key: str | None = None,
        producer: str = "",
        **kwargs: Any,
    ) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if type is None or topic is None:
            return  # an abstract intermediate class
        if key is None or key not in cls.model_fields:
            raise TypeError(f"{cls.__name__}: key= must name the field holding the aggregate id")
        if type in _REGISTRY and _REGISTRY[type].schema.__qualname__ != cls.__qualname__:
            raise ValueError(f"event type {type!r} registered twice")
        cls.event_type = type
        cls.topic = topic
        cls.key_field = key
        summary = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        _REGISTRY[type] = EventSpec(
            type=type, topic=topic, schema=cls, producer=producer, summary=summary
        )

    def partition_key(self) -> str:
        """The aggregate id that keys this event on its topic and is its CloudEvents subject."""
        return str(getattr(self, self.key_field))


def spec_for(event: Event) -> EventSpec:
    return _REGISTRY[event.event_type]


def spec_for_type(event_type: str) -> EventSpec | None:
    return _REGISTRY.get(event_type)


def all_events() -> list[EventSpec]:
    return sorted(_REGISTRY.values(), key=lambda spec: (str(spec.topic), spec.type))
