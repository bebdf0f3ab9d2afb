"""The report's confidence intervals: Wilson intervals from each share's item count."""

import pytest

from razor.report import answers, table, wilson, write_html


@pytest.mark.parametrize("share, n, lo, hi", [(0.5, 16, 0.28, 0.72), (0.0, 16, 0.0, 0.194), (1.0, 64, 0.943, 1.0)])
def test_wilson_interval(share, n, lo, hi):
    got = wilson(share, n)
    assert got[0] == pytest.approx(lo, abs=2e-3) and got[1] == pytest.approx(hi, abs=2e-3)
    assert got[0] <= share <= got[1]


def test_more_items_narrow_the_interval():
    assert wilson(0.1, 400)[1] - wilson(0.1, 400)[0] < wilson(0.1, 40)[1] - wilson(0.1, 40)[0]
    assert wilson(0.3, 0) == [0.0, 1.0]


CLIP = dict(method="razor", forget="objects:star", components=["vision.3.v", "text.0.head1"], seconds=6.6, peak_mb=780.0,
            delta_bytes=262144, before=dict(fa1=0.92, fa5=1.0, utility=0.955, stability=1.0, fa1_q4=0.92),
            after=dict(fa1=0.05, fa5=0.52, utility=0.929, stability=0.95, fa1_q4=0.03))
SD = dict(CLIP, forget="styles:noisy", before=dict(ua=0.06, ira=0.90, cra=0.85), after=dict(ua=0.94, ira=0.80, cra=0.86))


def test_the_verdict_answers_forgotten_kept_and_the_gate_against_the_gates_bounds():
    q = {row[0]: row[1:] for row in answers(CLIP, 0.10, 0.08)}
    assert q["Forgotten?"][0] is True and "0.92 → 0.05" in q["Forgotten?"][1]
    assert q["Kept?"][0] is True and "-2.6 points" in q["Kept?"][1] and q["Gate?"][0] is None
    q = {row[0]: row[1:] for row in answers(CLIP, 0.04, 0.02, dict(passed=False, why="utility 0.93 < 0.94"))}
    assert q["Forgotten?"][0] is False and q["Kept?"][0] is False and q["Gate?"] == (False, "refused: utility 0.93 < 0.94")
    q = {row[0]: row[1:] for row in answers(SD, 0.10, 0.08)}  # UA: higher is better; IRA stands for utility
    assert q["Forgotten?"][0] is True and "0.06 of the concept left" in q["Forgotten?"][1]
    assert q["Kept?"][0] is False and "-10.0 points" in q["Kept?"][1]


def test_the_html_report_opens_with_the_verdict_and_groups_metrics_by_direction(tmp_path):
    page = write_html(CLIP, {}, tmp_path / "r.html", answers=answers(CLIP, 0.10, 0.08),
                      links={"MLflow run": "http://127.0.0.1:5000/#/experiments/1/runs/abc"}).read_text()
    assert page.index("Forgotten?") < page.index("Kept?") < page.index("Gate?") < page.index("metric</th>")
    assert "href='http://127.0.0.1:5000/#/experiments/1/runs/abc'" in page
    metrics = page[page.index("metric</th>"):]
    lower, higher = metrics.index("lower is better"), metrics.index("higher is better")
    assert lower < metrics.index("top-1 (FA@1)</td>") < metrics.index("top-1 (FA@1) (4-bit)</td>") < higher
    assert higher < metrics.index("accuracy on the other labels (utility)</td>")
    text = table(CLIP)
    assert text.index("lower is better") < text.index("FA@1") < text.index("higher is better") < text.index("(utility)")
