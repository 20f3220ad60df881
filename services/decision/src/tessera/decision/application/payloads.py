"""Rendering the chosen variants' payloads from the visitor's profile (docs/payloads.md).

`render_payloads` is Decide's one call, after the choice: only the variants
shown are rendered, and only those with a placeholder (compiled with the
campaign, `CampaignVariant.template`); the rest are served as written, at
no cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import struct_pb2

from tessera.channels import CHANNEL_NAMES
from tessera.convert import struct_to_dict
from tessera.decision.domain.campaigns import Choice
from tessera.decision.domain.payloads import MISSING, interest_rank
from tessera.profiles.v1 import profiles_pb2


class ProfileData:
    """What placeholders read: the profile Decide resolved and the request's context."""

    __slots__ = ("_context", "_profile", "_structs")

    def __init__(self, profile: profiles_pb2.Profile, context: struct_pb2.Struct) -> None:
        self._profile = profile
        self._context = context
        self._structs: dict[str, dict[str, Any]] = {}

    def __call__(self, root: str, path: tuple[str, ...]) -> Any:
        """The value at `root.path`, or MISSING (see docs/payloads.md for each root)."""
        if root in ("traits", "context"):
            return _walk(self._plain(root), path)
        if root == "interests":
            interests = self._profile.features.interests
            rank = interest_rank(path[0])
            return interests[rank].category if rank < len(interests) else MISSING
        if root == "session":
            return _session(self._profile.session, path)
        return _features(self._profile.features, path)

    def _plain(self, root: str) -> dict[str, Any]:
        """Traits or context as plain values, converted once per Decide."""
        plain = self._structs.get(root)
        if plain is None:
            struct = self._profile.traits if root == "traits" else self._context
            plain = self._structs[root] = struct_to_dict(struct)
        return plain


def _walk(value: Any, path: tuple[str, ...]) -> Any:
    """Follow `path` through objects (by key) and lists (by 0-based index)."""
    for name in path:
        if isinstance(value, dict):
            value = value.get(name, MISSING)
        elif isinstance(value, list) and 0 <= _index(name) < len(value):
            value = value[_index(name)]
        else:
            return MISSING
        if value is MISSING or value is None:
            return MISSING
    return value


def _index(name: str) -> int:
    """A list index named in a path: ASCII digits only ('²' is a digit int() refuses); -1 else."""
    return int(name) if name.isascii() and name.isdigit() else -1


def _session(session: profiles_pb2.Session, path: tuple[str, ...]) -> Any:
    name = path[0]
    if name == "category_views":
        return session.category_views.get(path[1], 0)
    if name == "product_views":
        return session.product_views.get(path[1], 0)
    if name == "cart_size":
        return sum(line.quantity for line in session.cart)
    if name == "cart_value":
        return sum(line.price * line.quantity for line in session.cart)
    if name == "favorites":
        return len(session.favorites)
    if name == "searches":
        return len(session.searches)
    if name == "last_search":
        return session.searches[-1] if session.searches else MISSING
    if name == "channel":
        return CHANNEL_NAMES.get(session.channel, MISSING)
    return getattr(session, name)  # page_views, events, time_spent_ms


def _features(features: profiles_pb2.Features, path: tuple[str, ...]) -> Any:
    name = path[0]
    if name == "rfm":
        value = getattr(features.rfm, path[1])
        # Never bought: recency_days is -1, which means "none".
        return MISSING if path[1] == "recency_days" and value < 0 else value
    if name == "interest":
        return next((i.score for i in features.interests if i.category == path[1]), 0.0)
    return getattr(features, name)  # lifetime_value, conversion_probability


def render_payloads(
    choices: Sequence[Choice], profile: profiles_pb2.Profile, context: struct_pb2.Struct
) -> tuple[Mapping[str, Any] | None, ...]:
    """Per choice, its variant's rendered payload; None to serve the payload as written."""
    data: ProfileData | None = None
    rendered: list[Mapping[str, Any] | None] = []
    for choice in choices:
        variant = choice.campaign.variant(choice.variant_key) if choice.campaign else None
        template = variant.template if variant is not None else None
        if template is None:
            rendered.append(None)
            continue
        if data is None:
            data = ProfileData(profile, context)
        rendered.append(template.render(data))
    return tuple(rendered)
