"""Payloads from the profile: `{{ ... }}` placeholders in a variant's payload.

A string anywhere in a variant's payload (at any depth, in objects and lists)
may name profile or request data, e.g. `"Juicers for {{traits.first_name |
default: "you"}}"` or `{"category": "{{interests.top}}"}`. The syntax and its
rules are documented in docs/payloads.md; in short:

- `{{ root.path }}` with a root of `traits`, `session`, `features`,
  `interests` or `context`, and `| default: <JSON literal>` for when the
  data is missing (absent or null). Without a default, missing data renders
  as the empty string.
- A string that is exactly one placeholder keeps the value's type (a number
  stays a number, an object an object); a placeholder inside text is
  interpolated as text.
- `\\{{` is a literal `{{`.

Templates are compiled once per campaign version (`compile_payload`, called
when the campaign cache converts a campaign) and rendered after the choice,
for the chosen variant only, with a `Lookup` the application builds from the
profile and the request context. Plain Python: no protobuf here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tessera.errors import InvalidArgument

ROOTS: Final = ("traits", "session", "features", "interests", "context")
"""What a placeholder may read, by its first name."""

SESSION_KEYS: Final = frozenset(
    {
        "page_views",
        "events",
        "time_spent_ms",
        "cart_size",
        "cart_value",
        "favorites",
        "searches",
        "last_search",
        "channel",
    }
)
"""`session.<key>` names (the rule language's, plus the last search and the channel)."""
SESSION_MAPS: Final = frozenset({"category_views", "product_views"})
"""`session.<map>.<name>`: views of one category or product in the session."""
FEATURE_KEYS: Final = frozenset({"lifetime_value", "conversion_probability"})
"""`features.<key>` names."""
RFM_KEYS: Final = frozenset({"recency_days", "frequency", "monetary"})
"""`features.rfm.<key>` names."""
MAX_INTEREST_RANK: Final = 100
"""`interests.<n>` reaches at most the 100th strongest category."""
MAX_NUMBER: Final = 2.0**53
"""Largest magnitude of a numeric default: the edge guard's bound on a payload's numbers."""

OPEN, CLOSE, ESCAPED_OPEN = "{{", "}}", "\\{{"
_SEGMENT = re.compile(r"[^\s.|{}\"\\]+")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_KEYWORD = re.compile(r"true|false|null")
_WORD = re.compile(r"[A-Za-z_]\w*")


class _Missing:
    """The value of data that is not there (absent or null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What a `Lookup` answers for data that is not there."""

Lookup = Callable[[str, tuple[str, ...]], Any]
"""`lookup(root, path)`: the value at `root.path`, or MISSING."""


class TemplateError(InvalidArgument):
    """A payload string whose placeholders cannot be read; `field` names the string."""


@dataclass(frozen=True)
class Placeholder:
    """One `{{ root.path | default: literal }}`."""

    root: str
    path: tuple[str, ...]
    default: Any = MISSING
    """The default as a JSON value; MISSING when none is given."""

    def value(self, lookup: Lookup) -> Any:
        """The data, else the default, else the empty string."""
        found = lookup(self.root, self.path)
        if found is not MISSING and found is not None:
            return found
        if self.default is not MISSING:
            return self.default
        return ""


@dataclass(frozen=True)
class Template:
    """A payload string split into literal text and placeholders."""

    parts: tuple[str | Placeholder, ...]

    def render(self, lookup: Lookup) -> Any:
        """The whole placeholder's typed value, or the text with each placeholder in it."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Placeholder):
            return self.parts[0].value(lookup)
        return "".join(
            part if isinstance(part, str) else as_text(part.value(lookup)) for part in self.parts
        )


def as_text(value: Any) -> str:
    """How a value reads inside text: whole numbers without `.0`, 15 significant digits, JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, float):
        # 15 significant digits, what a double holds exactly in decimal: a
        # cart of 3 x 29.9 reads 89.7 in text, not 89.69999999999999.
        text = format(value, ".15g")
        return str(int(float(text))) if float(text).is_integer() and "e" not in text else text
    if isinstance(value, int):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def parse_template(text: str, field: str) -> Template | None:
    """The placeholders of one string; None when it has none (served as written).

    Raises TemplateError naming `field` and the character where the problem is.
    """
    if OPEN not in text:
        return None
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    at = 0
    while at < len(text):
        if text.startswith(ESCAPED_OPEN, at):
            literal.append(OPEN)
            at += len(ESCAPED_OPEN)
            continue
        if not text.startswith(OPEN, at):
            literal.append(text[at])
            at += 1
            continue
        placeholder, at = _placeholder(text, at, field)
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(placeholder)
    if literal:
        parts.append("".join(literal))
    # Without a placeholder (only escaped braces) the template is one literal:
    # the text without its escapes.
    return Template(tuple(parts))


def _placeholder(text: str, start: int, field: str) -> tuple[Placeholder, int]:
    """The placeholder opening at `start` and the index after its `}}`."""
    where = f"placeholder at character {start + 1}"

    def fail(problem: str) -> TemplateError:
        return TemplateError(f"{where}: {problem}", field=field)

    at = _skip_space(text, start + len(OPEN))
    names: list[str] = []
    while True:
        match = _SEGMENT.match(text, at)
        if match is None:
            if at >= len(text):
                raise fail("'{{' is not closed by '}}'")
            wanted = "a name" if not names else "a name after '.'"
            raise fail(f"expected {wanted}, found {text[at]!r}")
        names.append(match.group())
        at = match.end()
        if at < len(text) and text[at] == ".":
            at += 1
            continue
        break
    root, path = names[0], tuple(names[1:])
    _check_path(root, path, fail)
    at = _skip_space(text, at)
    default: Any = MISSING
    if text.startswith("|", at):
        at = _skip_space(text, at + 1)
        word = _WORD.match(text, at)
        if word is None or word.group() != "default":
            name = word.group() if word else text[at : at + 1] or "nothing"
            raise fail(f"unknown filter {name!r}: the only filter is `default: <value>`")
        at = _skip_space(text, word.end())
        if not text.startswith(":", at):
            raise fail('write the default as `default: "text"` (a colon, then a JSON value)')
        default, at = _literal(text, _skip_space(text, at + 1), fail)
        at = _skip_space(text, at)
    if not text.startswith(CLOSE, at):
        if at >= len(text):
            raise fail("'{{' is not closed by '}}'")
        raise fail(f"expected '}}}}', found {text[at]!r}")
    return Placeholder(root, path, default), at + len(CLOSE)


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t":
        at += 1
    return at


def _literal(text: str, at: int, fail: Callable[[str], TemplateError]) -> tuple[Any, int]:
    """A JSON string, number, true, false or null at `at`, and the index after it."""
    if text.startswith('"', at):
        end = at + 1
        while end < len(text) and text[end] != '"':
            end += 2 if text[end] == "\\" else 1
        if end >= len(text):
            raise fail("the default's string is not closed by '\"'")
        try:
            value = json.loads(text[at : end + 1])
        except json.JSONDecodeError as error:
            raise fail(f"the default is not a JSON string ({error.msg})") from None
        # JSON escapes reach what a request's strings cannot hold (the edge
        # guard refuses NUL; protobuf cannot encode a lone surrogate): such a
        # default would fail every Decide that renders it.
        if "\x00" in value:
            raise fail("the default must not contain a NUL character (\\u0000)")
        if not value.isascii() and _has_surrogate(value):
            raise fail("the default must not contain a lone surrogate (\\ud800 to \\udfff)")
        return value, end + 1
    match = _KEYWORD.match(text, at)
    if match is not None:
        return json.loads(match.group()), match.end()
    match = _NUMBER.match(text, at)
    if match is not None:
        # A payload's numbers are doubles, bounded as the edge guard bounds a
        # request's (JSON's exact integers); a bigger one would fail every
        # Decide that renders it (no double holds 1e400 or a 400-digit int).
        # float() of an over-long literal is inf, never an error; past the
        # bound, json.loads is not asked (int() refuses over 4300 digits).
        number = float(match.group())
        if not abs(number) <= MAX_NUMBER:
            raise fail(f"the default must be a number within +-{MAX_NUMBER:.0f}")
        return json.loads(match.group()), match.end()
    raise fail('the default must be a JSON string ("gifts"), a number, true, false or null')


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def _check_path(root: str, path: tuple[str, ...], fail: Callable[[str], TemplateError]) -> None:
    """Refuse a root or a path the profile cannot have."""
    if root not in ROOTS:
        hint = {"trait": "traits", "feature": "features", "interest": "interests"}.get(root)
        also = f" (did you mean {hint!r}?)" if hint else ""
        raise fail(f"unknown root {root!r}{also}: use one of {', '.join(ROOTS)}")
    if not path:
        raise fail(f"name what to read of {root}, e.g. {root}.{_EXAMPLES[root]}")
    head = path[0]
    if root == "session":
        if head in SESSION_MAPS:
            if len(path) != 2:
                raise fail(f"write session.{head}.<name>, e.g. session.{head}.juicers")
        elif head not in SESSION_KEYS or len(path) != 1:
            known = ", ".join(sorted(SESSION_KEYS | {f"{m}.<name>" for m in SESSION_MAPS}))
            raise fail(f"unknown session value {'.'.join(path)!r}: use {known}")
    elif root == "features":
        valid = (
            (head in FEATURE_KEYS and len(path) == 1)
            or (head == "rfm" and len(path) == 2 and path[1] in RFM_KEYS)
            or (head == "interest" and len(path) == 2)
        )
        if not valid:
            raise fail(
                f"unknown feature {'.'.join(path)!r}: use lifetime_value, "
                "conversion_probability, rfm.recency_days, rfm.frequency, rfm.monetary "
                "or interest.<category>"
            )
    elif root == "interests":
        rank = _rank(head)
        if len(path) != 1 or rank is None:
            raise fail(
                f"unknown interests value {'.'.join(path)!r}: use interests.top or "
                f"interests.<n>, the n-th strongest category (1 to {MAX_INTEREST_RANK})"
            )


_EXAMPLES = {
    "traits": "first_name",
    "session": "page_views",
    "features": "lifetime_value",
    "interests": "top",
    "context": "page",
}


def _rank(name: str) -> int | None:
    """0-based rank of `interests.<name>`: `top` is 0, `1` is 0, `2` is 1; None if invalid."""
    if name == "top":
        return 0
    if name.isdigit() and name.isascii() and 1 <= int(name) <= MAX_INTEREST_RANK:
        return int(name) - 1
    return None


def interest_rank(name: str) -> int:
    """0-based rank named by a (validated) `interests.<name>`."""
    rank = _rank(name)
    assert rank is not None, name
    return rank


# -- payloads ------------------------------------------------------------------


class PayloadTemplate:
    """A variant's payload with its templated strings compiled: rendered per Decide."""

    __slots__ = ("_tree", "payload")

    def __init__(self, payload: Mapping[str, Any], tree: dict[str, Any]) -> None:
        self.payload = payload
        """The payload as written."""
        self._tree = tree

    def render(self, lookup: Lookup) -> dict[str, Any]:
        """The payload with every placeholder replaced; parts without one are shared."""
        return {key: _render(node, lookup) for key, node in self._tree.items()}


class _Node:
    """A templated object or list inside a payload; constants are kept as they are."""

    __slots__ = ("items",)

    def __init__(self, items: dict[str, Any] | list[Any]) -> None:
        self.items = items


def _render(node: Any, lookup: Lookup) -> Any:
    if isinstance(node, Template):
        return node.render(lookup)
    if isinstance(node, _Node):
        if isinstance(node.items, dict):
            return {key: _render(item, lookup) for key, item in node.items.items()}
        return [_render(item, lookup) for item in node.items]
    return node


def compile_payload(payload: Mapping[str, Any], field: str) -> PayloadTemplate | None:
    """The payload's templates, or None when no string in it has a placeholder or escape.

    Raises TemplateError naming the string's path, e.g.
    `campaign.variants[0].payload.title` or `...payload.items[2].text`.
    """
    tree: dict[str, Any] = {}
    templated = False
    for key, value in payload.items():
        node, has = _compile(value, f"{field}.{key}")
        tree[key] = node
        templated = templated or has
    return PayloadTemplate(payload, tree) if templated else None


def _compile(value: Any, field: str) -> tuple[Any, bool]:
    """(node, whether it holds a template) for one payload value."""
    if isinstance(value, str):
        template = parse_template(value, field)
        return (template, True) if template is not None else (value, False)
    if isinstance(value, Mapping):
        nodes = {key: _compile(item, f"{field}.{key}") for key, item in value.items()}
        if any(has for _, has in nodes.values()):
            return _Node({key: node for key, (node, _) in nodes.items()}), True
        return value, False
    if isinstance(value, Sequence):
        listed = [_compile(item, f"{field}[{index}]") for index, item in enumerate(value)]
        if any(has for _, has in listed):
            return _Node([node for node, _ in listed]), True
        return value, False
    return value, False
