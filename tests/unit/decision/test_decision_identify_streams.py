"""IdentifyStreams over fake streams: answers by id, timeouts, breaks, older servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from tessera.decision.transport.identify_streams import (
    STREAM_MAX_AGE_S,
    UNIMPLEMENTED_RETRY_S,
    IdentifyStreams,
    rpc_error,
)
from tessera.profiles.v1 import profiles_pb2

_END = object()


class FakeCall:
    """An IdentifyStream call the test answers by hand."""

    def __init__(self) -> None:
        self.written: list[profiles_pb2.IdentifyStreamRequest] = []
        self.answers: asyncio.Queue[object] = asyncio.Queue()
        self.cancelled = False
        self.done = False

    async def done_writing(self) -> None:
        self.done = True

    async def write(self, request: profiles_pb2.IdentifyStreamRequest) -> None:
        self.written.append(request)

    def answer(self, request_id: int, profile_id: str) -> None:
        self.answers.put_nowait(
            profiles_pb2.IdentifyStreamResponse(
                request_id=request_id,
                response=profiles_pb2.IdentifyResponse(
                    profile=profiles_pb2.Profile(profile_id=profile_id)
                ),
            )
        )

    def fail_one(self, request_id: int, code: int, message: str) -> None:
        self.answers.put_nowait(
            profiles_pb2.IdentifyStreamResponse(
                request_id=request_id,
                error=profiles_pb2.IdentifyStreamError(code=code, message=message),
            )
        )

    def end(self, code: grpc.StatusCode, details: str) -> None:
        self.answers.put_nowait(rpc_error(code, details))

    async def _iterate(self) -> AsyncIterator[profiles_pb2.IdentifyStreamResponse]:
        while True:
            item = await self.answers.get()
            if item is _END:
                return
            if isinstance(item, grpc.aio.AioRpcError):
                raise item
            assert isinstance(item, profiles_pb2.IdentifyStreamResponse)
            yield item

    def __aiter__(self) -> AsyncIterator[profiles_pb2.IdentifyStreamResponse]:
        return self._iterate()

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class Peer:
    """Opens FakeCalls and answers unary calls, recording both."""

    def __init__(self) -> None:
        self.calls: list[FakeCall] = []
        self.unary: list[profiles_pb2.IdentifyRequest] = []

    def open(self) -> FakeCall:
        call = FakeCall()
        self.calls.append(call)
        return call

    async def identify(
        self, request: profiles_pb2.IdentifyRequest, *, timeout: float | None = None
    ) -> profiles_pb2.IdentifyResponse:
        self.unary.append(request)
        return profiles_pb2.IdentifyResponse(profile=profiles_pb2.Profile(profile_id="unary"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ask(value: str) -> profiles_pb2.IdentifyRequest:
    request = profiles_pb2.IdentifyRequest()
    request.identities.add(type="cookie", value=value)
    return request


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_identify__answers_out_of_order__each_request_gets_its_own() -> None:
    async def scenario() -> list[str]:
        peer = Peer()
        streams = IdentifyStreams(peer.open, peer.identify, 1)
        first = asyncio.create_task(streams.Identify(ask("a"), timeout=5))
        second = asyncio.create_task(streams.Identify(ask("b"), timeout=5))
        await turns()
        (call,) = peer.calls
        ids = {w.request.identities[0].value: w.request_id for w in call.written}
        call.answer(ids["b"], "profile-b")
        call.answer(ids["a"], "profile-a")
        answers = [(await first).profile.profile_id, (await second).profile.profile_id]
        await streams.close()
        return answers

    assert asyncio.run(scenario()) == ["profile-a", "profile-b"]


def test_identify__two_streams__requests_alternate_between_them() -> None:
    async def scenario() -> list[int]:
        peer = Peer()
        streams = IdentifyStreams(peer.open, peer.identify, 2)
        tasks = [asyncio.create_task(streams.Identify(ask(str(n)), timeout=5)) for n in range(4)]
        await turns()
        for call in peer.calls:
            for written in call.written:
                call.answer(written.request_id, "p")
        await asyncio.gather(*tasks)
        await streams.close()
        return [len(call.written) for call in peer.calls]

    assert asyncio.run(scenario()) == [2, 2]


def test_identify__one_times_out__deadline_exceeded_while_the_other_completes() -> None:
    async def scenario() -> tuple[grpc.StatusCode, str]:
        peer = Peer()
        streams = IdentifyStreams(peer.open, peer.identify, 1)
        slow = asyncio.create_task(streams.Identify(ask("slow"), timeout=0.01))
        fast = asyncio.create_task(streams.Identify(ask("fast"), timeout=5))
        await turns()
        (call,) = peer.calls
        with pytest.raises(grpc.aio.AioRpcError) as timed_out:
            await slow
        call.answer(call.written[1].request_id, "fast-profile")
        call.answer(call.written[0].request_id, "too-late")  # ignored
        answer = await fast
        await streams.close()
        return timed_out.value.code(), answer.profile.profile_id

    assert asyncio.run(scenario()) == (grpc.StatusCode.DEADLINE_EXCEEDED, "fast-profile")


def test_identify__answer_with_error__raised_as_the_unary_call_would() -> None:
    async def scenario() -> tuple[grpc.StatusCode, str | None]:
        peer = Peer()
        streams = IdentifyStreams(peer.open, peer.identify, 1)
        task = asyncio.create_task(streams.Identify(ask("x"), timeout=5))
        await turns()
        (call,) = peer.calls
        call.fail_one(call.written[0].request_id, 3, "identities[0].value: must not be empty")
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await task
        await streams.close()
        return failed.value.code(), failed.value.details()

    assert asyncio.run(scenario()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "identities[0].value: must not be empty",
    )


def test_identify__stream_breaks__pending_fail_unavailable_and_next_request_reopens() -> None:
    async def scenario() -> tuple[list[grpc.StatusCode], str, int]:
        peer = Peer()
        streams = IdentifyStreams(peer.open, peer.identify, 1)
        warm = asyncio.create_task(streams.Identify(ask("warm"), timeout=5))
        await turns()
        first = peer.calls[0]
        first.answer(first.written[0].request_id, "p")
        await warm
        pending = [asyncio.create_task(streams.Identify(ask(v), timeout=5)) for v in "ab"]
        await turns()
        first.end(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        codes = []
        for task in pending:
            with pytest.raises(grpc.aio.AioRpcError) as broke:
                await task
            codes.append(broke.value.code())
        after = asyncio.create_task(streams.Identify(ask("c"), timeout=5))
        await turns()
        second = peer.calls[-1]
        second.answer(second.written[0].request_id, "reopened")
        answer = await after
        await streams.close()
        return codes, answer.profile.profile_id, len(peer.calls)

    codes, profile_id, opened = asyncio.run(scenario())
    assert codes == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    assert (profile_id, opened) == ("reopened", 2)


def test_identify__stream_fails_before_answering__unary_during_backoff_then_stream_again() -> None:
    async def scenario() -> tuple[str, str, int]:
        peer, clock = Peer(), Clock()
        streams = IdentifyStreams(peer.open, peer.identify, 1, clock=clock)
        task = asyncio.create_task(streams.Identify(ask("a"), timeout=5))
        await turns()
        peer.calls[0].end(grpc.StatusCode.UNAVAILABLE, "connection refused")
        with pytest.raises(grpc.aio.AioRpcError):
            await task
        during = await streams.Identify(ask("b"), timeout=5)
        clock.now += 0.1  # RECONNECT_INITIAL_MS
        later = asyncio.create_task(streams.Identify(ask("c"), timeout=5))
        await turns()
        peer.calls[-1].answer(peer.calls[-1].written[0].request_id, "streamed")
        answer = await later
        await streams.close()
        return during.profile.profile_id, answer.profile.profile_id, len(peer.calls)

    assert asyncio.run(scenario()) == ("unary", "streamed", 2)


def test_identify__server_without_identify_stream__falls_back_to_unary_for_a_while() -> None:
    async def scenario() -> tuple[list[str], int, int]:
        peer, clock = Peer(), Clock()
        streams = IdentifyStreams(peer.open, peer.identify, 1, clock=clock)
        task = asyncio.create_task(streams.Identify(ask("a"), timeout=5))
        await turns()
        peer.calls[0].end(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        answers = [(await task).profile.profile_id]
        answers.append((await streams.Identify(ask("b"), timeout=5)).profile.profile_id)
        opened_meanwhile = len(peer.calls)
        clock.now += UNIMPLEMENTED_RETRY_S
        again = asyncio.create_task(streams.Identify(ask("c"), timeout=5))
        await turns()
        peer.calls[-1].answer(peer.calls[-1].written[0].request_id, "streamed")
        answers.append((await again).profile.profile_id)
        await streams.close()
        return answers, opened_meanwhile, len(peer.unary)

    assert asyncio.run(scenario()) == (["unary", "unary", "streamed"], 1, 2)


def test_identify__no_streams_configured__every_request_is_unary() -> None:
    async def scenario() -> tuple[str, int]:
        peer = Peer()
        streams = IdentifyStreams(peer.open, peer.identify, 0)
        answer = await streams.Identify(ask("a"), timeout=5)
        return answer.profile.profile_id, len(peer.calls)

    assert asyncio.run(scenario()) == ("unary", 0)


def test_identify__stream_past_its_max_age__retired_after_answering_and_a_new_one_opened() -> None:
    async def scenario() -> tuple[str, str, bool, bool, int]:
        peer, clock = Peer(), Clock()
        streams = IdentifyStreams(peer.open, peer.identify, 1, clock=clock)
        old_request = asyncio.create_task(streams.Identify(ask("old"), timeout=5))
        await turns()
        clock.now += STREAM_MAX_AGE_S
        new_request = asyncio.create_task(streams.Identify(ask("new"), timeout=5))
        await turns()
        old, new = peer.calls
        done_before_answering = old.done
        new.answer(new.written[0].request_id, "on-new")
        old.answer(old.written[0].request_id, "on-old")  # still answered after retirement
        old.answers.put_nowait(_END)  # the server ends it OK
        answers = ((await old_request).profile.profile_id, (await new_request).profile.profile_id)
        await streams.close()
        return *answers, done_before_answering, len(new.written) == 1, len(old.written)

    assert asyncio.run(scenario()) == ("on-old", "on-new", True, True, 1)


def test_identify__traced_and_timed_out__its_span_ends_failed_as_the_callers_error() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    from tessera import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def scenario() -> tuple[grpc.StatusCode, str]:
        peer = Peer()
        streams = IdentifyStreams(peer.open, peer.identify, 1)
        with pytest.raises(grpc.aio.AioRpcError) as timed_out:
            await streams.Identify(ask("slow"), timeout=0.01)
        (call,) = peer.calls
        await streams.close()
        return timed_out.value.code(), call.written[0].traceparent

    tracing.use(provider.get_tracer("test"))
    try:
        code, traceparent = asyncio.run(scenario())
    finally:
        tracing.use(None)

    (span,) = exporter.get_finished_spans()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (span.name, span.kind) == (
        "/tessera.profiles.v1.ProfileService/Identify",
        SpanKind.CLIENT,
    )
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "DEADLINE_EXCEEDED"
    assert traceparent.startswith(f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-")
