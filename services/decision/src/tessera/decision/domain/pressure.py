"""Pressure budgets, frequency caps and conflict-group holds: the rules, no I/O.

A person's counters live in one record of the counter store (a Redis hash,
or a dict in process), one field per counter (docs/decide.md):

- `p:<end>`: pressure spent in the budget window that ends at `<end>`;
- `c:<campaign>:<end>`: decisions of a capped campaign in its cap window;
- `h:<group>`: the campaign holding a conflict group, as `<campaign>@<until>`;
- `r:<request id>`: what a Decide with that request id charged, as
  `<until>|<field>|<amount>|...`, so its retry charges nothing more.

Windows are fixed and aligned to the Unix epoch (a window of a day runs
00:00 to 24:00 UTC), so a window's end names it: every replica computes
the same field for the same moment, a field whose end has passed is dead,
and a counter resets at a known time rather than trickling out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

PRESSURE_PREFIX = "p:"
CAP_PREFIX = "c:"
HOLD_PREFIX = "h:"
REQUEST_PREFIX = "r:"


@dataclass(frozen=True)
class FrequencyCap:
    """At most `max_decisions` decisions of a campaign per person per `period_s` window."""

    max_decisions: int
    period_s: int


@dataclass(frozen=True)
class ProbabilityRange:
    """Predicted conversion probabilities a campaign is for, both ends included."""

    min: float = 0.0
    max: float = 1.0

    def contains(self, probability: float) -> bool:
        """True when `probability` is inside the range."""
        return self.min <= probability <= self.max


@dataclass(frozen=True)
class PressureRules:
    """The decision service's settings for pressure and conflict groups.

    `budget` is the pressure a person may take per `period_s` window, summed
    over every channel; 0 switches budgets off. `hold_s` is how long the
    first campaign of a conflict group shown to a person keeps the group.
    `retry_window_s` is how long what a Decide with a request id charged is
    remembered, so that its retry charges nothing more.
    """

    budget: int = 0
    period_s: int = 86_400
    hold_s: int = 86_400
    retry_window_s: int = 600
    """How long a Decide's request id is remembered: a retry within it charges nothing more."""


def window_end(now_s: int, period_s: int) -> int:
    """End (epoch seconds, exclusive) of the fixed window of `period_s` holding `now_s`."""
    return (now_s // period_s + 1) * period_s


def pressure_field(now_s: int, period_s: int) -> str:
    """The field of the pressure spent in the current budget window."""
    return f"{PRESSURE_PREFIX}{window_end(now_s, period_s)}"


def cap_field(campaign_key: str, cap: FrequencyCap, now_s: int) -> str:
    """The field counting a capped campaign's decisions in its current window."""
    return f"{CAP_PREFIX}{campaign_key}:{window_end(now_s, cap.period_s)}"


def hold_field(group: str) -> str:
    """The field naming the campaign that holds a conflict group."""
    return f"{HOLD_PREFIX}{group}"


def hold_value(campaign_key: str, until_s: int) -> str:
    """A hold as stored: the campaign and the end of its hold."""
    return f"{campaign_key}@{until_s}"


def held_campaign(value: str | None, now_s: int) -> str | None:
    """The campaign of a stored hold, or None when there is none or it has ended."""
    if not value:
        return None
    key, _, until = value.rpartition("@")
    if not key or not until.isdigit() or int(until) <= now_s:
        return None
    return key


def request_field(request_id: str) -> str:
    """The field remembering what the Decide with `request_id` charged."""
    return f"{REQUEST_PREFIX}{request_id}"


def request_value(until_s: int, charged: Iterable[tuple[str, int]]) -> str:
    """What a request charged as stored: until when it is remembered, then field and amount.

    Counter fields never hold `|` (campaign keys are `[a-z0-9_-]`), so it separates.
    """
    return "".join([str(until_s), *(f"|{name}|{amount}" for name, amount in charged)])


def request_charges(value: str | None, now_s: int) -> dict[str, int]:
    """Counter field to the amount a remembered request charged; empty once forgotten."""
    if not value or field_expiry(REQUEST_PREFIX, value) <= now_s:
        return {}
    parts = value.split("|")[1:]
    return {name: _count(amount) for name, amount in zip(parts[::2], parts[1::2], strict=False)}


def field_alive(name: str, value: str, now_s: int) -> bool:
    """Whether a stored field still counts: its window, hold or request has not ended."""
    if name.startswith(HOLD_PREFIX):
        return held_campaign(value, now_s) is not None
    if name.startswith(REQUEST_PREFIX):
        return field_expiry(name, value) > now_s
    end = name.rpartition(":")[2]
    return end.isdigit() and int(end) > now_s


def field_expiry(name: str, value: str) -> int:
    """When (epoch seconds) a field stops counting."""
    if name.startswith(HOLD_PREFIX):
        until = value.rpartition("@")[2]
        return int(until) if until.isdigit() else 0
    if name.startswith(REQUEST_PREFIX):
        until = value.partition("|")[0]
        return int(until) if until.isdigit() else 0
    end = name.rpartition(":")[2]
    return int(end) if end.isdigit() else 0


class Countable(Protocol):
    """What the rules read of a campaign (a `CampaignDef` has these)."""

    @property
    def key(self) -> str:
        """The campaign's key."""

    @property
    def pressure_cost(self) -> int:
        """Pressure one decision of it costs."""

    @property
    def frequency_cap(self) -> FrequencyCap | None:
        """Its cap per person, if any."""

    @property
    def conflict_group(self) -> str:
        """Its conflict group; empty for none."""


@dataclass(frozen=True, slots=True)
class Counters:
    """A person's counters as read: what the rules of one decision look at."""

    pressure_spent: int = 0
    decisions: Mapping[str, int] = field(default_factory=dict)
    """Campaign key to its decisions in the current cap window."""
    holds: Mapping[str, str] = field(default_factory=dict)
    """Conflict group to the campaign holding it (live holds only)."""
    raw_holds: Mapping[str, str] = field(default_factory=dict)
    """Conflict group to the live hold as stored ("" for none), for compare-and-set."""
    unavailable: bool = False
    """The store could not be read: campaigns that need counters are not shown."""
    recorded: Mapping[str, int] = field(default_factory=dict)
    """What an earlier try of this Decide (same request id) charged, field to amount.

    Already taken out of `pressure_spent` and `decisions`: the retry chooses
    as if its own earlier charge had not been made, so it gets the same answer.
    """


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """Which fields a decision reads, and what each means."""

    pressure: str | None
    caps: Mapping[str, str]
    """Campaign key to its cap field."""
    groups: Mapping[str, str]
    """Conflict group to its hold field."""
    request: str | None = None
    """The field of the Decide's request id (None without one, or with nothing counted)."""

    @property
    def fields(self) -> list[str]:
        """Every field, in a fixed order (the order `counters_from` reads values in)."""
        names = [self.pressure] if self.pressure else []
        request = [self.request] if self.request else []
        return [*names, *self.caps.values(), *self.groups.values(), *request]

    @property
    def empty(self) -> bool:
        """True when nothing needs reading."""
        return not (self.pressure or self.caps or self.groups or self.request)


NO_COUNTERS = Counters(
    decisions=MappingProxyType({}), holds=MappingProxyType({}), raw_holds=MappingProxyType({})
)
"""Counters of a person with none (or none read): `Counters()`, made once for every Decide."""

NOTHING_COUNTED = CounterSpec(None, MappingProxyType({}), MappingProxyType({}))
"""The spec of a Decide none of whose campaigns is counted: it reads nothing."""


def counted(campaign: Countable, budget: int) -> bool:
    """Whether showing the campaign needs the person's counters (cost, cap or group)."""
    return (
        (budget > 0 and campaign.pressure_cost > 0)
        or campaign.frequency_cap is not None
        or bool(campaign.conflict_group)
    )


def counter_spec(
    campaigns: Iterable[Countable], rules: PressureRules, now_s: int, request_id: str = ""
) -> CounterSpec:
    """The fields to read for the candidate `campaigns` (cost, cap or conflict group).

    With a `request_id`, also the record of what an earlier try of the same
    Decide charged, when any candidate is counted at all.
    """
    pressure: str | None = None
    caps: dict[str, str] = {}
    groups: dict[str, str] = {}
    for campaign in campaigns:
        if rules.budget > 0 and campaign.pressure_cost > 0:
            pressure = pressure_field(now_s, rules.period_s)
        cap = campaign.frequency_cap
        if cap is not None:
            caps[campaign.key] = cap_field(campaign.key, cap, now_s)
        if campaign.conflict_group:
            groups[campaign.conflict_group] = hold_field(campaign.conflict_group)
    counted_any = pressure is not None or caps or groups
    request = request_field(request_id) if request_id and counted_any else None
    return CounterSpec(pressure, caps, groups, request)


def counters_from(spec: CounterSpec, values: Sequence[str | None], now_s: int) -> Counters:
    """The counters of `spec` from the values read for `spec.fields`, in that order.

    What an earlier try of the same request charged is taken out: the retry
    chooses on the counters as they were before its first try.
    """
    found = dict(zip(spec.fields, values, strict=True))
    recorded = request_charges(found.get(spec.request), now_s) if spec.request else {}

    def count(name: str) -> int:
        return max(0, _count(found.get(name)) - recorded.get(name, 0))

    spent = count(spec.pressure) if spec.pressure else 0
    decisions = {key: count(name) for key, name in spec.caps.items()}
    holds: dict[str, str] = {}
    raw: dict[str, str] = {}
    for group, name in spec.groups.items():
        value = found.get(name)
        held = held_campaign(value, now_s)
        # An ended hold is dropped by the store before it compares: claim it as free.
        raw[group] = (value or "") if held is not None else ""
        if held is not None:
            holds[group] = held
    return Counters(spent, decisions, holds, raw, recorded=recorded)


def _count(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class Increment:
    """Add `amount` to a counter field unless that takes it over `limit` (0: no limit)."""

    field: str
    amount: int
    limit: int


@dataclass(frozen=True)
class HoldClaim:
    """Set a hold field to `value` if it still holds `expected` (empty: nothing)."""

    field: str
    value: str
    expected: str


@dataclass(frozen=True)
class HoldCheck:
    """Refuse the plan unless a hold field still holds `expected` (the choice relied on it)."""

    field: str
    expected: str


@dataclass(frozen=True)
class RequestStamp:
    """Remember what this plan charges under `field` (a request id) until `until_s`.

    When the field already remembers an earlier try of the same request,
    that try's charge is taken back before this one is checked and made,
    and the earlier `until_s` is kept: a request id counts once, for what
    its latest answer showed.
    """

    field: str
    until_s: int


@dataclass(frozen=True)
class ChargePlan:
    """What one decision writes, all or nothing: counters raised and groups claimed.

    `checks` are the holds the choice relied on without claiming them: a
    group it left to its holder must still be the holder's. `request`, for
    a Decide with a request id, makes the charge idempotent per request.
    """

    increments: tuple[Increment, ...] = ()
    holds: tuple[HoldClaim, ...] = ()
    checks: tuple[HoldCheck, ...] = ()
    request: RequestStamp | None = None

    @property
    def empty(self) -> bool:
        """True when the decision writes and relies on nothing."""
        return not self.increments and not self.holds and not self.checks


def charge_plan(
    shown: Sequence[Countable],
    counters: Counters,
    rules: PressureRules,
    now_s: int,
    request_id: str = "",
) -> ChargePlan:
    """What showing `shown` (each campaign once) costs the person.

    Every campaign shown is charged, treatment or control alike (docs/decide.md):
    pressure cost once per Decide however many placements it fills, one
    decision of its cap, and its conflict group claimed when the group is not
    held by it already. Each increment carries its limit, and every live hold
    the choice saw is checked, so the store refuses the whole plan when the
    counters it was chosen on are no longer the truth (a concurrent decision,
    a stale or optimistic read). With a `request_id` the plan is stamped with
    it, so a retry of the same Decide replaces its first charge instead of
    adding to it.
    """
    increments: list[Increment] = []
    cost = sum(c.pressure_cost for c in shown) if rules.budget > 0 else 0
    if cost > 0:
        increments.append(Increment(pressure_field(now_s, rules.period_s), cost, rules.budget))
    holds: list[HoldClaim] = []
    for campaign in shown:
        cap = campaign.frequency_cap
        if cap is not None:
            increments.append(Increment(cap_field(campaign.key, cap, now_s), 1, cap.max_decisions))
        group = campaign.conflict_group
        if group and counters.holds.get(group) != campaign.key:
            holds.append(
                HoldClaim(
                    hold_field(group),
                    hold_value(campaign.key, now_s + rules.hold_s),
                    counters.raw_holds.get(group, ""),
                )
            )
    claimed = {claim.field for claim in holds}
    checks = tuple(
        HoldCheck(hold_field(group), counters.raw_holds.get(group, ""))
        for group in sorted(counters.holds)
        if hold_field(group) not in claimed
    )
    stamp = (
        RequestStamp(request_field(request_id), now_s + rules.retry_window_s)
        if request_id
        else None
    )
    return ChargePlan(tuple(increments), tuple(holds), checks, stamp)


def apply_plan(record: dict[str, str], plan: ChargePlan, now_s: int) -> bool:
    """Apply `plan` to a person's `record` (field to value) if every limit and hold allows.

    The rule the counter stores implement (the Redis script does the same in
    Lua): all or nothing. Dead fields are dropped first. A stamped plan whose
    request is remembered takes that earlier charge back (never below zero)
    before checking its limits, and is remembered in its place.
    """
    for name in [n for n, v in record.items() if not field_alive(n, v, now_s)]:
        del record[name]
    stamp = plan.request
    prior = record.get(stamp.field) if stamp else None
    refund = request_charges(prior, now_s)
    taken_back = {
        name: max(0, _count(record[name]) - amount)
        for name, amount in refund.items()
        if name in record
    }

    def current(name: str) -> int:
        return taken_back[name] if name in taken_back else _count(record.get(name))

    for step in plan.increments:
        if step.limit > 0 and current(step.field) + step.amount > step.limit:
            return False
    expectations: list[HoldClaim | HoldCheck] = [*plan.holds, *plan.checks]
    for expectation in expectations:
        if record.get(expectation.field, "") != expectation.expected:
            return False
    for name, value in taken_back.items():
        record[name] = str(value)
    for step in plan.increments:
        record[step.field] = str(_count(record.get(step.field)) + step.amount)
    for claim in plan.holds:
        record[claim.field] = claim.value
    if stamp is not None:
        until = field_expiry(stamp.field, prior) if prior else stamp.until_s
        charged = [(step.field, step.amount) for step in plan.increments]
        record[stamp.field] = request_value(until, charged)
    return True


def fold_into(record: dict[str, str], merged: Mapping[str, str], now_s: int) -> None:
    """Add a merged-away person's live counters to the survivor's `record`.

    Counters add up (one budget, one cap count); a live hold of the survivor
    is kept, one only the merged person had (or whose survivor's hold has
    ended) is taken over; so is a remembered request id.
    """
    for name, value in merged.items():
        if not field_alive(name, value, now_s):
            continue
        if name.startswith((HOLD_PREFIX, REQUEST_PREFIX)):
            if not field_alive(name, record.get(name, ""), now_s):
                record[name] = value
        else:
            record[name] = str(_count(record.get(name)) + _count(value))


def record_expiry(record: Mapping[str, str]) -> int:
    """When the whole record can go (epoch seconds): the latest end of its fields."""
    return max((field_expiry(n, v) for n, v in record.items()), default=0)


def ceil_seconds(seconds: float) -> int:
    """Whole seconds, rounded up: a period of 1.5 s counts as 2."""
    return max(1, math.ceil(seconds))
