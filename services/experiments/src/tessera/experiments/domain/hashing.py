"""Deterministic hashing of profiles into buckets.

Tessera uses GrowthBook's documented hashing (version 2), so an assignment can
be checked by hand and pinned against GrowthBook's published test vectors. The
scheme is described, with its reasons, in docs/hashing.md.

Strings are hashed as their UTF-8 bytes, the usual definition of FNV over
octets. For ASCII (every canonical profile id and every experiment key) this is
byte-for-byte what GrowthBook's SDKs hash; for other characters the JavaScript
SDK hashes UTF-16 code units instead, so values may differ there.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = [
    "BUCKET_RESOLUTION",
    "FNV32_OFFSET_BASIS",
    "FNV32_PRIME",
    "bucket",
    "fnv1a_32",
    "hash_v1",
    "hash_v2",
]

FNV32_OFFSET_BASIS = 0x811C9DC5
FNV32_PRIME = 0x01000193

#: Number of distinct buckets of `bucket` (hash v2): values are multiples of 1e-4.
BUCKET_RESOLUTION = 10_000


def fnv1a_32(data: str | bytes) -> int:
    """Return the 32-bit FNV-1a hash of `data` (a str is hashed as UTF-8)."""
    octets = data.encode("utf-8") if isinstance(data, str) else data
    return _fnv1a_from(FNV32_OFFSET_BASIS, octets)


def _fnv1a_from(state: int, octets: bytes) -> int:
    # FNV-1a folds one octet at a time, so hashing a + b is hashing b from
    # the state after a. The constants are literals: a global lookup per
    # octet costs more than the arithmetic (this loop is most of an
    # assignment's time, bench/assignment.py).
    for octet in octets:
        state = ((state ^ octet) * 0x01000193) & 0xFFFFFFFF
    return state


@lru_cache(maxsize=4096)
def _state_after_seed(seed: str) -> int:
    # Seeds are few (a handful per experiment) and hashed for every profile:
    # their state is computed once. UTF-8 of seed + value is UTF-8 of seed
    # followed by UTF-8 of value, so the result is fnv1a_32(seed + value).
    return fnv1a_32(seed)


def hash_v1(seed: str, value: str) -> float:
    """Return GrowthBook's hash version 1 of `value` under `seed`, in [0, 1).

    `fnv1a_32(value + seed) % 1000 / 1000`. Kept only to check our FNV against
    GrowthBook's v1 vectors; Tessera assigns with `bucket` (version 2), because
    v1 has only 1000 buckets and lets similar seeds produce correlated buckets.
    """
    return (fnv1a_32(value + seed) % 1000) / 1000


def hash_v2(seed: str, value: str) -> float:
    """Return GrowthBook's hash version 2 of `value` under `seed`, in [0, 1).

    `fnv1a_32(str(fnv1a_32(seed + value))) % 10000 / 10000`. The second pass
    over the decimal digits of the first hash spreads seeds that differ only in
    their last characters, which FNV alone leaves correlated.
    """
    inner = _fnv1a_from(_state_after_seed(seed), value.encode("utf-8"))
    return (fnv1a_32(str(inner)) % BUCKET_RESOLUTION) / BUCKET_RESOLUTION


def bucket(seed: str, profile_id: str) -> float:
    """Return the bucket in [0, 1) of a canonical profile id under `seed`.

    This is the one function assignment uses: hash version 2, so the same
    (seed, profile id) gives the same bucket on every replica, in every
    language, forever. The seeds are described in docs/hashing.md.
    """
    return hash_v2(seed, profile_id)
