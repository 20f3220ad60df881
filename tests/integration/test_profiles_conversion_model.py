"""The learned conversion model end to end: Track, `tessera train conversion`, GetProfile.

A running profile service, a generated population tracked through the
generated client, the training command run as a process against the
service's own database, and the running service reporting the new model's
version and probability without a restart. On the embedded SQLite file and
on a PostgreSQL database of the test's own (with Redis).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from population import visitors
from support import ServerThread

from tessera import db, migrations
from tessera.common.v1 import common_pb2
from tessera.hot import MemoryHotStore
from tessera.profiles.application import Stores, refresh_model
from tessera.profiles.domain.conversion import PRIOR, ConversionModel, probability
from tessera.profiles.server import ProfilesService, ProfilesSettings
from tessera.profiles.storage.sessions import SessionStore
from tessera.profiles.storage.sql import ProfileStore
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc

pytestmark = pytest.mark.integration

Stub = profiles_pb2_grpc.ProfileServiceStub

# The live visitor: 3 page views of a minute each, 2 product views, 1 cart add.
LIVE_INPUTS = (3.0, 2.0, 1.0, 0.0, 0.0, 3.0, 0.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def service_env(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str, store_env: dict[str, str]
) -> Iterator[dict[str, str]]:
    """TESSERA_* settings of a profile service with a database of its own."""
    if request.param == "sqlite":
        yield {"TESSERA_DATA_DIR": str(tmp_path)}
        return
    name = f"tessera_model_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield {**store_env, "TESSERA_DATABASE_URL": f"{postgres_url.rsplit('/', 1)[0]}/{name}"}
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings_of(env: dict[str, str]) -> dict[str, str]:
    return {name.removeprefix("TESSERA_").lower(): value for name, value in env.items()}


def track(profiles: Stub, events: list[common_pb2.Event]) -> None:
    for event in events:
        profiles.Track(profiles_pb2.TrackRequest(event=event))


def live_visit(profiles: Stub) -> str:
    """Track a visit happening now; its profile id."""
    cookie = common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)
    kinds = [
        ("page_view", {"duration_ms": 60_000}),
        ("page_view", {"duration_ms": 60_000}),
        ("page_view", {"duration_ms": 60_000}),
        ("product_view", {"product_id": "j-1"}),
        ("product_view", {"product_id": "j-2"}),
        ("add_to_cart", {"product_id": "j-2", "price": 89.0}),
    ]
    for kind, properties in kinds:
        event = common_pb2.Event(event_id=uuid.uuid4().hex, identities=[cookie], type=kind)
        event.properties.update(properties)
        profiles.Track(profiles_pb2.TrackRequest(event=event))
    return str(
        profiles.GetProfile(profiles_pb2.GetProfileRequest(identity=cookie)).profile.profile_id
    )


def features(profiles: Stub, profile_id: str) -> profiles_pb2.Features:
    reply = profiles.GetProfile(profiles_pb2.GetProfileRequest(profile_id=profile_id))
    return reply.profile.features


def latest_model(settings: ProfilesSettings) -> ConversionModel | None:
    """The newest model the service's own store holds for purchases."""
    database = db.open_database(settings, "profiles")
    try:
        return ProfileStore(database).latest_model("purchase")
    finally:
        database.dispose()


def train(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`tessera train conversion ...` as a process of its own, on the service's database."""
    return subprocess.run(
        [sys.executable, "-m", "tessera.cli", "train", "conversion", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_train_conversion__tracked_population__running_service_uses_the_new_model(
    service_env: dict[str, str],
) -> None:
    settings = ProfilesSettings(**settings_of(service_env), model_poll_s=0.2)
    server = ServerThread(lambda: ProfilesService(settings)).start()
    try:
        with server.channel() as channel:
            profiles = profiles_pb2_grpc.ProfileServiceStub(channel)
            live = live_visit(profiles)
            before = features(profiles, live)
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda events: track(profiles, events),
                        visitors(80, 11, dt.datetime.now(dt.UTC)),
                    )
                )

            trained = train(service_env, "--goal", "purchase", "--held-out", "0.3")

            assert trained.returncode == 0, trained.stderr
            stored = latest_model(settings)
            assert stored is not None and stored.version.startswith("conv-")
            assert f"model {stored.version}" in trained.stdout
            assert "AUC" in trained.stdout and "calibration error" in trained.stdout
            deadline = time.monotonic() + 10
            after = features(profiles, live)
            while after.conversion_model_version != stored.version and time.monotonic() < deadline:
                time.sleep(0.1)
                after = features(profiles, live)
    finally:
        server.stop()

    assert before.conversion_model_version == "prior"
    assert before.conversion_probability == pytest.approx(
        probability(PRIOR, LIVE_INPUTS), abs=1e-12
    )
    assert after.conversion_model_version == stored.version
    assert after.conversion_probability == pytest.approx(
        probability(stored, LIVE_INPUTS), abs=1e-12
    )
    assert after.conversion_probability != pytest.approx(before.conversion_probability, abs=1e-6)


def test_train_conversion__no_events__refused_and_service_keeps_the_prior(tmp_path: Path) -> None:
    env = {"TESSERA_DATA_DIR": str(tmp_path)}

    trained = train(env)

    assert trained.returncode == 1
    assert "no events stored" in trained.stderr
    assert latest_model(ProfilesSettings(data_dir=str(tmp_path))) is None


def test_refresh_model__newer_model_and_other_goal__newest_of_the_goal_used(
    tmp_path: Path,
) -> None:
    database = db.open_database(ProfilesSettings(data_dir=str(tmp_path)), "profiles")
    migrations.upgrade(database.engine, "profiles")
    store = ProfileStore(database)
    stores = Stores(store, SessionStore(MemoryHotStore()))
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    scores = {"auc": 0.7, "calibration_error": 0.01, "examples": 100, "held_out": 30}
    try:
        assert asyncio.run(refresh_model(stores, "purchase")) is False
        assert stores.scoring.model == PRIOR
        for hours, version, goal in [(0, "conv-a", "purchase"), (2, "conv-c", "subscribe")]:
            model = ConversionModel(version, -1.0 - hours, {"cart_items": 0.5})
            store.save_model(model, goal, start + dt.timedelta(hours=hours), **scores)
        assert asyncio.run(refresh_model(stores, "purchase")) is True
        assert stores.scoring.model.version == "conv-a"
        newer = ConversionModel("conv-b", -2.5, {"cart_items": 0.9})
        store.save_model(newer, "purchase", start + dt.timedelta(hours=1), **scores)

        changed = asyncio.run(refresh_model(stores, "purchase"))

        assert changed is True and stores.scoring.model == newer
        assert asyncio.run(refresh_model(stores, "purchase")) is False
    finally:
        database.dispose()
