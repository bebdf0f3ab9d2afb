"""The report's confidence intervals: Wilson intervals from each share's item count."""

import pytest

from razor.report import wilson


@pytest.mark.parametrize("share, n, lo, hi", [(0.5, 16, 0.28, 0.72), (0.0, 16, 0.0, 0.194), (1.0, 64, 0.943, 1.0)])
def test_wilson_interval(share, n, lo, hi):
    got = wilson(share, n)
    assert got[0] == pytest.approx(lo, abs=2e-3) and got[1] == pytest.approx(hi, abs=2e-3)
    assert got[0] <= share <= got[1]


def test_more_items_narrow_the_interval():
    assert wilson(0.1, 400)[1] - wilson(0.1, 400)[0] < wilson(0.1, 40)[1] - wilson(0.1, 40)[0]
    assert wilson(0.3, 0) == [0.0, 1.0]
