"""Study fingerprints (exact reuse) and workload similarity (warm start).

A fingerprint names a tuning problem exactly: the same workload on the same hardware over the same
space gives the same fingerprint, so a solved problem reuses its winner with zero trials and an
interrupted one resumes. `similarity` is the fuzzy counterpart, used to pick past studies whose
trials seed a new search.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from .errors import StoreError

FINGERPRINT_CHARS = 24
"""Hex characters kept from the sha256 digest (96 bits: collisions are not a practical concern)."""

# Missing categorical fields take the defaults of `costmodel.Workload`, so a hand-written dict
# and `Workload.to_json()` of the same job compare equal.
_CATEGORICAL_DEFAULTS: dict[str, str] = {"task": "train", "family": "unknown", "arch": "decoder"}

# Factor applied when a categorical field differs. A different family alone takes the similarity
# below the default warm-start threshold (0.5); train and finetune behave alike, inference does not.
_FAMILY_MISMATCH = 0.25
_ARCH_MISMATCH = 0.6
_TASK_MISMATCH = 0.5
_TRAIN_FINETUNE = 0.8

# Weights of the size fields, compared on a log2 scale.
_NUMERIC_WEIGHTS: dict[str, float] = {
    "n_params": 2.0,
    "n_layer": 1.0,
    "d_model": 1.0,
    "vocab": 1.0,
    "seq_len": 1.0,
    "global_batch": 1.0,
    "n_head": 0.5,
    "d_ff": 0.5,
}
_OCTAVES_TO_ZERO = 4.0
"""A size ratio of 2**4 = 16x (or more) makes that field's similarity 0."""
_ONE_SIDED = 0.5
"""Similarity of a field known for one workload only: unknown, neither alike nor different."""


def canonical_json(data: Any) -> str:
    """The canonical JSON text of `data`: sorted keys, compact separators, no NaN/Infinity.

    Raises:
        StoreError: `data` holds something JSON cannot represent (a numpy scalar, a set, NaN).

    Example:
        >>> canonical_json({"b": 1, "a": [1, 2]})
        '{"a":[1,2],"b":1}'
    """
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"cannot fingerprint {data!r}: {exc}; pass plain JSON data (convert numpy scalars with "
            "float()/int(), sets to sorted lists, and leave out non-finite numbers)"
        ) from exc


def fingerprint(workload: dict[str, Any], hardware: dict[str, Any], space: dict[str, Any]) -> str:
    """The identity of a tuning problem: sha256 of the canonical JSON of the three, 24 hex chars.

    Key order does not matter; any changed value does (`1` and `1.0` are different JSON).

    Example:
        >>> fp = fingerprint({"family": "transformer"}, {"kind": "cpu", "cores": 2}, {"knobs": []})
        >>> len(fp), fp == fingerprint({"family": "transformer"}, {"cores": 2, "kind": "cpu"}, {"knobs": []})
        (24, True)
    """
    text = canonical_json({"workload": workload, "hardware": hardware, "space": space})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_CHARS]


def hardware_key(hardware: dict[str, Any]) -> str:
    """The identity of a hardware description alone (what `similar()` requires to be equal)."""
    return hashlib.sha256(canonical_json(hardware).encode("utf-8")).hexdigest()[:FINGERPRINT_CHARS]


def similarity(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How alike two workload dicts are, in [0, 1]; 1 for equal descriptions.

    The product of a categorical factor (family, arch, task: a mismatch cuts the score hard) and a
    weighted mean of size similarities (n_params, n_layer, d_model, vocab, seq_len, global_batch,
    n_head, d_ff) on a log scale: equal sizes give 1, a 2x ratio 0.75, 16x or more 0. A size known
    on one side only counts 0.5; one known on neither side is left out. Other keys are ignored.

    Example:
        >>> gpt = {"family": "transformer", "n_layer": 12, "d_model": 768}
        >>> similarity(gpt, gpt), similarity(gpt, {**gpt, "d_model": 1536})
        (1.0, 0.875)
    """
    score = _categorical_factor(a, b) * _numeric_similarity(a, b)
    return min(1.0, max(0.0, score))


def _categorical_factor(a: dict[str, Any], b: dict[str, Any]) -> float:
    family_a, family_b = (_category(w, "family") for w in (a, b))
    arch_a, arch_b = (_category(w, "arch") for w in (a, b))
    task_a, task_b = (_category(w, "task") for w in (a, b))
    factor = 1.0 if family_a == family_b else _FAMILY_MISMATCH
    factor *= 1.0 if arch_a == arch_b else _ARCH_MISMATCH
    if task_a != task_b:
        factor *= _TRAIN_FINETUNE if {task_a, task_b} == {"train", "finetune"} else _TASK_MISMATCH
    return factor


def _category(workload: dict[str, Any], name: str) -> str:
    value = workload.get(name)
    return _CATEGORICAL_DEFAULTS[name] if value is None else str(value)


def _numeric_similarity(a: dict[str, Any], b: dict[str, Any]) -> float:
    total = weight_sum = 0.0
    for name, weight in _NUMERIC_WEIGHTS.items():
        x, y = _size(a, name), _size(b, name)
        if x is None and y is None:
            continue
        total += weight * (_ONE_SIDED if x is None or y is None else _size_similarity(x, y))
        weight_sum += weight
    return total / weight_sum if weight_sum else 1.0


def _size(workload: dict[str, Any], name: str) -> float | None:
    value = workload.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _size_similarity(x: float, y: float) -> float:
    if x <= 0 or y <= 0:
        return 1.0 if x == y else 0.0
    octaves = abs(math.log2(x / y))
    return max(0.0, 1.0 - octaves / _OCTAVES_TO_ZERO)
