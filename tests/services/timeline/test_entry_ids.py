"""Entry ids: the same in a rebuild, ordered by their events' time, one per event and subject."""

from __future__ import annotations

import uuid
from typing import Any

from services.timeline.rows import ENTRY_NAMESPACE, entry_id
from shared.ids import uuid7


def test_an_entry_id_is_stable_distinct_per_subject_and_ordered_by_its_events_time() -> None:
    subject, other = uuid.uuid4(), uuid.uuid4()
    start = 1_795_000_000_000_000_000
    events = [uuid7(start + n * 1_000_000) for n in range(200)]
    ids = [entry_id(event, subject) for event in events]
    assert ids == [entry_id(event, subject) for event in events]  # as a rebuild makes them
    assert ids == sorted(ids)  # later events, later ids: inserted at the index's right edge
    assert len({*ids, *(entry_id(event, other) for event in events)}) == 400
    made = ids[0]
    assert made.version == 8 and made.variant == uuid.RFC_4122
    assert made.int >> 80 == events[0].int >> 80
    # an event id of another kind (older events: UUIDv4) still gives a stable, valid id
    legacy = uuid.uuid4()
    assert entry_id(legacy, subject) == entry_id(legacy, subject)
    assert entry_id(legacy, subject).version == 8


async def test_the_migration_turns_each_old_id_into_the_one_the_projection_now_gives(
    database: Any,
) -> None:
    """Migration 0002 rewrites the ids already held; they must be exactly those a rebuild
    under the new code makes, or the model would no longer equal its rebuild."""
    import importlib.util
    from pathlib import Path

    from sqlalchemy import text

    from services.timeline import migrations

    path = Path(migrations.__file__).parent / "versions" / "0002_time_ordered_entry_ids.py"
    spec = importlib.util.spec_from_file_location("timeline_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pairs = [(uuid7(), uuid.uuid4()) for _ in range(50)] + [(uuid.uuid4(), uuid.uuid4())]
    async with database.transaction() as session:
        for event, subject in pairs:
            old = uuid.uuid5(ENTRY_NAMESPACE, f"{event}:{subject}")
            query = text(
                f"SELECT {module.NEW_ID_SQL} FROM (SELECT CAST(:event AS uuid) AS event_id,"
                " CAST(:old AS uuid) AS entry_id) AS held"
            )
            new = (await session.execute(query, {"event": event, "old": old})).scalar_one()
            assert new == entry_id(event, subject)
