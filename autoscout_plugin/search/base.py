"""The ask/tell contract every search strategy follows (ours and the baselines)."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
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
        ok = [t for t in self.trials if t.ok]
        return max(ok, key=lambda t: t.value or 0.0) if ok else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed}
