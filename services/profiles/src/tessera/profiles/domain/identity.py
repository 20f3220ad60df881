"""Identity resolution rules: how many identities of a type a profile may hold, and which wins.

The model is the one Segment Unify's identity resolution settings made
familiar: each identity type has a *limit* (a person has one `user_id`, a
handful of devices, a few dozen cookies) and a *priority* (a `user_id` says
more about who someone is than a cookie does). Resolving a set of identities
takes them in priority order, strongest first:

- an identity already on a profile brings that profile in (a merge when it
  is not the first), unless the merged profile would then hold more
  identities of some type than its limit allows;
- a new identity is attached, unless the profile already holds its limit of
  that type.

What would break a limit is refused for that identity, which is always the
lower-priority one of the two that conflict, since the stronger was taken
first. A refused identity stays where it is (on its own profile, or nowhere
when it was new), so a family tablet seen with two `user_id`s does not
merge two people, and a kiosk seen with fifty does not merge a city.

Plain values, no storage: `plan` takes what the store read and says what to
do; the store does it under its locks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tessera.profiles.domain.model import IdentityKey

DEFAULT_LIMITS: Mapping[str, int] = {
    "user_id": 1,
    "crm_id": 1,
    "email": 3,
    "app_install": 5,
    "device": 10,
    "cookie": 20,
}
"""Identities of a type one profile may hold; a type not named has no limit."""

DEFAULT_PRIORITY: tuple[str, ...] = (
    "user_id",
    "crm_id",
    "email",
    "app_install",
    "device",
    "cookie",
)
"""Strongest first; types not named come after these, in the order a request gives them."""


@dataclass(frozen=True)
class IdentityRules:
    """Limits and priority of identity types."""

    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    priority: Sequence[str] = DEFAULT_PRIORITY

    def __post_init__(self) -> None:
        bad = sorted(t for t, n in self.limits.items() if n < 1)
        if bad:
            raise ValueError(f"identity limits must be at least 1 (got {bad})")
        if len(set(self.priority)) != len(self.priority):
            raise ValueError("identity priority names a type twice")

    def rank(self, id_type: str) -> int:
        """Position of a type in the priority; unnamed types rank after every named one."""
        try:
            return list(self.priority).index(id_type)
        except ValueError:
            return len(self.priority)


DEFAULT_RULES = IdentityRules()


@dataclass(frozen=True)
class Refusal:
    """An identity left out of a resolution, and why."""

    identity: IdentityKey
    reason: str
    profile_id: str = ""
    """The profile the identity stays on; empty when it was new and is not stored."""


@dataclass(frozen=True)
class Plan:
    """What resolving a set of identities does.

    `profiles` are the existing profiles that become one (empty: a new
    profile), `attach` the new identities it takes, `refused` the ones left
    out.
    """

    profiles: tuple[str, ...]
    attach: tuple[IdentityKey, ...]
    refused: tuple[Refusal, ...]

    @property
    def changes(self) -> bool:
        """Whether carrying the plan out writes anything."""
        return len(self.profiles) != 1 or bool(self.attach)


def _excess(rules: IdentityRules, mine: Counter[str], theirs: Counter[str]) -> str | None:
    """The first type (in priority order) a merge of the two would hold past its limit.

    Only a type the merge itself pushes over counts: a profile that already
    held more than a (since lowered) limit does not block every merge.
    """
    for id_type in sorted(mine.keys() | theirs.keys(), key=lambda t: (rules.rank(t), t)):
        limit = rules.limits.get(id_type)
        both = mine[id_type] + theirs[id_type]
        if limit is not None and both > limit and both > max(mine[id_type], theirs[id_type]):
            return id_type
    return None


def _plural(count: int, id_type: str) -> str:
    return f"{count} {id_type} identit{'y' if count == 1 else 'ies'}"


def plan(
    rules: IdentityRules,
    keys: Sequence[IdentityKey],
    owners: Mapping[IdentityKey, str],
    held: Mapping[str, Sequence[IdentityKey]],
) -> Plan:
    """Resolve `keys` under the rules.

    `owners` maps each of `keys` already stored to its profile; `held` maps
    each of those profiles to every identity it holds. Keys are taken
    strongest first (ties in the order given), so of two identities that
    conflict the weaker is refused.
    """
    order = sorted(range(len(keys)), key=lambda i: (rules.rank(keys[i].type), i))
    profiles: list[str] = []
    attach: list[IdentityKey] = []
    refused: list[Refusal] = []
    counts: Counter[str] = Counter()
    for index in order:
        key = keys[index]
        owner = owners.get(key)
        if owner is None:
            limit = rules.limits.get(key.type)
            if limit is not None and counts[key.type] >= limit:
                refused.append(
                    Refusal(
                        key,
                        f"the profile holds {_plural(counts[key.type], key.type)} already; "
                        f"the limit is {limit}",
                    )
                )
                continue
            attach.append(key)
            counts[key.type] += 1
            continue
        if owner in profiles:
            continue
        theirs = Counter(i.type for i in held.get(owner, ()))
        if profiles or attach:
            excess = _excess(rules, counts, theirs)
            if excess is not None:
                both = counts[excess] + theirs[excess]
                refused.append(
                    Refusal(
                        key,
                        f"it is on another profile; merging the two would give one profile "
                        f"{_plural(both, excess)}, and the limit is {rules.limits[excess]}",
                        owner,
                    )
                )
                continue
        profiles.append(owner)
        counts += theirs
    return Plan(tuple(profiles), tuple(attach), tuple(refused))
