"""Traces follow a call across the fan-out; logs carry the trace id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, SpanKind
from support import ServerThread

from tessera import logs, tracing
from tessera.common.v1 import common_pb2
from tessera.decision.v1 import decision_pb2, decision_pb2_grpc
from tessera.profiles.server import ProfilesService, ProfilesSettings
from tessera.profiles.v1 import profiles_pb2, profiles_pb2_grpc
from tessera.segments.server import SegmentsService, SegmentsSettings
from tessera.segments.v1 import segments_pb2, segments_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider.get_tracer("test"))
    yield exporter, provider
    tracing.use(None)


def caller_metadata() -> list[tuple[str, str]]:
    """The current span's W3C trace context, as a backend sends it with a call."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def one_chain(
    exporter: InMemorySpanExporter, root: Span, *links: tuple[str, SpanKind]
) -> list[ReadableSpan]:
    """The finished spans named by `links`, in one trace: the first a child of `root`,
    each of the others a child of the one before."""
    finished = {(span.name, span.kind): span for span in exporter.get_finished_spans()}
    chain = [finished[link] for link in links]
    parent = root.get_span_context()
    for span in chain:
        assert span.context is not None and span.context.trace_id == parent.trace_id
        assert span.parent is not None and span.parent.span_id == parent.span_id
        parent = span.context
    return chain


def test_evaluate_segments__by_profile_id__one_trace_from_caller_through_profiles(
    spans: tuple[InMemorySpanExporter, TracerProvider], store_env: dict[str, str]
) -> None:
    exporter, provider = spans
    settings = {k.removeprefix("TESSERA_").lower(): v for k, v in store_env.items()}
    profiles_server = ServerThread(lambda: ProfilesService(ProfilesSettings(**settings))).start()
    segments_server = ServerThread(
        lambda: SegmentsService(
            SegmentsSettings(**settings, profiles_address=profiles_server.address)
        )
    ).start()
    try:
        with profiles_server.channel() as channel:
            profile = (
                profiles_pb2_grpc.ProfileServiceStub(channel)
                .Identify(
                    profiles_pb2.IdentifyRequest(
                        identities=[common_pb2.Identity(type="cookie", value="traced")]
                    )
                )
                .profile
            )
        exporter.clear()
        with (
            provider.get_tracer("backend").start_as_current_span("backend request") as root,
            segments_server.channel() as channel,
        ):
            segments_pb2_grpc.SegmentServiceStub(channel).EvaluateSegments(
                segments_pb2.EvaluateSegmentsRequest(profile_id=profile.profile_id),
                metadata=caller_metadata(),
            )
    finally:
        segments_server.stop()
        profiles_server.stop()

    evaluate, _, _ = one_chain(
        exporter,
        root,
        ("/tessera.segments.v1.SegmentService/EvaluateSegments", SpanKind.SERVER),
        ("/tessera.profiles.v1.ProfileService/GetProfile", SpanKind.CLIENT),
        ("/tessera.profiles.v1.ProfileService/GetProfile", SpanKind.SERVER),
    )
    assert evaluate.attributes is not None
    assert evaluate.attributes["rpc.grpc.status_code"] == "OK"


def test_decide__identify_over_the_stream__one_trace_from_caller_through_profiles(
    spans: tuple[InMemorySpanExporter, TracerProvider],
    decision_server: ServerThread,
    profiles: profiles_pb2_grpc.ProfileServiceStub,
) -> None:
    # The decision service resolves the visitor as a message on a long-lived
    # IdentifyStream (TESSERA_PROFILE_STREAMS, 2 by default), not a unary call:
    # the message carries the trace, so the hop shows as it would unary.
    exporter, provider = spans
    identities = [common_pb2.Identity(type="cookie", value="traced-decide")]
    profiles.Identify(profiles_pb2.IdentifyRequest(identities=identities))
    exporter.clear()
    with (
        provider.get_tracer("backend").start_as_current_span("backend request") as root,
        decision_server.channel() as channel,
    ):
        decision_pb2_grpc.DecisionServiceStub(channel).Decide(
            decision_pb2.DecideRequest(
                identities=identities, channel=common_pb2.CHANNEL_WEB, placements=["home_hero"]
            ),
            metadata=caller_metadata(),
        )

    _, _, served = one_chain(
        exporter,
        root,
        ("/tessera.decision.v1.DecisionService/Decide", SpanKind.SERVER),
        ("/tessera.profiles.v1.ProfileService/Identify", SpanKind.CLIENT),
        ("/tessera.profiles.v1.ProfileService/Identify", SpanKind.SERVER),
    )
    assert served.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == "OK"


@pytest.mark.parametrize(
    "traceparent", ["", "not-a-traceparent", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"]
)
def test_identify_stream__no_or_a_malformed_traceparent__answered_in_a_span_of_its_own(
    spans: tuple[InMemorySpanExporter, TracerProvider],
    profiles: profiles_pb2_grpc.ProfileServiceStub,
    traceparent: str,
) -> None:
    exporter, _ = spans
    exporter.clear()
    request = profiles_pb2.IdentifyStreamRequest(
        request_id=7,
        request=profiles_pb2.IdentifyRequest(
            identities=[common_pb2.Identity(type="cookie", value="traced-stream")]
        ),
        traceparent=traceparent,
    )

    (answer,) = list(profiles.IdentifyStream(iter([request]), timeout=10))

    assert answer.request_id == 7 and answer.HasField("response")
    (served,) = [
        span
        for span in exporter.get_finished_spans()
        if span.name == "/tessera.profiles.v1.ProfileService/Identify"
    ]
    assert served.kind == SpanKind.SERVER
    assert served.context.trace_id != 0
    assert served.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == "OK"


def test_log_line__inside_a_span__carries_trace_and_span_ids(
    spans: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    _, provider = spans
    formatter = logs.JsonFormatter("profiles")
    record = logging.makeLogRecord({"msg": "hello", "levelname": "INFO", "name": "t"})

    with provider.get_tracer("t").start_as_current_span("work") as span:
        inside = json.loads(formatter.format(record))
    outside = json.loads(formatter.format(record))

    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside
