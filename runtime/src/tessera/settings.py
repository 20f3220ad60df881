"""Typed settings, read from `TESSERA_*` environment variables.

Every service has one settings object: `RuntimeSettings` holds what all of
them share (where the peers listen, the stores, logging); a service adds its
own fields in a subclass. The README lists every variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tessera.guard import Limits

SERVICES = ("decision", "profiles", "segments", "experiments")

DEFAULT_PORTS = {"decision": 50051, "profiles": 50052, "segments": 50053, "experiments": 50054}
DEFAULT_METRICS_PORTS = {"decision": 9091, "profiles": 9092, "segments": 9093, "experiments": 9094}


class RuntimeSettings(BaseSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(env_prefix="TESSERA_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the services bind to.")
    decision_port: int = DEFAULT_PORTS["decision"]
    profiles_port: int = DEFAULT_PORTS["profiles"]
    segments_port: int = DEFAULT_PORTS["segments"]
    experiments_port: int = DEFAULT_PORTS["experiments"]
    decision_metrics_port: int = DEFAULT_METRICS_PORTS["decision"]
    profiles_metrics_port: int = DEFAULT_METRICS_PORTS["profiles"]
    segments_metrics_port: int = DEFAULT_METRICS_PORTS["segments"]
    experiments_metrics_port: int = DEFAULT_METRICS_PORTS["experiments"]
    decision_address: str = Field("", description="host:port of the decision service.")
    profiles_address: str = Field("", description="host:port of the profile service.")
    segments_address: str = Field("", description="host:port of the segment service.")
    experiments_address: str = Field("", description="host:port of the experiment service.")
    data_dir: Path = Field(Path(".tessera"), description="Folder of the embedded SQLite files.")
    database_url: str = Field("", description="SQLAlchemy URL; SQLite in data_dir when empty.")
    redis_url: str = Field("", description="Redis URL for hot data; in-process when empty.")
    key_prefix: str = Field("tessera:", description="Prefix of every Redis key.")
    log_level: str = "INFO"
    otlp_endpoint: str = Field(
        "",
        description="OTLP/gRPC collector for traces (http://collector:4317); off when empty.",
    )
    grace_period_s: float = Field(5.0, description="Time in-flight calls get at shutdown.")
    workers: int = Field(
        1, ge=1, description="Worker processes of one service on its port (SO_REUSEPORT)."
    )
    migrate_on_start: bool = Field(
        True,
        description="Create and upgrade the service's tables at start; off where "
        "`tessera migrate` runs beforehand (production's migration Job).",
    )
    schema_wait_s: float = Field(
        30.0,
        ge=0,
        description="Without migrate_on_start: how long to wait at start for the schema "
        "to reach this release's revision before refusing to start.",
    )
    allow_unauthenticated: bool = Field(
        False, description="Serve a non-loopback address without API keys, on purpose."
    )
    # The global holdout (docs/experiments.md): the decision service holds
    # people out, the experiment service reads the programme's results.
    global_holdout_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of all people who get no personalization."
    )
    global_holdout_goal: str = Field(
        "purchase", min_length=1, description="Goal event type the programme is measured on."
    )
    global_holdout_goal_kind: Literal["conversion", "revenue"] = Field(
        "conversion", description="How the programme's goal is measured."
    )

    # Request limits (tessera.guard): defaults no busy shop meets and every
    # abuser does. The README's limits table lists them.
    max_id_chars: int = Field(256, gt=0, description="Characters in an id, key or type.")
    max_prose_chars: int = Field(4096, gt=0, description="Characters in a name or description.")
    max_rule_chars: int = Field(65_536, gt=0, description="Characters in a segment rule.")
    max_identities: int = Field(32, gt=0, description="Identities in one request or event.")
    max_placements: int = Field(32, gt=0, description="Placements in one Decide.")
    max_repeated: int = Field(1000, gt=0, description="Items of any other list in a request.")
    max_struct_bytes: int = Field(65_536, gt=0, description="Encoded bytes of one Struct.")
    max_struct_entries: int = Field(1000, gt=0, description="Keys and items in one Struct.")
    max_struct_depth: int = Field(8, gt=0, description="Nesting levels in one Struct.")

    def limits(self) -> Limits:
        """The request limits the guard enforces at the edge."""
        return Limits(
            id_chars=self.max_id_chars,
            prose_chars=self.max_prose_chars,
            rule_chars=self.max_rule_chars,
            identities=self.max_identities,
            placements=self.max_placements,
            repeated=self.max_repeated,
            struct_bytes=self.max_struct_bytes,
            struct_entries=self.max_struct_entries,
            struct_depth=self.max_struct_depth,
        )

    def port_of(self, service: str) -> int:
        """The port `service` listens on."""
        port: int = getattr(self, f"{service}_port")
        return port

    def metrics_port_of(self, service: str) -> int:
        """The port `service` serves /metrics on; 0 serves none."""
        port: int = getattr(self, f"{service}_metrics_port")
        return port

    def address_of(self, service: str) -> str:
        """Where a peer reaches `service`: its address setting, else host:port."""
        address: str = getattr(self, f"{service}_address")
        if address:
            return address
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "[::]", "") else self.host
        return host_port(host, self.port_of(service))


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets ([::1]:50052) as gRPC reads it."""
    bare = host.strip("[]")
    return f"[{bare}]:{port}" if ":" in bare else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: RuntimeSettings) -> None:
    """Refuse to serve other machines without authentication unless told so.

    API keys are not built yet, so every call is unauthenticated: bound to a
    non-loopback address, the admin RPCs would be open to the network. The
    operator must say that this is intended (a private network, a mesh that
    authenticates), with TESSERA_ALLOW_UNAUTHENTICATED=true.
    """
    if not is_loopback(settings.host) and not settings.allow_unauthenticated:
        from tessera.errors import FailedPrecondition

        raise FailedPrecondition(
            f"refusing to serve {settings.host} without API keys; set "
            "TESSERA_ALLOW_UNAUTHENTICATED=true if the network is trusted",
            field="host",
        )
