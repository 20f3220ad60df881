"""Who still uses a segment: other segments, campaigns, experiments.

`DeleteSegment` refuses to delete a segment that is still used, naming the
users (docs/rules.md, "Deleting a segment"). Segments are this service's
own and are checked inside the delete's transaction. Campaigns live in the
decision service and experiments in the experiment service, so at the
moment of a delete this service asks them, page by page, through their
List RPCs (`ListCampaigns`, `ListExperiments`), both at once:

- it adds nothing to Decide or to any other hot path: deletes are rare
  admin calls, and they pay the two lookups;
- there is no copy of other services' definitions to keep in step here;
- when either service cannot answer, the delete is refused with
  UNAVAILABLE naming it, never let through unchecked.

A campaign counts whatever its status (it can be started again); an
experiment counts unless it is stopped (a stopped experiment assigns no one;
a deleted campaign leaves its experiment stopped). A campaign's own
experiment carries the campaign's audience, so it is named through its
campaign, not twice.

There is no transaction across services: a campaign created with the
segment while the delete is between its lookup and its commit is not seen
(the decision service checks the segment exists when the campaign is
written, so the window is the few milliseconds between the two).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from tessera.decision.v1 import decision_pb2
from tessera.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from tessera.experiments.v1 import experiments_pb2

if TYPE_CHECKING:
    from tessera.decision.v1.decision_pb2_grpc import DecisionServiceAsyncStub
    from tessera.experiments.v1.experiments_pb2_grpc import ExperimentServiceAsyncStub

PAGE_SIZE = 1000
"""The largest page the List RPCs give."""


@dataclass(frozen=True)
class Users:
    """The campaigns and experiments that use a segment, by key, sorted."""

    campaigns: tuple[str, ...] = ()
    experiments: tuple[str, ...] = ()


class References:
    """Finds the campaigns and experiments whose audience names a segment."""

    def __init__(
        self,
        decision: DecisionServiceAsyncStub,
        experiments: ExperimentServiceAsyncStub,
        deadline_s: float,
    ) -> None:
        self.decision = decision
        self.experiments = experiments
        self.deadline_s = deadline_s

    async def users(self, key: str) -> Users:
        """Who outside this service uses segment `key`; UNAVAILABLE when a peer cannot tell."""
        campaigns, experiments = await asyncio.gather(
            _every(self._campaign_page, "decision", key),
            _every(self._experiment_page, "experiments", key),
        )
        using = [c for c in campaigns if key in c.audience_segment_keys]
        own = {c.experiment_key for c in campaigns}
        return Users(
            campaigns=tuple(sorted(c.key for c in using)),
            experiments=tuple(
                sorted(
                    e.key
                    for e in experiments
                    if key in e.audience_segment_keys
                    and e.status != experiments_pb2.EXPERIMENT_STATUS_STOPPED
                    and e.key not in own
                )
            ),
        )

    async def _campaign_page(self, token: str) -> tuple[Sequence[decision_pb2.Campaign], str]:
        reply = await self.decision.ListCampaigns(
            decision_pb2.ListCampaignsRequest(page_size=PAGE_SIZE, page_token=token),
            timeout=self.deadline_s,
        )
        return reply.campaigns, reply.next_page_token

    async def _experiment_page(
        self, token: str
    ) -> tuple[Sequence[experiments_pb2.Experiment], str]:
        reply = await self.experiments.ListExperiments(
            experiments_pb2.ListExperimentsRequest(page_size=PAGE_SIZE, page_token=token),
            timeout=self.deadline_s,
        )
        return reply.experiments, reply.next_page_token


async def _every(
    page: Callable[[str], Awaitable[tuple[Sequence[Any], str]]], peer: str, key: str
) -> list[Any]:
    """Every item of a paged List RPC; the peer's failure as UNAVAILABLE naming it."""
    items: list[Any] = []
    token = ""
    try:
        while True:
            batch, token = await page(token)
            items.extend(batch)
            if not token:
                return items
    except grpc.aio.AioRpcError as error:
        what = "campaigns" if peer == "decision" else "experiments"
        message = (
            f"cannot tell whether {what} use segment {key!r}: the {peer} service "
            f"answered {error.code().name}; nothing was deleted, try again"
        )
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded(message, field="key") from error
        raise Unavailable(message, field="key") from error


def refuse_if_used(key: str, users: Users, segments: Sequence[str]) -> None:
    """FAILED_PRECONDITION naming every user of segment `key`, if it has any."""
    kinds = [
        (name, keys)
        for name, keys in (
            ("campaigns", users.campaigns),
            ("experiments", users.experiments),
            ("segments", tuple(sorted(segments))),
        )
        if keys
    ]
    if kinds:
        named = "; ".join(f"{name} {', '.join(keys)}" for name, keys in kinds)
        raise FailedPrecondition(
            f"segment {key!r} is still used by {named}; change or delete them first",
            field="key",
        )
