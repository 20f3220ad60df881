"""`tessera segments size`: what it asks for, and the table it prints."""

from __future__ import annotations

import argparse
import io

import pytest

from tessera.segments.size_cli import configure, render, request_for
from tessera.segments.v1 import segments_pb2


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser.add_subparsers(dest="action", required=True))
    return parser.parse_args(["size", *argv])


@pytest.mark.parametrize(
    ("argv", "target", "value"),
    [
        (["vip-buyers"], "segment_key", "vip-buyers"),
        (['trait.plan == "pro"'], "rule", 'trait.plan == "pro"'),
        (['{"has_identity": "email"}'], "rule", '{"has_identity": "email"}'),
        (["true"], "rule", "true"),
        (["--rule", "vip"], "rule", "vip"),
    ],
)
def test_request_for__key_text_or_json_logic__the_matching_target(
    argv: list[str], target: str, value: str
) -> None:
    request = request_for(parse(*argv))

    assert request.WhichOneof("target") == target
    if target == "segment_key":
        assert request.segment_key == value
    else:
        assert getattr(request.rule, request.rule.WhichOneof("rule")) == value


def test_request_for__goal_and_window__passed_on_zero_for_defaults() -> None:
    assert request_for(parse("vip")).goal_event_type == ""
    assert request_for(parse("vip")).window_days == 0
    request = request_for(parse("vip", "--goal", "signup", "--window", "7"))
    assert (request.goal_event_type, request.window_days) == ("signup", 7)


def test_render__size_value_and_left_out__one_table_then_the_reasons() -> None:
    reply = segments_pb2.EstimateSizeResponse(
        members=1234,
        total=10_000,
        fraction=0.1234,
        converters=617,
        conversion_rate=0.5,
        revenue=24_680.0,
        revenue_per_member=20.0,
        goal_event_type="purchase",
        window_days=30,
        as_of_sequence=42,
        left_out=[segments_pb2.LeftOut(attribute="channel", reason="describes a request")],
    )
    out = io.StringIO()

    render(reply, "vip", out)

    text = out.getvalue()
    assert "Size and value of vip" in text
    assert "1,234" in text and "12.3% of 10,000 profiles" in text
    assert "617" in text and "50.0%: purchase in 30 days" in text
    assert "24,680.00" in text and "20.00 a member" in text
    assert "channel describes a request." in text
