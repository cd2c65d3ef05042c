"""The KRaft cluster id handed to ``kafka-storage format -t`` must never look like an option.

CI once failed because a random id began with "-" (one URL-safe base64 UUID in 64 does);
the storage tool then read it as a flag and refused to format.
"""

from __future__ import annotations

import uuid

import pytest

from deploy.local import kafka


def test_an_id_that_would_start_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64 of 0xF8... begins with "-"
    plain = uuid.UUID(bytes=b"\x10" + bytes(15))
    drawn = iter([dashed, dashed, plain])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(drawn))

    cluster_id = kafka.new_cluster_id()

    assert cluster_id == "EAAAAAAAAAAAAAAAAAAAAA"
    assert next(drawn, None) is None  # both dashed draws were refused


def test_ids_are_22_url_safe_characters_and_never_an_option() -> None:
    ids = {kafka.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
