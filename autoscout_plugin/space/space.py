"""The conditional configuration space: knobs, their condition tree, constraints, encoding, JSON.

A config is a plain `dict` holding exactly the active knobs. `Space.canonical` turns user or
optimizer output (numpy scalars, extra inactive keys) into that form and rejects anything invalid
with an error that names the knob and the value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .constraints import Constraint, GlobalBatch, MemoryCap, constraint_from_json
from .knobs import Categorical, Condition, Float, Int, Knob, knob_from_json

Config = dict[str, Any]

#: Above this many grid points `enumerate` refuses and callers sample instead.
MAX_ENUMERATION = 200_000
#: `candidates` lists the whole grid up to this many grid points and samples above it.
CANDIDATES_ENUMERATE_UP_TO = 20_000
#: `grid_size` walks the condition tree only when the parents' grids have at most this many combinations.
_MAX_PARENT_COMBINATIONS = 100_000


class SpaceError(ValueError):
    """An invalid space, config or constraint set; the message says what and what to do."""


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (skopt and sklearn hand back numpy types)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


class Space:
    """An ordered set of typed knobs with conditions and constraints.

    Parents must come before their children. Constraints are checked by `violations`.

    Example:
        >>> from autoscout_plugin.space import Bool, Categorical, Condition, Int, Space
        >>> space = Space([
        ...     Categorical(name="strategy", choices=("single", "fsdp"), structural=True),
        ...     Bool("cpu_offload", structural=True, when=(Condition("strategy", ("fsdp",)),)),
        ...     Int(name="micro_batch_size", choices=(4, 8)),
        ... ])
        >>> space.canonical({"strategy": "single", "micro_batch_size": 8})
        {'micro_batch_size': 8, 'strategy': 'single'}
    """

    def __init__(self, knobs: Sequence[Knob], constraints: Sequence[Constraint] = ()) -> None:
        self.knobs: tuple[Knob, ...] = tuple(knobs)
        self.constraints: tuple[Constraint, ...] = tuple(constraints)
        self._by_name: dict[str, Knob] = {}
        for knob in self.knobs:
            if knob.name in self._by_name:
                raise SpaceError(f"knob {knob.name!r} is defined twice; each knob name must be unique")
            for cond in knob.when:
                if not cond.values:
                    raise SpaceError(f"knob {knob.name!r}: condition on {cond.parent!r} lists no values,"
                                     " so the knob could never be active; list the parent values it needs")
                parent = self._by_name.get(cond.parent)
                if parent is None:
                    raise SpaceError(
                        f"knob {knob.name!r} depends on {cond.parent!r}, which is not defined before it;"
                        " list parents before their children")
                bad = [v for v in cond.values if not parent.contains(v)]
                if bad:
                    raise SpaceError(f"knob {knob.name!r}: condition on {cond.parent!r} uses values {bad}"
                                     f" that {cond.parent!r} cannot take")
            if knob.default is not None and not knob.contains(knob.default):
                raise SpaceError(f"knob {knob.name!r}: default {knob.default!r} is outside its values")
            self._by_name[knob.name] = knob
        if not self.knobs:
            raise SpaceError("a space needs at least one knob")

    # ----------------------------------------------------------------- lookup
    @property
    def names(self) -> list[str]:
        return [k.name for k in self.knobs]

    def __getitem__(self, name: str) -> Knob:
        try:
            return self._by_name[name]
        except KeyError:
            raise SpaceError(f"unknown knob {name!r}; this space has {self.names}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def structural(self) -> list[Knob]:
        return [k for k in self.knobs if k.structural]

    @property
    def dense(self) -> list[Knob]:
        return [k for k in self.knobs if not k.structural]

    @property
    def global_batch(self) -> GlobalBatch | None:
        return next((c for c in self.constraints if isinstance(c, GlobalBatch)), None)

    # --------------------------------------------------------------- configs
    def active(self, config: Config) -> list[Knob]:
        """The knobs active under `config` (parents decide, in order)."""
        out: list[Knob] = []
        seen: Config = {}
        for knob in self.knobs:
            if knob.is_active(seen):
                out.append(knob)
                if knob.name in config:
                    seen[knob.name] = config[knob.name]
        return out

    def canonical(self, config: dict[str, Any], *, allow_inactive: bool = False) -> Config:
        """Validate `config` and return it with only its active knobs, as Python scalars, keys sorted.

        Raises `SpaceError` naming the knob and value for unknown knobs, missing active knobs,
        out-of-range values and (unless `allow_inactive`) values given for inactive knobs.
        """
        unknown = [f"{k}={_plain(v)!r}" for k, v in config.items()
                   if k not in self._by_name and k != "grad_accum"]
        if unknown:
            raise SpaceError(f"unknown knob(s) {', '.join(unknown)}; this space has {self.names}")
        out: Config = {}
        for knob in self.knobs:
            if not knob.is_active(out):
                if knob.name in config and not allow_inactive:
                    conds = " and ".join(str(c) for c in knob.when)
                    raise SpaceError(f"knob {knob.name!r}={_plain(config[knob.name])!r} is inactive here:"
                                     f" it needs {conds}")
                continue
            if knob.name not in config:
                raise SpaceError(f"knob {knob.name!r} is active but missing from the config")
            value = _plain(config[knob.name])
            if isinstance(knob, Int) and isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(knob, Float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not knob.contains(value):
                raise SpaceError(f"knob {knob.name!r}: value {value!r} is outside its range"
                                 f" {self._describe(knob)}")
            if isinstance(knob, Float) and knob.choices is not None:
                # `contains` allows round-off; store the choice itself so equal configs compare equal.
                value = min(knob.choices, key=lambda c: abs(c - value))
            out[knob.name] = value
        if "grad_accum" in config and "grad_accum" not in self._by_name:
            self._check_derived_grad_accum(_plain(config["grad_accum"]), out)
        return dict(sorted(out.items()))

    def _check_derived_grad_accum(self, given: Any, config: Config) -> None:
        """A config may carry the derived `grad_accum` back in; accept it only if it is the derived value."""
        derived = self.derived(config).get("grad_accum")
        if derived is None:
            raise SpaceError(f"unknown knob 'grad_accum'={given!r}: this space has no grad_accum knob and"
                             " derives none (no satisfiable global_batch constraint); remove it")
        if isinstance(given, bool) or given != derived:
            raise SpaceError(f"knob 'grad_accum'={given!r} disagrees with the value {derived} derived from"
                             f" {self.global_batch}; remove it or use {derived}")

    @staticmethod
    def _describe(knob: Knob) -> str:
        if isinstance(knob, Categorical) or knob.choices is not None:
            return str(list(knob.choices or ()))
        return f"[{knob.low}, {knob.high}]" + (" (log)" if knob.log else "")

    def violations(self, config: Config, memory_mb: Callable[[Config], float] | None = None) -> list[str]:
        """Constraint violations of a canonical config, as messages; empty when feasible."""
        out = []
        for constraint in self.constraints:
            msg = (constraint.violation(config, memory_mb) if isinstance(constraint, MemoryCap)
                   else constraint.violation(config))
            if msg:
                out.append(msg)
        return out

    def is_feasible(self, config: Config, memory_mb: Callable[[Config], float] | None = None) -> bool:
        return not self.violations(config, memory_mb)

    def derived(self, config: Config) -> dict[str, Any]:
        """Values that follow from a config and the constraints (today: `grad_accum`)."""
        gb = self.global_batch
        if gb is None:
            return {}
        accum = gb.grad_accum(config)
        return {} if accum is None else {"grad_accum": accum}

    def moves(self, a: Config, b: Config) -> int:
        """How many independent moves turn config `a` into `b`: the changed knobs, where changes that a
        constraint ties together count as one move. Two changed knobs are tied when reverting one of
        them alone breaks a constraint that reverting both repairs: going from one process to DDP
        changes `strategy`, `num_processes` and, under threads x processes <= cores, `num_threads`,
        and that is one move, not three.

        Example:
            >>> from autoscout_plugin.space import Categorical, Implies, Int, MaxProduct
            >>> s = Space([Categorical(name="strategy", choices=("single", "ddp")),
            ...            Int(name="num_processes", low=1, high=2), Int(name="num_threads", low=1, high=2),
            ...            Int(name="micro_batch_size", low=1, high=8, log=True)],
            ...           [Implies("strategy", ("single",), "num_processes", (1,)),
            ...            Implies("strategy", ("ddp",), "num_processes", (2,)),
            ...            MaxProduct(("num_threads", "num_processes"), 2, "cores")])
            >>> one = {"strategy": "single", "num_processes": 1, "num_threads": 2, "micro_batch_size": 4}
            >>> s.moves(one, {**one, "strategy": "ddp", "num_processes": 2, "num_threads": 1})
            1
            >>> s.moves(one, {"strategy": "ddp", "num_processes": 2, "num_threads": 1, "micro_batch_size": 8})
            2
        """
        changed = [n for n in self.names if a.get(n) != b.get(n)]
        if len(changed) < 2:
            return len(changed)
        checks = [c for c in self.constraints if not isinstance(c, MemoryCap) and c.violation(b) is None]
        parent = {n: n for n in changed}

        def root(n: str) -> str:
            while parent[n] != n:
                n = parent[n]
            return n

        for n in changed:
            reverted = {**b, n: a.get(n)}
            for constraint in checks:
                if constraint.violation(reverted) is None:
                    continue
                for m in changed:
                    if m != n and constraint.violation({**reverted, m: a.get(m)}) is None:
                        parent[root(m)] = root(n)
        return len({root(n) for n in changed})

    @property
    def choices(self) -> dict[str, list[Any]]:
        """Each knob's values (its grid), by name."""
        return {k.name: list(k.grid()) for k in self.knobs}

    def default(self) -> Config:
        """Every active knob at its default (or its first/lowest value)."""
        out: Config = {}
        for knob in self.knobs:
            if knob.is_active(out):
                out[knob.name] = knob.default if knob.default is not None else knob.grid()[0]
        return self.canonical(out)

    def key(self, config: Config) -> str:
        """A stable string for a canonical config (dict keys sorted, JSON)."""
        return json.dumps(self.canonical(config), sort_keys=True)

    def arm_of(self, config: Config) -> Config:
        """The structural part of a config: the arm it belongs to."""
        return {k: v for k, v in config.items() if k in self._by_name and self._by_name[k].structural}

    # ------------------------------------------------------------ enumeration
    def grid_size(self) -> int:
        """The number of grid configs under the condition tree (constraints ignored).

        Exact when the knobs that other knobs depend on have few combinations; otherwise the product
        of all grid sizes, an upper bound.
        """
        parents = {c.parent for knob in self.knobs for c in knob.when}
        if math.prod(len(k.grid()) for k in self.knobs if k.name in parents) > _MAX_PARENT_COMBINATIONS:
            return math.prod(len(k.grid()) for k in self.knobs)
        return self._count({}, 0, parents)

    def _count(self, partial: Config, index: int, parents: set[str]) -> int:
        """Grid configs from knob `index` on; only parents' values change what is active later."""
        if index == len(self.knobs):
            return 1
        knob = self.knobs[index]
        if not knob.is_active(partial):
            return self._count(partial, index + 1, parents)
        if knob.name not in parents:
            return len(knob.grid()) * self._count(partial, index + 1, parents)
        total = 0
        for value in knob.grid():
            partial[knob.name] = value
            total += self._count(partial, index + 1, parents)
        del partial[knob.name]
        return total

    def enumerate(self, *, feasible_only: bool = True, limit: int = MAX_ENUMERATION) -> list[Config]:
        """All grid configs respecting the condition tree (and the constraints if `feasible_only`)."""
        if self.grid_size() > limit:
            raise SpaceError(f"the space has up to {self.grid_size()} grid points, more than {limit};"
                             " sample it instead")
        out = [c for c in self._expand({}, 0) if not feasible_only or self.is_feasible(c)]
        return [dict(sorted(c.items())) for c in out]

    def _expand(self, partial: Config, index: int) -> Iterator[Config]:
        if index == len(self.knobs):
            yield dict(partial)
            return
        knob = self.knobs[index]
        if not knob.is_active(partial):
            yield from self._expand(partial, index + 1)
            return
        for value in knob.grid():
            partial[knob.name] = value
            yield from self._expand(partial, index + 1)
        del partial[knob.name]

    def sample(self, rng: random.Random, *, feasible_only: bool = True, tries: int = 1000) -> Config:
        """A random config (uniform per knob, log-uniform where `log`), rejection-sampled for constraints."""
        for _ in range(tries):
            config: Config = {}
            for knob in self.knobs:
                if knob.is_active(config):
                    config[knob.name] = self._sample_knob(knob, rng)
            config = dict(sorted(config.items()))
            if not feasible_only or self.is_feasible(config):
                return config
        raise SpaceError(f"no feasible config found in {tries} random draws; constraints:"
                         f" {[str(c) for c in self.constraints]}")

    @staticmethod
    def _sample_knob(knob: Knob, rng: random.Random) -> Any:
        if isinstance(knob, Categorical):
            return rng.choice(knob.choices)
        if knob.choices is not None:
            return rng.choice(knob.choices)
        if isinstance(knob, Int) and not knob.log:
            # Rounding a uniform real would give the end points half the weight of the others.
            assert knob.low is not None
            return rng.randrange(knob.low, knob._top + 1, knob.step)
        return knob.from_unit(rng.random())

    def candidates(self, rng: random.Random, n_samples: int = 2000) -> list[Config]:
        """The whole feasible grid when it is small enough, else a feasible random sample."""
        if self.grid_size() <= CANDIDATES_ENUMERATE_UP_TO:
            return self.enumerate()
        seen: dict[str, Config] = {}
        for _ in range(n_samples):
            c = self.sample(rng)
            seen.setdefault(json.dumps(c, sort_keys=True), c)
        return list(seen.values())

    def check_satisfiable(self) -> None:
        """Raise `SpaceError` if no config satisfies every constraint."""
        if self.grid_size() > MAX_ENUMERATION:
            self.sample(random.Random(0))
        elif not self.enumerate():
            try:  # the grid of a wide range is a subset: a feasible value may lie between grid points
                self.sample(random.Random(0))
                return
            except SpaceError:
                pass
            first = next(iter(self._expand({}, 0)), {})
            raise SpaceError(
                f"no configuration satisfies the constraints {[str(c) for c in self.constraints]};"
                f" e.g. {first} fails: {self.violations(first)}. Widen the knob ranges or relax a constraint")

    def pin(self, values: dict[str, Any]) -> Space:
        """A copy of the space with some knobs fixed to one value each (their condition tree kept).

        Conditions are narrowed to the values their parent can still take; a knob that can no longer
        be active (e.g. `fsdp_sharding` once `strategy` is pinned to `ddp`) is left out.
        """
        for name in values:
            self[name]  # unknown names raise
        kept: dict[str, Knob] = {}
        for knob in self.knobs:
            when = self._narrowed_conditions(knob, kept)
            if when is None:
                if knob.name in values:
                    raise SpaceError(f"cannot pin {knob.name!r} to {values[knob.name]!r}: it is inactive once"
                                     f" {[c.parent for c in knob.when]} are pinned to {values}")
                continue
            if knob.name in values:
                kept[knob.name] = self._pinned(knob, _plain(values[knob.name]), when)
            elif when != knob.when:
                kept[knob.name] = dataclasses.replace(knob, when=when)
            else:
                kept[knob.name] = knob
        return Space(list(kept.values()), self.constraints)

    @staticmethod
    def _narrowed_conditions(knob: Knob, kept: dict[str, Knob]) -> tuple[Condition, ...] | None:
        """`knob.when` with values the (possibly pinned) parents can take; None if it can never hold."""
        when = []
        for cond in knob.when:
            parent = kept.get(cond.parent)
            values = tuple(v for v in cond.values if parent is not None and parent.contains(v))
            if not values:
                return None
            when.append(cond if values == cond.values else Condition(cond.parent, values))
        return tuple(when)

    def _pinned(self, knob: Knob, value: Any, when: tuple[Condition, ...]) -> Knob:
        if not knob.contains(value):
            raise SpaceError(f"cannot pin {knob.name!r} to {value!r}: outside {self._describe(knob)}")
        common = {"name": knob.name, "structural": knob.structural, "when": when}
        if isinstance(knob, Int):
            return Int(**common, default=int(value), choices=(int(value),), log=knob.log)
        if isinstance(knob, Float):
            return Float(**common, default=float(value), choices=(float(value),), log=knob.log)
        return Categorical(**common, default=value, choices=(value,))

    def arms(self) -> list[Config]:
        """Every combination of active structural knobs (the arms of the hybrid search)."""
        if not self.structural:
            return [{}]
        out, seen = [], set()
        for config in self.candidates(random.Random(0)):
            arm = self.arm_of(config)
            key = json.dumps(arm, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(arm)
        return out


    # ---------------------------------------------------------------- encoding
    def _slots(self) -> list[tuple[Knob, int]]:
        return [(k, len(k.choices) if isinstance(k, Categorical) and k.kind != "bool" else 1)
                for k in self.knobs]

    @property
    def encoded_dim(self) -> int:
        return sum(width for _, width in self._slots())

    def encode(self, config: Config) -> np.ndarray:
        """A fixed-length float vector: numeric knobs on [0, 1] (log where `log`), categoricals one-hot,
        booleans 0/1, inactive knobs -1 (numeric/bool) or all zeros (one-hot).

        The config is validated first (`canonical`, values for inactive knobs ignored), so two configs
        that differ only in inactive knobs encode the same.
        """
        config = self.canonical(config, allow_inactive=True)
        vec: list[float] = []
        for knob, _width in self._slots():
            value = config.get(knob.name)
            if isinstance(knob, Categorical):
                if knob.kind == "bool":
                    vec.append(-1.0 if value is None else float(bool(value)))
                else:
                    vec.extend(1.0 if type(value) is type(c) and value == c else 0.0 for c in knob.choices)
            else:
                vec.append(-1.0 if value is None else knob.to_unit(value))
        return np.asarray(vec, dtype=float)

    def decode(self, vector: Sequence[float]) -> Config:
        """The inverse of `encode` (nearest valid value); inactive knobs follow from their parents."""
        if len(vector) != self.encoded_dim:
            raise SpaceError(f"encoded vector has length {len(vector)}, expected {self.encoded_dim}")
        out: Config = {}
        pos = 0
        for knob, width in self._slots():
            chunk = vector[pos:pos + width]
            pos += width
            if not knob.is_active(out):
                continue
            if isinstance(knob, Categorical):
                if knob.kind == "bool":
                    out[knob.name] = bool(chunk[0] >= 0.5)
                else:
                    out[knob.name] = knob.choices[int(np.argmax(chunk))]
            else:
                out[knob.name] = knob.from_unit(float(chunk[0]))
        return dict(sorted(out.items()))

    # -------------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        return {"knobs": [k.to_json() for k in self.knobs],
                "constraints": [c.to_json() for c in self.constraints]}

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> Space:
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, dict) or "knobs" not in data:
            raise SpaceError("a space in JSON is an object with 'knobs' (and 'constraints'),"
                             f" got {data!r:.200}")
        return cls([knob_from_json(k) for k in data["knobs"]],
                   [constraint_from_json(c) for c in data.get("constraints", [])])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def __repr__(self) -> str:
        return f"Space({self.names}, constraints={[str(c) for c in self.constraints]})"
