"""The ask/tell contract every search strategy follows (ours and the baselines)."""

from __future__ import annotations

import copy
import json
import statistics
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from ..failures import Exclusion
from ..space import Config, Space
from ..trial import Trial


class SearchExhausted(RuntimeError):
    """Every feasible config has been tried, or the strategy decided to stop."""


class SearchStrategy(ABC):
    """Ask for a config, run it, tell the outcome. The caller owns the loop.

    Contract (checked by `tests/search/test_contract.py` for every strategy):
    - `ask()` returns a canonical, constraint-feasible config of `space`, never one already told
      (it raises `SearchExhausted` when nothing is left or the strategy has stopped);
    - `tell(trial)` accepts any trial whose config is canonical in `space`, failed ones included
      (`trial.value` is None unless `trial.ok`); the objective is maximised;
    - the same seed and the same answers give the same sequence of configs.

    Example:
        >>> from autoscout_plugin.space import Int, Space
        >>> from autoscout_plugin.search import RandomSearch
        >>> from autoscout_plugin.trial import Trial
        >>> s = RandomSearch(Space([Int(name="num_threads", choices=(1, 2))]), seed=0)
        >>> c = s.ask(); s.tell(Trial(config=c, value=float(c["num_threads"])))
        >>> s.ask() != c
        True
    """

    name: ClassVar[str] = "base"

    def __init__(self, space: Space, *, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.trials: list[Trial] = []
        self._seen: set[str] = set()
        self._held: set[str] = set()
        self._given: list[Exclusion] = []

    @abstractmethod
    def ask(self) -> Config:
        """The next config to evaluate."""

    def ask_batch(self, k: int, pending: Sequence[Config] = ()) -> list[Config]:
        """`k` configs to run at once while the `pending` ones still run (asynchronous refill: `k=1`).

        Greedy, on a copy of the search: each running or chosen config is told with a fantasy value
        (`_lie`: AutoScout's is the surrogate's mean, a Kriging believer, Ginsbourger et al. 2010, or a
        constant liar while there are few measurements), so each next choice is conditioned on the ones
        before it; a config the search has no lie for is only held. Never returns a config that is running,
        done or already in the batch. Returns fewer than `k` when the search runs out (raises
        `SearchExhausted` when it has none at all). `ask_batch(1)` with nothing pending is `ask()`.
        """
        if self._single(k, pending):
            return [self.ask()]
        ghost = copy.deepcopy(self)
        out = ghost._greedy(k, pending)
        rng = getattr(ghost, "rng", None)
        if rng is not None and hasattr(rng, "getstate"):  # the next batch does not replay this one's draws
            self.rng.setstate(rng.getstate())  # type: ignore[attr-defined]
        return out

    @staticmethod
    def _single(k: int, pending: Sequence[Config]) -> bool:
        """Check `k`; whether the batch is a plain `ask()` (one config, nothing running)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"ask_batch needs k >= 1 (an integer), got {k!r}")
        return k == 1 and not pending

    def _greedy(self, k: int, pending: Sequence[Config]) -> list[Config]:
        """Mark the `pending` configs running (`_fantasize`), then ask `k` times, marking each answer: fewer
        when the search runs out, `SearchExhausted` when it has nothing at all."""
        for config in pending:
            self._fantasize(self.space.canonical(config))
        out: list[Config] = []
        for _ in range(k):
            try:
                config = self.ask()
            except SearchExhausted:
                if out:
                    break
                raise
            out.append(config)
            self._fantasize(config)
        return out

    def _lie(self, config: Config) -> float | None:
        """The value a running config is told as, while it runs (None: it is only held)."""
        return None

    def _fantasize(self, config: Config) -> None:
        """Tell `config` with its lie (a fantasy trial, `metrics["fantasy"]`), or hold it."""
        if self.seen(config):
            return
        lie = self._lie(config)
        if lie is None or not lie > 0:
            self.hold(config)
            return
        costs = [t.cost_s for t in self.trials if t.cost_s]
        self.tell(Trial(config=config, value=float(lie), cost_s=statistics.median(costs) if costs else 0.0,
                        metrics={"fantasy": True}))

    def tell(self, trial: Trial) -> None:
        """Record an outcome; subclasses extend `_observe`."""
        config = self.space.canonical(trial.config)
        trial.config = config
        self.trials.append(trial)
        self._seen.add(self._key(config))
        self._held.discard(self._key(config))
        self._observe(trial)

    def _observe(self, trial: Trial) -> None:  # noqa: B027 - optional hook
        """Update internal models with a new trial (default: nothing)."""

    def exclude(self, exclusions: list[Exclusion]) -> None:
        """Settings known not to run here (an earlier study's `unsupported` failures, from the store).
        Strategies that learn from failures (AutoScout's) never ask for them; the baselines ignore them."""
        self._given = list(exclusions)

    @property
    def exclusions(self) -> list[Exclusion]:
        """The settings the strategy no longer tries, with the reason (empty for the baselines)."""
        return []

    def importances(self) -> dict[str, float]:
        """Knob importances in [0, 1] (sum 1) as far as the strategy knows them; {} if it does not."""
        return {}

    def predict(self, config: Config) -> float | None:
        """The strategy's prediction of a config's value, if it has a model."""
        return None

    def outlook(self, config: Config) -> tuple[float, float] | None:
        """The mean and spread of the config's predicted log value, if the strategy has a model with an
        uncertainty (what the net-gain rule weighs a trial with)."""
        return None

    def expected_cost_s(self, config: Config) -> float | None:
        """The predicted seconds of a trial of `config`, if the strategy models them."""
        return None

    def open_outlooks(self) -> list[tuple[Config, float, float, float]] | None:
        """Every config still open to the search with its `outlook` (mean, spread) and `expected_cost_s`, if
        the strategy has both models: the net-gain rule looks there for a trial worth its cost when the
        proposed one is not (a cheap candidate behind a costly one). None without them."""
        return None

    @staticmethod
    def _key(config: Config) -> str:
        return json.dumps(config, sort_keys=True, default=str)

    def seen(self, config: Config) -> bool:
        """Whether `config` was told, or is held (running on another worker): `ask` never returns it."""
        key = self._key(config)
        return key in self._seen or key in self._held

    def told(self, config: Config) -> bool:
        """Whether an outcome of `config` was told."""
        return self._key(config) in self._seen

    def hold(self, config: Config) -> None:
        """Another worker runs `config` now (a shared study): `ask` leaves it out; its result is told later."""
        self._held.add(self._key(self.space.canonical(config)))

    @property
    def best(self) -> Trial | None:
        """The best measured trial (a running config's fantasy is not a measurement)."""
        ok = [t for t in self.trials if t.ok and not t.metrics.get("fantasy")]
        return max(ok, key=lambda t: t.value or 0.0) if ok else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed}
