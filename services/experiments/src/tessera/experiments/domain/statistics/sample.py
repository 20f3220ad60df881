"""Per-variant sufficient statistics: what every other statistic is computed from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

__all__ = ["Sample"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One variant's people, as sums: no per-person rows are needed.

    `n` people were exposed; `total` is the sum of their goal metric and
    `total_squares` the sum of its squares. For a conversion goal each
    person's metric is 0 or 1, so total == total_squares == the number who
    converted; for a revenue goal the metric is the revenue summed per
    person. The `pre_*` fields are the same person's metric over the
    pre-exposure window (the CUPED covariate x), and `cross_total` is the sum
    of x * y over people. They stay 0 when CUPED is not used.
    """

    n: int
    total: float
    total_squares: float
    pre_total: float = 0.0
    pre_total_squares: float = 0.0
    cross_total: float = 0.0

    def __post_init__(self) -> None:
        # Counts often arrive as numpy or database integers: keep plain ints and floats.
        if isinstance(self.n, bool) or not isinstance(self.n, Integral) or self.n < 0:
            raise ValueError(f"n must be a whole number >= 0, got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))
        for name in ("total", "total_squares", "pre_total", "pre_total_squares", "cross_total"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.total_squares < 0 or self.pre_total_squares < 0:
            raise ValueError("sums of squares cannot be negative")

    @property
    def is_binary(self) -> bool:
        """True when the sums are those of 0/1 values: a conversion count.

        total == total_squares with 0 <= total <= n holds for every set of
        0/1 values; for revenue it holds only by coincidence, and then the
        Bernoulli variance differs from the sample variance by n / (n - 1).
        """
        return self.total == self.total_squares and 0 <= self.total <= self.n

    @property
    def mean(self) -> float:
        """The metric per person (the conversion rate for a conversion goal); 0 when n is 0."""
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """The variance of the metric per person.

        For a conversion count, the Bernoulli variance p(1 - p), as gbstats'
        ProportionStatistic; otherwise the sample variance
        (sum y^2 - (sum y)^2 / n) / (n - 1), as its SampleMeanStatistic. 0 below
        two people, and never negative (rounding is clipped).
        """
        if self.n < 2:
            return 0.0
        if self.is_binary:
            p = self.mean
            return p * (1.0 - p)
        return max(0.0, (self.total_squares - self.total**2 / self.n) / (self.n - 1))

    @property
    def pre_mean(self) -> float:
        """The covariate per person over the pre-exposure window."""
        return self.pre_total / self.n if self.n else 0.0

    @property
    def pre_variance(self) -> float:
        """The sample variance of the covariate (0 below two people)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.pre_total_squares - self.pre_total**2 / self.n) / (self.n - 1))

    @property
    def covariance(self) -> float:
        """The sample covariance of covariate and metric (0 below two people)."""
        if self.n < 2:
            return 0.0
        return (self.cross_total - self.total * self.pre_total / self.n) / (self.n - 1)
