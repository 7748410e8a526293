"""The tuner's net-gain look-ahead (docs/design.md §6e; the formulas are `netgain`'s): what the main run has
left, what a trial costs the job, and whether the next trial, a cheaper one instead, or the confirmation
pays for itself. `Tuner.look` holds one; it reads the tuner's trials, search and options, and writes what it
saw to `Tuner.net`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from . import netgain
from .space import Config

if TYPE_CHECKING:
    from .tuner import Tuner

UNCONFIRMED_MARGIN = 0.10
"""A challenger whose confirmation the net-gain rule skips is applied only when its short profiles beat the
user's config by more than this (the spread of one measurement between runs on a shared machine, ~7%)."""


class LookAhead:
    """The net-gain rule of one `Tuner`."""

    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner

    # ------------------------------------------------------------------ the main run
    def step_samples(self) -> float | None:
        """Samples of one optimizer step of the main run: as planned, else measured on the user's config."""
        opts, tuner = self.tuner.options, self.tuner
        if opts.planned_samples and opts.planned_steps:
            return opts.planned_samples / opts.planned_steps
        per_step = [(t.value or 0.0) * t.metrics["step_s"] for t in tuner._baseline_trials() if t.metrics.get("step_s")]
        return per_step[0] if per_step else None

    def main_samples(self, *, remaining: bool = True) -> float | None:
        """Samples of the main run: as planned; else its planned steps x the samples of one step (measured on
        the user's config); else its planned seconds at the user's measured speed. `remaining`: less what
        kept trials already trained (`Tuner.kept`)."""
        opts, tuner = self.tuner.options, self.tuner
        if opts.planned_samples:
            samples: float | None = opts.planned_samples
        elif opts.planned_steps:
            per_step = self.step_samples()
            samples = opts.planned_steps * per_step if per_step else None
        else:
            speed = tuner._baseline_speed()
            samples = opts.planned_run_s * speed if opts.planned_run_s and speed else None
        if samples and remaining and tuner.kept:
            samples = max(0.0, samples - tuner.kept * (self.step_samples() or 0.0))
        return samples

    # ------------------------------------------------------------------ what a trial costs the job
    def trial_cost_s(self, config: Config) -> float:
        """What a trial of `config` costs the job: its measured cost, else the search's prediction, else the
        mean; less, for a trial that counts as training, the main-run seconds of the steps it trains."""
        trials = self.tuner._f2_trials()
        mine = [t.cost_s for t in trials if t.config == config and t.cost_s > 0]
        predicted = self.tuner.search.expected_cost_s(config) if not mine else None
        if mine:
            cost = sum(mine) / len(mine)
        elif predicted is not None:
            cost = predicted
        else:
            costs = [t.cost_s for t in trials if t.cost_s > 0]
            cost = sum(costs) / len(costs) if costs else 0.0
        return self.net_cost_s(config, cost)

    def net_cost_s(self, config: Config, cost: float) -> float:
        """`cost` less the main-run seconds a kept trial of `config` saves: its steps at the best speed so far."""
        kept_steps = self.tuner.kept_steps
        steps = kept_steps(config) if kept_steps is not None else 0
        per_step, best = self.step_samples(), self.tuner._best_value()
        if not steps or not per_step or not best:
            return cost
        return max(0.0, cost - steps * per_step / best)

    # ------------------------------------------------------------------ the decisions
    def challenged(self) -> bool:
        """Whether a config other than the user's already measured faster than it (a confirmation is due)."""
        tuner = self.tuner
        base = tuner._baseline_speed()
        return base is not None and any(t.ok and t.value and t.value > base and t.config != tuner.baseline
                                        for t in tuner._f2_trials())

    def next_trial(self, config: Config) -> netgain.Estimate | None:
        """What a trial of `config` may save of the main run against its cost; None where the rule is off,
        the main run's length or any speed is unknown, or the search has no model to predict with."""
        tuner = self.tuner
        samples, best = self.main_samples(), tuner._best_value()
        if not tuner.options.net_gain or not samples or not best:
            return None
        outlook = tuner.search.outlook(config)
        if outlook is None:
            return None
        estimate = self.estimate(samples, best, *outlook, self.trial_cost_s(config))
        tuner.net.update(samples=samples, last_look=estimate.describe(), looks=tuner.net.get("looks", 0) + 1)
        return estimate

    def estimate(self, samples: float, best: float, mean: float, std: float, cost: float) -> netgain.Estimate:
        """A candidate's look-ahead (`netgain.next_trial`): its predicted log speed and trial seconds, plus the
        paired confirmation a win would add while nothing has beaten the user's config yet."""
        opts, baseline = self.tuner.options, self.tuner.baseline
        confirm = 0.0
        if opts.confirm_top and baseline is not None and not self.challenged():
            confirm = opts.confirm_rounds * (self.trial_cost_s(baseline) + cost)
        return netgain.next_trial(samples, best, mean, std, cost, confirm)

    def worth_instead(self, proposed: Config) -> tuple[Config, netgain.Estimate] | None:
        """The open config whose trial is expected to save the most of the main run beyond its cost, when the
        `proposed` one is not worth its cost; None when none is. The search proposes by improvement per cost,
        not by net seconds: a costly candidate (a compile) may head its list while a cheaper one (more
        processes) still pays on a short job."""
        samples, best = self.main_samples(), self.tuner._best_value()
        outlooks = self.tuner.search.open_outlooks()
        if not samples or not best or not outlooks:
            return None
        scored = []
        for config, mean, std, cost in outlooks:
            if config == proposed:
                continue
            estimate = self.estimate(samples, best, mean, std, self.net_cost_s(config, cost))
            if estimate.worth:
                scored.append((estimate.saving_s - estimate.cost_s, config, estimate))
        if not scored:
            return None
        _, config, estimate = max(scored, key=lambda item: item[0])
        return config, estimate

    def confirmation_worth(self, reference: Config, challengers: list[Config]) -> bool:
        """Whether confirming the best challenger can save more of the main run than the confirmation costs
        (always, without the net-gain rule). When it cannot, the challenger is applied unconfirmed if its short
        profiles beat the user's config by more than `UNCONFIRMED_MARGIN`, else the user's config stays."""
        tuner = self.tuner
        samples = self.main_samples()
        if not tuner.options.net_gain or not samples or reference != tuner.baseline:
            return True
        best = {json.dumps(t.config, sort_keys=True): t.value for t in tuner._f2_trials() if t.ok and t.value}
        ref = tuner._baseline_speed()
        top = max(challengers, key=lambda c: best.get(json.dumps(c, sort_keys=True)) or 0.0)
        speed = best.get(json.dumps(top, sort_keys=True))
        if not ref or not speed:
            return True
        saving = samples / ref - samples / speed
        cost = tuner.options.confirm_rounds * sum(self.trial_cost_s(c) for c in (reference, top))
        if saving > cost:
            return True
        apply = speed / ref > 1.0 + UNCONFIRMED_MARGIN
        tuner.net["unconfirmed"] = {
            "config": top, "ratio": speed / ref, "saving_s": saving, "cost_s": cost, "applied": apply,
            "reason": f"confirming it would cost {cost:.1f} s and save at most {saving:.1f} s of the main run"}
        return False


__all__ = ["UNCONFIRMED_MARGIN", "LookAhead"]
