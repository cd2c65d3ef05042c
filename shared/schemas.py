"""What every request body and query model shares: no text in it may hold a NUL character.

PostgreSQL's text types cannot store U+0000, so a NUL that reached the database was refused there,
mid-transaction, and came back as a 500. Here it is refused at the edge, 422 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

NUL = "\x00"
#: The largest OFFSET and sequence a query may name: PostgreSQL's BIGINT, so that an absurd
#: number is a 422 naming the parameter rather than a driver overflow (500).
MAX_BIGINT = 2**63 - 1


def holds_nul(value: Any) -> bool:
    """Whether ``value`` (text, or any list, tuple or mapping of them) holds a NUL anywhere."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(holds_nul(key) or holds_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(holds_nul(item) for item in value)
    return False


class RequestModel(BaseModel):
    """Base of the models that parse what a caller sends; it adds no configuration of its own."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        if holds_nul(value):
            raise ValueError("must not contain a NUL character (\\u0000)")
        return value


def _refuse_nul(value: str) -> str:
    if NUL in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


#: A free-text query parameter: at most 200 characters, never a NUL.
QueryText = Annotated[str, StringConstraints(max_length=200), AfterValidator(_refuse_nul)]
#: An OFFSET or a ledger sequence number in a query: within PostgreSQL's BIGINT.
Offset = Annotated[int, Field(ge=0, le=MAX_BIGINT)]
