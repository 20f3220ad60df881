"""No RPC answers INTERNAL or UNKNOWN for anything a client can send.

The whole suite runs in this process (a server thread per service), once on
embedded SQLite with the in-process hot store and once on PostgreSQL and
Redis. Every RPC of every service, found from the service descriptors (an
RPC added later is fuzzed without a line here), gets hypothesis-generated
requests of two kinds: well-typed messages with extreme field values, and
raw bytes no generated client would send. For every call:

- the status is never INTERNAL or UNKNOWN (both mean a bug of ours);
- a unary or client-streaming call ends before the deadline we gave it;
- a call that answered an error left every stored row and hot value as it
  was. A client stream is checked when its first message is refused (or it
  has one message): messages before a refused one are taken one by one, by
  design, so the stream as a whole may have stored them.

Server streams (the Watch RPCs, StreamEvents) are opened, their first
message or status read within a short deadline, then cancelled. A
bidirectional stream (IdentifyStream) sends its messages and reads every
answer: no answer's per-message error may be INTERNAL or UNKNOWN either, and
the stream ends before its deadline once the client is done sending.

`TESSERA_FUZZ_EXAMPLES` raises the examples per RPC and kind for a longer
local run (the default keeps the module at about a minute per backend).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
import redis
from fuzzing import (
    Dump,
    Outcome,
    Rpc,
    StoredData,
    call,
    difference,
    raw_requests,
    typed_requests,
)
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ServerThread, free_port

from tessera.common.v1 import common_pb2
from tessera.decision.server import DecisionService, DecisionSettings
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.experiments.server import ExperimentsService, ExperimentsSettings
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc
from tessera.hot import MemoryHotStore
from tessera.profiles.server import ProfilesService, ProfilesSettings
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.segments.server import SegmentsService, SegmentsSettings
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

pytestmark = pytest.mark.integration

SERVICES = (ProfilesService, SegmentsService, ExperimentsService, DecisionService)

METHODS: list[MethodDescriptor] = [
    method
    for service in SERVICES
    for name in service.full_names
    for method in descriptor_pool.Default().FindServiceByName(name).methods
]
"""Every RPC of every Tessera service, from the descriptors."""

EXAMPLES = int(os.environ.get("TESSERA_FUZZ_EXAMPLES", "30"))
CALL_TIMEOUT_S = 5.0
STREAM_TIMEOUT_S = 2.0
STREAM_MESSAGES = 3
"""At most this many messages in a generated client stream."""

NEVER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)

# Rule texts that reach the parsers' corners: deep nesting, huge numbers and windows.
RULES = [
    'trait.country in ["FR", "BE"]',
    'session.category_views("juicers") >= 2 and count(purchase, within=30d) == 0',
    "count(purchase, within=99999999999999999999d) == 0",
    "sum(purchase.revenue, within=1m) > 1e999",
    "trait.age > 123456789012345678901234567890",
    "(" * 5000 + "true" + ")" * 5000,
    "not " * 5000 + "true",
    'segment("fuzz-segment")',
    '{"==": [{"var": "trait.country"}, "FR"]}',
    '{"count": ["purchase", "99999999999999999999d"]}',
    '{"!": ' * 5000 + "true" + "}" * 5000,
    "[" * 5000 + "]" * 5000,
    '{"segment": "fuzz-segment"}',
    '{"in": [{"var": "trait.country"}, ["FR", 1e400]]}',
]

# Payload templates (docs/payloads.md) that reach the template parser's corners.
TEMPLATES = [
    '{{traits.plan | default: "gifts"}}',
    "For {{traits.first_name}}: {{interests.top}} ({{session.category_views.juicers}})",
    "{{",
    "{{}}",
    "\\{{kept}}",
    '{{traits.x | default: "unclosed}}',
    "{{traits.x | default: 1e999}}",
    "{{traits.x | default: 1" + "0" * 400 + "}}",
    '{{traits.x | default: "\\ud800"}}',
    "{{interests.99999999999999999999}}",
    "{{" * 2000,
]


M = TypeVar("M", bound=Message)


def renamed(definition: M, key: str = "") -> M:
    """A copy of a definition under another key (`fuzz-new-…` by default)."""
    copy = type(definition)()
    copy.CopyFrom(definition)
    old: str = copy.key  # type: ignore[attr-defined]
    copy.key = key or old.replace("fuzz-", "fuzz-new-", 1)  # type: ignore[attr-defined]
    return copy


@dataclass
class Seeded:
    """Real data every run starts from, so that fuzzed lookups hit stored rows."""

    profile_id: str
    spare_profile_id: str
    cookie: str = "fuzz-cookie-1"
    segment: str = "fuzz-segment"
    spare_segment: str = "fuzz-spare-segment"
    experiment: str = "fuzz-experiment"
    campaign: str = "fuzz-campaign"
    spare_campaign: str = "fuzz-spare-campaign"
    placement: str = "home-hero"

    def pool(self) -> list[str]:
        """Strings the generated requests prefer: real ids, keys and words."""
        return [
            self.profile_id,
            self.spare_profile_id,
            self.cookie,
            "cookie",
            "email",
            "fuzz@example.com",
            self.segment,
            self.spare_segment,
            self.experiment,
            self.campaign,
            f"campaign-{self.campaign}",
            self.placement,
            "purchase",
            "product_view",
            "control",
            "treatment",
            *RULES,
            *TEMPLATES,
        ]

    def requests(self) -> dict[str, Message]:
        """A valid request for each RPC known today; fields are kept, changed or dropped."""
        web = common_pb2.CHANNEL_WEB
        cookie = common_pb2.Identity(type="cookie", value=self.cookie)
        event = common_pb2.Event(
            event_id="fuzz-event", profile_id=self.profile_id, type="product_view", channel=web
        )
        event.properties.update({"category": "juicers", "product_id": "j1", "price": 49.9})
        goal = common_pb2.Goal(event_type="purchase", kind=common_pb2.GOAL_KIND_CONVERSION)
        rule = segments_pb2.Rule(text=RULES[0])
        segment = segments_pb2.Segment(key=self.segment, name="France", rule=rule)
        experiment = experiments_pb2.Experiment(
            key=self.experiment,
            name="Hero",
            variants=[
                experiments_pb2.Variant(key="control", weight=1),
                experiments_pb2.Variant(key="treatment", weight=1),
            ],
            control_variant_key="control",
            status=experiments_pb2.EXPERIMENT_STATUS_RUNNING,
            goal=goal,
        )
        campaign = decision_pb2.Campaign(
            key=self.campaign,
            name="Hero",
            goal=goal,
            placements=[self.placement],
            audience_segment_keys=[self.segment],
            variants=[decision_pb2.CampaignVariant(key="treatment", weight=1)],
            status=decision_pb2.CAMPAIGN_STATUS_RUNNING,
            # Every rule of Decide set, so the fuzzed fields start from valid ones.
            conflict_group="hero",
            pressure_cost=1,
            frequency_cap=decision_pb2.FrequencyCap(max_decisions=5),
            conversion_probability=decision_pb2.ProbabilityRange(min=0.0, max=1.0),
        )
        campaign.frequency_cap.period.FromSeconds(3600)
        campaign.variants[0].payload.update(
            {"title": "Juicers", "reco": {"items": [TEMPLATES[0], TEMPLATES[1]]}}
        )
        decide = decision_pb2.DecideRequest(
            identities=[cookie],
            channel=web,
            placements=[self.placement],
            explain=True,
            request_id="retry-1",
        )
        decide.context.update({"page": "home"})
        roadmap = decision_pb2.GetRoadmapRequest(placements=[self.placement], page_size=10)
        roadmap.start_time.FromSeconds(1_800_000_000)
        roadmap.end_time.FromSeconds(1_800_000_000 + 91 * 86_400)
        exposure = experiments_pb2.Exposure(
            exposure_id="x1",
            experiment_key=self.experiment,
            variant_key="control",
            profile_id=self.profile_id,
        )
        exposure.timestamp.FromSeconds(1_700_000_000)
        traits = profiles_pb2.UpdateTraitsRequest(profile_id=self.profile_id)
        traits.traits.update({"plan": "gold"})
        return {
            "Identify": profiles_pb2.IdentifyRequest(identities=[cookie], channel=web),
            "GetProfile": profiles_pb2.GetProfileRequest(profile_id=self.profile_id),
            "UpdateTraits": traits,
            "Track": profiles_pb2.TrackRequest(event=event),
            "TrackStream": profiles_pb2.TrackStreamRequest(event=event, events=[event]),
            "IdentifyStream": profiles_pb2.IdentifyStreamRequest(
                request_id=1,
                request=profiles_pb2.IdentifyRequest(identities=[cookie], channel=web),
                # The W3C Trace Context specification's example.
                traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            "StreamEvents": profiles_pb2.StreamEventsRequest(after=0, types=["purchase"]),
            "DeleteProfile": profiles_pb2.DeleteProfileRequest(profile_id=self.spare_profile_id),
            "ExportProfile": profiles_pb2.ExportProfileRequest(profile_id=self.profile_id),
            "CreateSegment": segments_pb2.CreateSegmentRequest(segment=renamed(segment)),
            "GetSegment": segments_pb2.GetSegmentRequest(key=self.segment),
            "ListSegments": segments_pb2.ListSegmentsRequest(page_size=10),
            "UpdateSegment": segments_pb2.UpdateSegmentRequest(segment=segment),
            "DeleteSegment": segments_pb2.DeleteSegmentRequest(key=self.spare_segment),
            "ValidateRule": segments_pb2.ValidateRuleRequest(rule=rule),
            "EvaluateSegments": segments_pb2.EvaluateSegmentsRequest(profile_id=self.profile_id),
            "EstimateSize": segments_pb2.EstimateSizeRequest(segment_key=self.segment),
            "CreateExperiment": experiments_pb2.CreateExperimentRequest(
                experiment=renamed(experiment)
            ),
            "GetExperiment": experiments_pb2.GetExperimentRequest(key=self.experiment),
            "ListExperiments": experiments_pb2.ListExperimentsRequest(page_size=10),
            "UpdateExperiment": experiments_pb2.UpdateExperimentRequest(experiment=experiment),
            "Assign": experiments_pb2.AssignRequest(
                profile_id=self.profile_id,
                segment_keys=[self.segment],
                channel=web,
                experiment_keys=[self.experiment],
            ),
            "RecordExposures": experiments_pb2.RecordExposuresRequest(exposures=[exposure]),
            "GetResults": experiments_pb2.GetResultsRequest(experiment_key=self.experiment),
            "Decide": decide,
            "CreateCampaign": decision_pb2.CreateCampaignRequest(campaign=renamed(campaign)),
            "GetCampaign": decision_pb2.GetCampaignRequest(key=self.campaign),
            "ListCampaigns": decision_pb2.ListCampaignsRequest(page_size=10),
            "UpdateCampaign": decision_pb2.UpdateCampaignRequest(campaign=campaign),
            "DeleteCampaign": decision_pb2.DeleteCampaignRequest(key=self.spare_campaign),
            "GetRoadmap": roadmap,
        }


def _create(create: Any, request: Message) -> None:
    """Create a definition unless it exists already."""
    try:
        create(request)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
            raise


def seed(servers: dict[str, ServerThread]) -> Seeded:
    """A profile with traits and events, segments, an experiment and campaigns.

    Whatever of them is there already stays: fuzzed calls that succeed may
    have deleted or changed some, and each test starts from all of them.
    """
    with (
        servers["profiles"].channel() as p,
        servers["segments"].channel() as s,
        servers["experiments"].channel() as e,
        servers["decision"].channel() as d,
    ):
        profiles = profiles_pb2_grpc.ProfileServiceStub(p)
        identify = profiles_pb2.IdentifyRequest(
            identities=[
                common_pb2.Identity(type="cookie", value="fuzz-cookie-1"),
                common_pb2.Identity(type="email", value="fuzz@example.com"),
            ]
        )
        profile_id = profiles.Identify(identify).profile.profile_id
        spare = profiles.Identify(
            profiles_pb2.IdentifyRequest(identities=[common_pb2.Identity(type="cookie", value="s")])
        ).profile.profile_id
        seeded = Seeded(profile_id, spare)
        requests = seeded.requests()
        profiles.UpdateTraits(requests["UpdateTraits"])
        for index, (kind, properties) in enumerate(
            [
                ("page_view", {"url": "/"}),
                ("product_view", {"category": "juicers", "product_id": "j1", "price": 49.9}),
                ("add_to_cart", {"category": "juicers", "product_id": "j1", "price": 49.9}),
                ("purchase", {"revenue": 99.8}),
            ]
        ):
            event = common_pb2.Event(
                event_id=f"seed-{index}", profile_id=profile_id, type=kind, channel=1
            )
            event.properties.update(properties)
            profiles.Track(profiles_pb2.TrackRequest(event=event))
        segments = segments_pb2_grpc.SegmentServiceStub(s)
        segment = requests["UpdateSegment"].segment  # type: ignore[attr-defined]
        for key in (seeded.segment, seeded.spare_segment):
            request = segments_pb2.CreateSegmentRequest(segment=renamed(segment, key))
            _create(segments.CreateSegment, request)
        experiments = experiments_pb2_grpc.ExperimentServiceStub(e)
        experiment = requests["UpdateExperiment"].experiment  # type: ignore[attr-defined]
        request = experiments_pb2.CreateExperimentRequest(experiment=experiment)
        _create(experiments.CreateExperiment, request)
        decision = decision_pb2_grpc.DecisionServiceStub(d)
        campaign = requests["UpdateCampaign"].campaign  # type: ignore[attr-defined]
        for key in (seeded.campaign, seeded.spare_campaign):
            request = decision_pb2.CreateCampaignRequest(campaign=renamed(campaign, key))
            _create(decision.CreateCampaign, request)
    return seeded


@dataclass
class Fuzz:
    """The running suite, its seeded data, and the checks every fuzzed call passes."""

    backend: str
    servers: dict[str, ServerThread]
    stored: StoredData
    seeded: Seeded
    channels: dict[str, grpc.Channel] = field(default_factory=dict)
    _known: Dump | None = None
    """The stored data as of the last rejected call (rejected calls change nothing)."""

    def rpc(self, method: MethodDescriptor) -> Rpc:
        for name, server in self.servers.items():
            if method.containing_service.full_name in SERVICE_NAMES[name]:
                return Rpc(method, server.address)
        raise LookupError(method.full_name)

    def channel(self, address: str) -> grpc.Channel:
        if address not in self.channels:
            self.channels[address] = grpc.insecure_channel(address)
        return self.channels[address]

    def forget(self) -> None:
        """Dump the stored data again before the next call (something else wrote)."""
        self._known = None

    def settle(self, timeout_s: float = 20.0) -> None:
        """Wait until the background work of earlier calls is done.

        An accepted Decide sends exposures later, the experiment service then
        writes sticky variants onto profiles, and it follows the change feed
        into its own tables (the decision service its merges into its
        counters): writes no refused call made, so they must all be done
        before a dump is compared with the next one.
        """
        decision = self.servers["decision"]
        experiments = self.servers["experiments"]
        profiles = self.servers["profiles"]
        assert decision.running and experiments.running and profiles.running
        decision.call(decision.running.service.exposures.flushed())
        service = experiments.running.service
        experiments.call(service.sync.idle())
        feed = profiles.running.service.feed.store
        deadline = time.monotonic() + timeout_s
        merges = decision.running.service.merges.runner
        while True:
            feed.sequence()
            runner = service.conversions.runner
            waiting = feed.read(runner.position, sorted(service.conversions.goal_types), 1)
            # The decision service folds merges from the feed into its counters.
            folding = feed.read(merges.position, [], 1, events=False)
            if not waiting.records and not folding.records:
                return
            assert time.monotonic() < deadline, (
                "the experiment and decision services did not follow the feed"
            )
            time.sleep(0.02)

    def assert_sound(self, method: MethodDescriptor, requests: list[bytes]) -> Outcome:
        """Send `requests`; assert the status, the time, and no trace of a rejection."""
        rpc = self.rpc(method)
        if self._known is None:
            self.settle()
        before = self._known if self._known is not None else self.stored.dump()
        timeout = (
            STREAM_TIMEOUT_S
            if rpc.streams_responses and not rpc.streams_requests
            else CALL_TIMEOUT_S
        )
        outcome = call(self.channel(rpc.address), rpc, requests, timeout)
        where = f"{rpc.path} on {self.backend}"
        assert outcome.code not in NEVER, f"{where} answered {outcome.code.name}: {outcome.details}"
        for code, details in outcome.message_errors:
            assert code not in NEVER, f"{where} answered a message {code.name}: {details}"
        if not rpc.streams_responses or rpc.streams_requests:
            assert outcome.elapsed_s < CALL_TIMEOUT_S, (
                f"{where} did not answer within {CALL_TIMEOUT_S}s "
                f"({outcome.code.name}: {outcome.details})"
            )
        if outcome.answered or not _checkable(rpc, requests, outcome):
            self._known = None
            return outcome
        self.settle()
        after = self.stored.dump()
        assert after == before, (
            f"{where} answered {outcome.code.name} ({outcome.details}) but changed stored data:\n"
            + difference(before, after)
        )
        self._known = after
        return outcome


SERVICE_NAMES = {service.name: set(service.full_names) for service in SERVICES}


def _checkable(rpc: Rpc, requests: list[bytes], outcome: Outcome) -> bool:
    """Whether a rejected call must have left no trace (see the module docstring)."""
    if not rpc.streams_requests or len(requests) == 1:
        return True
    if rpc.streams_responses:
        # Each message is answered on its own: with several, the good ones stored.
        return False
    return outcome.details.startswith("[0]")


def start_servers(env: dict[str, Any]) -> dict[str, ServerThread]:
    """The four services in this process, each on a free port, peers wired."""
    servers: dict[str, ServerThread] = {}
    servers["profiles"] = ServerThread(lambda: ProfilesService(ProfilesSettings(**env))).start()
    # Experiments follows the profiles change feed and writes sticky traits.
    profiles_peer = {"profiles_address": servers["profiles"].address}
    servers["experiments"] = ServerThread(
        lambda: ExperimentsService(ExperimentsSettings(**env, **profiles_peer))
    ).start()
    # Segments and decision call each other (DeleteSegment asks for campaigns).
    decision_port = free_port()
    peers = {
        "profiles_address": servers["profiles"].address,
        "experiments_address": servers["experiments"].address,
        "decision_address": f"127.0.0.1:{decision_port}",
    }
    servers["segments"] = ServerThread(
        lambda: SegmentsService(SegmentsSettings(**env, **peers))
    ).start()
    peers = {f"{name}_address": server.address for name, server in servers.items()}
    servers["decision"] = ServerThread(
        lambda: DecisionService(DecisionSettings(**env, **peers)), port=decision_port
    ).start()
    return servers


def _memory_values(servers: dict[str, ServerThread]) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    for name, server in servers.items():
        assert server.running is not None
        hot = getattr(server.running.service, "hot", None)
        if isinstance(hot, MemoryHotStore):

            async def read(store: MemoryHotStore = hot) -> dict[str, bytes]:
                return {key: value for key, (value, _) in store._values.items()}

            values |= {f"{name}:{key}": value for key, value in server.call(read()).items()}
    return values


def _redis_values(client: redis.Redis, prefix: str) -> dict[str, bytes]:
    keys = sorted(client.scan_iter(f"{prefix}*", count=1000))
    if not keys:
        return {}
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.dump(key)
        values = pipe.execute()
    return {key.decode(): value for key, value in zip(keys, values, strict=True)}


@pytest.fixture(scope="module")
def fresh_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL database of this module's own, so dumps see only its rows."""
    store_env: dict[str, str] = request.getfixturevalue("store_env")
    url = store_env["TESSERA_DATABASE_URL"]
    name = f"tessera_fuzz_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{url.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def fuzz(request: pytest.FixtureRequest) -> Iterator[Fuzz]:
    """The suite on one backend, seeded, with its stored data observable."""
    env: dict[str, Any] = {"data_dir": tempfile.mkdtemp(prefix="tessera-fuzz-")}
    hot_client: redis.Redis | None = None
    if request.param == "postgres":
        store_env: dict[str, str] = request.getfixturevalue("store_env")
        prefix = f"{store_env['TESSERA_KEY_PREFIX']}fuzz-{uuid.uuid4().hex[:8]}:"
        env |= {
            "database_url": request.getfixturevalue("fresh_database"),
            "redis_url": store_env["TESSERA_REDIS_URL"],
            "key_prefix": prefix,
        }
        hot_client = redis.Redis.from_url(store_env["TESSERA_REDIS_URL"])
    servers = start_servers(env)
    try:
        databases = []
        for name, server in servers.items():
            assert server.running is not None
            databases.append((name, server.running.service.database.engine))
        client = hot_client
        stored = StoredData(
            databases,
            (lambda: _redis_values(client, env["key_prefix"]))
            if client is not None
            else (lambda: _memory_values(servers)),
        )
        fuzz = Fuzz(request.param, servers, stored, seed(servers))
        yield fuzz
        for channel in fuzz.channels.values():
            channel.close()
    finally:
        for server in reversed(servers.values()):
            server.stop()
        if hot_client is not None:
            hot_client.close()


def _id(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


def _requests(method: MethodDescriptor, one: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """One request, or a few for a client stream."""
    if method.client_streaming:
        return st.lists(one, min_size=1, max_size=STREAM_MESSAGES)
    return one.map(lambda request: [request])


def _reseeded(fuzz: Fuzz) -> Fuzz:
    """`fuzz` with its seed data back in place, for a test to start from."""
    fuzz.seeded = seed(fuzz.servers)
    fuzz.forget()
    return fuzz


def _typed(fuzz: Fuzz, method: MethodDescriptor) -> st.SearchStrategy[Message]:
    seed_request = fuzz.seeded.requests().get(method.name)
    typed = typed_requests(method.input_type, seed_request, fuzz.seeded.pool())
    if not method.name.startswith("Create"):
        return typed
    # Most creates under a key of their own, so that they can succeed (and
    # later calls meet what they stored), not only the first.
    fresh = st.one_of(st.from_regex(r"\Afuzz-[a-z0-9]{1,8}\Z"), st.none())
    return st.tuples(typed, fresh).map(lambda pair: _rekeyed(*pair))


def _rekeyed(request: Message, key: str | None) -> Message:
    """`request` with the key of the definition it carries set to `key` (if any)."""
    for carrier in request.DESCRIPTOR.fields:
        inner = carrier.message_type
        if key is not None and inner is not None and "key" in inner.fields_by_name:
            getattr(request, carrier.name).key = key
    return request


def test_fuzz__every_rpc_is_covered(fuzz: Fuzz) -> None:
    served = {
        method.full_name
        for server in fuzz.servers.values()
        if server.running is not None
        for name in server.running.service.full_names
        for method in descriptor_pool.Default().FindServiceByName(name).methods
    }

    assert {method.full_name for method in METHODS} == served
    assert len(served) >= 31
    assert set(fuzz.seeded.requests()) <= {method.name for method in METHODS}
    assert {"profiles_profile", "profiles_log", "segments_definitions"} <= set(
        fuzz.stored.table_names
    )
    assert fuzz.stored.dump()["hot"], "the seeded profile's session is in the hot store"


def test_fuzz__stored_data__an_accepted_write_shows_in_rows_and_hot_values(fuzz: Fuzz) -> None:
    fuzz = _reseeded(fuzz)
    track = METHODS[[method.name for method in METHODS].index("Track")]
    event = common_pb2.Event(
        event_id=uuid.uuid4().hex, profile_id=fuzz.seeded.profile_id, type="search"
    )
    event.properties.update({"query": "juicer"})
    before = fuzz.stored.dump()

    outcome = fuzz.assert_sound(track, [profiles_pb2.TrackRequest(event=event).SerializeToString()])

    after = fuzz.stored.dump()
    assert outcome.code == grpc.StatusCode.OK
    assert after["profiles_log"] != before["profiles_log"]
    assert after["hot"] != before["hot"]
    assert difference(before, after).count("  + ") >= 2


@pytest.mark.parametrize("method", METHODS, ids=_id)
def test_fuzz__typed_requests__never_internal_and_refusals_store_nothing(
    fuzz: Fuzz, method: MethodDescriptor
) -> None:
    fuzz = _reseeded(fuzz)

    @FUZZ_SETTINGS
    @given(_requests(method, _typed(fuzz, method)))
    def run(requests: list[Message]) -> None:
        fuzz.assert_sound(method, [request.SerializeToString() for request in requests])

    run()


@pytest.mark.parametrize("method", METHODS, ids=_id)
def test_fuzz__raw_bytes__never_internal_and_refusals_store_nothing(
    fuzz: Fuzz, method: MethodDescriptor
) -> None:
    fuzz = _reseeded(fuzz)

    @FUZZ_SETTINGS
    @given(_requests(method, raw_requests(method.input_type, _typed(fuzz, method))))
    def run(requests: list[bytes]) -> None:
        fuzz.assert_sound(method, requests)

    run()
