"""Experiment statistics as small pure functions over per-variant sums.

numpy only (no scipy at run time). `compare` gives everything GetResults
shows for one treatment; `srm_p_value` checks the split; `verdict` turns both
into a status. The formulas, their sources and their tuning are in
docs/statistics.md; the modules follow the families there (frequentist,
sequential, bayesian, cuped, srm, power).
"""

from .bayesian import chance_to_win, thompson_weights
from .comparison import Comparison, compare, compare_all
from .cuped import pooled_theta
from .frequentist import Arm, Lift, arm_of, fixed_horizon, lift
from .power import required_sample_size
from .sample import Sample
from .sequential import DEFAULT_SEQUENTIAL_TUNING, mixture_rho, sequential, sequential_p_value
from .srm import srm_p_value
from .verdict import Verdict, verdict

__all__ = [
    "DEFAULT_SEQUENTIAL_TUNING",
    "Arm",
    "Comparison",
    "Lift",
    "Sample",
    "Verdict",
    "arm_of",
    "chance_to_win",
    "compare",
    "compare_all",
    "fixed_horizon",
    "lift",
    "mixture_rho",
    "pooled_theta",
    "required_sample_size",
    "sequential",
    "sequential_p_value",
    "srm_p_value",
    "thompson_weights",
    "verdict",
]
