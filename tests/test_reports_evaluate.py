"""pipeline/reports/evaluate.py: the headline statistics as HTML (the report's top) and as
markdown (what ``fnerf-pipeline evaluate`` prints)."""

from __future__ import annotations

from pipeline.evaluation import stats as S
from pipeline.reports.evaluate import headline_html, headline_markdown
from tests.test_stats import EFFECTS, make_result


def test_headline_html_tables_claims_definitions_and_few_pairs_warning():
    big = S.headline_table({"cross_instance": make_result("cross_instance", EFFECTS)},
                           None, n_boot=100)
    page = headline_html(big)
    assert "Warning" not in page
    for text in ("kp PCK@5", "part mIoU", "controls", "student_internal &gt; teacher_2d",
                 "not resolved", "object-level bootstrap", "128"):
        assert text in page, text
    assert "<script" not in page and "http" not in page
    small = S.headline_table({"cross_instance": make_result("cross_instance", EFFECTS,
                                                            n_pairs=10)}, None, n_boot=100)
    assert small["few"]
    assert "Warning" in headline_html(small)


def test_headline_markdown_lists_estimates_and_verdicts():
    table = S.headline_table({"cross_instance": make_result("cross_instance", EFFECTS)},
                             "official", n_boot=100)
    md = headline_markdown(table, ("kp PCK@5",))
    assert "**kp PCK@5**" in md and "part mIoU" not in md.split("| metric |")[0]
    assert "| cross_instance |" in md and "pixel_xy (control)" in md
    assert "student_internal - teacher_2d" in md and "student_internal > teacher_2d" in md
