import math

import pytest

from forethought.stats import accuracy_ci, wilson_interval


def test_wilson_matches_textbook_value():
    # 8/10: Wilson 95% interval is about [0.490, 0.943]
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3)
    assert hi == pytest.approx(0.9433, abs=1e-3)


def test_wilson_edges_stay_in_unit_interval():
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(0, 5)[1] > 0.0
    assert wilson_interval(5, 5)[1] == pytest.approx(1.0) and wilson_interval(5, 5)[0] < 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_interval_shrinks_with_more_data():
    small = wilson_interval(5, 10)
    large = wilson_interval(500, 1000)
    assert (large[1] - large[0]) < (small[1] - small[0])


def test_accuracy_ci_single_sample_uses_wilson():
    acc, ci = accuracy_ci([[True], [False], [True], [True]])
    assert acc == 0.75
    assert ci == wilson_interval(3, 4)


def test_accuracy_ci_many_samples_is_a_normal_interval_over_question_means():
    # 5 questions x 3 samples, correct 3, 2, 1, 0, 2 times: accuracy 8/15, per-question means 1, 2/3, 1/3, 0, 2/3.
    # Deviations from 8/15 are 7/15, 2/15, -3/15, -8/15, 2/15; squares sum to 130/225, so the sample variance is
    # 130/225/4 = 0.14444 and the standard error sqrt(0.14444/5) = 0.169967; half-width 1.959964 * 0.169967 = 0.333130.
    per_q = [[True] * 3, [True, True, False], [False, True, False], [False] * 3, [True, False, True]]
    acc, (lo, hi) = accuracy_ci(per_q)
    assert acc == pytest.approx(8 / 15, abs=1e-12)
    assert lo == pytest.approx(0.2002035132, abs=1e-9)
    assert hi == pytest.approx(0.8664631534, abs=1e-9)
    # not the Wilson interval of the 45 samples taken as independent (that one is narrower: about 0.39 to 0.67)
    assert wilson_interval(24, 45)[0] > lo + 0.15


def test_accuracy_ci_normal_interval_is_clipped_to_the_unit_interval():
    # accuracy 5/8, means 1, 0, 0.5, 1: variance 0.6875/3, standard error sqrt(0.229167/4) = 0.239357, half 0.469131
    acc, (lo, hi) = accuracy_ci([[True, True], [False, False], [True, False], [True, True]])
    assert acc == 5 / 8
    assert lo == pytest.approx(0.1558693377, abs=1e-9)
    assert hi == 1.0  # 0.625 + 0.469131 = 1.094 is cut at 1
    # one question with several samples gives no spread to measure: the whole unit interval
    assert accuracy_ci([[True, False, True]]) == (pytest.approx(2 / 3), (0.0, 1.0))
    assert accuracy_ci([]) == (0.0, (0.0, 1.0))


def test_paired_delta_ci():
    from forethought.stats import paired_delta_ci

    before = {str(i): [i < 2] for i in range(10)}  # 2/10
    after = {str(i): [i < 8] for i in range(10)}  # 8/10, every earlier success kept
    delta, (lo, hi) = paired_delta_ci(before, after)
    assert delta == pytest.approx(0.6)
    diffs = [0, 0] + [1] * 6 + [0, 0]
    sd = math.sqrt(sum((d - 0.6) ** 2 for d in diffs) / 9)
    assert lo == pytest.approx(0.6 - 1.959963984540054 * sd / math.sqrt(10))
    assert lo > 0 and hi < 1
    # no change at all: interval collapses on zero
    assert paired_delta_ci(before, before) == (0.0, (0.0, 0.0))
    # only shared ids count
    assert paired_delta_ci({"a": [True]}, {"b": [False]})[0] == 0.0
