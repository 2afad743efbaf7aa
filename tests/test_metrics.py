import math

import pytest

from forethought.report.metrics import accuracy_ci, wilson_interval


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


def test_accuracy_ci_many_samples_is_over_questions():
    per_q = [[True, True], [False, False], [True, False], [True, True]]
    acc, (lo, hi) = accuracy_ci(per_q)
    assert acc == pytest.approx(5 / 8)
    means = [1.0, 0.0, 0.5, 1.0]
    sd = math.sqrt(sum((m - acc) ** 2 for m in means) / 3)
    assert hi - acc == pytest.approx(1.959963984540054 * sd / 2, abs=1e-9) or hi == 1.0
    assert lo < acc < hi


def test_paired_delta_ci():
    from forethought.report.metrics import paired_delta_ci

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
