"""UUID version 7: the layout of RFC 9562 §5.7, ordered by time, random below the millisecond."""

from __future__ import annotations

import time
import uuid

from shared.ids import uuid7


def test_the_layout_is_version_7_with_the_rfc_variant_and_the_time_in_the_first_48_bits() -> None:
    at = 1_795_000_000_123_456_789  # ns
    made = uuid7(at)
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert made.int >> 80 == at // 1_000_000
    assert str(made).startswith(f"{at // 1_000_000:012x}"[:8])


def test_ids_from_later_milliseconds_sort_later_and_ids_are_never_repeated() -> None:
    start = time.time_ns()
    ids = [uuid7(start + n * 1_000_000) for n in range(1000)]
    assert ids == sorted(ids)
    assert [str(i) for i in ids] == sorted(str(i) for i in ids)  # as text, as PostgreSQL's uuid
    same_millisecond = {uuid7(start) for _ in range(10_000)}
    assert len(same_millisecond) == 10_000
    assert uuid7() > uuid7(start - 1_000_000)
