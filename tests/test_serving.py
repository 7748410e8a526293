"""The framework-free half of inference tuning: requests, statistics, objectives, SLO choice, the front."""

from __future__ import annotations

import itertools
import random

import pytest

from autoscout_plugin.report.html import write_inference_report
from autoscout_plugin.serving import (
    InferenceOptions,
    InferenceResult,
    RequestMix,
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
    assert "throughput: 3.00x the default" in result.table()
    json_path, html_path = write_inference_report(result, tmp_path / "inf")
    page = html_path.read_text()
    assert "<svg" in page and "Latency / throughput front" in page and page.count("<circle") >= 3
    assert '"speedup_tokens_per_s": 3.0' in json_path.read_text()
