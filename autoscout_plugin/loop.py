"""Custom training loops under the launcher: `knob()` reads a setting, `step()` marks an optimizer step.

    import autoscout_plugin as autoscout

    batch = autoscout.knob("micro_batch_size", 32)     # the trial's value, the applied winner's, or 32
    accum = autoscout.knob("grad_accum", 1)            # keeps the global batch when the batch or processes change
    for inputs, targets in loader:
        ...                                            # forward, backward, optimizer.step()
        autoscout.step(samples=len(inputs), loss=loss.item())

Run the script with `autoscout launch --autoscout [accelerate args] script.py [args]`. The launcher
sets `AUTOSCOUT_LAUNCH` in the script's environment: in a trial, `step()` times the steps after a
warm-up, rank 0 (of each node) writes the result and every rank leaves at the same step; in the real run (`apply`)
and outside the launcher, `knob()` returns the value to use and `step()` does nothing.

Framework-free: nothing here imports torch, so a plain PyTorch, accelerate or JAX loop can use it.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .profiling import StepProbe, TrialOutcome, most_timed_steps, report_and_exit, write_result

LAUNCH_ENV = "AUTOSCOUT_LAUNCH"
"""JSON set by the launcher: `{"mode": "trial" | "apply", "config": {knob: value}, "warmup": int,
"measure": int, "cut_off": float | null, "global_batch": int | null}`, and optionally `"max_measure": int,
"precision": float, "best": float` (a trial timed until its speed is known well enough: `StepProbe`). The
one child protocol: the launcher's trials and real run, and the Lightning callback's subprocess trials and
relaunched fit."""
DECLARED_ENV = "AUTOSCOUT_DECLARED"
"""In a trial: the JSON file where rank 0 records the knobs the script reads (name -> default)."""
NO_STEP_ERROR = "the script never called autoscout_plugin.step()"
"""How the launcher reports a trial whose script exited cleanly without a result: it never marked a step."""

_MODES = ("trial", "apply")
_state: dict[str, Any] = {}
"""This process's trial probe and recorded declarations (`_reset()` clears them, for tests)."""


def launch_spec() -> dict[str, Any] | None:
    """The launcher's spec for this process, checked; None when not started by `autoscout launch --autoscout`.

    Raises:
        ValueError: `AUTOSCOUT_LAUNCH` is not valid JSON or lacks a field; the message names the variable.

    Example:
        >>> os.environ.pop(LAUNCH_ENV, None) and None
        >>> launch_spec() is None
        True
    """
    text = os.environ.get(LAUNCH_ENV)
    if not text:
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{LAUNCH_ENV} is not valid JSON ({exc}): {text[:80]!r}; it is set by `autoscout launch"
                         f" --autoscout`; unset it to run the script on its own") from exc
    if not isinstance(spec, dict):
        raise ValueError(f"{LAUNCH_ENV} must hold a JSON object, got {type(spec).__name__}")
    if spec.get("mode") not in _MODES:
        raise ValueError(f"{LAUNCH_ENV} mode must be one of {_MODES}, got {spec.get('mode')!r}")
    config = spec.setdefault("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{LAUNCH_ENV} config must be an object of knob -> value, got {config!r}")
    for name, low in (("warmup", 0), ("measure", 1 if spec["mode"] == "trial" else 0)):
        value = spec.setdefault(name, 0 if spec["mode"] == "apply" else None)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{LAUNCH_ENV} {name} must be an integer >= {low}, got {value!r}")
    for name, what in (("cut_off", "a positive number of samples/s"), ("best", "a positive number of samples/s"),
                       ("precision", "a fraction between 0 and 1")):
        value = spec.setdefault(name, None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0 or (name == "precision" and value >= 1)):
            raise ValueError(f"{LAUNCH_ENV} {name} must be {what} or null, got {value!r}")
    most = spec.setdefault("max_measure", None)
    if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
        raise ValueError(f"{LAUNCH_ENV} max_measure must be a positive integer or null, got {most!r}")
    batch = spec.setdefault("global_batch", None)
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"{LAUNCH_ENV} global_batch must be a positive integer or null, got {batch!r}")
    return spec


def spec_timing(spec: dict[str, Any], *, world: int = 1) -> dict[str, Any]:
    """`StepProbe`'s timing keywords from a checked spec (`launch_spec`), and under `most` the most steps the
    trial times. Only a trial whose ranks agree on when it ends (`world` 1, or an adapter whose ranks meet
    after each step: `world=1` then) is cut short or timed on to a precision.

    Example:
        >>> spec_timing({"measure": 4, "max_measure": 12, "precision": 0.05, "best": 80.0, "cut_off": 40.0})
        {'max_measure': 12, 'precision': 0.05, 'best': 80.0, 'cut_off': 40.0, 'most': 12}
        >>> spec_timing({"measure": 4, "max_measure": 12, "precision": 0.05, "cut_off": 40.0}, world=2)["most"]
        4
    """
    if world != 1:
        return {"max_measure": None, "precision": None, "best": None, "cut_off": None, "most": int(spec["measure"])}
    precision = spec.get("precision")
    return {"max_measure": spec.get("max_measure"), "precision": precision, "best": spec.get("best"),
            "cut_off": spec.get("cut_off"),
            "most": most_timed_steps(spec["measure"], spec.get("max_measure"), precision)}


def knob(name: str, default: Any) -> Any:
    """The value of knob `name` for this run: the trial's, the applied winner's, else `default`.

    Under a launcher trial the read is also recorded (name and default), so the launcher learns which
    knobs the script can take. Use catalogue names (`micro_batch_size`, `num_workers`, `pin_memory`,
    ...); `grad_accum` returns the accumulation that keeps the global batch when the launcher changes
    the micro-batch size or the process count.

    Example:
        >>> knob("micro_batch_size", 32)
        32
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"knob() needs a knob name (a non-empty str) first, got {name!r}; e.g."
                        " knob('micro_batch_size', 32)")
    spec = launch_spec()
    if spec is None:
        return default
    value = spec["config"].get(name, default)
    if spec["mode"] == "trial":
        _declare(name, default)
        _probe(spec).read[name] = value  # from here on, a script that ends without finishing its trial says why
    return value


def step(samples: int | None = None, *, loss: float | None = None) -> None:
    """Mark the end of one optimizer step; call it on every rank, once per step.

    Args:
        samples: samples this rank processed in the step; None counts `micro_batch_size x grad_accum`
            as the script read them with `knob()`, else the launcher's global batch per step (over all
            ranks), else one per step (the value is then optimizer steps per second).
        loss: the step's loss; a non-finite value ends a trial as `nan`.

    Outside a launcher trial it does nothing. In a trial, after the warm-up and measured steps rank
    0 writes the result and every rank exits (`os._exit(0)`) at the same step, so none waits in a
    collective for a peer that left.

    Example:
        >>> step(32, loss=0.5)   # not under the launcher: nothing happens
    """
    probe = _state.get("probe")
    if probe is None:
        if "probe" in _state:  # outside a trial, known: the cheap path
            return
        spec = launch_spec()
        probe = _probe(spec) if spec is not None and spec["mode"] == "trial" else None
        if probe is None:
            _state["probe"] = None
            return
    if probe.steps == 0 and _rank_zero() and os.environ.get(DECLARED_ENV):
        stepped_marker(os.environ[DECLARED_ENV]).touch()  # the launcher tells a slow script from one with no step()
    outcome = probe.on_step(samples, loss)
    if outcome is not None:
        report_and_exit(outcome, rank_zero=_rank_zero())


class ScriptProbe:
    """A custom loop's trial: the knobs the script read, and the core `StepProbe` fed one `step()` call
    per optimizer step (samples given, else `micro_batch_size x grad_accum` as read with `knob()`, else
    the launcher's global batch over the ranks).

    With several processes each rank would judge the cut-off on its own clock and might stop a step
    before its peers, leaving them in a collective: there every trial runs all its steps. The clock
    starts at the first step (a step's time includes nothing the script did before it); with
    `warmup=0` timing starts when the probe is made (the script's first `knob()` or `step()`).

    Example:
        >>> ticks = iter([1.0, 2.0, 3.0])
        >>> p = ScriptProbe({"warmup": 1, "measure": 2, "global_batch": 8}, clock=lambda: next(ticks), world=1)
        >>> p.on_step(), p.on_step()
        (None, None)
        >>> p.on_step().value   # 16 samples in the 2 s after the warm-up step
        8.0
    """

    def __init__(self, spec: dict[str, Any], *, clock: Callable[[], float] | None = None,
                 world: int | None = None) -> None:
        self.world = world if world is not None else int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.global_batch = spec.get("global_batch")
        self.clock = clock or device_clock
        timing = spec_timing(spec, world=self.world)
        timing.pop("most")
        self.probe = StepProbe(int(spec["warmup"]), int(spec["measure"]), world=self.world, memory=peak_memory_mb,
                               compiling=(spec.get("config") or {}).get("compile", "off") != "off", **timing)
        self.read: dict[str, Any] = {}
        """Knob values the script read (`knob()`), for the samples of a step given none."""
        if self.probe.warmup == 0:
            self.probe.begin(self.clock())

    @property
    def steps(self) -> int:
        return self.probe.steps

    @property
    def outcome(self) -> TrialOutcome | None:
        return self.probe.outcome

    def _per_rank(self, samples: int | None) -> float:
        if samples is not None:
            if isinstance(samples, bool) or not isinstance(samples, (int, float)) or samples < 0:
                raise ValueError(f"step(samples=...) must be a number of samples >= 0, got {samples!r}")
            return float(samples)
        batch, accum = self.read.get("micro_batch_size"), self.read.get("grad_accum", 1)
        if isinstance(batch, int) and isinstance(accum, int):
            return float(batch * accum)
        return (self.global_batch or 1) / self.world

    def on_step(self, samples: int | None = None, loss: float | None = None) -> TrialOutcome | None:
        """Count one step; the trial's outcome once it is decided, else None."""
        if self.probe.outcome is not None:
            return self.probe.outcome
        if loss is not None and not math.isfinite(float(loss)):
            return self.probe.nan(f"{loss!r} at step {self.steps + 1}")
        return self.probe.step(self._per_rank(samples), self.clock())

    def unfinished(self, crash: str | None = None) -> TrialOutcome | None:
        """The outcome of a script that ended before its trial was decided: it raised `crash`, or it
        ran out of steps (an error before `measure` timed steps, else the speed over those it ran). None
        once decided, and None for a clean exit before any step (the launcher reads a clean exit without
        a result as a script that never calls `step()`)."""
        if self.outcome is not None:
            return None
        if crash is not None:
            return TrialOutcome(status="error", error=f"after {self.steps} steps the script raised {crash}"[:300])
        if self.steps == 0:
            return None
        ended = self.probe.ended()  # it ran its least timed steps, not all it wanted: the speed it showed
        if ended is not None:
            return ended
        return TrialOutcome(status="error", error=f"the script ended after {self.steps} steps (step() calls), before"
                                                  f" the {self.probe.warmup + self.probe.measure} a trial needs; train"
                                                  " longer or lower --autoscout-warmup/--autoscout-measure")


def _cuda_in_use() -> Any:
    """torch, when this process has imported it and started CUDA; else None (nothing is imported here)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    return torch if cuda is not None and cuda.is_available() and cuda.is_initialized() else None


def device_clock() -> float:
    """`time.perf_counter()` once the work queued on this process's GPU has finished (CUDA runs
    asynchronously: without the wait a step's time would be the time to queue it); a plain clock
    where the script uses no GPU."""
    torch = _cuda_in_use()
    if torch is not None:
        torch.cuda.synchronize()
    return time.perf_counter()


def peak_memory_mb() -> float:
    """Peak memory of this trial process: the CUDA allocator's peak reserved memory on its GPU where
    it uses one (the cost model's per-device memory), else its peak RSS."""
    torch = _cuda_in_use()
    if torch is not None:
        return float(torch.cuda.max_memory_reserved()) / 1e6
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def _rank_zero() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _probe(spec: dict[str, Any]) -> ScriptProbe:
    probe = _state.get("probe")
    if probe is None:
        probe = _state["probe"] = ScriptProbe(spec)
        atexit.register(_on_exit, probe)
        previous = sys.excepthook

        def record_crash(kind: type[BaseException], value: BaseException, tb: Any) -> None:
            _state["crash"] = f"{kind.__name__}: {value}"
            previous(kind, value, tb)

        sys.excepthook = record_crash
    return probe


def _on_exit(probe: ScriptProbe) -> None:
    outcome = probe.unfinished(_state.get("crash"))
    local = os.environ.get("LOCAL_RANK", "")
    if outcome is not None and (local == "0" or (not local and _rank_zero())):  # one result per node
        write_result(outcome)


def _declare(name: str, default: Any) -> None:
    """Record `name` and its default in the launcher's file (rank 0 only; written whole, then renamed)."""
    declared = _state.setdefault("declared", {})
    target = os.environ.get(DECLARED_ENV)
    if name in declared or not target or not _rank_zero():
        return
    try:
        json.dumps(default)
    except (TypeError, ValueError):
        default = repr(default)  # recorded for the report; the launcher tunes only catalogue types
    declared[name] = default
    partial = Path(f"{target}.partial")
    partial.write_text(json.dumps(declared), encoding="utf-8")
    os.replace(partial, target)


def describe(workload: dict[str, Any]) -> None:
    """Under a launcher trial, tell the launcher what the model is (a `costmodel.Workload.to_json()`
    dict: layers, width, vocabulary, sequence length, parameters), so its cost model can screen configs
    before they are run; elsewhere it does nothing. `tune_trainer` calls it for a Hugging Face model.

    Example:
        >>> describe({"family": "transformer", "n_layer": 2})   # not under the launcher: nothing happens
    """
    target = os.environ.get(DECLARED_ENV)
    if not target or not _rank_zero():
        return
    path = workload_file(target)
    partial = Path(f"{path}.partial")
    partial.write_text(json.dumps(workload), encoding="utf-8")
    os.replace(partial, path)


def workload_file(declared: str | Path) -> Path:
    """The file a trial's rank 0 writes `describe()`'s workload to, beside the declarations file."""
    return Path(f"{declared}.workload")


def stepped_marker(declared: str | Path) -> Path:
    """The file a trial's rank 0 creates at its first `step()`, beside the declarations file."""
    return Path(f"{declared}.stepped")


def _reset() -> None:
    """Forget this process's probe and declarations (tests run several specs in one process)."""
    _state.clear()


__all__ = ["DECLARED_ENV", "LAUNCH_ENV", "NO_STEP_ERROR", "ScriptProbe", "describe", "knob", "launch_spec", "step"]
