"""No text in a request may hold a NUL (PostgreSQL refuses it): each one is named where it is,
however deep, and text that merely looks like an escaped NUL is not refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.schemas import NUL_MESSAGE, RequestModel


class Person(RequestModel):
    name: str
    tags: dict[str, str] = {}


class Request(RequestModel):
    title: str
    people: list[Person]


def _locations(data: dict) -> list[tuple]:
    with pytest.raises(ValidationError) as refused:
        Request.model_validate(data)
    assert {error["msg"] for error in refused.value.errors()} == {NUL_MESSAGE}
    return [error["loc"] for error in refused.value.errors()]


def test_every_nul_is_named_where_it_is() -> None:
    data = {
        "title": "a\x00",
        "people": [{"name": "Jo"}, {"name": "B\x00", "tags": {"k\x00": "v", "x": "y\x00"}}],
    }
    assert _locations(data) == [
        ("title",),
        ("people", 1, "name"),
        ("people", 1, "tags", "k\x00"),
        ("people", 1, "tags", "x"),
    ]


def test_text_that_only_looks_like_an_escaped_nul_is_accepted() -> None:
    parsed = Request.model_validate({"title": "\\x00 and \\u0000", "people": [{"name": "Jo"}]})
    assert parsed.title == "\\x00 and \\u0000"


def test_a_nested_model_validated_on_its_own_is_checked_too() -> None:
    with pytest.raises(ValidationError) as refused:
        Person.model_validate({"name": "J\x00"})
    assert refused.value.errors()[0]["loc"] == ("name",)
