"""HybridSearch behaviour beyond the shared ask/tell contract: F0 use and F0's earned trust, failure
classes (exclusions, the memory boundary, regions), knob prioritisation, cost-awareness and the per-arm
skopt refinement."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from autoscout_plugin.costmodel import CostModel, Efficiency, Hardware, Workload
from autoscout_plugin.failures import Exclusion
from autoscout_plugin.search.base import SearchExhausted
from autoscout_plugin.search.ensemble import AdditiveRidge, SurrogateEnsemble
from autoscout_plugin.search.hybrid import HybridSearch, expected_improvement, failure_regions
from autoscout_plugin.space import Bool, Categorical, Condition, Float, GlobalBatch, Implies, Int, MaxProduct, Space
from autoscout_plugin.trial import Trial

WORKLOAD = Workload(family="transformer", n_layer=2, d_model=128, n_head=2, vocab=8192, seq_len=64, global_batch=32)
HARDWARE = Hardware(kind="cpu", cores=2, mem_gb=24, bf16=True)


def cpu_space(extra: tuple = ()) -> Space:
    return Space([
        Categorical(name="strategy", choices=("single", "ddp", "fsdp"), structural=True),
        Int(name="num_processes", choices=(1, 2), structural=True),
        Categorical(name="precision", choices=("32-true", "bf16-mixed"), structural=True),
        Categorical(name="compile", choices=("off", "default"), structural=True),
        Bool("activation_checkpointing", structural=True),
        Int(name="micro_batch_size", choices=(4, 8, 16, 32), log=True),
        Int(name="num_threads", choices=(1, 2)),
        *extra,
    ], [GlobalBatch(32), Implies("strategy", ("single",), "num_processes", (1,)),
        Implies("strategy", ("ddp", "fsdp"), "num_processes", (2,)),
        MaxProduct(("num_threads", "num_processes"), 2, "cores")])


def truth_model(**changes: float) -> CostModel:
    """A hidden 'machine': the cost model with different efficiency factors than the search assumes."""
    return CostModel(WORKLOAD, HARDWARE, replace(Efficiency(), **changes))


DYNAMO_ERROR = ("torch._dynamo.exc.TorchRuntimeError: RuntimeError when making fake tensor call Explanation:"
                " Dynamo failed to run FX node with fake tensors")


def run(search: HybridSearch, truth: CostModel, n: int, fails=lambda c: False, error: str = "boom") -> list[Trial]:
    out = []
    for _ in range(n):
        config = search.ask()
        if fails(config):
            trial = Trial(config=config, status="error", cost_s=10.0, error=error)
        else:
            est = truth.estimate(config)
            compiled = config["compile"] != "off"
            trial = Trial(config=config, value=est.samples_per_s, cost_s=5 + 5 * est.step_s + (20 if compiled else 0))
        search.tell(trial)
        out.append(trial)
    return out


def oracle(space: Space, truth: CostModel, fails=lambda c: False) -> float:
    return max(truth.estimate(c).samples_per_s for c in space.enumerate() if not fails(c))


def test_f0_finds_near_optimum_within_five_trials_when_the_machine_differs_from_the_prior():
    space = cpu_space()
    truth = truth_model(bf16_matmul_speedup=1.2, compile_elementwise_speedup=1.1, flops_per_core=20e9)
    reached = []
    for seed in range(5):
        trials = run(HybridSearch(space, seed=seed, cost_model=CostModel(WORKLOAD, HARDWARE)), truth, 8)
        best = np.maximum.accumulate([t.value or 0.0 for t in trials])
        target = 0.95 * oracle(space, truth)
        reached.append(int(np.argmax(best >= target)) + 1 if best[-1] >= target else 99)
    assert sorted(reached)[2] <= 5, reached


def test_without_f0_search_still_improves_on_its_first_trial():
    space = cpu_space()
    truth = truth_model()
    trials = run(HybridSearch(space, seed=0), truth, 12)
    assert trials[0].config == space.default()
    assert max(t.value for t in trials) > 1.3 * trials[0].value


def test_failed_region_is_avoided_after_it_is_identified():
    space = cpu_space()
    truth = truth_model()

    def fails(c):
        return c["strategy"] == "fsdp" and c["compile"] != "off"

    search = HybridSearch(space, seed=0, cost_model=CostModel(WORKLOAD, HARDWARE))
    trials = run(search, truth, 16, fails)
    failures = [t for t in trials if not t.ok]
    # Once (fsdp, compile) failed and its other pairs were seen to succeed, it is not retried.
    assert len(failures) <= 3, [t.config for t in failures]


def test_failure_regions_narrow_to_the_pair_that_only_ever_failed():
    base = {"strategy": "fsdp", "compile": "default", "precision": "32-true"}
    failed = [Trial(config=base, status="error")]
    succeeded = [Trial(config={"strategy": "fsdp", "compile": "off", "precision": "32-true"}, value=1.0),
                 Trial(config={"strategy": "ddp", "compile": "default", "precision": "32-true"}, value=1.0)]
    candidates = [{"strategy": "fsdp", "compile": "default", "precision": "bf16-mixed"},
                  {"strategy": "ddp", "compile": "default", "precision": "bf16-mixed"}]
    p_ok = failure_regions(candidates, failed, succeeded)
    assert p_ok[0] < 0.2 < 0.9 < p_ok[1]
    # With no successes to clear them, the blame is spread and the shadow weak.
    assert failure_regions(candidates[:1], failed, [])[0] > p_ok[0]


def test_oom_blocks_configs_predicted_to_need_more_memory():
    space = cpu_space()
    search = HybridSearch(space, seed=0, cost_model=CostModel(WORKLOAD, HARDWARE))
    oom = {"activation_checkpointing": False, "compile": "off", "micro_batch_size": 16, "num_processes": 1,
           "num_threads": 2, "precision": "32-true", "strategy": "single"}
    search.tell(Trial(config=oom, status="oom", cost_s=5.0))
    bigger = dict(oom, micro_batch_size=32)
    smaller = dict(oom, micro_batch_size=4)
    p_big, p_small = search._feasibility([bigger, smaller])
    assert p_big <= HybridSearch.OOM_DOMINATED_P < 0.05 < p_small


def test_a_knob_the_cost_model_ignores_is_held_only_once_data_shows_it_does_not_matter():
    space = cpu_space(extra=(Int(name="num_workers", choices=(0, 1, 2)),))
    search = HybridSearch(space, seed=0, cost_model=CostModel(WORKLOAD, HARDWARE))
    assert "num_workers" not in search.modeled and "precision" in search.modeled
    truth = truth_model()
    run(search, truth, 2)
    # F0 is blind to num_workers: no effect predicted, but that is ignorance, not evidence.
    assert "num_workers" not in search.held
    best = search.best.config
    for workers in (0, 1, 2):
        config = dict(best, num_workers=workers)
        if not search.seen(config):
            search.tell(Trial(config=config, value=truth.estimate(config).samples_per_s, cost_s=5.0))
    search.ask()
    assert "num_workers" in search.held
    assert search.importances()["num_workers"] < 0.02
    assert abs(sum(search.importances().values()) - 1.0) < 1e-9


def test_trial_cost_steers_between_equally_promising_candidates():
    space = Space([Categorical(name="compile", choices=("off", "default"), structural=True)])
    search = HybridSearch(space, seed=0, cost_power=1.0)
    search.tell(Trial(config={"compile": "off"}, value=10.0, cost_s=5.0))
    assert search.expected_cost_s({"compile": "default"}) > search.expected_cost_s({"compile": "off"}) + 10
    search.trial_cost.fit([Trial(config={"compile": "default"}, value=1.0, cost_s=60.0)], [None])
    assert search.expected_cost_s({"compile": "default"}) > 40


def test_dense_knobs_of_a_measured_arm_are_refined_by_skopt():
    space = Space([
        Categorical(name="strategy", choices=("single", "ddp"), structural=True),
        Float(name="ddp_bucket_cap_mb", low=1.0, high=256.0, log=True, when=(Condition("strategy", ("ddp",)),)),
    ])
    search = HybridSearch(space, seed=0, prioritise=False)
    for mb in (2.0, 100.0):
        search.tell(Trial(config={"strategy": "ddp", "ddp_bucket_cap_mb": mb}, value=10.0 + math.log(mb), cost_s=1.0))
    search.tell(Trial(config={"strategy": "single"}, value=5.0, cost_s=1.0))
    config = search.ask()
    assert config["strategy"] == "ddp"
    assert search._arm_optimizers, "the ddp arm's skopt optimizer was never built"
    assert 1.0 <= config["ddp_bucket_cap_mb"] <= 256.0


def test_expected_improvement_prefers_mean_and_spread():
    ei = expected_improvement(np.array([1.0, 1.0, 0.5]), np.array([0.1, 0.3, 0.1]), best=1.0)
    assert ei[1] > ei[0] > ei[2] > 0


def test_ensemble_weights_favour_the_member_that_predicts_held_out_points():
    rng = np.random.default_rng(0)
    X = rng.random((30, 2))
    y = np.sin(6 * X[:, 0]) + 0.01 * rng.standard_normal(30)  # smooth: the GP should lead
    model = SurrogateEnsemble(seed=0).fit(X, y)
    assert max(model.weights_, key=model.weights_.get) == "gp"
    mean, std = model.predict(X[:5], return_std=True)
    assert np.allclose(mean, y[:5], atol=0.2) and np.all(std > 0)


def test_additive_member_carries_an_effect_measured_in_one_arm_to_another():
    # Columns: compile (0/1) and micro-batch (unit scale); y: log speed. Smaller micro-batch +0.2 without
    # compile, compile +0.1 at the larger one: the fourth corner is predicted above both.
    X = np.array([[0.0, 1.0], [0.0, 0.5], [1.0, 1.0]])
    y = np.array([0.0, 0.2, 0.1]) - 0.1
    model = AdditiveRidge().fit(X, y)
    corner, _ = model.predict(np.array([[1.0, 0.5]]))
    measured, _ = model.predict(X)
    assert corner[0] > measured.max() + 0.03, (corner, measured)
    # A value never measured adds nothing for its column: no trend in micro-batch is extrapolated.
    unseen, _ = model.predict(np.array([[0.0, 0.0]]))
    assert measured.min() - 0.05 < unseen[0] < measured.max()


def test_additive_member_leave_one_out_is_a_refit_without_the_point():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 2, size=(12, 3)).astype(float)
    X[:2] = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]  # every column holds both levels in every leave-one-out fit
    X[2:4] = X[:2]
    y = X @ np.array([0.3, -0.2, 0.1]) + 0.02 * rng.standard_normal(12)
    model = AdditiveRidge().fit(X, y)
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        again = AdditiveRidge().fit(X[rest], y[rest]).predict(X[i:i + 1])[0][0]
        assert model.loo_prediction_[i] == pytest.approx(again, abs=1e-9)


def test_an_out_of_memory_rules_out_ddp_at_the_same_micro_batch():
    # A DDP process holds what a single one does and more: after the single process ran out at
    # micro-batch 16, DDP at 16 is not tried even where F0 predicts it fastest.
    space = cpu_space()
    search = HybridSearch(space, seed=0, cost_model=CostModel(WORKLOAD, HARDWARE))
    oom = {"activation_checkpointing": False, "compile": "off", "micro_batch_size": 16, "num_processes": 1,
           "num_threads": 2, "precision": "32-true", "strategy": "single"}
    search.tell(Trial(config=oom, status="oom", error="DefaultCPUAllocator: can't allocate memory", cost_s=5.0))
    ddp = dict(oom, strategy="ddp", num_processes=2, num_threads=1)
    assert search._feasibility([ddp])[0] <= 0.01
    for _ in range(4):
        config = search.ask()
        assert not (config["micro_batch_size"] >= 16 and config["strategy"] in ("single", "ddp")
                    and config["compile"] == "off" and not config["activation_checkpointing"]
                    and config["precision"] == "32-true"), config
        search.tell(Trial(config=config, value=10.0, cost_s=5.0))


@pytest.mark.parametrize("bad", [{"strategy": "nope"}, {"micro_batch_size": 3}])
def test_tell_rejects_configs_outside_the_space(bad):
    space = cpu_space()
    search = HybridSearch(space, seed=0)
    config = dict(space.default(), **bad)
    with pytest.raises(ValueError, match=next(iter(bad))):
        search.tell(Trial(config=config, value=1.0))


# ------------------------------------------------------------------------------- failure classes
def test_an_unsupported_compile_is_excluded_after_one_failure_per_checkpointing_setting():
    # The truth (and F0) would make compile the winner: only the failure's class stops the retries.
    # A compile error under one checkpointing setting excludes compile there; under both, everywhere.
    space = cpu_space()
    truth = truth_model(compile_elementwise_speedup=3.0)
    for seed in range(3):
        search = HybridSearch(space, seed=seed, cost_model=CostModel(WORKLOAD, HARDWARE))
        trials = run(search, truth, 12, fails=lambda c: c["compile"] != "off", error=DYNAMO_ERROR)
        compiled = [t for t in trials if t.config["compile"] != "off"]
        assert all(t.failure == "unsupported" for t in compiled)
        scopes = [t.config["activation_checkpointing"] for t in compiled]
        assert len(scopes) == len(set(scopes)) <= 2, scopes
        if compiled:
            (exclusion,) = search.exclusions
            assert (exclusion.knob, exclusion.values) == ("compile", ("default",))
            assert exclusion.when == ((("activation_checkpointing", scopes[0]),) if len(scopes) == 1 else ())
            assert "torch._dynamo.exc.TorchRuntimeError" in exclusion.reason


def test_a_compile_error_without_checkpointing_leaves_compile_with_checkpointing_open():
    # As measured on benchmarks/tables/recurrent_lm: dynamo fails without checkpointing, runs with it.
    space = Space([Categorical(name="compile", choices=("off", "default"), structural=True),
                   Categorical(name="activation_checkpointing", choices=(False, True), structural=True)])
    search = HybridSearch(space, seed=0)
    search.tell(Trial(config={"compile": "off", "activation_checkpointing": False}, value=1.0, cost_s=1.0))
    failed = {"compile": "default", "activation_checkpointing": False}
    search.tell(Trial(config=failed, status="error", error=DYNAMO_ERROR, cost_s=1.0))
    (exclusion,) = search.exclusions
    assert exclusion.when == (("activation_checkpointing", False),)
    assert "compile in ['default'] (where activation_checkpointing=False)" == exclusion.describe()
    asked = []
    with pytest.raises(SearchExhausted, match=r"where activation_checkpointing=False"):
        for _ in range(4):
            asked.append(search.ask())
            search.tell(Trial(config=asked[-1], value=2.0, cost_s=1.0))
    assert sorted(c["compile"] for c in asked) == ["default", "off"]
    assert all(c["activation_checkpointing"] for c in asked)
    assert Exclusion.from_json(exclusion.to_json()) == exclusion


def test_a_crash_without_evidence_is_not_excluded_but_blamed_as_a_region():
    space = cpu_space()
    search = HybridSearch(space, seed=0, cost_model=CostModel(WORKLOAD, HARDWARE))
    config = dict(space.default(), compile="default")
    search.tell(Trial(config=config, status="error", error="Segmentation fault", cost_s=5.0))
    assert search.exclusions == []
    assert search._feasibility([dict(config, num_threads=1)])[0] < 0.9  # compile shares the blame


def test_exclusions_given_by_an_earlier_study_are_never_asked_and_can_exhaust_the_search():
    space = Space([Categorical(name="compile", choices=("off", "default"), structural=True),
                   Int(name="num_threads", choices=(1, 2))])
    search = HybridSearch(space, seed=0)
    search.exclude([Exclusion("compile", ("default",), "study-1 on this machine, trial 3: dynamo")])
    asked = []
    with pytest.raises(SearchExhausted, match=r"excluded setting \(compile in \['default'\]\)"):
        for _ in range(5):
            asked.append(search.ask())
            search.tell(Trial(config=asked[-1], value=1.0 + len(asked), cost_s=1.0))
    assert [c["compile"] for c in asked] == ["off", "off"]
    assert search.exclusions[0].reason.startswith("study-1")


def test_an_out_of_memory_moves_a_boundary_without_a_cost_model():
    space = cpu_space()
    search = HybridSearch(space, seed=0)
    oom = {"activation_checkpointing": False, "compile": "off", "micro_batch_size": 16, "num_processes": 1,
           "num_threads": 2, "precision": "32-true", "strategy": "single"}
    search.tell(Trial(config=oom, status="oom", error="DefaultCPUAllocator: can't allocate memory", cost_s=5.0))
    bigger = dict(oom, micro_batch_size=32, num_threads=1)
    smaller = dict(oom, micro_batch_size=8)
    checkpointed = dict(oom, activation_checkpointing=True)  # less memory: not implied
    p_big, p_small, p_ckpt = search._feasibility([bigger, smaller, checkpointed])
    assert p_big <= 0.01 and p_small == p_ckpt == 1.0  # no value is banned outright
    assert search.exclusions == []


def test_a_transient_failure_blames_nothing():
    space = cpu_space()
    search = HybridSearch(space, seed=0)
    config = dict(space.default(), compile="default")
    search.tell(Trial(config=config, status="error", cost_s=1.0,
                      error="torch.distributed.DistNetworkError: ... EADDRINUSE, message: address already in use"))
    assert search.trials[-1].failure == "transient"
    assert search._feasibility([dict(config, num_threads=1)])[0] == 1.0


# --------------------------------------------------------------------------------- F0's trust
def test_f0_that_describes_the_model_keeps_its_trust_when_it_predicts_well():
    space = cpu_space()
    search = HybridSearch(space, seed=0, cost_model=CostModel(WORKLOAD, HARDWARE))
    assert search.f0_weight == pytest.approx(0.999)
    run(search, truth_model(flops_per_core=30e9), 8)  # the same form, another machine's speed
    assert search.f0_trust.scored >= 4 and search.f0_weight > 0.99


def test_f0_whose_predictions_carry_no_information_loses_its_trust():
    import hashlib
    import random

    space = cpu_space()
    model = CostModel(WORKLOAD, HARDWARE)

    class Scrambled:  # each config's speed is a fixed random draw: nothing F0 says about it holds
        def estimate(self, config):
            est = model.estimate(config)
            draw = random.Random(hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()).gauss(0, 0.5)
            return type(est)(samples_per_s=100 * math.exp(draw), step_s=est.step_s, peak_mem_mb=est.peak_mem_mb)

    weights = []
    for seed in range(3):
        search = HybridSearch(space, seed=seed, cost_model=model, f0_prior_weight=0.9)
        run(search, Scrambled(), 10)
        weights.append(search.f0_weight)
    assert max(weights) < 0.6 and min(weights) < 0.3, weights


def test_a_family_the_cost_model_does_not_describe_starts_at_half_trust():
    recurrent = Workload(family="recurrent", n_params=2_460_928, fwd_flops_per_sample=1.8e8, global_batch=32)
    model = CostModel(recurrent, HARDWARE)
    assert not model.describes_workload and CostModel(WORKLOAD, HARDWARE).describes_workload
    search = HybridSearch(cpu_space(), seed=0, cost_model=model)
    assert search.f0_weight == pytest.approx(0.5)
    assert search.describe()["f0_describes"] is False
    distrusted = HybridSearch(cpu_space(), seed=0, cost_model=model, f0_prior_weight=0.1)
    assert distrusted.ask() == cpu_space().default()  # below half trust: the default first, as without F0


def test_the_acquisition_takes_each_models_ei_not_the_pooled_spread():
    # At half trust, F0 predicts bf16 (emulated here) far slower and F1 alone cannot tell: pooled into one
    # Gaussian, their disagreement becomes a spread that promises gains neither model predicts.
    recurrent = Workload(family="recurrent", n_params=2_460_928, fwd_flops_per_sample=1.8e8, global_batch=32)
    no_bf16 = Hardware(kind="cpu", cores=2, mem_gb=24, bf16=False)
    search = HybridSearch(cpu_space(), seed=0, cost_model=CostModel(recurrent, no_bf16), cost_power=0.0)
    base = {"activation_checkpointing": False, "compile": "off", "micro_batch_size": 8, "num_processes": 1,
            "num_threads": 2, "precision": "32-true", "strategy": "single"}
    for mb, value in ((8, 90.0), (16, 85.0), (32, 80.0)):
        search.tell(Trial(config=dict(base, micro_batch_size=mb), value=value, cost_s=5.0))
    bf16 = dict(base, precision="bf16-mixed")
    components = search._components([bf16])
    (w, m1, s1), (_, m0, s0) = components
    assert 0.2 < w < 0.8 and m0[0] - m1[0] > 1.0  # the models disagree by more than e
    best = math.log(90.0)
    weighted = w * expected_improvement(m1, s1, best) + (1 - w) * expected_improvement(m0, s0, best)
    pooled = expected_improvement(*search._predict([bf16]), best)
    score = search._acquisition([bf16], components)[0]
    assert score == pytest.approx(float(weighted[0]), rel=1e-6)
    assert pooled[0] > 1.5 * weighted[0]


def test_one_gross_miss_does_not_make_the_f0_weight_certain():
    # A bf16 trial 14x slower than F1 alone guessed (F0 knew: no native bf16) is strong evidence, not
    # proof: it moves the weight a lot, not to 1, so later trials can still move it.
    from autoscout_plugin.search.fidelity import EvidenceWeight

    robust, gaussian = EvidenceWeight(prior=0.5), EvidenceWeight(prior=0.5, max_step=None)
    for w in (robust, gaussian):
        w.update(with_f0=(math.log(10.8), 0.2), without_f0=(math.log(85.3), 0.2), observed=math.log(6.2))
    assert 0.8 < robust.weight < 0.99 and gaussian.weight > 0.999999
    for _ in range(3):  # then F1 alone predicts three trials well and F1 on F0 misses by 40%
        robust.update(with_f0=(math.log(60.0), 0.1), without_f0=(math.log(84.0), 0.1), observed=math.log(85.0))
    assert robust.weight < 0.5

