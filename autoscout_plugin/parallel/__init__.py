"""Parallel trials on engines people already run: `local` processes, Ray Tune, Slurm through submitit.

    executor = make_executor("ray:127.0.0.1:6379", slots=4)   # or "local", "slurm:partition=gpu,time=30"
    Tuner(space, profile, options, executor=executor, jobs=build_job).run()

No scheduler of our own: an executor only hands trial jobs (`TrialJob`) to its engine and passes
outcomes back to the tuner (`driver.TrialDriver`), which proposes each next trial conditioned on those
still running. Ray and submitit are imported only when their executor is made.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from .base import Executor, PoolExecutor, Proposal
from .jobs import PORT, TrialJob, run_trial_job

ENGINES = ("local", "ray", "slurm")
EXTRA = {"ray": ("ray", "ray[tune]"), "slurm": ("submitit", "submitit")}
"""Engine -> (module it needs, what to pip install)."""


@dataclass(frozen=True, slots=True)
class ExecutorSpec:
    """`local`, `ray[:ADDRESS]` or `slurm[:OPTIONS]`, parsed and checked."""

    engine: str
    address: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        if self.engine == "ray" and self.address:
            return f"ray:{self.address}"
        if self.options:
            return f"{self.engine}:" + ",".join(f"{k}={v}" for k, v in self.options)
        return self.engine


def parse_executor(text: str) -> ExecutorSpec:
    """Parse an executor spec; a `ValueError` says what is wrong and what to write.

    Example:
        >>> parse_executor("ray:127.0.0.1:6379").address
        '127.0.0.1:6379'
        >>> parse_executor("yarn")
        Traceback (most recent call last):
        ...
        ValueError: unknown executor 'yarn': use local, ray[:ADDRESS] or slurm[:OPTIONS]
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"an executor must be a non-empty string such as 'local' or 'ray', got {text!r}")
    engine, _, rest = text.strip().partition(":")
    if engine not in ENGINES:
        raise ValueError(f"unknown executor {engine!r}: use local, ray[:ADDRESS] or slurm[:OPTIONS]")
    if engine == "local" and rest:
        raise ValueError(f"the local executor takes no options, got {text!r}; write local")
    if engine in EXTRA:
        module, package = EXTRA[engine]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"the {engine} executor needs {module}, which is not installed: pip install '{package}'"
                             f" (or pip install 'autoscout-plugin[{engine}]')")
    if engine == "ray":
        return ExecutorSpec("ray", address=rest or None)
    if engine == "slurm":
        from .slurm import check_options, parse_options

        options = parse_options(rest)
        check_options(options)
        return ExecutorSpec("slurm", options=tuple(options.items()))
    return ExecutorSpec("local")


def make_executor(spec: str | ExecutorSpec, slots: int) -> Executor:
    """The executor a spec names, with `slots` trials at once."""
    if not isinstance(spec, ExecutorSpec):
        spec = parse_executor(spec)
    if spec.engine == "ray":
        from .ray_tune import RayExecutor

        return RayExecutor(slots, spec.address)
    if spec.engine == "slurm":
        from .slurm import SlurmExecutor

        return SlurmExecutor(slots, dict(spec.options))
    from .local import LocalExecutor

    return LocalExecutor(slots)


__all__ = ["ENGINES", "PORT", "Executor", "ExecutorSpec", "PoolExecutor", "Proposal", "TrialJob", "make_executor",
           "parse_executor", "run_trial_job"]
