"""What every request body and query model shares.

- No text may hold a NUL character: PostgreSQL's text types cannot store U+0000, so a NUL that
  reached the database was refused there, mid-transaction, and came back as a 500.
- A date or a time is written as one (ISO 8601): pydantic would otherwise read a number, ``0`` or
  ``"0.5"``, as seconds since 1970, and a request the API documents as invalid would be accepted.
- A yes/no is a JSON boolean: pydantic would otherwise read the number ``0`` or ``1`` as one.

Both are refused at the edge, 422 naming the field (found by schemathesis; docs/security.md).
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import date, datetime
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

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


_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def is_number(value: Any) -> bool:
    """A number, or text that is one: what pydantic would read as a Unix timestamp."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or (isinstance(value, str) and bool(_NUMBER.match(value)))


def _holds(annotation: Any, kinds: tuple[type, ...]) -> bool:
    """Whether ``annotation`` is one of ``kinds``, or optional, annotated or a list of one."""
    if annotation in kinds:
        return True
    if get_origin(annotation) in (Annotated, Union, types.UnionType, list, tuple, set):
        return any(_holds(argument, kinds) for argument in get_args(annotation))
    return False


def _temporal_message(name: str) -> str:
    return f"{name} must be a date (YYYY-MM-DD) or a date and time (ISO 8601), not a number"


def _not_a_number(value: Any) -> Any:
    if is_number(value):
        raise ValueError("must be a date (YYYY-MM-DD) or a date and time (ISO 8601), not a number")
    return value


#: A date or a datetime in a query parameter, written as one (a number is refused).
IsoDate = Annotated[date, BeforeValidator(_not_a_number)]
IsoDateTime = Annotated[datetime, BeforeValidator(_not_a_number)]


@functools.cache
def _typed_fields(model: type[BaseModel]) -> tuple[tuple[str, bool, bool], ...]:
    """``model``'s fields that hold dates or yes/no answers: (key, temporal, boolean). Worked
    out once per class: walking the annotations on every request was a fifth of the decision
    point's CPU (py-spy, bench/consent.py at saturation)."""
    found = []
    for name, field in model.model_fields.items():
        temporal = _holds(field.annotation, (date, datetime))
        boolean = _holds(field.annotation, (bool,))
        if temporal or boolean:
            found.append((field.alias or name, temporal, boolean))
    return tuple(found)


NUL_MESSAGE = "must not contain a NUL character (\\u0000)"
_NUL_CHECKED: ContextVar[bool] = ContextVar("threadline_nul_checked", default=False)


def _nul_locations(
    value: Any, loc: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Where in raw input ``value`` a text (or a mapping's key) holds a NUL."""
    if isinstance(value, str):
        if NUL in value:
            yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and NUL in key:
                yield (*loc, key), key
            else:
                yield from _nul_locations(item, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _nul_locations(item, (*loc, index))


class RequestModel(BaseModel):
    """Base of the models that parse what a caller sends; it adds no configuration of its own."""

    @model_validator(mode="before")
    @classmethod
    def _dates_are_written_as_dates(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, temporal, boolean in _typed_fields(cls):
                value = data.get(key)
                if value is None:
                    continue
                values = value if isinstance(value, list) else [value]
                if temporal and any(map(is_number, values)):
                    raise ValueError(_temporal_message(key))
                if boolean and any(
                    isinstance(item, int | float) and not isinstance(item, bool) for item in values
                ):
                    raise ValueError(f"{key} must be true or false, not a number")
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _no_nul(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        """No text anywhere in the request holds a NUL (PostgreSQL refuses it: a 500). Checked
        once, on the outermost model's raw input: ``repr`` (C) shows any NUL as ``\\x00``,
        and only then is the input walked to name each field that holds one. (A validator on
        every field of every model cost 7% of the decision point's CPU.)"""
        if _NUL_CHECKED.get() or not isinstance(data, dict):
            return handler(data)
        if "\\x00" in repr(data):
            found = [
                InitErrorDetails(
                    type=PydanticCustomError("value_error", NUL_MESSAGE), loc=loc, input=value
                )
                for loc, value in _nul_locations(data, ())
            ]
            if found:
                raise ValidationError.from_exception_data(cls.__name__, found)
        checked = _NUL_CHECKED.set(True)  # the nested models' input was part of this one's
        try:
            return handler(data)
        finally:
            _NUL_CHECKED.reset(checked)


def _refuse_nul(value: str) -> str:
    if NUL in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


#: A free-text query parameter: at most 200 characters, never a NUL.
QueryText = Annotated[str, StringConstraints(max_length=200), AfterValidator(_refuse_nul)]
#: An OFFSET or a ledger sequence number in a query: within PostgreSQL's BIGINT.
Offset = Annotated[int, Field(ge=0, le=MAX_BIGINT)]
