"""Shared pieces of the tuner tests: a recording profiler, small spaces and synthetic objectives.

A plain module (not a test file) so that a child process can import it by path, as the resume test does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autoscout_plugin.costmodel import CostModel, Hardware, Workload
from autoscout_plugin.profiling import TrialOutcome
from autoscout_plugin.report.result import TuneResult
from autoscout_plugin.space import Bool, Categorical, Condition, Float, GlobalBatch, Implies, Int, MaxProduct, Space
from autoscout_plugin.trial import Fidelity, Trial
from autoscout_plugin.tuner import TuneOptions, Tuner

HARDWARE = Hardware(kind="cpu", cores=2, mem_gb=24, bf16=True)

Objective = Callable[[dict[str, Any], Fidelity], Any]


class Recorder:
    """A profiler around `objective`: a number becomes an ok outcome costing `cost_s`; every call is kept."""

    def __init__(self, objective: Objective, cost_s: float = 1.0) -> None:
        self.objective = objective
        self.cost_s = cost_s
        self.calls: list[tuple[dict[str, Any], Fidelity]] = []

    def __call__(self, config: dict[str, Any], fidelity: Fidelity) -> Any:
        self.calls.append((dict(config), Fidelity(fidelity)))
        result = self.objective(config, fidelity)
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            return TrialOutcome(value=float(result), cost_s=self.cost_s)
        return result

    def configs(self, fidelity: Fidelity = Fidelity.F2) -> list[dict[str, Any]]:
        return [c for c, f in self.calls if f == fidelity]


def threads_space(n: int = 8) -> Space:
    return Space([Int(name="num_threads", choices=tuple(range(1, n + 1)))])


def by_threads(config: dict[str, Any], fidelity: Fidelity) -> float:
    return 10.0 * config["num_threads"]


def workload(global_batch: int = 32, family: str = "transformer") -> Workload:
    return Workload(family=family, n_layer=2, d_model=128, n_head=2, vocab=8192, seq_len=64,
                    global_batch=global_batch)


def training_space(global_batch: int = 32) -> Space:
    """A small conditional space: `ddp_bucket_cap_mb` exists only under `strategy=ddp`."""
    return Space(
        [
            Categorical(name="strategy", choices=("single", "ddp"), structural=True),
            Int(name="num_processes", choices=(1, 2), structural=True),
            Float(name="ddp_bucket_cap_mb", choices=(5.0, 25.0), when=(Condition("strategy", ("ddp",)),)),
            Categorical(name="precision", choices=("32-true", "bf16-mixed"), structural=True),
            Bool("activation_checkpointing", structural=True),
            Int(name="micro_batch_size", choices=(4, 8, 16), log=True),
            Int(name="num_threads", choices=(1, 2)),
        ],
        [
            GlobalBatch(global_batch),
            Implies("strategy", ("single",), "num_processes", (1,)),
            Implies("strategy", ("ddp",), "num_processes", (2,)),
            MaxProduct(("num_threads", "num_processes"), 2, "cores"),
        ],
    )


def cost_model_objective(w: Workload) -> Objective:
    model = CostModel(w, HARDWARE)
    return lambda config, fidelity: model.estimate(config).samples_per_s


def options(**kwargs: Any) -> TuneOptions:
    """Defaults for tests: a cheap strategy, no early stop, no confirmation, unless asked."""
    base: dict[str, Any] = {"search": "grid", "patience": 1000, "confirm_top": 0}
    return TuneOptions(**(base | kwargs))


def f2(result: TuneResult) -> list[Trial]:
    return [t for t in result.trials if t.fidelity == Fidelity.F2]


def f3(result: TuneResult) -> list[Trial]:
    return [t for t in result.trials if t.fidelity == Fidelity.F3]


def resume_objective(config: dict[str, Any], fidelity: Fidelity) -> Any:
    """Grid order 1, 2, 3, ...: 2 runs out of memory, 3 is the best of all."""
    n = config["num_threads"]
    if n == 2:
        raise MemoryError("too big")
    return 500.0 if n == 3 else 10.0 * n


def resume_tuner(store_path: str, profile: Any, **kwargs: Any) -> Tuner:
    """The study of the resume test; the child process builds it through this function too."""
    return Tuner(threads_space(10), profile, options(max_trials=6, store=store_path), **kwargs)
