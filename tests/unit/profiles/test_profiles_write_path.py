"""The batched write path on the embedded database (`ProfileStore.record_events`).

It runs its statements on the DBAPI cursor and reuses the event history it
last wrote for a profile instead of decoding the stored text again; these
pin that what is stored is what folding every event into the stored
history gives, whoever wrote it last.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from tessera import jsoncodec
from tessera.profiles.domain.event_history import event_history_from_json
from tessera.profiles.domain.model import EventData, IdentityKey
from tessera.profiles.storage.sql import ProfileStore, Recorded

NOW = dt.datetime.now(dt.UTC)


def view(event_id: str, profile_id: str) -> EventData:
    return EventData(
        event_id=event_id,
        type="product_view",
        timestamp=NOW,
        channel=1,
        profile_id=profile_id,
        properties={"category": "juicers", "duration_ms": 1500.0},
    )


def views_stored(store: ProfileStore, profile_id: str) -> tuple[int, float]:
    """(product views today, their summed duration) as the profile's row holds them."""
    with store.engine.connect() as connection:
        raw = connection.execute(
            text("SELECT event_history FROM profiles_profile WHERE profile_id = :p"),
            {"p": profile_id},
        ).scalar_one()
    series = event_history_from_json(jsoncodec.loads(raw)).series
    views = series[("product_view", "", "")]
    return views.counts[-1], views.sums["duration_ms"][-1]


def test_record_events__batches_in_a_row__every_event_counted_once(store: ProfileStore) -> None:
    anna = store.identify([IdentityKey("cookie", "c-anna")]).profile.profile_id

    for batch in range(3):
        events = [view(f"e-{batch}-{n}", anna) for n in range(4)]
        outcomes = store.record_events(events, [anna] * 4)
        assert all(isinstance(o, Recorded) and not o.duplicate for o in outcomes)
    retried = store.record_events([view("e-1-2", anna)], [anna])

    assert retried == [Recorded(anna, True, view("e-1-2", anna))]
    assert views_stored(store, anna) == (12, 12 * 1500.0)


def test_record_events__history_rewritten_by_another_writer__folds_into_the_stored_one(
    store: ProfileStore,
) -> None:
    anna = store.identify([IdentityKey("cookie", "c-anna")]).profile.profile_id
    bob = store.identify([IdentityKey("cookie", "c-bob")]).profile.profile_id
    store.record_events([view("a-1", anna)], [anna])
    store.record_events([view(f"b-{n}", bob) for n in range(5)], [bob] * 5)
    # Another replica (or a merge) writes anna's history: here, bob's five views.
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE profiles_profile SET event_history = "
                "(SELECT event_history FROM profiles_profile WHERE profile_id = :b) "
                "WHERE profile_id = :a"
            ),
            {"a": anna, "b": bob},
        )

    store.record_events([view("a-2", anna)], [anna])

    assert views_stored(store, anna) == (6, 6 * 1500.0)
