"""The HTML report: the verdict first, what changed, one column per knob, plots that cannot mislead."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from autoscout_plugin.report.evidence import best_so_far, measured_effects, noise, prediction_error
from autoscout_plugin.report.html import render_html, write_report
from autoscout_plugin.report.plots import Chart, nice_axis
from autoscout_plugin.report.result import PairedComparison, TuneResult
from autoscout_plugin.report.verdict import make_verdict
from autoscout_plugin.trial import Trial

YOURS = {"micro_batch_size": 8, "num_threads": 2, "precision": "fp32"}


def trial(number: int, fidelity: str = "F2", value: float | None = 10.0, **config: object) -> Trial:
    status = "ok" if value is not None else "error"
    error = None if value is not None else "torch._dynamo.exc.Unsupported: cannot trace <scan>"
    return Trial(config={**YOURS, **config}, value=value, status=status, error=error, number=number,
                 fidelity=fidelity, cost_s=2.0, predicted=None if number == 0 else 11.0)


def applied_result() -> TuneResult:
    best = {**YOURS, "micro_batch_size": 16}
    trials = [trial(0), trial(1, value=None, precision="bf16"), trial(2, value=12.0, micro_batch_size=16),
              trial(3, "F3", 9.8), trial(4, "F3", 12.1, micro_batch_size=16),
              trial(5, "F3", 12.4, micro_batch_size=16), trial(6, "F3", 10.2)]
    return TuneResult(best_config=best, best_value=12.25, baseline_config=dict(YOURS), baseline_value=10.0,
                      trials=trials, importances={"precision": 0.7, "micro_batch_size": 0.2, "num_workers": 0.1},
                      tuning_s=14.0, wall_s=16.0, pinned={"max_steps": 300}, derived={"grad_accum": 1},
                      paired=[PairedComparison(config=best, reference=dict(YOURS), ratios=[12.1 / 9.8, 12.4 / 10.2])])


NOTES = {"pinned": {"max_steps": "Trainer(max_steps=300)"}, "tuned": ["micro_batch_size", "precision"],
         "applied": {**YOURS, "micro_batch_size": 16, "grad_accum": 1}}


def test_the_verdict_names_the_change_the_paired_ratio_and_its_spread() -> None:
    v = make_verdict(applied_result(), NOTES)
    assert v.decision == "applied" and v.basis == "paired" and v.rounds == 2
    assert v.sentence == ("Applied: micro_batch_size 8 → 16, 1.23x faster than your settings (paired measurement"
                          " over 2 rounds, 1.22–1.23x), found in 7 trials / 14 s.")
    assert [(c.knob, c.yours, c.applied, c.follows) for c in v.changes] == [("micro_batch_size", 8, 16, False)]
    assert v.pinned == [("max_steps", 300, "Trainer(max_steps=300)")]


def test_a_kept_verdict_says_why_every_way_it_can_happen() -> None:
    r = applied_result()
    r.best_config, r.paired[0].ratios = dict(YOURS), [0.97, 0.99]
    kept = make_verdict(r, {"applied": dict(YOURS)})
    assert kept.decision == "kept" and kept.speedup == 1.0 and not kept.changes
    assert kept.sentence.startswith("Kept your settings: nothing measured faster than your settings (the best"
                                    " candidate ran 0.98x in paired measurement, rounds 0.97–0.99x), 7 trials")
    failed = TuneResult(best_config=None, trials=[trial(0, value=None), trial(1, value=None, num_threads=1)])
    assert make_verdict(failed, {"applied": None}).sentence.startswith("Kept your settings: every trial failed")
    broken = TuneResult(best_config=None, stop_reason="the trial store failed: disk full")
    assert make_verdict(broken).sentence == "Kept your settings: the trial store failed: disk full."
    advice = make_verdict(r, {"applied": dict(YOURS), "recommended": {**YOURS, "num_threads": 1}})
    assert advice.sentence == ("Kept your settings: the fastest config needs the script relaunched, and relaunching"
                               " is off, 7 trials / 14 s. Recommended for your next launch: num_threads 2 → 1.")
    reused = TuneResult(best_config={**YOURS, "num_threads": 1}, baseline_config=dict(YOURS), reused=True)
    assert make_verdict(reused).sentence.startswith("Applied the stored winner for this workload and machine:"
                                                    " num_threads 2 → 1 (0 trials")


def test_an_unconfirmed_winner_says_so_and_a_slower_one_is_called_slower() -> None:
    r = applied_result()
    r.paired = []
    assert "1.22x faster than your settings (short profiles, not confirmed)" in make_verdict(r).sentence
    r.trials[2].value = 5.0
    for t in r.trials[3:]:
        t.value = 5.0 if t.config["micro_batch_size"] == 16 else 10.0
    assert "2.00x slower than your settings" in make_verdict(r).sentence


def test_the_page_puts_the_verdict_first_and_the_json_carries_the_same(tmp_path: Path) -> None:
    json_path, html_path = write_report(applied_result(), tmp_path / "r", notes=NOTES)
    page, data = html_path.read_text(encoding="utf-8"), json.loads(json_path.read_text(encoding="utf-8"))
    body = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    first = re.search(r"<h1>.*?</h1>\s*<p id='verdict' class='verdict (\w+)'>(.*?)</p>", body, flags=re.S)
    assert first is not None, "the verdict is not the first thing under the title"
    assert first.group(1) == data["verdict"]["decision"] == "applied"
    assert first.group(2) == data["verdict"]["sentence"].replace("→", "→")
    assert "pinned by Trainer(max_steps=300)" in page and "{" not in re.sub(r"<(style|script)>.*?</\1>", "", body,
                                                                              flags=re.S)


def test_the_trials_table_has_a_column_per_varied_knob_and_marks_what_differs_from_yours() -> None:
    page = render_html(applied_result(), notes=NOTES)
    header = re.search(r"<table class='trials sortable'><colgroup>.*?</colgroup><thead><tr>(.*?)</tr>", page).group(1)
    columns = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>(.*?)</th>", header)]
    assert columns == ["#", "fidelity", "status", "micro_batch_size", "precision", "samples/s", "predicted",
                       "cost s", "reason"]  # num_threads never varied: said once above the table
    assert "Same in every trial: num_threads = 2." in page
    assert page.count("<td class='diff'") == 4  # bf16 once, micro-batch 16 three times
    assert "title='bf16 (your value: fp32)'>bf16</td>" in page
    assert ">unsupported</td>" in page and "torch._dynamo.exc.Unsupported: cannot trace &lt;scan&gt;" in page


def test_every_plot_has_a_real_range_even_when_all_values_are_equal() -> None:
    flat = TuneResult(best_config=dict(YOURS), best_value=10.2, baseline_config=dict(YOURS), baseline_value=10.2,
                      trials=[trial(0, value=10.2), trial(1, "F3", 10.2)])
    for page in (render_html(flat), render_html(TuneResult(best_config=None)), render_html(applied_result())):
        plots = re.findall(r'<svg class="plot"[^>]*>', page)
        assert len(plots) == 5
        for svg in plots:
            for axis in ("x", "y"):
                lo, hi = (re.search(rf'data-{axis}-{end}="([^"]+)"', svg) for end in ("min", "max"))
                if lo is not None:
                    assert float(lo.group(1)) < float(hi.group(1)), svg


def test_measured_effects_are_kept_apart_from_the_models_opinion() -> None:
    page = render_html(applied_result(), notes=NOTES)
    effects = measured_effects(applied_result())
    assert [(e.knob, e.before, e.after) for e in effects] == [("micro_batch_size", 8, 16)]
    assert math.isclose(effects[0].ratio, 12.0 / 10.0)
    assert "The cost model&#x27;s prior (not measured)" in page and "num_workers (never varied)" in page
    assert "micro_batch_size: 8 → 16" in page and "+20.0%" in page


def test_noise_and_prediction_error_come_from_this_runs_repeats() -> None:
    r = applied_result()
    assert math.isclose(noise(r), max(abs(v / (10.0 + 9.8 + 10.2) * 3 - 1) for v in (10.0, 9.8, 10.2)))
    error, count = prediction_error(r)
    assert count == 5 and math.isclose(error, statistics.median(abs(11 / v - 1) for v in (12.0, 9.8, 12.1, 12.4, 10.2)))
    assert noise(TuneResult(best_config=None, trials=[trial(0)], baseline_config=dict(YOURS))) is None


def test_best_so_far_counts_confirmation_seconds_but_not_their_values() -> None:
    numbers, seconds, best = best_so_far(applied_result())
    assert numbers == [1, 2, 3, 4, 5, 6, 7] and seconds == [2, 4, 6, 8, 10, 12, 14]
    assert best == [10.0, 10.0, 12.0, 12.0, 12.0, 12.0, 12.0]


@given(st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=1, max_size=30),
       st.booleans(), st.booleans())
def test_an_axis_is_never_a_point_and_holds_every_value(values: list[float], zero: bool, integer: bool) -> None:
    axis = nice_axis(values, zero=zero, integer=integer)
    slack = 1e-6 * (axis.hi - axis.lo)  # far below a pixel
    assert axis.lo < axis.hi and axis.lo <= min(values) + slack and axis.hi >= max(values) - slack
    labels = [axis.label(t) for t in axis.ticks]
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels


def test_an_empty_chart_still_has_axes_and_says_there_is_nothing() -> None:
    svg = Chart("Best so far by trial", "trial", "samples/s").render()
    assert 'data-x-min="' in svg and "no successful measurement to plot" in svg


def test_the_same_change_seen_in_several_contexts_is_one_pooled_effect() -> None:
    r = TuneResult(best_config=None, baseline_config=dict(YOURS), trials=[
        trial(0, value=10.0), trial(1, value=20.0, num_threads=1),  # 2 -> 1 doubles the speed here
        trial(2, value=10.0, precision="bf16"), trial(3, value=5.0, precision="bf16", num_threads=1),  # halves here
        trial(4, value=30.0, num_threads=4)])
    effects = {e.label: e for e in measured_effects(r)}
    assert set(effects) == {"num_threads: 2 → 1 (2 pairs)", "num_threads: 2 → 4", "num_threads: 1 → 4",
                            "precision: fp32 → bf16 (2 pairs)"}
    assert math.isclose(effects["num_threads: 2 → 1 (2 pairs)"].ratio, 1.0)  # geometric mean of 2x and 0.5x
    assert effects["num_threads: 2 → 1 (2 pairs)"].pairs == ((0, 1), (2, 3))
    assert math.isclose(effects["precision: fp32 → bf16 (2 pairs)"].ratio, math.sqrt(1.0 * 0.25))


def test_the_plot_caption_says_which_measurement_decided() -> None:
    r = applied_result()
    assert "paired confirmation instead (F3 rings, compared round by round): 1.23x." in render_html(r, notes=NOTES)
    r.best_config, r.paired[0].ratios = dict(YOURS), [0.97, 0.99]
    kept = render_html(r, notes={"applied": dict(YOURS)})
    assert "the best candidate ran 0.98x your settings." in kept
    r.paired = []
    assert "The verdict compares the mean short-profile speeds." in render_html(r, notes={"applied": dict(YOURS)})
