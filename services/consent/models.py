"""The consent schema. The ledger tables arrive with the consent-ledger issue; the plumbing is here
so that the service already relays, consumes and fires timers like every other."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.db import service_metadata
from shared.plumbing import attach_plumbing

SCHEMA = "consent"


class Base(DeclarativeBase):
    metadata = service_metadata(SCHEMA)


plumbing = attach_plumbing(Base.metadata)
