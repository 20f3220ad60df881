"""Each service served by the real runtime on a free port, on PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from support import ServerThread

from tessera.experiments.server import ExperimentsService, ExperimentsSettings
from tessera.experiments.v1 import experiments_pb2_grpc
from tessera.profiles.server import ProfilesService, ProfilesSettings
from tessera.profiles.v1 import profiles_pb2_grpc
from tessera.segments.server import SegmentsService, SegmentsSettings
from tessera.segments.v1 import segments_pb2_grpc


def _settings(store_env: dict[str, str]) -> dict[str, str]:
    return {name.removeprefix("TESSERA_").lower(): value for name, value in store_env.items()}


@pytest.fixture(scope="module")
def profiles_server(store_env: dict[str, str]) -> Iterator[ServerThread]:
    server = ServerThread(lambda: ProfilesService(ProfilesSettings(**_settings(store_env)))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def profiles(profiles_server: ServerThread) -> Iterator[profiles_pb2_grpc.ProfileServiceStub]:
    with profiles_server.channel() as channel:
        yield profiles_pb2_grpc.ProfileServiceStub(channel)


@pytest.fixture(scope="module")
def segments_server(
    store_env: dict[str, str], profiles_server: ServerThread
) -> Iterator[ServerThread]:
    settings = {**_settings(store_env), "profiles_address": profiles_server.address}
    server = ServerThread(lambda: SegmentsService(SegmentsSettings(**settings))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def segments(segments_server: ServerThread) -> Iterator[segments_pb2_grpc.SegmentServiceStub]:
    with segments_server.channel() as channel:
        yield segments_pb2_grpc.SegmentServiceStub(channel)


@pytest.fixture(scope="module")
def experiments_server(
    store_env: dict[str, str], profiles_server: ServerThread
) -> Iterator[ServerThread]:
    # The profile service: its change feed brings conversions, and sticky
    # variants are written onto profiles.
    settings = {**_settings(store_env), "profiles_address": profiles_server.address}
    server = ServerThread(lambda: ExperimentsService(ExperimentsSettings(**settings))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def experiments(
    experiments_server: ServerThread,
) -> Iterator[experiments_pb2_grpc.ExperimentServiceStub]:
    with experiments_server.channel() as channel:
        yield experiments_pb2_grpc.ExperimentServiceStub(channel)


def code_of(call: object) -> grpc.StatusCode:
    """Run a zero-argument callable expected to fail; its status code."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return,attr-defined]
    raise AssertionError("the call succeeded")
