"""AutoScout's hybrid search: structural arms chosen by a cost-aware acquisition over F0 + F1, dense
knobs refined per arm with scikit-optimize, low-impact knobs held, failures learned as regions.

One `ask`:
1. candidates: the feasible grid (or a sample), minus what was tried, minus predicted out-of-memory,
   minus settings an `unsupported` failure excluded (`autoscout_plugin.failures`);
2. the model: F0 (calibrated cost model, when there is one) plus F1 (ensemble on F0's residuals)
   gives a mean and a spread of log samples/s for each candidate, averaged with F1 alone by how well
   each predicted this study's trials before they ran (`EvidenceWeight`): F0 that describes the
   architecture starts trusted, F0 that only guesses (a recurrent model) starts at even odds, and
   both follow the evidence;
3. a trust region: only candidates within a few knob changes of the best measured config, the
   radius widening while the search stalls;
4. prioritisation: knobs whose measured main effect is negligible are held at the incumbent's value;
5. acquisition: expected improvement over the best measured value (each model's, weighted by the
   trust, where F0 and F1 alone are averaged), times the probability the
   config runs at all (learned from failures by class: crashes blame what is new in them, an
   out-of-memory rules out every config that needs at least as much memory), per expected trial second
   (Snoek et al. 2012, "EI per second"; a compile trial costs several plain ones);
6. the winning candidate's arm (its structural knobs) is refined by that arm's skopt optimizer over
   the dense knobs once the arm has measurements; its proposal is kept when it scores at least as well.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..costmodel import CostModel
from ..failures import Exclusion, blamed_by_exclusion, exclusions_from, needs_at_least
from ..space import Config, Space
from ..trial import Trial
from .base import SearchExhausted, SearchStrategy
from .fidelity import AnalyticalSource, EvidenceWeight, SurrogateSource, latest_values, mixture
from .priority import held_knobs, main_effects, restrict
from .trialcost import TrialCostModel

_SQRT2 = math.sqrt(2.0)


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float = 0.005) -> np.ndarray:
    """EI of maximisation (Jones et al. 1998): `s * (z Phi(z) + phi(z))`, `z = (m - best - xi) / s`."""
    z = (mean - best - xi) / std
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / _SQRT2))
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    return std * (z * cdf + pdf)


def _items(config: Config) -> set[tuple[str, str]]:
    return {(k, repr(v)) for k, v in config.items()}


def failure_regions(configs: Sequence[Config], failed: Sequence[Trial], succeeded: Sequence[Trial]) -> np.ndarray:
    """P(runs) for each config, from the knob values and pairs of knob values that only ever failed.

    A failed config is explained by the simplest causes no successful trial rules out ("suspects"):
    its knob values never seen in a success if it has any, else its pairs of knob values never seen
    together in a success. Each suspect carries an equal share of the blame; a candidate containing a
    share s of a failure's suspects keeps `1 - 0.9 s` of its chance, per failure. So a crash with a
    never-tried `compile` mode blames that mode; a failure of (fsdp, compile) after both ran fine
    apart first casts a wide, weak shadow over its pairs, which narrows as successes clear them.
    """
    seen_ok: set[frozenset[tuple[str, str]]] = set()
    for trial in succeeded:
        items = sorted(_items(trial.config))
        seen_ok.update(frozenset([i]) for i in items)
        seen_ok.update(frozenset(p) for p in itertools.combinations(items, 2))
    p_ok = np.ones(len(configs))
    candidate_items = [_items(c) for c in configs]
    for trial in failed:
        items = sorted(_items(trial.config))
        suspects = [g for g in (frozenset([i]) for i in items) if g not in seen_ok]
        if not suspects:
            suspects = [g for g in (frozenset(p) for p in itertools.combinations(items, 2)) if g not in seen_ok]
        if not suspects:
            continue
        for i, have in enumerate(candidate_items):
            share = sum(g <= have for g in suspects) / len(suspects)
            p_ok[i] *= 1.0 - 0.9 * share
    return p_ok


class HybridSearch(SearchStrategy):
    """AutoScout's search strategy.

    Args:
        space: the configuration space.
        seed: random seed.
        cost_model: the analytical model (F0); without it the search runs on F1-F3 alone.
        memory_limit_mb: configs whose predicted peak memory exceeds this are never proposed.
        prioritise: hold low-impact knobs (knob prioritisation).
        hold_threshold: a knob whose main-effect share is below this is held.
        competitive_log: importances are measured among candidates predicted within this log-distance
            of the best (0.4: about 1.5x).
        trust_region: search within a radius of knob changes around the best config (see
            `_trust_region`); `min_radius` and `patience_per_radius` set its schedule.
        cost_power: exponent on the trial-cost penalty (0 ignores trial cost).
        steps_per_trial: profiled steps per trial, for the trial-cost model.
        f0_prior_weight: the initial trust in F0 (see `EvidenceWeight`); None: 0.999 when the cost model
            describes the architecture (`CostModel.describes_workload`: validated on such models, it keeps
            its lead until about three trials it mispredicted badly), else 0.5 (no opinion either way: its
            generic facts, such as emulated bf16 being slow, may still hold).

    Example:
        >>> from autoscout_plugin.space import Categorical, Int, Space
        >>> from autoscout_plugin.trial import Trial
        >>> space = Space([Categorical(name="precision", choices=("32-true", "bf16-mixed"), structural=True),
        ...                Int(name="num_threads", choices=(1, 2))])
        >>> s = HybridSearch(space, seed=0)
        >>> c = s.ask(); s.tell(Trial(config=c, value=10.0, cost_s=5.0)); sorted(s.ask())
        ['num_threads', 'precision']
    """

    name = "autoscout"

    def __init__(self, space: Space, *, seed: int = 0, cost_model: CostModel | None = None,
                 memory_limit_mb: float | None = None, prioritise: bool = True, hold_threshold: float = 0.02,
                 cost_power: float = 1.0, steps_per_trial: int = 5, max_candidates: int = 4000,
                 competitive_log: float = 0.4, trust_region: bool = True, min_radius: int = 2,
                 patience_per_radius: int = 2, f0_prior_weight: float | None = None) -> None:
        super().__init__(space, seed=seed)
        self.rng = random.Random(seed)
        self.f0 = AnalyticalSource(cost_model, space) if cost_model is not None else None
        self.f0_describes = cost_model is not None and cost_model.describes_workload
        all_candidates = space.candidates(self.rng)
        if len(all_candidates) > max_candidates:
            all_candidates = self.rng.sample(all_candidates, max_candidates)
        self.candidates: list[Config] = all_candidates
        self.modeled = self._modeled_knobs() if self.f0 is not None else set()
        self.f1 = SurrogateSource(space, self.f0, seed=seed, modeled=self.modeled)
        # F1 without F0, and how far the study's own trials say F0 can be trusted over it.
        self.f1_alone = SurrogateSource(space, None, seed=seed) if self.f0 is not None else None
        prior = f0_prior_weight if f0_prior_weight is not None else (0.999 if self.f0_describes else 0.5)
        self.f0_trust = EvidenceWeight(prior)
        self._choices = space.choices
        self.memory_limit_mb = memory_limit_mb
        self.prioritise = prioritise
        self.hold_threshold = hold_threshold
        self.competitive_log = competitive_log
        self.trust_region = trust_region
        self.min_radius = min_radius
        self.patience_per_radius = patience_per_radius
        self._radius = min_radius
        self._stalled = 0
        self.cost_power = cost_power
        self.trial_cost = TrialCostModel(steps_per_trial)
        self._arm_optimizers: dict[str, Any] = {}
        self._arm_told: dict[str, int] = {}  # trials of each arm already told to its optimizer
        self._importances: dict[str, float] = {}
        self.held: list[str] = []
        self._refine_base: Config = {}
        self._exclusions: list[Exclusion] = []
        self._batch_arms: Counter[str] = Counter()
        """Arms of the configs running or chosen in the batch being asked (only a batch's copy has any)."""

    OOM_DOMINATED_P = 0.001
    """P(runs) of a config that needs at least the memory of one that ran out (`failures.needs_at_least`):
    the memory boundary is monotone along those knobs, so it will not fit either; not zero, so an
    otherwise exhausted space can still try one (a transient memory pressure may have caused the OOM)."""

    # ------------------------------------------------------------------ model
    def _modeled_knobs(self, probes: int = 12) -> set[str]:
        """Knobs whose value changes F0's prediction somewhere (the cost model reads them)."""
        assert self.f0 is not None
        model, out = self.f0.model, set()
        sample = self.rng.sample(self.candidates, min(probes, len(self.candidates)))
        for knob in self.space.knobs:
            for config in sample:
                if knob.name not in config:
                    continue
                values = {model.samples_per_s(config | {knob.name: v}) for v in knob.grid()}
                if max(values) > min(values) * (1 + 1e-9):
                    out.add(knob.name)
                    break
        return out

    def _holdable(self) -> set[str]:
        """Knobs whose impact the data has measured: two ok trials that differ in that knob alone.
        A knob is never held on the cost model's word, nor on comparisons where other knobs changed
        too: F0 can be wrong about a machine, and confounded pairs can hide an effect."""
        ok = [t.config for t in self.trials if t.ok and not t.metrics.get("fantasy")]
        out: set[str] = set()
        for a, b in itertools.combinations(ok, 2):
            differ = [k for k in self.space.names if a.get(k) != b.get(k)]
            if len(differ) == 1:
                out.add(differ[0])
        return out

    def _components(self, configs: Sequence[Config]) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """The models the prediction averages, each with its weight, mean and spread of log samples/s:
        F1 on F0's residuals and, where there is a cost model, F1 alone, weighted by F0's trust."""
        with_f0 = self.f1.predict_arrays(configs)
        if self.f1_alone is None:
            return [(1.0, *with_f0)]
        weight = self.f0_trust.weight
        return [(weight, *with_f0), (1.0 - weight, *self.f1_alone.predict_arrays(configs))]

    @staticmethod
    def _combined(components: list[tuple[float, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        if len(components) == 1:
            return components[0][1], components[0][2]
        (weight, m1, s1), (_, m0, s0) = components
        return mixture(weight, (m1, s1), (m0, s0))

    def _predict(self, configs: Sequence[Config]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of log samples/s: F1 on F0's residuals, averaged with F1 alone by F0's trust."""
        return self._combined(self._components(configs))

    @property
    def f0_weight(self) -> float | None:
        """The current trust in F0 (None without a cost model)."""
        return self.f0_trust.weight if self.f0 is not None else None

    def _open_candidates(self) -> list[Config]:
        excluded = self.exclusions
        open_ = [c for c in self.candidates if not self.seen(c) and not any(ex.matches(c) for ex in excluded)]
        if self.f0 is not None and self.memory_limit_mb is not None:
            preds = self.f0.predict(open_)
            fits = [c for c, p in zip(open_, preds) if p.peak_mem_mb is None or p.peak_mem_mb <= self.memory_limit_mb]
            open_ = fits or open_
        return open_

    def _feasibility(self, configs: Sequence[Config]) -> np.ndarray:
        """P(the config runs), learned from failures by their class.

        Crashes, hangs, NaNs and unsupported failures that no exclusion explains are blamed as regions
        (see `failure_regions`); a transient failure blames nothing; an out-of-memory moves a memory
        boundary: every config that needs at least as much memory (`failures.needs_at_least`: a larger
        micro-batch, less checkpointing or sharding, all else equal) is all but ruled out
        (`OOM_DOMINATED_P`), and, where the cost model describes the architecture, every config it
        predicts to need at least as much is marked unlikely (its memory estimate may be off), without
        banning any value outright.
        """
        failed = [t for t in self.trials if not t.ok and t.failure != "transient"]
        if not failed:
            return np.ones(len(configs))
        excluded = self.exclusions
        blamed = [t for t in failed if t.failure != "oom" and not blamed_by_exclusion(t, excluded)]
        p_ok = failure_regions(configs, blamed, [t for t in self.trials if t.ok])
        ooms = [t for t in failed if t.failure == "oom"]
        for oom in ooms:
            hungry = np.array([needs_at_least(c, oom.config) for c in configs])
            p_ok = np.where(hungry, np.minimum(p_ok, self.OOM_DOMINATED_P), p_ok)
        if ooms and self.f0 is not None and self.f0_describes:
            limit = min(p.peak_mem_mb or math.inf for p in self.f0.predict([t.config for t in ooms]))
            mem = np.array([p.peak_mem_mb or 0.0 for p in self.f0.predict(configs)])
            p_ok = np.where(mem >= limit, np.minimum(p_ok, 0.05), p_ok)
        return p_ok

    def _expected_cost(self, configs: Sequence[Config]) -> np.ndarray:
        steps = [p.step_s for p in self.f0.predict(configs)] if self.f0 is not None else [None] * len(configs)
        return np.array([self.trial_cost.predict(c, s) for c, s in zip(configs, steps)])

    def _incumbent(self, configs: Sequence[Config], mean: np.ndarray) -> Config:
        best = self.best
        return best.config if best is not None else configs[int(np.argmax(mean))]

    # -------------------------------------------------------------------- ask
    def ask(self) -> Config:
        configs = self._open_candidates()
        if not configs:
            excluded = "; ".join(ex.describe() for ex in self.exclusions)
            raise SearchExhausted("every feasible candidate has been tried"
                                  + (f" or uses an excluded setting ({excluded})" if excluded else ""))
        if (self.f0 is None or self.f0_trust.weight < 0.5) and not self.trials:
            default = self._default_or_none(configs)
            if default is not None:
                return default
        components = self._components(configs)
        mean, _ = self._combined(components)
        self._importances = self._competitive_importances(configs, mean)
        scores = self._acquisition(configs, components)
        pool = self._trust_region(configs)
        if self.prioritise:
            holdable = self._holdable()
            self.held = [k for k in held_knobs(self._importances, self.hold_threshold) if k in holdable]
            in_pool = set(pool)
            kept = [i for i in restrict(configs, self._incumbent(configs, mean), self.held) if i in in_pool]
            # Release the holds once the restricted set has little left to gain.
            if kept and scores[kept].max() >= 0.1 * scores.max():
                pool = kept
            else:
                self.held = []
        best_index = max(pool, key=lambda i: scores[i])
        return self._refine_dense(configs[best_index], float(scores[best_index]))

    def _trust_region(self, configs: list[Config]) -> list[int]:
        """Candidates within `radius` moves (`Space.moves`) of the best measured config (all before the first
        success). The radius starts at `min_radius`, grows by one after every `patience_per_radius`
        trials without improvement and resets on improvement (a discrete TuRBO, Eriksson et al. 2019):
        early trials refine around what is known to work instead of chasing the cost model's
        optimism about far-away arms, and a stalled search widens its reach."""
        best = self.best
        everything = list(range(len(configs)))
        if best is None or not self.trust_region:
            return everything
        distance = [self.space.moves(best.config, c) for c in configs]
        radius = self._radius
        while True:
            inside = [i for i, d in enumerate(distance) if d <= radius]
            if inside or radius >= len(self.space.names):
                return inside or everything
            radius += 1

    def _competitive_importances(self, configs: list[Config], mean: np.ndarray) -> dict[str, float]:
        """Main effects among the candidates within `competitive_log` of the best prediction: a knob
        that only separates hopeless configs (bf16 without native bf16, say) must not drown out the
        knobs that decide among the good ones."""
        keep = [i for i in range(len(configs)) if mean[i] >= mean.max() - self.competitive_log]
        if len(keep) < 4:
            keep = list(np.argsort(-mean)[: min(len(configs), 8)])
        return main_effects([configs[i] for i in keep], mean[keep], self.space.names)

    def _default_or_none(self, configs: list[Config]) -> Config | None:
        default = self.space.default()
        return default if default in configs else None

    def _acquisition(self, configs: Sequence[Config],
                     components: list[tuple[float, np.ndarray, np.ndarray]]) -> np.ndarray:
        """EI per expected trial second, times P(runs). Where F0 and F1 alone are averaged, the EI is
        the models' weighted EI, not the EI of one Gaussian with their pooled spread: where they
        disagree (F0 at half trust predicts bf16 14x slower, F1 alone has no opinion), the pooled spread
        would promise gains that neither model predicts."""
        mean, std = self._combined(components)
        observed = latest_values(self.trials, self.space)
        if observed:
            best = max(v for _, v in observed.values())
        else:
            best = float(mean.max() - np.median(std))
        ei = sum(w * expected_improvement(m, s, best) for w, m, s in components)
        ei = ei * self._feasibility(configs) * self._batch_penalty(configs)
        if self.cost_power:
            cost = self._expected_cost(configs)
            ei = ei / (cost / np.median(cost)) ** self.cost_power
        return ei + 1e-12 * mean  # ties: the higher predicted value

    def _refine_dense(self, choice: Config, score: float) -> Config:
        """Let the arm's skopt optimizer propose dense values; keep them if they score at least as well."""
        arm = self.space.arm_of(choice)
        dense = [k for k in self.space.active(choice) if not k.structural and k.name not in self.held]
        in_arm = [t for t in self.trials if t.ok and self.space.arm_of(t.config) == arm]
        if len(dense) == 0 or len(in_arm) < 2:
            return choice
        self._refine_base = choice
        adapter = self._arm_adapter(arm, dense)
        if adapter is None:
            return choice
        proposal = dict(choice) | adapter.ask()
        try:
            proposal = self.space.canonical(proposal, allow_inactive=True)
        except ValueError:
            return choice
        if self.seen(proposal) or not self.space.is_feasible(proposal):
            return choice
        if self._acquisition([proposal], self._components([proposal]))[0] >= score:
            return proposal
        return choice

    def _arm_prior(self, configs: list[Config]) -> np.ndarray:
        """The arm optimizers' prior: F0+F1's prediction (negated: skopt minimises). A bound method, not a
        closure: `ask_batch`'s deep copy of the search must refine with the copy's model and `_refine_base`."""
        # Knobs the adapter does not search (held ones) take the candidate's values.
        full = [self.space.canonical(self._refine_base | c, allow_inactive=True) for c in configs]
        return -self._predict(full)[0]

    def _arm_adapter(self, arm: Config, dense: list[Any]) -> Any:
        from .ensemble import SurrogateEnsemble
        from .skopt_adapter import SkoptAdapter

        key = self._key(arm) + repr(sorted(k.name for k in dense))
        if key not in self._arm_optimizers:
            self._arm_optimizers[key] = SkoptAdapter(
                dense, seed=self.seed, base_estimator=SurrogateEnsemble(seed=self.seed), n_initial_points=0,
                acq_optimizer="sampling", prior=self._arm_prior, n_points=200)
        adapter = self._arm_optimizers[key]
        if adapter.optimizer is None:
            return None
        names = {k.name for k in adapter.knobs}
        told = self._arm_told.get(key, 0)
        fresh = [t for t in self.trials if t.ok and self.space.arm_of(t.config) == arm][told:]
        usable = [t for t in fresh if names <= set(t.config)]
        adapter.tell([t.config for t in usable], [-math.log(t.value or 1e-12) for t in usable])
        self._arm_told[key] = told + len(fresh)
        return adapter

    # ------------------------------------------------------------------- tell
    KRIGING_BELIEVER_MIN = 3
    """Measured configs before a running one is told its predicted value; below it, a constant liar."""

    def _lie(self, config: Config) -> float | None:
        """A running config's fantasy value: the surrogate's mean (Kriging believer) once
        `KRIGING_BELIEVER_MIN` configs were measured, else the worst measured value (a pessimistic
        constant liar: the next choice moves away from it); never above the best measured value, so
        the incumbent stays a measured config. Before any measurement, the model's mean when there is a
        cost model (F0 is the only knowledge then), else None (the config is only held)."""
        measured = [t.value for t in self.trials if t.ok and t.value and not t.metrics.get("fantasy")]
        if not measured:
            return math.exp(float(self._predict([config])[0][0])) if self.f0 is not None else None
        if len(measured) < self.KRIGING_BELIEVER_MIN:
            return min(measured)
        mean, _ = self._predict([config])
        return min(math.exp(float(mean[0])), max(measured))

    def _fantasize(self, config: Config) -> None:
        if not self.seen(config):
            self._batch_arms[self._key(self.space.arm_of(config))] += 1
        super()._fantasize(config)

    def _batch_penalty(self, configs: Sequence[Config]) -> np.ndarray:
        """Local penalisation by arm (after Gonzalez et al. 2016, "Batch Bayesian optimization via local
        penalization"): a config running or already in the batch will measure its arm, so each one halves
        the acquisition of the other candidates of the same arm (the same structural knobs). A batch then
        spreads over arms (processes, precision, compile) instead of filling one with dense variants."""
        if not self._batch_arms:
            return np.ones(len(configs))
        return np.array([0.5 ** self._batch_arms.get(self._key(self.space.arm_of(c)), 0) for c in configs])

    def _observe(self, trial: Trial) -> None:
        previous = [t.value or 0.0 for t in self.trials[:-1] if t.ok]
        if trial.metrics.get("fantasy"):  # a running config's lie: it moves the models, not the bookkeeping
            self.f1.observe(self.trials)
            if self.f1_alone is not None:
                self.f1_alone.observe(self.trials)
            return
        if (self.f1_alone is not None and trial.ok and trial.value and trial.value > 0
                and len(latest_values(self.trials[:-1], self.space)) >= self.f0_trust.min_points):
            # Scored before the models see it: how well each predicted this trial (prequential).
            with_f0, without_f0 = self.f1.predict_arrays([trial.config]), self.f1_alone.predict_arrays([trial.config])
            self.f0_trust.update(with_f0=(float(with_f0[0][0]), float(with_f0[1][0])),
                                 without_f0=(float(without_f0[0][0]), float(without_f0[1][0])),
                                 observed=math.log(trial.value))
        if trial.ok and (not previous or (trial.value or 0.0) > max(previous)):
            self._radius, self._stalled = self.min_radius, 0
        elif previous:
            self._stalled += 1
            if self._stalled >= self.patience_per_radius:
                self._radius, self._stalled = self._radius + 1, 0
        self.f1.observe(self.trials)
        if self.f1_alone is not None:
            self.f1_alone.observe(self.trials)
        self._exclusions = exclusions_from(self.trials, self._choices)
        steps = ([p.step_s for p in self.f0.predict([t.config for t in self.trials])] if self.f0 is not None
                 else [None] * len(self.trials))
        self.trial_cost.fit(self.trials, steps)

    # ---------------------------------------------------------------- reports
    @property
    def exclusions(self) -> list[Exclusion]:
        """Settings this study no longer tries: what its `unsupported` failures named, plus what
        `exclude()` was given (an earlier study's), unless a trial has since run with them."""
        ok = [t.config for t in self.trials if t.ok]
        own = {(e.knob, e.when) for e in self._exclusions}
        given = [ex.without(ok) for ex in self._given if (ex.knob, ex.when) not in own]
        return self._exclusions + [ex for ex in given if ex.values]

    def importances(self) -> dict[str, float]:
        """Each knob's share of the predicted variance over the whole space, normalised to sum 1."""
        mean, _ = self._predict(self.candidates)
        effects = main_effects(self.candidates, mean, self.space.names)
        total = sum(effects.values()) or 1.0
        return {k: v / total for k, v in effects.items()}

    def predict(self, config: Config) -> float | None:
        mean, _ = self._predict([self.space.canonical(config)])
        return float(math.exp(mean[0]))

    def outlook(self, config: Config) -> tuple[float, float] | None:
        mean, std = self._predict([self.space.canonical(config)])
        return float(mean[0]), float(std[0])

    def expected_cost_s(self, config: Config) -> float:
        return float(self._expected_cost([config])[0])

    def open_outlooks(self) -> list[tuple[Config, float, float, float]]:
        configs = self._open_candidates()
        if not configs:
            return []
        mean, std = self._predict(configs)
        cost = self._expected_cost(configs)
        return [(c, float(m), float(s), float(k)) for c, m, s, k in zip(configs, mean, std, cost)]

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"f0": self.f0 is not None, "f0_describes": self.f0_describes,
                                     "f0_weight": self.f0_weight, "held": list(self.held),
                                     "ensemble_weights": self.f1.weights,
                                     "exclusions": [ex.to_json() for ex in self.exclusions]}
