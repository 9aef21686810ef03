"""When may a study call one result better than another? The verdict rule of the study notebooks.

    verdict = compare(dm_per_seed["MTI-Net"], dm_per_seed["MTL baseline"], "MTI-Net", "MTL baseline")
    verdict.text   # 'MTI-Net better than MTL baseline (Welch t over 3 and 3 seeds, p = 0.004)' or
                   # 'MTI-Net vs MTL baseline: not separable at this budget (...)'

A gap is a result only when it passes a stated test:
- several seeds on both sides: Welch's t-test over the per-seed values (unequal variances), two-sided,
  at level `alpha` (default 0.05);
- one seed on a side, with bootstrap replicates of both values (e.g. resampled validation images): the
  gap's 1 - alpha percentile interval must exclude 0;
- otherwise (one seed, no bootstrap) nothing can be told apart: "not separable at this budget".
A noise floor (e.g. the same network trained with two seeds, or untrained networks) can be given as
`floor`: a gap no larger than it is never called a result, whatever the test says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Verdict:
    difference: float  # mean(a) - mean(b), in the metric's units
    separable: bool  # the gap passed the test (and exceeds the noise floor, if one was given)
    better: str | None  # the name of the better side when separable, else None
    method: str  # how it was decided, for the text
    text: str  # one line for a table or a conclusion


def compare(a: Sequence[float], b: Sequence[float], name_a: str = "A", name_b: str = "B",
            higher_is_better: bool = True, alpha: float = 0.05, boot_a: Sequence[float] | None = None,
            boot_b: Sequence[float] | None = None, floor: float | None = None) -> Verdict:
    """The verdict on `a` vs `b` (per-seed values of one metric, or of Δm); see the module's rule."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not (0 < alpha < 1):
        raise ValueError(f"alpha={alpha}: must be in (0, 1)")
    if a.size == 0 or b.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"compare: need finite values on both sides, got {name_a}={a}, {name_b}={b}")
    difference = float(a.mean() - b.mean())
    if a.size >= 2 and b.size >= 2:
        if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread at all: the t statistic is undefined
            p = 0.0 if difference != 0 else 1.0
        else:
            p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        passed = p < alpha
        method = f"Welch t over {a.size} and {b.size} seeds, p = {p:.2g}"
    elif boot_a is not None and boot_b is not None:
        gap = np.asarray(boot_a, dtype=float) - np.asarray(boot_b, dtype=float)
        low, high = np.percentile(gap, [50 * alpha, 100 - 50 * alpha])
        passed = bool(low > 0 or high < 0)
        method = f"bootstrap, {100 * (1 - alpha):.0f}% interval of the gap [{low:.3g}, {high:.3g}]"
    else:
        passed = False
        method = f"{min(a.size, b.size)} seed, no spread measured"
    if passed and floor is not None and abs(difference) <= floor:
        passed = False
        method += f"; gap {abs(difference):.3g} within the noise floor {floor:.3g}"
    if not passed:
        return Verdict(difference, False, None, method,
                       f"{name_a} vs {name_b}: not separable at this budget ({method})")
    a_wins = (difference > 0) == higher_is_better
    better, worse = (name_a, name_b) if a_wins else (name_b, name_a)
    return Verdict(difference, True, better, method, f"{better} better than {worse} ({method})")
