"""The campaign lifecycle: each campaign stored with its experiment in line.

Creating, changing and deleting a campaign are writes in two services: the
campaign in this service's catalog, its experiment in the experiment
service. There is no transaction across the two, so the rule is: **the
experiment is written first, the campaign second**, and a failed campaign
write puts the experiment back in line with what is stored. From the
caller's view a write is all or nothing:

- an error leaves the stored campaign as it was (same version, same
  content), whichever service failed;
- Decide never serves a campaign version whose experiment was not updated:
  the new version becomes visible only after its experiment holds it. For a
  moment the experiment may be ahead of the campaign; Decide then shows
  nothing for a variant the stored campaign does not have, never a wrong one.

Every step can be retried: a create finds its experiment left over and
brings it in line, a retried update whose answer was lost finishes instead
of being refused.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from tessera.catalog import Catalog
from tessera.clients import peer_error
from tessera.convert import as_written
from tessera.decision.domain.campaigns import experiment_key_for, validate_campaign, with_control
from tessera.decision.transport.convert import campaign_from_proto
from tessera.decision.v1 import decision_pb2
from tessera.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
    require,
)
from tessera.experiments.v1 import experiments_pb2
from tessera.segments.v1 import segments_pb2

if TYPE_CHECKING:
    from tessera.experiments.v1.experiments_pb2_grpc import ExperimentServiceAsyncStub
    from tessera.segments.v1.segments_pb2_grpc import SegmentServiceAsyncStub

log = logging.getLogger("tessera.decision")

PEER_TIMEOUT_S = 5.0
"""Deadline of each peer call of an admin change: off the hot path, so generous."""
SETTLE_ATTEMPTS = 5
"""How often an update re-syncs the experiment while other updates keep landing."""

EXPERIMENT_STATUS: dict[
    decision_pb2.CampaignStatus.ValueType, experiments_pb2.ExperimentStatus.ValueType
] = {
    decision_pb2.CAMPAIGN_STATUS_UNSPECIFIED: experiments_pb2.EXPERIMENT_STATUS_DRAFT,
    decision_pb2.CAMPAIGN_STATUS_DRAFT: experiments_pb2.EXPERIMENT_STATUS_DRAFT,
    decision_pb2.CAMPAIGN_STATUS_RUNNING: experiments_pb2.EXPERIMENT_STATUS_RUNNING,
    decision_pb2.CAMPAIGN_STATUS_PAUSED: experiments_pb2.EXPERIMENT_STATUS_PAUSED,
    decision_pb2.CAMPAIGN_STATUS_STOPPED: experiments_pb2.EXPERIMENT_STATUS_STOPPED,
}
"""The status a campaign's experiment takes from the campaign's."""


def normalised(campaign: decision_pb2.Campaign) -> decision_pb2.Campaign:
    """The campaign as stored: control variant, experiment key, default status; validated.

    Raises InvalidArgument naming the first wrong field, and Unimplemented for
    settings the decision path does not enforce yet. Segment references are
    checked by `Campaigns`, which can ask the segment service.
    """
    message = as_written(campaign)
    if message.status == decision_pb2.CAMPAIGN_STATUS_UNSPECIFIED:
        message.status = decision_pb2.CAMPAIGN_STATUS_DRAFT
    if not message.variants:
        raise InvalidArgument(
            "add at least one variant besides the control", field="campaign.variants"
        )
    domain = campaign_from_proto(message, strict_templates=True)
    variants, control_key = with_control(domain.variants, message.control_variant_key)
    if len(variants) > len(domain.variants):
        message.variants.add(key=control_key, weight=variants[-1].weight)
    message.control_variant_key = control_key
    message.experiment_key = experiment_key_for(message.key)
    for bound in ("start_time", "end_time"):
        # A zero time means "no limit" (as the domain reads it): store it
        # unset, so it reads back unset rather than as 1970-01-01.
        stamp = getattr(message.schedule, bound)
        if message.schedule.HasField(bound) and stamp.seconds == 0 and stamp.nanos == 0:
            message.schedule.ClearField(bound)
    validate_campaign(campaign_from_proto(message, strict_templates=True))
    _validate_frequency_cap(message.frequency_cap)
    # Stored but not yet enforced would mislead: refuse until they are built.
    # Only valid settings get here, so an invalid one is named as such.
    if message.frequency_cap.max_decisions:
        raise Unimplemented("frequency caps are not enforced yet", field="campaign.frequency_cap")
    if message.pressure_cost:
        raise Unimplemented("pressure budgets are not enforced yet", field="campaign.pressure_cost")
    if message.HasField("conversion_probability"):  # issue 11: until Decide reads the range
        raise Unimplemented("ranges are not enforced yet", field="campaign.conversion_probability")
    return message


def _validate_frequency_cap(cap: decision_pb2.FrequencyCap) -> None:
    """INVALID_ARGUMENT naming a negative count or period.

    What a cap without a period means is left to the issue that builds caps.
    """
    path = "campaign.frequency_cap"
    require(cap.max_decisions >= 0, f"{path}.max_decisions", "must not be negative")
    period = cap.period
    require(period.seconds >= 0 and period.nanos >= 0, f"{path}.period", "must not be negative")


def experiment_for(campaign: decision_pb2.Campaign) -> experiments_pb2.Experiment:
    """The experiment that splits a (normalised) campaign's audience over its variants.

    It takes the whole audience (the campaign's audience decides who is in),
    the campaign's goal and schedule, and a status that follows the campaign's.
    """
    experiment = experiments_pb2.Experiment(
        key=campaign.experiment_key,
        name=f"Campaign {campaign.name or campaign.key}",
        description=f"Splits the audience of campaign {campaign.key!r}; created with it.",
        variants=[
            experiments_pb2.Variant(key=v.key, weight=v.weight, payload=v.payload)
            for v in campaign.variants
        ],
        control_variant_key=campaign.control_variant_key,
        traffic_fraction=1.0,
        audience_segment_keys=campaign.audience_segment_keys,
        status=EXPERIMENT_STATUS[campaign.status],
        goal=campaign.goal,
    )
    # Copied only when set: reading an unset field and assigning it would
    # mark it present, and the experiment would read back 1970-01-01.
    if campaign.schedule.HasField("start_time"):
        experiment.start_time.CopyFrom(campaign.schedule.start_time)
    if campaign.schedule.HasField("end_time"):
        experiment.end_time.CopyFrom(campaign.schedule.end_time)
    return experiment


class Campaigns:
    """Create, read, change and delete campaigns, each with its experiment in line."""

    def __init__(
        self,
        catalog: Catalog[decision_pb2.Campaign],
        segments: SegmentServiceAsyncStub,
        experiments: ExperimentServiceAsyncStub,
        peer_timeout_s: float = PEER_TIMEOUT_S,
    ) -> None:
        self.catalog = catalog
        self.segments = segments
        self.experiments = experiments
        self.peer_timeout_s = peer_timeout_s

    async def create(self, campaign: decision_pb2.Campaign) -> decision_pb2.Campaign:
        """Create the campaign's experiment, then store the campaign; the campaign as stored.

        Nothing is stored when the experiment service fails. When storing the
        campaign fails, its experiment is stopped again (best effort) so that
        no running experiment is left without its campaign.
        """
        message = await self._prepared(campaign)
        try:
            await self.catalog.get(message.key)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"campaign {message.key!r} exists already", field="campaign.key")
        try:
            await self.experiments.CreateExperiment(
                experiments_pb2.CreateExperimentRequest(experiment=experiment_for(message)),
                timeout=self.peer_timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise peer_error(error, "experiments") from error
            # The campaign's experiment key is reserved for it: the experiment is
            # left from an earlier try of this call, or from a deleted campaign
            # of the same key. Bring it in line rather than fail every retry,
            # with nothing kept from a campaign that went before.
            await self._sync_experiment(message, keep_own_settings=False)
        try:
            return await self.catalog.create(message)
        except AlreadyExists:
            # Another create of this key won the race: its experiment wins too.
            await self._restore(message.key)
            raise
        except BaseException:
            await self._restore(message.key, stopped=message)
            raise

    async def get(self, key: str) -> decision_pb2.Campaign:
        """The campaign under `key`."""
        return await self.catalog.get(key)

    async def page(
        self, page_size: int, page_token: str
    ) -> tuple[list[decision_pb2.Campaign], str]:
        """A page of campaigns in key order and the next page's token."""
        return await self.catalog.page(page_size, page_token)

    async def update(
        self, campaign: decision_pb2.Campaign, expected_version: int = 0
    ) -> decision_pb2.Campaign:
        """Replace a campaign (optimistically when `expected_version` is set): all or nothing.

        The experiment takes the new version first; only then is the campaign
        stored. If the experiment service fails, nothing is stored and the
        error is returned. If storing fails (another update won the race, or
        the database), the experiment is settled back to the stored campaign.
        """
        message = await self._prepared(campaign)
        current = await self.catalog.get(message.key)
        if expected_version and current.version != expected_version:
            # The retry of an update that was stored but whose answer was lost:
            # same content, one version on. Finish it instead of refusing.
            retry = current.version == expected_version + 1 and as_written(current) == message
            if not retry:
                raise FailedPrecondition(
                    f"campaign {message.key!r} is at version {current.version}, "
                    f"not {expected_version}",
                    field="expected_version",
                )
            await self.settle(message.key)
            return current
        await self._sync_experiment(message)
        try:
            stored = await self.catalog.update(message, expected_version)
        except BaseException:
            await self._restore(message.key)
            raise
        # Concurrent updates may have synced the experiment in another order
        # than they were stored: settle to whatever is stored now. Our own
        # version is stored and its experiment written, so a failure here
        # does not undo the update; the next write or settle finishes it.
        try:
            await self.settle(message.key)
        except Exception:  # logged: the update itself succeeded
            log.warning(
                "campaign stored, but settling its experiment after it failed",
                extra={"key": message.key},
                exc_info=True,
            )
        return stored

    async def settle(self, key: str) -> None:
        """Bring the experiment in line with the stored campaign, whoever wrote last.

        Syncs from what is stored, not from this call's request, and again if
        another update landed meanwhile, so concurrent updates cannot leave
        one campaign with another's weights.
        """
        for _ in range(SETTLE_ATTEMPTS):
            stored = await self.catalog.get(key)
            await self._sync_experiment(stored)
            if (await self.catalog.get(key)).version == stored.version:
                return
        log.warning("campaign kept changing while its experiment was synced", extra={"key": key})

    async def delete(self, key: str) -> None:
        """Stop the campaign's experiment, then remove the campaign.

        The experiment stays, stopped, with its exposures and results. If the
        experiment service fails, the campaign is kept as it was; if removing
        the campaign fails, the experiment is settled back to it.
        """
        current = await self.catalog.get(key)
        current.status = decision_pb2.CAMPAIGN_STATUS_STOPPED
        await self._sync_experiment(current)
        try:
            await self.catalog.delete(key)
        except BaseException:
            await self._restore(key)
            raise

    async def _restore(self, key: str, stopped: decision_pb2.Campaign | None = None) -> None:
        """Best effort: bring the experiment back in line after a campaign write failed.

        With the campaign stored, settle to it; with none stored, stop the
        experiment made from `stopped` (the campaign that was not created).
        The write's own error is what the caller gets, so a failure here is
        only logged.
        """
        try:
            try:
                await self.settle(key)
            except NotFound:
                if stopped is None:
                    return
                orphan = decision_pb2.Campaign()
                orphan.CopyFrom(stopped)
                orphan.status = decision_pb2.CAMPAIGN_STATUS_STOPPED
                await self._sync_experiment(orphan)
        except Exception:  # the caller gets the original error
            log.warning(
                "could not bring the experiment back in line with its campaign",
                extra={"key": key},
                exc_info=True,
            )

    async def _prepared(self, campaign: decision_pb2.Campaign) -> decision_pb2.Campaign:
        """`normalised(campaign)`, with its audience segments known to the segment service."""
        message = normalised(campaign)
        await self._check_segments(message)
        return message

    async def _check_segments(self, campaign: decision_pb2.Campaign) -> None:
        for index, key in enumerate(campaign.audience_segment_keys):
            try:
                await self.segments.GetSegment(
                    segments_pb2.GetSegmentRequest(key=key), timeout=self.peer_timeout_s
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    raise InvalidArgument(
                        f"no segment {key!r}", field=f"campaign.audience_segment_keys[{index}]"
                    ) from error
                raise peer_error(error, "segments") from error

    async def _sync_experiment(
        self, campaign: decision_pb2.Campaign, keep_own_settings: bool = True
    ) -> None:
        """Write the campaign's split to its experiment.

        With `keep_own_settings`, what the campaign does not carry and an
        admin may have set on the experiment itself (holdout, layer, salt,
        a traffic ramp, bandit allocation and the weights a bandit set) is
        kept, so changing a campaign does not drop its holdout or undo a ramp.
        """
        experiment = experiment_for(campaign)
        try:
            if keep_own_settings:
                current = (
                    await self.experiments.GetExperiment(
                        experiments_pb2.GetExperimentRequest(key=experiment.key),
                        timeout=self.peer_timeout_s,
                    )
                ).experiment
                experiment.holdout.CopyFrom(current.holdout)
                experiment.layer_key = current.layer_key
                experiment.salt = current.salt
                experiment.traffic_fraction = current.traffic_fraction or 1.0
                experiment.allocation = current.allocation
                if current.allocation == experiments_pb2.ALLOCATION_BANDIT:
                    # The bandit sets the weights: keep them for the variants kept.
                    allocated = {v.key: v.weight for v in current.variants}
                    for variant in experiment.variants:
                        variant.weight = allocated.get(variant.key, variant.weight)
            await self.experiments.UpdateExperiment(
                experiments_pb2.UpdateExperimentRequest(experiment=experiment),
                timeout=self.peer_timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(error, "experiments") from error
