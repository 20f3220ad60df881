"""How a batch of events sent with identities finds their profiles (`ProfileStore.owners`)."""

from __future__ import annotations

from sqlalchemy.dialects import sqlite

from tessera.profiles.domain.model import IdentityKey
from tessera.profiles.storage.sql import ProfileStore, _owners


def test_owners__identities_of_several_types__each_found_on_its_profile(
    store: ProfileStore,
) -> None:
    anna = store.identify([IdentityKey("cookie", "c-anna"), IdentityKey("crm_id", "42")])
    bob = store.identify([IdentityKey("cookie", "c-bob")])

    found = store.owners(
        {
            IdentityKey("cookie", "c-anna"),
            IdentityKey("crm_id", "42"),
            IdentityKey("cookie", "c-bob"),
            IdentityKey("cookie", "c-nobody"),
            IdentityKey("crm_id", "c-bob"),  # a value of another type is another identity
        }
    )

    assert found == {
        IdentityKey("cookie", "c-anna"): anna.profile.profile_id,
        IdentityKey("crm_id", "42"): anna.profile.profile_id,
        IdentityKey("cookie", "c-bob"): bob.profile.profile_id,
    }


def test_owners__embedded_database__searches_the_identity_key_not_the_table(
    store: ProfileStore,
) -> None:
    sql = str(_owners(3).compile(dialect=sqlite.dialect()))

    with store.engine.connect() as connection:
        plan = connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {sql}", ("cookie", "a", "b", "c")
        ).all()

    details = [row[-1] for row in plan]
    assert any(d.startswith("SEARCH profiles_identity USING") for d in details), details
    assert not any(d.startswith("SCAN profiles_identity") for d in details), details
