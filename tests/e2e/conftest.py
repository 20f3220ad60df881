"""The whole suite as four processes on PostgreSQL and Redis, driven as a backend would."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from tessera.decision.v1 import decision_pb2_grpc
from tessera.experiments.v1 import experiments_pb2_grpc
from tessera.profiles.v1 import profiles_pb2_grpc
from tessera.segments.v1 import segments_pb2_grpc
from tessera.suite import Suite, start_suite


@dataclass
class Clients:
    """Generated clients of every service of one running suite."""

    decision: decision_pb2_grpc.DecisionServiceStub
    profiles: profiles_pb2_grpc.ProfileServiceStub
    segments: segments_pb2_grpc.SegmentServiceStub
    experiments: experiments_pb2_grpc.ExperimentServiceStub


def clients_for(suite: Suite) -> tuple[Clients, list[grpc.Channel]]:
    channels = {name: grpc.insecure_channel(address) for name, address in suite.addresses.items()}
    clients = Clients(
        decision_pb2_grpc.DecisionServiceStub(channels["decision"]),
        profiles_pb2_grpc.ProfileServiceStub(channels["profiles"]),
        segments_pb2_grpc.SegmentServiceStub(channels["segments"]),
        experiments_pb2_grpc.ExperimentServiceStub(channels["experiments"]),
    )
    return clients, list(channels.values())


@pytest.fixture(scope="session")
def suite(store_env: dict[str, str]) -> Iterator[Suite]:
    env = {**store_env, "TESSERA_DATA_DIR": tempfile.mkdtemp(prefix="tessera-e2e-")}
    running = start_suite(env, free_ports=True)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def tessera(suite: Suite) -> Iterator[Clients]:
    clients, channels = clients_for(suite)
    yield clients
    for channel in channels:
        channel.close()
