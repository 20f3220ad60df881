"""Where a person's pressure, cap and conflict-group counters live.

Redis when `TESSERA_REDIS_URL` is set (shared by every replica), a dict in
process otherwise (the embedded default, one process). Both keep one record
per person (a Redis hash `<key_prefix>decision:pressure:<profile id>`) whose
fields the rules of `tessera.decision.domain.pressure` name, and both apply
a decision's charges all or nothing: the Redis one in one Lua script (one
round trip, atomic on the server), the in-process one without yielding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from redis import asyncio as aioredis
from redis import exceptions as redis_errors

from tessera.decision.domain.pressure import (
    ChargePlan,
    apply_plan,
    fold_into,
    record_expiry,
)


class CountersUnavailable(Exception):
    """The counter store could not be reached (down, restarting, network cut)."""


class CounterStore(Protocol):
    """A person's counters: read some fields, charge a decision, fold merged people in."""

    async def read(self, person: str, fields: Sequence[str]) -> list[str | None]:
        """The values of `fields` of `person`'s record (None where unset), in one round trip.

        Every method raises CountersUnavailable when the store cannot be reached.
        """

    async def charge(
        self,
        person: str,
        plan: ChargePlan,
        merged: Sequence[str],
        now_s: int,
        fields: Sequence[str],
    ) -> tuple[bool, list[str | None]]:
        """Fold `merged` people into `person`, then apply `plan` if every limit allows.

        The fold always happens, once (the merged records are removed). The
        plan is applied all or nothing; returns whether it was, and the
        values of `fields` after, so a refused decision can choose again
        without another read.
        """

    async def forget(self, people: Sequence[str]) -> None:
        """Remove every counter of `people` (an erased person and their aliases)."""

    async def ping(self) -> None:
        """Raise when the store cannot be reached."""

    async def close(self) -> None:
        """Release connections."""


SWEEP_EVERY = 1000
"""Charges between two sweeps of the in-process store for records that have expired."""


class MemoryCounterStore:
    """In-process counters. Atomic because no method yields while it changes a record.

    A record expires with its latest field, as in Redis: read as empty from
    then on, and removed by a sweep every SWEEP_EVERY charges, so people
    never seen again do not stay in memory.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._records: dict[str, dict[str, str]] = {}
        self._clock = clock or time.time
        self._charges = 0

    def __len__(self) -> int:
        """People with a record held (expired ones until the next sweep)."""
        return len(self._records)

    def _sweep(self) -> None:
        now = self._clock()
        for person in [p for p, r in self._records.items() if record_expiry(r) <= now]:
            del self._records[person]

    def _record(self, person: str) -> dict[str, str]:
        record = self._records.get(person)
        if record is not None and record_expiry(record) <= self._clock():
            del self._records[person]
            return {}
        return record or {}

    async def read(self, person: str, fields: Sequence[str]) -> list[str | None]:
        record = self._record(person)
        return [record.get(name) for name in fields]

    async def charge(
        self,
        person: str,
        plan: ChargePlan,
        merged: Sequence[str],
        now_s: int,
        fields: Sequence[str],
    ) -> tuple[bool, list[str | None]]:
        self._charges += 1
        if self._charges % SWEEP_EVERY == 0:
            self._sweep()
        record = dict(self._record(person))
        for other in merged:
            if other != person:
                fold_into(record, self._records.pop(other, {}), now_s)
        applied = apply_plan(record, plan, now_s)
        if record:
            self._records[person] = record
        else:
            self._records.pop(person, None)
        return applied, [record.get(name) for name in fields]

    async def forget(self, people: Sequence[str]) -> None:
        for person in people:
            self._records.pop(person, None)

    async def ping(self) -> None:
        """Always reachable."""

    async def close(self) -> None:
        """Nothing to release."""


class Clock(Protocol):
    """Seconds since the epoch (time.time)."""

    def __call__(self) -> float:
        """The current time."""


# The same rules as `apply_plan`, `fold_into` and `record_expiry`, in Lua so
# that Redis runs them as one atomic step. KEYS[1] is the person's hash,
# KEYS[2..] the hashes of people merged into it. ARGV: now, the number of
# increments then (field, amount, limit) each, the number of hold claims
# then (field, value, expected) each, the number of hold checks then
# (field, expected) each, the request field ('' for none) and its until,
# then the fields to return.
CHARGE_SCRIPT = """
local now = tonumber(ARGV[1])
local person = KEYS[1]
local function ends(name, value)
  if string.sub(name, 1, 2) == 'h:' then
    return tonumber(string.match(value, '@(%d+)$') or '0')
  end
  if string.sub(name, 1, 2) == 'r:' then
    return tonumber(string.match(value, '^(%d+)') or '0')
  end
  return tonumber(string.match(name, ':(%d+)$') or '0')
end
for k = 2, #KEYS do
  local all = redis.call('HGETALL', KEYS[k])
  for j = 1, #all, 2 do
    local name, value = all[j], all[j + 1]
    if ends(name, value) > now then
      local kind = string.sub(name, 1, 2)
      if kind == 'h:' or kind == 'r:' then
        -- the survivor's hold (or request) wins only while it lasts
        local mine = redis.call('HGET', person, name)
        if not mine or ends(name, mine) <= now then
          redis.call('HSET', person, name, value)
        end
      else
        redis.call('HINCRBY', person, name, tonumber(value) or 0)
      end
    end
  end
  redis.call('DEL', KEYS[k])
end
local all = redis.call('HGETALL', person)
for j = 1, #all, 2 do
  if ends(all[j], all[j + 1]) <= now then redis.call('HDEL', person, all[j]) end
end
local i = 2
local increments = tonumber(ARGV[i])
local first_increment = i + 1
i = i + 1 + 3 * increments
local holds = tonumber(ARGV[i])
local first_hold = i + 1
i = i + 1 + 3 * holds
local checks = tonumber(ARGV[i])
local first_check = i + 1
i = i + 1 + 2 * checks
local stamp, stamp_until = ARGV[i], ARGV[i + 1]
i = i + 2
-- a retry of a remembered request: its earlier charge is taken back first
local prior = false
local refund = {}
if stamp ~= '' then
  prior = redis.call('HGET', person, stamp)
  if prior then
    for name, amount in string.gmatch(prior, '|([^|]+)|(%d+)') do
      refund[name] = tonumber(amount)
    end
  end
end
local function current(name)
  local value = redis.call('HGET', person, name)
  local count = tonumber(value or '0') or 0
  if value and refund[name] then count = math.max(0, count - refund[name]) end
  return count
end
local ok = true
for k = 0, increments - 1 do
  local at = first_increment + 3 * k
  local limit = tonumber(ARGV[at + 2])
  if limit > 0 and current(ARGV[at]) + tonumber(ARGV[at + 1]) > limit then ok = false end
end
for k = 0, holds - 1 do
  local at = first_hold + 3 * k
  local current = redis.call('HGET', person, ARGV[at]) or ''
  if current ~= ARGV[at + 2] then ok = false end
end
for k = 0, checks - 1 do
  local at = first_check + 2 * k
  local current = redis.call('HGET', person, ARGV[at]) or ''
  if current ~= ARGV[at + 1] then ok = false end
end
if ok then
  for name, _ in pairs(refund) do
    if redis.call('HEXISTS', person, name) == 1 then
      redis.call('HSET', person, name, tostring(current(name)))
    end
  end
  for k = 0, increments - 1 do
    local at = first_increment + 3 * k
    redis.call('HINCRBY', person, ARGV[at], tonumber(ARGV[at + 1]))
  end
  for k = 0, holds - 1 do
    local at = first_hold + 3 * k
    redis.call('HSET', person, ARGV[at], ARGV[at + 1])
  end
  if stamp ~= '' then
    local value = stamp_until
    if prior then value = string.match(prior, '^(%d+)') end
    for k = 0, increments - 1 do
      local at = first_increment + 3 * k
      value = value .. '|' .. ARGV[at] .. '|' .. ARGV[at + 1]
    end
    redis.call('HSET', person, stamp, value)
  end
end
local latest = 0
all = redis.call('HGETALL', person)
for j = 1, #all, 2 do
  local e = ends(all[j], all[j + 1])
  if e > latest then latest = e end
end
if latest > now then redis.call('EXPIREAT', person, latest) end
local reply = {ok and 1 or 0}
for k = i, #ARGV do
  reply[#reply + 1] = redis.call('HGET', person, ARGV[k])
end
return reply
"""


def _text(value: bytes | str | int | None) -> str | None:
    """A reply value as text; None for a missing one (nil, which Lua hands back as false)."""
    if value is None or isinstance(value, int):
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisCounterStore:
    """Counters in Redis: one hash per person, charged by one Lua script.

    The keys of a person and of the people merged into them are touched by
    one script, so they must live on one Redis (a primary and its replicas,
    not a cluster sharded by key).
    """

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        self._prefix = prefix
        self._charge = self._redis.register_script(CHARGE_SCRIPT)

    def _key(self, person: str) -> str:
        return f"{self._prefix}{person}"

    async def read(self, person: str, fields: Sequence[str]) -> list[str | None]:
        if not fields:
            return []
        try:
            values = await self._redis.hmget(self._key(person), list(fields))
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as error:
            raise CountersUnavailable(str(error)) from error
        return [_text(v) for v in values]

    async def charge(
        self,
        person: str,
        plan: ChargePlan,
        merged: Sequence[str],
        now_s: int,
        fields: Sequence[str],
    ) -> tuple[bool, list[str | None]]:
        keys = [self._key(person), *(self._key(m) for m in merged if m != person)]
        args: list[str | int] = [now_s, len(plan.increments)]
        for step in plan.increments:
            args += [step.field, step.amount, step.limit]
        args.append(len(plan.holds))
        for claim in plan.holds:
            args += [claim.field, claim.value, claim.expected]
        args.append(len(plan.checks))
        for check in plan.checks:
            args += [check.field, check.expected]
        stamp = plan.request
        args += [stamp.field, stamp.until_s] if stamp else ["", 0]
        args += list(fields)
        try:
            reply = await self._charge(keys=keys, args=args)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as error:
            raise CountersUnavailable(str(error)) from error
        return bool(int(reply[0])), [_text(v) for v in reply[1:]]

    async def forget(self, people: Sequence[str]) -> None:
        if not people:
            return
        try:
            await self._redis.delete(*(self._key(p) for p in people))
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as error:
            raise CountersUnavailable(str(error)) from error

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
