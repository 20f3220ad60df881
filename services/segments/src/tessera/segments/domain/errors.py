"""Errors of the rule language, with the position a user needs to fix them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tessera.errors import InvalidArgument

from .nodes import Condition


@dataclass(frozen=True, slots=True, order=True)
class RuleError:
    """One problem in a rule: 1-based line and column, and what is wrong.

    Column 0 means the position is not known more precisely than the line.
    """

    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class RuleSyntaxError(InvalidArgument):
    """A rule does not parse or names something that does not exist.

    `errors` lists every problem found, first one first; the message is the
    first error with its position, so a plain status message is still useful.
    """

    def __init__(self, errors: Sequence[RuleError], *, field: str = "segment.rule") -> None:
        if not errors:
            raise ValueError("RuleSyntaxError needs at least one error")
        self.errors: list[RuleError] = list(errors)
        super().__init__(str(self.errors[0]), field=field)


def parsed_or_raise(result: tuple[Condition | None, list[RuleError]], field: str) -> Condition:
    """The rule a parser produced, or RuleSyntaxError with every error it found."""
    rule, errors = result
    if errors or rule is None:
        raise RuleSyntaxError(errors, field=field)
    return rule


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a 0-based character offset in `text`."""
    line = text.count("\n", 0, offset) + 1
    line_start = text.rfind("\n", 0, offset) + 1
    return line, offset - line_start + 1
