"""One treatment against the control: every number GetResults shows for a variant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .bayesian import chance_to_win
from .cuped import pooled_theta
from .frequentist import arm_of, fixed_horizon, lift
from .sample import Sample
from .sequential import sequential

__all__ = ["Comparison", "compare", "compare_all"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """Treatment against control at one look.

    Lifts are treatment minus control (absolute) and that over the control
    mean (relative; nan when the control mean is 0). Where the data say
    nothing (an arm below two people, no variance anywhere) p-values are 1,
    chance_to_win 0.5 and intervals (-inf, inf). `p_value` and the `*_ci`
    intervals are fixed-horizon: valid when read once, at a size planned in
    advance. `sequential_p_value` and `sequential_ci` (on the relative lift)
    stay valid however often they are read. With `cuped_applied` the lifts,
    intervals and p-values are CUPED-adjusted; the means are not.
    """

    control_mean: float
    treatment_mean: float
    absolute_lift: float
    absolute_ci: tuple[float, float]
    relative_lift: float
    relative_ci: tuple[float, float]
    p_value: float
    sequential_p_value: float
    sequential_ci: tuple[float, float]
    chance_to_win: float
    cuped_applied: bool
    control_n: int = 0
    treatment_n: int = 0


def compare(
    control: Sample,
    treatment: Sample,
    *,
    alpha: float = 0.05,
    cuped: bool = False,
    sequential_tuning: float | None = None,
) -> Comparison:
    """Compare one treatment with the control.

    `cuped` adjusts by the pre-exposure covariate when it varies (else
    `cuped_applied` is False). `sequential_tuning` is N*, the total people
    (both arms) at which the sequential interval is narrowest; None uses
    5000, GrowthBook's default. docs/statistics.md has every formula.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    theta = pooled_theta(control, treatment) if cuped else 0.0
    estimates = lift(arm_of(control), arm_of(treatment), theta)
    fixed = fixed_horizon(estimates, alpha)
    always = sequential(estimates, control.n + treatment.n, alpha, sequential_tuning)
    return Comparison(
        control_mean=control.mean,
        treatment_mean=treatment.mean,
        absolute_lift=float(estimates.absolute),
        absolute_ci=(float(fixed.absolute_ci.low), float(fixed.absolute_ci.high)),
        relative_lift=float(estimates.relative),
        relative_ci=(float(fixed.relative_ci.low), float(fixed.relative_ci.high)),
        p_value=float(fixed.p_value),
        sequential_p_value=float(always.p_value),
        sequential_ci=(float(always.relative_ci.low), float(always.relative_ci.high)),
        chance_to_win=float(chance_to_win(estimates)),
        cuped_applied=theta != 0.0,
        control_n=control.n,
        treatment_n=treatment.n,
    )


def compare_all(
    samples: Sequence[Sample],
    *,
    control_index: int = 0,
    alpha: float = 0.05,
    cuped: bool = False,
    sequential_tuning: float | None = None,
) -> list[Comparison]:
    """Compare every other variant with `samples[control_index]`, in order.

    The result has one entry per treatment (len(samples) - 1), each an
    independent two-arm comparison; `verdict` corrects for their number.
    """
    if len(samples) < 2:
        raise ValueError("comparing needs a control and at least one treatment")
    if not 0 <= control_index < len(samples):
        raise ValueError(f"control_index {control_index} is not one of the samples")
    control = samples[control_index]
    return [
        compare(control, sample, alpha=alpha, cuped=cuped, sequential_tuning=sequential_tuning)
        for i, sample in enumerate(samples)
        if i != control_index
    ]
