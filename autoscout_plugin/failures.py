"""What a failed trial means: its failure class, the setting its evidence names, what that rules out.

Every failed trial gets one class:

- `unsupported`: deterministic for a setting (a dynamo/inductor error, a dtype or operator not
  implemented, a strategy or backend unavailable). The search excludes the setting the error names
  after this one failure (`exclusions_from`).
- `oom`: out of memory. The search moves a memory boundary: a config that needs at least as much
  memory (`needs_at_least`) becomes unlikely; no value is banned.
- `timeout` (a hang), `nan` (a non-finite loss or measurement), `crash` (anything else): the search
  blames what is new in the config (Occam: values, then pairs of values, never seen in a success).
- `transient`: a port in use, a rendezvous or store timeout. The tuner retries it once and never tells
  the search; a second one in a row counts as a crash.

The class comes from the trial's status and its error text (which carries the exception's qualified
type name, see `describe_exception`), and the blamed knob from what that text names *and* what the
config has switched on: a dynamo error blames `compile` only when the trial compiled. This module
imports no framework; it reads text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

FailureClass = Literal["unsupported", "oom", "timeout", "nan", "transient", "crash"]
FAILURE_CLASSES: tuple[str, ...] = ("unsupported", "oom", "timeout", "nan", "transient", "crash")

_STATUS_CLASS: dict[str, FailureClass] = {"oom": "oom", "timeout": "timeout", "nan": "nan",
                                          "invalid": "unsupported"}

# Patterns over the lower-cased error text. `diagnose` checks the transient ones first, then the
# knobs a text names (`_named_knobs`, most specific first), then whether it says "not supported".
_TRANSIENT = (
    re.compile(r"address already in use|eaddrinuse|errno 98\b"),
    re.compile(r"rendezvous\w*(error)?.{0,80}(timeout|timed out)|rendezvoustimeout"),
    re.compile(r"(diststoreerror|tcpstore|socket).{0,120}(timeout|timed out)|timed out after \d+ seconds waiting"),
    re.compile(r"connection refused|temporary failure in name resolution|resource temporarily unavailable"),
)
_COMPILE = re.compile(
    r"torch\._dynamo|torch\._inductor|backendcompilerfailed|torchruntimeerror|inductorerror|cppcompileerror"
    r"|fake tensor|no fake impl|torch\.compile|dynamo|inductor|triton")
_LOW_PRECISION = re.compile(
    r"bfloat16|\bbf16\b|float16|\bhalf\b|low precision dtypes?|could not create a primitive")
_NOT_SUPPORTED = re.compile(
    r"notimplementederror|not implemented for|not supported|unsupported|does not support|is not available"
    r"|no module named|not compiled with|not built with|(doesn't|does not) have \w+ built in|requires a gpu"
    r"|could not create a primitive")
_STRATEGY = re.compile(r"\bnccl\b|\bmpi\b|\bfsdp\b|\bddp\b|distributeddataparallel|fully_shard|deepspeed"
                       r"|process ?group|\bgloo\b|distributed package|requires a gpu accelerator")
# Errors of the distributed backend itself: no multi-process strategy can start, not just the one tried.
_BACKEND = re.compile(r"distributed package|\bnccl\b|\bgloo\b|\bmpi\b|process ?group|init_process_group")
_COMM_HOOK = re.compile(r"comm(unication)?[ _]hook|compress_hook|powersgd")
# The value of each knob that is always available: an error cannot be blamed on a knob left there.
_PLAIN_VALUES: dict[str, tuple[str, ...]] = {"compile": ("off",), "ddp_comm_hook": ("none",),
                                             "precision": ("32-true", "fp32", "32"), "strategy": ("single",)}


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A failed trial's class, the knobs its evidence names, and why, in one line.

    Example:
        >>> d = diagnose("error", "torch._dynamo.exc.TorchRuntimeError: no fake impl registered",
        ...              {"compile": "default", "precision": "32-true"})
        >>> d.failure, d.blame
        ('unsupported', ('compile',))
    """

    failure: FailureClass
    blame: tuple[str, ...] = ()
    reason: str = ""


def diagnose(status: str, error: str | None, config: Mapping[str, Any] | None = None) -> Diagnosis | None:
    """The failure class of a trial with `status` and `error` text, and the knobs of `config` its
    evidence names; None for a successful trial."""
    if status == "ok":
        return None
    text = (error or "").lower()
    config = config or {}
    if status in _STATUS_CLASS:
        failure = _STATUS_CLASS[status]
        blame = _named_knobs(text, config) if failure == "unsupported" else ()
        return Diagnosis(failure, blame, _first_line(error) or status)
    if any(p.search(text) for p in _TRANSIENT):
        return Diagnosis("transient", (), "a transient fault (port, rendezvous or store): " + _first_line(error))
    blame = _named_knobs(text, config)
    if blame or _NOT_SUPPORTED.search(text) or _COMPILE.search(text):
        return Diagnosis("unsupported", blame, _first_line(error))
    return Diagnosis("crash", (), _first_line(error) or "the trial failed without an error message")


def _on(config: Mapping[str, Any], knob: str) -> bool:
    """Whether `config` sets `knob` away from its plain, always-available value."""
    return knob in config and config[knob] not in (None, False) and str(config[knob]) not in _PLAIN_VALUES[knob]


def _named_knobs(text: str, config: Mapping[str, Any]) -> tuple[str, ...]:
    """The knobs switched on in `config` that the error text points at (most specific first)."""
    if _COMPILE.search(text) and _on(config, "compile"):
        return ("compile",)
    if _COMM_HOOK.search(text) and _on(config, "ddp_comm_hook"):
        return ("ddp_comm_hook",)
    if _LOW_PRECISION.search(text) and _on(config, "precision") and _NOT_SUPPORTED.search(text):
        return ("precision",)
    if _STRATEGY.search(text) and _on(config, "strategy") and _NOT_SUPPORTED.search(text):
        return ("strategy",)
    return ()


def _first_line(error: str | None, limit: int = 160) -> str:
    line = next((ln.strip() for ln in (error or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def precision_dtype(value: Any) -> str:
    """The 16-bit type a precision setting computes in (`bf16`, `fp16`), or `fp32`."""
    text = str(value).lower()
    if "bf16" in text or "bfloat16" in text:
        return "bf16"
    if "16" in text or "half" in text:
        return "fp16"
    return "fp32"


def excluded_values(knob: str, value: Any, choices: Sequence[Any], error: str | None = None) -> tuple[Any, ...]:
    """The values of `knob` that an `unsupported` failure at `value` (with `error` text) rules out with it.

    Every `compile` mode runs the same dynamo trace and inductor backend, so a failure of one rules
    out all but `off`; a precision rules out the others computing in the same 16-bit type
    (`bf16-mixed` and `bf16-true`); a strategy that failed in the distributed backend itself ("doesn't
    have NCCL built in", a process-group error) rules out every multi-process strategy; anything else
    rules out just the value that failed.

    Example:
        >>> excluded_values("compile", "default", ["off", "default", "max-autotune"])
        ('default', 'max-autotune')
        >>> excluded_values("precision", "bf16-mixed", ["32-true", "bf16-mixed", "bf16-true", "16-mixed"])
        ('bf16-mixed', 'bf16-true')
    """
    if knob == "compile":
        return tuple(c for c in choices if c not in ("off", False, None))
    if knob == "precision":
        dtype = precision_dtype(value)
        return tuple(c for c in choices if precision_dtype(c) == dtype)
    if knob == "strategy" and _BACKEND.search((error or "").lower()):
        return tuple(c for c in choices if str(c) not in _PLAIN_VALUES["strategy"])
    return (value,)


def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """`module.Type: message` on one line (the chained cause's type and first line appended), for
    the trial's error text: the qualified type name is evidence (`torch._dynamo.exc...`)."""
    text = f"{_qualified(exc)}: {' '.join(str(exc).split())}"
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and cause is not exc:
        text += f" [from {_qualified(cause)}: {_first_line(str(cause), 120)}]"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _qualified(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"


# ------------------------------------------------------------------ what failures rule out
# Knobs that change what a blamed setting runs through, so that its failure under one of their values
# says nothing certain about the others. Checkpointed regions are traced by dynamo as their own
# higher-order ops (with their own fallbacks), so a compile error without checkpointing need not recur
# with it: measured on benchmarks/tables/recurrent_lm, where compile fails without checkpointing and is
# the fastest single-process setting with it. An exclusion of such a knob is scoped to the failing
# trial's values of these; once it has failed under every one of them, it holds everywhere.
_SCOPE: dict[str, tuple[str, ...]] = {"compile": ("activation_checkpointing",)}


@dataclass(frozen=True, slots=True)
class Exclusion:
    """Values of one knob the study no longer tries, and why (an `unsupported` failure named it);
    `when` scopes it to configs with those values of other knobs (empty: everywhere).

    Example:
        >>> ex = Exclusion("compile", ("default", "max-autotune"), "trial 1: torch._dynamo.exc.Unsupported")
        >>> ex.matches({"compile": "default"}), ex.matches({"compile": "off"})
        (True, False)
        >>> scoped = Exclusion("compile", ("default",), "trial 1", (("activation_checkpointing", False),))
        >>> scoped.matches({"compile": "default", "activation_checkpointing": True})
        False
    """

    knob: str
    values: tuple[Any, ...]
    reason: str
    when: tuple[tuple[str, Any], ...] = ()

    def matches(self, config: Mapping[str, Any]) -> bool:
        return (self.knob in config and config[self.knob] in self.values
                and all(k in config and config[k] == v for k, v in self.when))

    def without(self, ran: Sequence[Mapping[str, Any]]) -> Exclusion:
        """This exclusion less the values some config in `ran` (successful trials) used within its scope."""
        return replace(self, values=tuple(v for v in self.values
                                          if not any(self.matches(c) and c[self.knob] == v for c in ran)))

    def describe(self) -> str:
        """`compile in ['default'] (where activation_checkpointing=False)`."""
        scope = ", ".join(f"{k}={v}" for k, v in self.when)
        return f"{self.knob} in {list(self.values)}" + (f" (where {scope})" if scope else "")

    def to_json(self) -> dict[str, Any]:
        out = {"knob": self.knob, "values": list(self.values), "reason": self.reason}
        if self.when:
            out["when"] = dict(self.when)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Exclusion:
        when = tuple(sorted(dict(data.get("when") or {}).items()))
        return cls(str(data["knob"]), tuple(data["values"]), str(data.get("reason", "")), when)


def exclusions_from(trials: Sequence[Any], choices: Mapping[str, Sequence[Any]]) -> list[Exclusion]:
    """The exclusions a study's trials justify: for each `unsupported` failure, the values of each knob
    it blames (see `excluded_values`) that no successful trial has used. A value that ran fine somewhere
    is not excluded: the failure then lies in a combination, which the Occam blame handles. A knob
    whose failure depends on another's value (`compile` on `activation_checkpointing`) is excluded
    only where that value holds, until it has failed under every value.

    `trials` are `Trial`s; `choices` maps each knob of the space to its values.
    """
    ok = [t.config for t in trials if t.ok]
    out: dict[tuple[str, tuple[tuple[str, Any], ...]], Exclusion] = {}
    for trial in trials:
        if trial.ok or trial.failure != "unsupported":
            continue
        for knob in trial.blame:
            if knob not in trial.config or knob not in choices:
                continue
            when = tuple((k, trial.config[k]) for k in _SCOPE.get(knob, ()) if k in trial.config and k in choices)
            values = Exclusion(knob, excluded_values(knob, trial.config[knob], choices[knob], trial.error), "",
                               when).without(ok).values
            if trial.config[knob] not in values:
                continue
            reason = f"trial {trial.number}: {_first_line(trial.error) or 'unsupported'}"
            known = out.get((knob, when))
            if known is not None:  # a second value of the same knob failed too: one exclusion holds both
                values = known.values + tuple(v for v in values if v not in known.values)
                reason = known.reason if trial.config[knob] in known.values else f"{known.reason}; {reason}"
            out[(knob, when)] = Exclusion(knob, values, reason, when)
    return _widen(list(out.values()), choices)


def _widen(exclusions: list[Exclusion], choices: Mapping[str, Sequence[Any]]) -> list[Exclusion]:
    """Scoped exclusions of one knob that together cover every value of their scope knob become one
    that holds everywhere (the values excluded under all of them)."""
    out = [ex for ex in exclusions if len(ex.when) != 1]
    groups: dict[tuple[str, str], list[Exclusion]] = {}
    for ex in exclusions:
        if len(ex.when) == 1:
            groups.setdefault((ex.knob, ex.when[0][0]), []).append(ex)
    for (knob, scope), group in groups.items():
        covered = {repr(ex.when[0][1]) for ex in group}
        common = [v for v in group[0].values if all(v in ex.values for ex in group)]
        if covered >= {repr(v) for v in choices.get(scope, ())} and common:
            out.append(Exclusion(knob, tuple(common), "; ".join(ex.reason for ex in group)))
            rest = [Exclusion(ex.knob, tuple(v for v in ex.values if v not in common), ex.reason, ex.when)
                    for ex in group]
            out += [ex for ex in rest if ex.values]
        else:
            out += group
    return out


def blamed_by_exclusion(trial: Any, exclusions: Sequence[Exclusion]) -> bool:
    """Whether an exclusion already explains this failed trial."""
    return any(ex.matches(trial.config) for ex in exclusions)


# Knobs whose values order a config's memory need: higher rank, at least as much memory, all else equal.
# A DDP process holds what a single one does plus its gradient buckets; more processes on a host hold
# more in all (on GPUs, per device, the same); bf16/fp16 activations take half of fp32's. FSDP and
# DeepSpeed shard, so they are not ordered against the others.
_MEMORY_RANK: dict[str, Any] = {
    "micro_batch_size": lambda v: float(v),
    "num_processes": lambda v: float(v),
    "strategy": lambda v: {"single": 0.0, "ddp": 1.0}[str(v)],
    "precision": lambda v: 0.0 if "true" in str(v) and "32" not in str(v) else 1.0 if "16" in str(v) else 2.0,
    "activation_checkpointing": lambda v: 0.0 if v else 1.0,
    "cpu_offload": lambda v: 0.0 if v else 1.0,
    "zero_stage": lambda v: -float(v),
    "fsdp_sharding": lambda v: {"full": 0.0, "hybrid": 1.0, "shard_grad_op": 2.0, "no_shard": 3.0}.get(str(v), 3.0),
    "fsdp_reshard_after_forward": lambda v: 0.0 if v else 1.0,
}
# Knobs that barely move memory: they may differ between an out-of-memory config and one it predicts.
_MEMORY_NEUTRAL = frozenset({"num_threads", "pin_memory", "ddp_static_graph", "ddp_bucket_view",
                             "ddp_bucket_cap_mb", "grad_accum"})


def needs_at_least(config: Mapping[str, Any], failed: Mapping[str, Any]) -> bool:
    """Whether `config` needs at least the memory of `failed` (an out-of-memory config): it is at
    least as large in every memory-ordered knob (a larger micro-batch, no more checkpointing, sharding
    or offload), equal in every other knob that moves memory, and free in the neutral ones (threads).

    Example:
        >>> oom = {"micro_batch_size": 16, "activation_checkpointing": True, "num_threads": 2}
        >>> needs_at_least({"micro_batch_size": 32, "activation_checkpointing": False, "num_threads": 1}, oom)
        True
        >>> needs_at_least({"micro_batch_size": 8, "activation_checkpointing": False, "num_threads": 2}, oom)
        False
    """
    for knob in set(config) | set(failed):
        if knob in _MEMORY_NEUTRAL:
            continue
        if knob not in config or knob not in failed:
            return False
        if knob in _MEMORY_RANK and config[knob] != failed[knob]:
            try:
                if _MEMORY_RANK[knob](config[knob]) < _MEMORY_RANK[knob](failed[knob]):
                    return False
            except (KeyError, TypeError, ValueError):  # values the rank does not order (fsdp vs ddp)
                return False
        elif config[knob] != failed[knob]:
            return False
    return True
