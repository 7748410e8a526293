"""The framework-free half of inference tuning: requests, statistics, objectives, SLO choice, the front."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

from autoscout_plugin.report.html import write_inference_report
from autoscout_plugin.serving import (
    InferenceOptions,
    InferenceResult,
    RequestMix,
    Selection,
    batches,
    cost_per_million_tokens,
    objective_value,
    pareto_front,
    percentile,
    select,
)


def _trial(tps: float, p99: float, p50: float | None = None, mem: float | None = None, **config) -> dict:
    metrics = {"tokens_per_s": tps, "latency_p99_s": p99, "latency_p50_s": p50 or p99 * 0.8}
    if mem is not None:
        metrics["peak_mem_mb"] = mem
    return {"config": config, "status": "ok", "metrics": metrics}


def test_pareto_front_matches_brute_force_on_a_synthetic_objective() -> None:
    rng = random.Random(7)
    # a synthetic serving curve: bigger batches raise throughput and latency, with noise
    trials = [_trial(tps=100 * b ** 0.6 * rng.uniform(0.8, 1.2), p99=0.05 * b ** 0.8 * rng.uniform(0.8, 1.2),
                     batch_size=b, n=i) for i, b in enumerate(rng.choice([1, 2, 4, 8, 16, 32]) for _ in range(40))]
    front = pareto_front(trials)
    ids = {id(t) for t in front}
    for t in trials:  # brute force: on the front iff nobody is at least as good on both and better on one
        dominated = any(o["metrics"]["tokens_per_s"] >= t["metrics"]["tokens_per_s"]
                        and o["metrics"]["latency_p99_s"] <= t["metrics"]["latency_p99_s"]
                        and (o["metrics"]["tokens_per_s"] > t["metrics"]["tokens_per_s"]
                             or o["metrics"]["latency_p99_s"] < t["metrics"]["latency_p99_s"]) for o in trials)
        assert (id(t) in ids) == (not dominated)
    lat = [t["metrics"]["latency_p99_s"] for t in front]
    tps = [t["metrics"]["tokens_per_s"] for t in front]
    assert lat == sorted(lat) and tps == sorted(tps)  # along the front, more latency buys more throughput
    assert len(front) >= 2


def test_slo_constrained_selection_and_objectives() -> None:
    trials = [_trial(100, 0.10, 0.05, batch_size=1), _trial(300, 0.25, 0.20, batch_size=4),
              _trial(350, 0.60, 0.30, mem=900, batch_size=8)]
    assert select(trials, "throughput").trial["config"] == {"batch_size": 8}
    assert select(trials, "throughput", slo_p99_s=0.3).trial["config"] == {"batch_size": 4}
    assert select(trials, "throughput", memory_cap_mb=500).trial["config"] == {"batch_size": 4}
    assert select(trials, "latency_p99").trial["config"] == {"batch_size": 1}
    assert select(trials, "latency_p50").trial["config"] == {"batch_size": 1}
    cost = select(trials, "cost", price_per_hour=3.6)
    assert cost.trial["config"] == {"batch_size": 8} and "$2.857 per M tokens" in cost.reason
    assert select(trials, "pareto").trial["config"] == {"batch_size": 4}


def test_an_slo_no_config_meets_is_an_answer_not_an_exception() -> None:
    trials = [_trial(100, 0.10, batch_size=1), _trial(300, 0.25, batch_size=4)]
    choice = select(trials, "throughput", slo_p99_s=0.01)
    assert choice.trial is None and choice.closest["config"] == {"batch_size": 1}
    assert "p99 SLO of 10.0 ms" in choice.reason and "fastest measured p99 is 100.0 ms" in choice.reason
    assert select([], "throughput").trial is None


def test_objective_values_penalise_broken_constraints() -> None:
    m = {"tokens_per_s": 200.0, "latency_p50_s": 0.1, "latency_p99_s": 0.2, "peak_mem_mb": 1000.0}
    assert objective_value(m, "throughput") == 200.0
    assert objective_value(m, "latency_p99") == pytest.approx(5.0)
    assert objective_value(m, "throughput", slo_p99_s=0.1) == pytest.approx(200.0 / 16)
    assert objective_value(m, "throughput", memory_cap_mb=500) == pytest.approx(200.0 / 16)
    base = {"tokens_per_s": 100.0, "latency_p50_s": 0.1, "latency_p99_s": 0.1}
    assert objective_value(m, "pareto", baseline=base) == pytest.approx(1.0)
    assert cost_per_million_tokens(0.0, 1.0) == float("inf")


def test_request_mix_batches_and_percentiles() -> None:
    mix = RequestMix(n=50, prompt_len=[16, 32], output_len=(4, 8), seed=3)
    assert mix.requests() == mix.requests() and len(mix.requests()) == 50
    assert {p for p, _ in mix.requests()} == {16, 32} and all(4 <= o <= 8 for _, o in mix.requests())
    groups = batches(mix.requests(), 8)
    assert [len(g) for g in groups] == [8] * 6 + [2] and list(itertools.chain(*groups)) == list(range(50))
    capped = batches(mix.requests(), 8, max_batch_tokens=100)
    assert all(len(g) * max(sum(mix.requests()[i]) for i in g) <= 100 or len(g) == 1 for g in capped)
    assert percentile([3.0], 99) == 3.0 and percentile([1, 2, 3, 4, 5], 0) == 1
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"objective": "speed"}, "objective 'speed' is unknown"),
    ({"slo_p99_s": 0}, "slo_p99_s must be a positive number, got 0"),
    ({"memory_cap_mb": -5}, "memory_cap_mb must be a positive number"),
    ({"objective": "cost"}, "objective='cost' needs price_per_hour"),
    ({"max_trials": 0}, "max_trials must be an int >= 1, got 0"),
    ({"include": ("batch_size", "beam_width")}, "unknown inference knob 'beam_width'"),
    ({"include": ("batch_size",), "pin": {"batch_size": 4}}, "'batch_size' is both pinned and listed"),
    ({"min_agreement": 0}, "min_agreement must be in"),
])
def test_bad_options_are_refused_with_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InferenceOptions(**kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 0}, "n must be an integer from 1 to 100000, got 0"), ({"n": True}, "got True"),
    ({"prompt_len": 0}, "prompt_len must be an int >= 1"),
    ({"output_len": (8, 4)}, "output_len range"), ({"prompt_len": "long"}, "prompt_len must be"),
])
def test_bad_request_mixes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RequestMix(**kwargs)


def test_result_table_json_and_report(tmp_path) -> None:
    trials = [_trial(100, 0.10, batch_size=1), _trial(300, 0.25, batch_size=4), _trial(250, 0.5, batch_size=8)]
    choice = select(trials, "throughput")
    result = InferenceResult("throughput", trials, trials[0], choice, pareto_front(trials), tuning_s=3.0)
    assert result.speedup() == pytest.approx(3.0) and result.speedup("latency_p99_s") == pytest.approx(0.4)
    assert result.best_config == {"batch_size": 4} and result.generate_kwargs() == {}
    assert "throughput: 300 tok/s vs 100 tok/s for the default (3.00x more)" in result.table()
    json_path, html_path = write_inference_report(result, tmp_path / "inf")
    page = html_path.read_text()
    assert "<svg" in page and "Latency / throughput front" in page and page.count("<circle") >= 3
    data = json.loads(json_path.read_text())
    assert data["speedup_tokens_per_s"] == 3.0 and data["verdict"] == result.verdict()


def _result(default: dict, chosen: dict | None, *others: dict, objective: str = "pareto", tuning_s: float = 42.0,
            reason: str = "best pareto of the measured configurations", **options) -> InferenceResult:
    trials = [default] + ([chosen] if chosen is not None and chosen is not default else []) + list(others)
    ok = [t for t in trials if t["status"] == "ok"]
    return InferenceResult(objective, trials, default, Selection(chosen, reason), pareto_front(ok), options=options,
                           tuning_s=tuning_s)


def _lines(result: InferenceResult) -> list[str]:
    return result.table().splitlines()


def _marks(result: InferenceResult) -> dict[str, str]:
    """Each trial row's config (its first setting) and its two mark columns."""
    return {line[4:].split()[0].rstrip(","): line[:3] for line in _lines(result) if line[4:].startswith("batch_size=")}


def test_the_summary_states_measured_values_and_which_way_they_moved() -> None:
    # the user's case: a pareto choice with more throughput and a longer p99 than the default
    default = _trial(300, 0.104, batch_size=1, kv_cache="dynamic")
    chosen = _trial(512, 0.281, batch_size=8, kv_cache="static")
    result = _result(default, chosen)
    assert result.speedup("latency_p99_s") == pytest.approx(0.104 / 0.281)  # a gain: >1 is better, unchanged
    lines = _lines(result)
    assert "throughput: 512 tok/s vs 300 tok/s for the default (1.71x more)" in lines
    assert "p99 latency: 281 ms vs 104 ms for the default (2.70x longer)" in lines
    assert "0.37" not in result.table() and not re.search(r"x the default(?!')", result.table())
    # the other directions, and a difference within 0.5% is no difference
    faster = _result(default, _trial(150, 0.052, batch_size=2, kv_cache="dynamic"), objective="latency_p99")
    assert "throughput: 150 tok/s vs 300 tok/s for the default (2.00x less)" in _lines(faster)
    assert "p99 latency: 52 ms vs 104 ms for the default (2.00x shorter)" in _lines(faster)
    same = _result(default, _trial(301, 0.1044, batch_size=2, kv_cache="dynamic"))
    assert "throughput: 301 tok/s vs 300 tok/s for the default (same)" in _lines(same)
    assert "p99 latency: 104 ms vs 104 ms for the default (same)" in _lines(same)
    small = _result(_trial(9000, 0.0021, batch_size=1), _trial(12500, 0.00123, batch_size=4))
    assert "p99 latency: 1.23 ms vs 2.1 ms for the default (1.71x shorter)" in _lines(small)
    assert small.comparison("tokens_per_s") == "throughput: 12500 tok/s vs 9000 tok/s for the default (1.39x more)"
    failed_default = {"config": {"batch_size": 1}, "status": "error", "metrics": {}, "error": "boom"}
    assert _result(failed_default, chosen).comparison("latency_p99_s") is None


def test_the_chosen_and_front_marks_are_separate_columns() -> None:
    default = _trial(100, 0.10, batch_size=1)  # on the front, not chosen
    chosen = _trial(300, 0.25, batch_size=4)  # on the front and chosen
    dominated = _trial(250, 0.5, batch_size=8)
    off_front_choice = _trial(90, 0.3, batch_size=3)
    failed = {"config": {"batch_size": 16}, "status": "oom", "metrics": {}, "error": "out of memory"}
    result = _result(default, chosen, dominated, failed)
    marks = _marks(result)
    assert marks == {"batch_size=1": "  f", "batch_size=4": "* f", "batch_size=8": "   ", "batch_size=16": "   "}
    assert "marks: * chosen (first column), f on the latency/throughput front (second column" in result.table()
    # a choice off the front (an SLO can force one) keeps its * and gets no f
    forced = _result(default, off_front_choice, chosen, objective="throughput")
    assert _marks(forced) == {"batch_size=1": "  f", "batch_size=3": "*  ", "batch_size=4": "  f"}


def test_the_verdict_says_what_was_decided_and_why_and_leads_the_summary() -> None:
    default = _trial(300, 0.104, batch_size=1, kv_cache="dynamic")
    chosen = _trial(512, 0.281, batch_size=8, kv_cache="static")
    other = _trial(200, 0.5, batch_size=2, kv_cache="dynamic")
    result = _result(default, chosen, other, *[_trial(100, 1.0, batch_size=k) for k in (3, 4, 5)])
    verdict = result.verdict()
    assert verdict == ("Chose batch_size 1 → 8, kv_cache dynamic → static (objective pareto): throughput 1.71x"
                       " the default's, p99 latency 281 ms vs 104 ms (2.70x longer), in 6 trials / 42 s.")
    assert result.verdict() == verdict and result.to_json()["verdict"] == verdict  # a pure function of the result
    table = result.table()
    assert table.splitlines()[0] == verdict and table.count(verdict) == 1

    kept = _result(default, default, other, objective="throughput", tuning_s=3.25, slo_p99_s=0.2)
    assert "for the default" not in kept.table()  # no comparison of the default with itself
    assert kept.verdict() == ("Kept the default settings: batch_size=1, kv_cache=dynamic (objective throughput, "
                              "p99 SLO 200 ms): none of the 1 other measured configuration did better, in 2 trials /"
                              " 3.2 s.")
    p50 = _result(default, _trial(300.5, 0.05, 0.02, batch_size=2, kv_cache="dynamic"), objective="latency_p50")
    assert p50.verdict().startswith("Chose batch_size 1 → 2 (objective latency_p50): throughput the "
                                    "same as the default's, p50 latency 20 ms vs 83.2 ms (4.16x shorter), p99 latency"
                                    " 50 ms vs 104 ms (2.08x shorter)")

    reason = "no measured configuration meets the p99 SLO of 10.0 ms (the fastest measured p99 is 104.0 ms)"
    none = _result(default, None, other, reason=reason, slo_p99_s=0.01)
    assert none.verdict() == f"No choice: {reason} (in 2 trials / 42 s)."
    assert none.table().splitlines()[0] == none.verdict() and none.to_json()["verdict"] == none.verdict()
    assert none.table().count("No choice") == 1

    failed_default = {"config": {"batch_size": 1}, "status": "error", "metrics": {}, "error": "boom"}
    lone = _result(failed_default, chosen)
    assert lone.verdict() == ("Chose batch_size 1 → 8 (objective pareto): throughput 512 tok/s, p99 "
                              "latency 281 ms; the default settings failed (error), so there is nothing to compare "
                              "with, in 2 trials / 42 s.")
