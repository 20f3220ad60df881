"""Decision protos to application and domain values, and back."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tessera.common.v1 import common_pb2
from tessera.convert import check_channel, struct_to_dict, timestamp_to_datetime
from tessera.decision.application.decide import DecideQuery, Decisions
from tessera.decision.domain.campaigns import (
    CalendarWindow,
    CampaignDef,
    CampaignStatus,
    CampaignVariant,
    Choice,
    Schedule,
)
from tessera.decision.domain.payloads import PayloadTemplate, TemplateError, compile_payload
from tessera.decision.domain.pressure import FrequencyCap, ProbabilityRange, ceil_seconds
from tessera.decision.v1 import decision_pb2
from tessera.errors import InvalidArgument, require

log = logging.getLogger("tessera.decision")

STATUS_FROM_PROTO: dict[decision_pb2.CampaignStatus.ValueType, CampaignStatus] = {
    decision_pb2.CAMPAIGN_STATUS_UNSPECIFIED: CampaignStatus.DRAFT,
    decision_pb2.CAMPAIGN_STATUS_DRAFT: CampaignStatus.DRAFT,
    decision_pb2.CAMPAIGN_STATUS_RUNNING: CampaignStatus.RUNNING,
    decision_pb2.CAMPAIGN_STATUS_PAUSED: CampaignStatus.PAUSED,
    decision_pb2.CAMPAIGN_STATUS_STOPPED: CampaignStatus.STOPPED,
}
GOAL_KINDS: dict[common_pb2.GoalKind.ValueType, str] = {
    common_pb2.GOAL_KIND_CONVERSION: "conversion",
    common_pb2.GOAL_KIND_REVENUE: "revenue",
}


def campaign_from_proto(
    message: decision_pb2.Campaign, strict_templates: bool = False
) -> CampaignDef:
    """The domain view of a stored (normalised) campaign, payload templates compiled.

    With `strict_templates` (a write), a payload string whose placeholders
    cannot be read is INVALID_ARGUMENT naming it. Otherwise (the campaign
    cache) such a payload, stored before templates existed, is served as
    written, as it was then, and logged.
    """
    if message.status not in STATUS_FROM_PROTO:
        raise InvalidArgument(f"unknown status {message.status}", field="campaign.status")
    for index, channel in enumerate(message.channels):
        if channel not in common_pb2.Channel.values() or channel == 0:
            raise InvalidArgument(f"unknown channel {channel}", field=f"campaign.channels[{index}]")
    schedule = message.schedule
    return CampaignDef(
        key=message.key,
        placements=tuple(message.placements),
        variants=tuple(
            _variant(message.key, index, v, strict_templates)
            for index, v in enumerate(message.variants)
        ),
        control_variant_key=message.control_variant_key,
        experiment_key=message.experiment_key,
        status=STATUS_FROM_PROTO[message.status],
        channels=frozenset(message.channels),
        audience_segment_keys=tuple(message.audience_segment_keys),
        priority=message.priority,
        conflict_group=message.conflict_group,
        schedule=Schedule(
            start_time=timestamp_to_datetime(schedule.start_time),
            end_time=timestamp_to_datetime(schedule.end_time),
            windows=tuple(
                CalendarWindow(w.name, w.start_month, w.start_day, w.end_month, w.end_day)
                for w in schedule.windows
            ),
            time_zone=schedule.time_zone,
        ),
        goal_event_type=message.goal.event_type,
        goal_kind=GOAL_KINDS.get(message.goal.kind, ""),
        pressure_cost=message.pressure_cost,
        frequency_cap=_cap_from_proto(message.frequency_cap),
        probability_range=(
            ProbabilityRange(message.conversion_probability.min, message.conversion_probability.max)
            if message.HasField("conversion_probability")
            else None
        ),
    )


def _variant(
    campaign_key: str, index: int, variant: decision_pb2.CampaignVariant, strict: bool
) -> CampaignVariant:
    payload = struct_to_dict(variant.payload)
    template: PayloadTemplate | None = None
    try:
        template = compile_payload(payload, f"campaign.variants[{index}].payload")
    except TemplateError as error:
        if strict:
            raise
        log.warning(
            "payload placeholders cannot be read: served as written",
            extra={"campaign": campaign_key, "variant": variant.key, "error": str(error)},
        )
    return CampaignVariant(variant.key, variant.weight, payload, template)


def _cap_from_proto(cap: decision_pb2.FrequencyCap) -> FrequencyCap | None:
    """The cap, or None for no cap.

    max_decisions 0 is no cap, as the proto says, whatever the period: the
    release before caps were enforced stored a period without max_decisions,
    and read as a cap of 0 such a campaign was never shown. A write is
    validated before this (`normalised`: both or neither); a period left
    unset there is refused, so 0 reaches the domain's check and no window.
    """
    if cap.max_decisions <= 0:
        return None
    period = cap.period.seconds + cap.period.nanos / 1e9
    return FrequencyCap(cap.max_decisions, ceil_seconds(period) if period > 0 else 0)


def decide_query_from_proto(request: decision_pb2.DecideRequest) -> DecideQuery:
    """A Decide request as the application takes it; INVALID_ARGUMENT names a bad field."""
    identities = request.identities
    placements = request.placements
    require(bool(identities), "identities", "at least one identity is required")
    require(bool(placements), "placements", "name at least one placement")
    if not all(placements):
        # Only a bad request pays for finding which one.
        index = next(i for i, placement in enumerate(placements) if not placement)
        require(False, f"placements[{index}]", "must not be empty")
    channel = request.channel
    check_channel(channel, "channel")
    request_id = request.request_id
    # Length and NUL are the guard's (TESSERA_MAX_ID_CHARS); the id is stored
    # as a hash field name, so control characters are refused too.
    if request_id and not request_id.isprintable():
        require(False, "request_id", "must be printable (no control characters)")
    return DecideQuery(
        identities=identities,
        channel=channel,
        placements=placements,
        context=request.context,
        explain=request.explain,
        request_id=request_id,
    )


def decision_to_proto(
    choice: Choice, rendered: Mapping[str, Any] | None = None
) -> decision_pb2.Decision:
    """What one placement shows, as a Decision: empty but for its reasons when nothing fits.

    `rendered` is the variant's payload with its placeholders filled in; None
    serves the payload as written.
    """
    decision = decision_pb2.Decision()
    _fill_decision(decision, choice, rendered)
    return decision


def _fill_decision(
    decision: decision_pb2.Decision, choice: Choice, rendered: Mapping[str, Any] | None
) -> None:
    decision.placement = choice.placement
    decision.reasons.extend(choice.reasons)
    campaign = choice.campaign
    if campaign is not None:
        variant_key = choice.variant_key
        decision.campaign_key = campaign.key
        decision.experiment_key = campaign.experiment_key
        decision.variant_key = variant_key
        decision.is_control = variant_key == campaign.control_variant_key
        if rendered is not None:
            payload: Mapping[str, Any] | None = rendered
        else:
            variant = campaign.variant(variant_key)
            payload = variant.payload if variant else None
        if payload:
            decision.payload.update(payload)


def decide_response_to_proto(decisions: Decisions) -> decision_pb2.DecideResponse:
    """The answer of a Decide.

    Each decision is filled in place in the answer (`add`) rather than
    built apart and copied into it.
    """
    response = decision_pb2.DecideResponse(
        profile_id=decisions.profile_id,
        segment_keys=decisions.segment_keys,
        conversion_probability=decisions.conversion_probability,
    )
    choices = decisions.choices
    payloads = decisions.payloads or [None] * len(choices)
    add = response.decisions.add
    for choice, rendered in zip(choices, payloads, strict=True):
        _fill_decision(add(), choice, rendered)
    return response
