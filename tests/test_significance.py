"""The verdict rule of the study notebooks: a gap is called a result only when it passes its test."""

import numpy as np
import pytest
from scipy import stats

from mtl_core.significance import compare


def test_clear_gap_over_seeds_is_a_result_with_welchs_p():
    a, b = [5.0, 5.2, 4.9], [1.0, 1.3, 0.8]
    v = compare(a, b, "MTI-Net", "baseline")
    # Welch's t by hand: t = (5.0333 - 1.0333) / sqrt(s_a²/3 + s_b²/3)
    s2a, s2b = np.var(a, ddof=1), np.var(b, ddof=1)
    t = (np.mean(a) - np.mean(b)) / np.sqrt(s2a / 3 + s2b / 3)
    dof = (s2a / 3 + s2b / 3) ** 2 / ((s2a / 3) ** 2 / 2 + (s2b / 3) ** 2 / 2)
    p = 2 * stats.t.sf(abs(t), dof)
    assert v.separable and v.better == "MTI-Net" and v.difference == pytest.approx(4.0)
    assert f"p = {p:.2g}" in v.text and v.text.startswith("MTI-Net better than baseline")


def test_lower_is_better_flips_the_winner():
    v = compare([0.50, 0.51, 0.49], [0.70, 0.72, 0.69], "A", "B", higher_is_better=False)
    assert v.separable and v.better == "A"


def test_overlapping_seeds_are_not_separable():
    v = compare([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], "A", "B")
    assert not v.separable and v.better is None and "not separable at this budget" in v.text


def test_one_seed_without_bootstrap_is_never_a_result():
    v = compare([10.0], [0.0], "A", "B")
    assert not v.separable and "1 seed" in v.text


def test_one_seed_with_a_bootstrap_uses_the_interval_of_the_gap():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((4, 500))
    clear = compare([3.0], [1.0], boot_a=3 + 0.1 * noise[0], boot_b=1 + 0.1 * noise[1])
    assert clear.separable and clear.better == "A" and "bootstrap" in clear.text
    noisy = compare([1.1], [1.0], boot_a=1.1 + noise[2], boot_b=1.0 + noise[3])
    assert not noisy.separable


def test_a_gap_within_the_noise_floor_is_not_a_result():
    a, b = [5.0, 5.01, 5.02], [4.0, 4.01, 4.02]
    assert compare(a, b).separable
    v = compare(a, b, floor=1.5)  # e.g. the same task trained with two seeds differs by this much
    assert not v.separable and "noise floor" in v.text


def test_identical_seeds_without_spread_still_decide():
    assert compare([2.0, 2.0], [1.0, 1.0]).separable
    assert not compare([1.0, 1.0], [1.0, 1.0]).separable


def test_bad_input_is_refused_with_the_offending_values():
    with pytest.raises(ValueError, match="finite"):
        compare([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        compare([float("nan")], [1.0])
    with pytest.raises(ValueError, match="alpha"):
        compare([1.0, 2.0], [1.0, 2.0], alpha=1.5)
