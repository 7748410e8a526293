"""Typed knobs: three kinds (`Int`, `Float`, `Categorical`) with flags, and conditions.

A knob is *active* only when every one of its conditions holds; a config holds only its active
knobs. Structural (sparse) knobs define the arms of the hybrid search; dense knobs are refined
inside an arm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

Value = int | float | str | bool


def _same_value(a: Any, b: Any) -> bool:
    """`a == b`, except that a bool never equals a number (`True == 1` in Python)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _snap_float(x: float) -> float:
    """`x` to 12 significant digits, so `exp(log(...))` round-off does not leak into configs."""
    return float(f"{x:.12g}")


def _check_unit(name: str, u: float) -> float:
    if math.isnan(u):
        raise ValueError(f"knob {name!r}: unit value is NaN; give a number in [0, 1]")
    return min(max(u, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class Condition:
    """`parent`'s value must be one of `values` (and `parent` itself active) for the child to exist.

    Example:
        >>> Condition("strategy", ("fsdp",)).holds({"strategy": "fsdp"})
        True
    """

    parent: str
    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        # A list would make the condition (and its knob) unhashable and unequal to its JSON copy.
        object.__setattr__(self, "values", tuple(self.values))

    def holds(self, config: dict[str, Any]) -> bool:
        return self.parent in config and any(_same_value(config[self.parent], v) for v in self.values)

    def to_json(self) -> dict[str, Any]:
        return {"parent": self.parent, "values": list(self.values)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Condition:
        return cls(parent=str(data["parent"]), values=tuple(data["values"]))

    def __str__(self) -> str:
        return f"{self.parent} in {list(self.values)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _KnobBase:
    name: str
    """Canonical knob name (see the catalogue)."""
    structural: bool = False
    """True for sparse structural decisions (arms), False for dense execution parameters."""
    when: tuple[Condition, ...] = field(default=())
    """All of these must hold for the knob to be active."""
    default: Value | None = None
    """The value a framework uses when the user sets nothing; `None` means the first/lowest."""

    def is_active(self, config: dict[str, Any]) -> bool:
        return all(cond.holds(config) for cond in self.when)

    def _check_base(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"knob name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "when", tuple(self.when))
        bad = [c for c in self.when if not isinstance(c, Condition)]
        if bad:
            raise ValueError(f"knob {self.name!r}: `when` takes Condition objects, got {bad!r}")

    def _base_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "structural": self.structural,
            "when": [c.to_json() for c in self.when],
            "default": self.default,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Int(_KnobBase):
    """An integer knob: a range `[low, high]` (optionally `log`, `step`) or an explicit ordered `choices`.

    Example:
        >>> Int(name="micro_batch_size", choices=(4, 8, 16), log=True).grid()
        [4, 8, 16]
    """

    low: int | None = None
    high: int | None = None
    log: bool = False
    step: int = 1
    choices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self._check_base()
        if self.choices is not None:
            if not self.choices:
                raise ValueError(f"knob {self.name!r}: `choices` is empty; give at least one value")
            if any(not _is_int(c) for c in self.choices):
                raise ValueError(f"knob {self.name!r}: integer choices expected, got {self.choices!r}")
            object.__setattr__(self, "choices", tuple(sorted({int(c) for c in self.choices})))
            object.__setattr__(self, "low", self.choices[0])
            object.__setattr__(self, "high", self.choices[-1])
        if self.low is None or self.high is None:
            raise ValueError(f"knob {self.name!r}: give `low` and `high`, or `choices`")
        for attr in ("low", "high"):
            if not _is_int(getattr(self, attr)):
                raise ValueError(f"knob {self.name!r}: {attr}={getattr(self, attr)!r} is not an integer")
            object.__setattr__(self, attr, int(getattr(self, attr)))
        if self.low > self.high:
            raise ValueError(f"knob {self.name!r}: low={self.low} is above high={self.high}")
        if self.log and self.low < 1:
            raise ValueError(f"knob {self.name!r}: a log-scale knob needs low >= 1, got low={self.low}")
        if not _is_int(self.step) or self.step < 1:
            raise ValueError(f"knob {self.name!r}: step must be an integer >= 1, got step={self.step!r}")
        if self.log and self.step != 1 and self.choices is None:
            # A log grid (powers of two) cannot stay on a linear step lattice.
            raise ValueError(f"knob {self.name!r}: step={self.step} cannot be combined with log=True;"
                             " use step=1 or explicit `choices`")

    @property
    def _top(self) -> int:
        """The largest value on the step lattice (`high` itself when `high - low` is a multiple of step)."""
        assert self.low is not None and self.high is not None
        return self.low + (self.high - self.low) // self.step * self.step

    @property
    def kind(self) -> str:
        return "int"

    def contains(self, value: Any) -> bool:
        if not _is_real(value):
            return False
        if not _is_int(value) and not (math.isfinite(float(value)) and float(value).is_integer()):
            return False
        number = int(value)
        if self.choices is not None:
            return number in self.choices
        assert self.low is not None and self.high is not None
        return self.low <= number <= self.high and (number - self.low) % self.step == 0

    def grid(self, max_points: int = 16) -> list[int]:
        """Ordered candidate values: the choices, or a log/linear grid over the range."""
        if self.choices is not None:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.log:
            pts = {self.low, self.high}
            v = 1
            while v <= self.high:
                if v >= self.low:
                    pts.add(v)
                v *= 2
            return sorted(pts)
        values = list(range(self.low, self._top + 1, self.step))
        if len(values) <= max_points:
            return values
        idx = {round(i * (len(values) - 1) / (max_points - 1)) for i in range(max_points)}
        return [values[i] for i in sorted(idx)]

    def to_unit(self, value: Any) -> float:
        assert self.low is not None and self.high is not None
        if self.high == self.low:
            return 0.0
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> int:
        assert self.low is not None and self.high is not None
        u = _check_unit(self.name, u)
        if self.log:
            raw = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            raw = self.low + u * (self.high - self.low)
        if self.choices is not None:
            return min(self.choices, key=lambda c: abs(self.to_unit(c) - self.to_unit(raw)))
        snapped = self.low + round((raw - self.low) / self.step) * self.step
        return int(min(max(snapped, self.low), self._top))

    def to_json(self) -> dict[str, Any]:
        d = self._base_json() | {"type": "int", "low": self.low, "high": self.high, "log": self.log}
        d["step"] = self.step
        d["choices"] = list(self.choices) if self.choices is not None else None
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class Float(_KnobBase):
    """A real-valued knob on `[low, high]`, optionally on a log scale or with explicit `choices`.

    Example:
        >>> Float(name="ddp_bucket_cap_mb", low=1.0, high=256.0, log=True).contains(25.0)
        True
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self._check_base()
        if self.choices is not None:
            if not self.choices:
                raise ValueError(f"knob {self.name!r}: `choices` is empty; give at least one value")
            if any(not _is_real(c) for c in self.choices):
                raise ValueError(f"knob {self.name!r}: numeric choices expected, got {self.choices!r}")
            object.__setattr__(self, "choices", tuple(sorted({float(c) for c in self.choices})))
            object.__setattr__(self, "low", self.choices[0])
            object.__setattr__(self, "high", self.choices[-1])
        if self.low is None or self.high is None:
            raise ValueError(f"knob {self.name!r}: give `low` and `high`, or `choices`")
        for attr in ("low", "high"):
            if not _is_real(getattr(self, attr)):
                raise ValueError(f"knob {self.name!r}: {attr}={getattr(self, attr)!r} is not a number")
            object.__setattr__(self, attr, float(getattr(self, attr)))
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"knob {self.name!r}: invalid range [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"knob {self.name!r}: a log-scale knob needs low > 0, got low={self.low}")

    @property
    def kind(self) -> str:
        return "float"

    def contains(self, value: Any) -> bool:
        if not _is_real(value) or not math.isfinite(value):
            return False
        if self.choices is not None:
            return any(math.isclose(value, c, rel_tol=1e-9) for c in self.choices)
        assert self.low is not None and self.high is not None
        return self.low <= value <= self.high

    def grid(self, max_points: int = 8) -> list[float]:
        if self.choices is not None:
            return list(self.choices)
        n = max(max_points, 2)
        return sorted({self.from_unit(i / (n - 1)) for i in range(n)})

    def to_unit(self, value: Any) -> float:
        assert self.low is not None and self.high is not None
        if self.high == self.low:
            return 0.0
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> float:
        assert self.low is not None and self.high is not None
        u = _check_unit(self.name, u)
        if self.log:
            raw = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            raw = self.low + u * (self.high - self.low)
        if self.choices is not None:
            return min(self.choices, key=lambda c: abs(self.to_unit(c) - self.to_unit(raw)))
        return float(min(max(_snap_float(raw), self.low), self.high))

    def to_json(self) -> dict[str, Any]:
        d = self._base_json() | {"type": "float", "low": self.low, "high": self.high, "log": self.log}
        d["choices"] = list(self.choices) if self.choices is not None else None
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class Categorical(_KnobBase):
    """An unordered choice among `choices` (strings, or `(False, True)` for a boolean knob).

    Example:
        >>> Categorical(name="precision", choices=("32-true", "bf16-mixed")).contains("bf16-mixed")
        True
    """

    choices: tuple[Value, ...] = ()

    def __post_init__(self) -> None:
        self._check_base()
        object.__setattr__(self, "choices", tuple(self.choices))
        if not self.choices:
            raise ValueError(f"knob {self.name!r}: `choices` is empty; give at least one value")
        dupes = [c for i, c in enumerate(self.choices) if any(_same_value(c, d) for d in self.choices[:i])]
        if dupes:
            raise ValueError(f"knob {self.name!r}: duplicate choices {dupes!r} in {self.choices!r}")

    @property
    def kind(self) -> str:
        if set(self.choices) <= {True, False} and all(isinstance(c, bool) for c in self.choices):
            return "bool"
        return "categorical"

    def contains(self, value: Any) -> bool:
        # `True == 1` in Python: keep bools and numbers apart.
        return any(type(value) is type(c) and value == c for c in self.choices)

    def grid(self, max_points: int = 0) -> list[Value]:
        return list(self.choices)

    def to_json(self) -> dict[str, Any]:
        return self._base_json() | {"type": "categorical", "choices": list(self.choices)}


def Bool(name: str, **kwargs: Any) -> Categorical:  # noqa: N802 - reads like a type, as Int/Float do
    """A boolean knob: a `Categorical` over `(False, True)`.

    Example:
        >>> Bool("activation_checkpointing", structural=True).kind
        'bool'
    """
    return Categorical(name=name, choices=(False, True), **kwargs)


Knob = Int | Float | Categorical


def _is_int(x: Any) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def knob_from_json(data: dict[str, Any]) -> Knob:
    """Rebuild a knob from `Knob.to_json()` output."""
    common = {
        "name": data["name"],
        "structural": bool(data.get("structural", False)),
        "when": tuple(Condition.from_json(c) for c in data.get("when", [])),
        "default": data.get("default"),
    }
    kind = data.get("type")
    if kind == "int":
        choices = data.get("choices")
        if choices is not None:
            return Int(**common, choices=tuple(int(c) for c in choices), log=bool(data.get("log")),
                       step=int(data.get("step", 1)))
        return Int(**common, low=int(data["low"]), high=int(data["high"]), log=bool(data.get("log")),
                   step=int(data.get("step", 1)))
    if kind == "float":
        choices = data.get("choices")
        if choices is not None:
            return Float(**common, choices=tuple(float(c) for c in choices), log=bool(data.get("log")))
        return Float(**common, low=float(data["low"]), high=float(data["high"]), log=bool(data.get("log")))
    if kind == "categorical":
        return Categorical(**common, choices=tuple(data["choices"]))
    raise ValueError(f"knob {data.get('name')!r}: unknown knob type {kind!r};"
                     " use 'int', 'float' or 'categorical'")
