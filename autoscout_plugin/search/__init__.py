"""Search strategies behind one ask/tell contract: AutoScout's hybrid search and the baselines."""

from __future__ import annotations

from typing import Any

from .base import SearchExhausted, SearchStrategy

__all__ = ["SearchExhausted", "SearchStrategy", "make_strategy", "strategy_names"]

_STRATEGIES = {
    "autoscout": ("hybrid", "HybridSearch"),
    "random": ("baselines", "RandomSearch"),
    "grid": ("baselines", "GridSearch"),
    "skopt_gp": ("baselines", "SkoptGP"),
    "optuna_tpe": ("baselines", "OptunaTPE"),
    "ds_model_based": ("baselines", "DSModelBased"),
}


def strategy_names() -> list[str]:
    return list(_STRATEGIES)


def strategy_class(name: str) -> type[SearchStrategy]:
    """The class registered under `name` (imported on first use: baselines pull optuna)."""
    import importlib

    if name not in _STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; choose from {strategy_names()}")
    module, attr = _STRATEGIES[name]
    cls = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    assert issubclass(cls, SearchStrategy)
    return cls


def make_strategy(name: str, space: Any, *, seed: int = 0, **options: Any) -> SearchStrategy:
    """Build a registered strategy: `make_strategy("random", space, seed=1)`."""
    return strategy_class(name)(space, seed=seed, **options)


def __getattr__(name: str) -> Any:
    for key, (_module, attr) in _STRATEGIES.items():
        if attr == name:
            return strategy_class(key)
    raise AttributeError(name)
