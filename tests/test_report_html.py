"""The HTML report: a self-contained page whose plots follow the trials."""

from __future__ import annotations

import json
from pathlib import Path

from autoscout_plugin.report.html import best_so_far, render_html, write_report
from autoscout_plugin.report.result import TuneResult
from autoscout_plugin.trial import Trial


def result() -> TuneResult:
    trials = [Trial(config={"num_threads": 1}, value=10.0, cost_s=2.0, predicted=12.0, number=0),
              Trial(config={"num_threads": 2}, status="oom", cost_s=1.0, error="out of memory", number=1),
              Trial(config={"num_threads": 4}, value=30.0, cost_s=3.0, predicted=25.0, number=2)]
    return TuneResult(best_config={"num_threads": 4}, best_value=30.0, baseline_config={"num_threads": 1},
                      baseline_value=10.0, trials=trials, importances={"num_threads": 1.0}, tuning_s=6.0)


def test_best_so_far_counts_failed_trials_in_seconds_but_not_in_value() -> None:
    numbers, seconds, best = best_so_far(result())
    assert numbers == [1.0, 2.0, 3.0] and seconds == [2.0, 3.0, 6.0] and best == [10.0, 10.0, 30.0]


def test_the_page_has_four_plots_the_trials_and_escaped_text() -> None:
    r = result()
    r.trials[1].error = "<script>alert(1)</script>"
    page = render_html(r, notes={"applied": {"num_threads": 4}})
    assert page.count("<svg") == 4 and "<script>" not in page and "&lt;script&gt;" in page
    assert "speed-up 3.00x" in page and "applied" in page


def test_an_empty_result_still_renders(tmp_path: Path) -> None:
    json_path, html_path = write_report(TuneResult(best_config=None), tmp_path / "r.html")
    assert json_path.name == "r.json" and html_path.read_text().count("<svg") == 4
    assert json.loads(json_path.read_text())["best_config"] is None
