"""The contract every trial store follows (SQLite on disk, in memory for tests and replay)."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from ..trial import Trial
from .errors import StoreError
from .fingerprint import canonical_json, hardware_key, similarity

MAX_ATTEMPTS = 2
"""A config whose worker stops heartbeating is offered to another worker once; when that one stops too,
the config is recorded as a failed trial (a crash) and not offered again."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker's hold on one config of a study while it runs it (see `TrialStore.claim`)."""

    study_id: str
    config: dict[str, Any]
    key: str
    """The config's key in the store (a hash of its canonical JSON)."""
    worker: str
    token: str
    """This holding's id: a claim taken over by another worker no longer matches it."""
    attempt: int
    """1 for the first worker to run the config, 2 when it was offered again after its worker stopped."""
    lease_s: float
    """The claim is stale `lease_s` after its last heartbeat (in the database's time)."""


def config_key(config: Any) -> tuple[str, str]:
    """(the key a claim is stored under: the sha256 of the canonical JSON, that JSON) of a config to claim."""
    if not isinstance(config, dict):
        raise StoreError(f"claim(config=...) needs a dict, got {type(config).__name__}")
    text = canonical_json(config)
    return hashlib.sha256(text.encode()).hexdigest(), text


def check_lease(lease_s: Any) -> float:
    if isinstance(lease_s, bool) or not isinstance(lease_s, (int, float)) or not 0 < lease_s <= 86_400:
        raise StoreError(f"lease_s must be a number of seconds in (0, 86400], got {lease_s!r}")
    return float(lease_s)


_Store = TypeVar("_Store", bound="TrialStore")


class TrialStore(ABC):
    """Persistent trial history: studies keyed by fingerprint, their trials, their winners.

    Contract (checked by `tests/store/test_store_contract.py` for every store):
    - `open_study(fp, ...)` returns a study id; the same fingerprint returns the same id again, in
      this process or a later one (that is how an interrupted study resumes);
    - `add_trial` numbers trials 0, 1, 2, ... per study, without gaps or duplicates, and sets
      `trial.number`; `trials()` returns copies ordered by number, every field round-tripped;
    - `set_winner` / `winner(fp)` remember the answer to a solved problem (zero-trial reuse);
    - `similar()` finds past studies, with trials, on the same hardware with alike workloads;
    - `claim(study, config, worker=...)` holds a config for one worker: nobody else gets it while the
      holder's heartbeats come; `lease_s` after the last one the claim is stale, and `reclaim_stale`
      offers it to one other worker (`MAX_ATTEMPTS`); after that the config is recorded as a failed
      trial. `add_trial(..., claim=)` ends the claim; a late result (its claim taken over) is recorded;
    - `note`/`set_note` keep small JSON values by key (what a launched job's script declared);
    - a study id the store never returned raises `UnknownStudyError`; bad data raises `StoreError`;
    - everything in and out is plain JSON data; nothing is pickled or evaluated.

    Example:
        >>> from autoscout_plugin.store import InMemoryStore
        >>> from autoscout_plugin.trial import Trial
        >>> with InMemoryStore() as store:
        ...     sid = store.open_study("fp1", workload={"family": "mlp"}, hardware={"kind": "cpu"}, space={})
        ...     store.add_trial(sid, Trial(config={"num_threads": 2}, value=10.0))
        ...     store.set_winner(sid, {"num_threads": 2}, 10.0)
        ...     store.winner("fp1"), store.open_study("fp1", workload={}, hardware={}, space={}) == sid
        0
        (({'num_threads': 2}, 10.0), True)
    """

    @abstractmethod
    def open_study(
        self, fingerprint: str, *, workload: dict[str, Any], hardware: dict[str, Any], space: dict[str, Any]
    ) -> str:
        """The id of the study for `fingerprint`, created on first use.

        On reopen, the stored workload/hardware/space are kept and the arguments are ignored.

        Args:
            fingerprint: The problem's identity, usually `fingerprint(workload, hardware, space)`.
            workload: The workload description (used by `similar()`).
            hardware: The hardware description (`similar()` only matches equal descriptions).
            space: The search space as JSON.
        """

    @abstractmethod
    def add_trial(self, study_id: str, trial: Trial, *, claim: Claim | None = None) -> int:
        """Store `trial`, assign the next number of the study, set `trial.number`, return it.

        A number already on the trial is replaced: the store owns numbering. With `claim`, the claim
        ends in the same transaction; a claim already taken over by another worker is left to it, and
        the trial is recorded all the same.
        """

    @abstractmethod
    def trials(self, study_id: str, *, after: int = -1) -> list[Trial]:
        """The study's trials numbered above `after`, ordered by number (new objects: editing them
        changes nothing stored). Other workers' trials appear here as they are added."""

    @abstractmethod
    def claim(self, study_id: str, config: dict[str, Any], *, worker: str, lease_s: float = 30.0,
              limit: int | None = None, after: int = -1) -> Claim | None:
        """Hold `config` for `worker` while it runs it, or None when another worker holds it now (or it
        was already offered `MAX_ATTEMPTS` times, or the study has `limit` F2 trials numbered above `after`,
        done and running, already: a budget shared by every worker, enforced at the database). Keep the
        claim with `heartbeat` more often than `lease_s`."""

    @abstractmethod
    def heartbeat(self, claim: Claim) -> bool:
        """Renew the claim's lease (the database's time); False when it was lost (taken over as stale)."""

    @abstractmethod
    def release(self, claim: Claim) -> None:
        """Give the claim up without a result (the worker is stopping); others may claim the config."""

    @abstractmethod
    def expire(self, claim: Claim) -> None:
        """Make the claim stale now (its worker is known to be gone: a process of this machine that no
        longer exists), so that `reclaim_stale` offers it at once instead of after its lease."""

    @abstractmethod
    def reclaim_stale(self, study_id: str, *, worker: str, lease_s: float = 30.0) -> Claim | None:
        """The longest-stale claim of the study, taken over for `worker` (its next attempt), or None.
        Stale claims on their last attempt are recorded as failed trials on the way."""

    @abstractmethod
    def running(self, study_id: str, *, include_stale: bool = False) -> list[Claim]:
        """The study's live claims, oldest first; with `include_stale`, also those past their lease that
        nobody has taken over yet (they count in a shared budget: each is run again or recorded)."""

    @abstractmethod
    def note(self, key: str) -> Any | None:
        """The JSON value kept under `key`, or None."""

    @abstractmethod
    def set_note(self, key: str, value: Any) -> None:
        """Keep a JSON value under `key` (replacing any)."""

    @abstractmethod
    def set_winner(self, study_id: str, config: dict[str, Any], value: float) -> None:
        """Record (or replace) the winning config of a study and its objective value."""

    @abstractmethod
    def winner(self, fingerprint: str) -> tuple[dict[str, Any], float] | None:
        """The stored winner for a solved fingerprint, or None (unknown fingerprint, or no winner yet)."""

    @abstractmethod
    def close(self) -> None:
        """Release the store; idempotent. Any later call raises `StoreError`."""

    @abstractmethod
    def _candidates(self, hardware_key: str) -> list[tuple[str, dict[str, Any]]]:
        """(study id, workload) of studies with at least one trial on this hardware, oldest first."""

    def similar(
        self,
        workload: dict[str, Any],
        hardware: dict[str, Any],
        *,
        exclude: str | None = None,
        limit: int = 3,
        min_similarity: float = 0.5,
    ) -> list[tuple[str, float]]:
        """Past studies to warm-start from: (study id, similarity), best first, ties oldest first.

        Only studies with at least one trial and an equal hardware description count.

        Args:
            workload: The new study's workload.
            hardware: The new study's hardware description.
            exclude: A study id to leave out (usually the new study itself).
            limit: At most this many results.
            min_similarity: Leave out studies below this `similarity()`.
        """
        if limit < 0:
            raise StoreError(f"limit must be >= 0, got {limit}")
        scored = [
            (study_id, similarity(workload, past))
            for study_id, past in self._candidates(hardware_key(hardware))
            if study_id != exclude
        ]
        kept = [(study_id, score) for study_id, score in scored if score >= min_similarity]
        kept.sort(key=lambda item: -item[1])  # stable: equal scores stay oldest first
        return kept[:limit]

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def study_id_for(seq: int) -> str:
    """The id of the `seq`-th study of a store (1-based): readable, stable, not a fingerprint."""
    return f"study-{seq}"


def check_fingerprint(fingerprint: Any) -> str:
    if not isinstance(fingerprint, str) or not fingerprint:
        raise StoreError(
            f"a fingerprint must be a non-empty string, got {fingerprint!r}; "
            "compute one with autoscout_plugin.store.fingerprint(workload, hardware, space)"
        )
    return fingerprint


def study_texts(workload: Any, hardware: Any, space: Any) -> tuple[str, str, str]:
    """The canonical JSON of a study's descriptions, checked to be dicts of plain data."""
    for name, value in (("workload", workload), ("hardware", hardware), ("space", space)):
        if not isinstance(value, dict):
            raise StoreError(f"open_study({name}=...) needs a dict, got {type(value).__name__}")
    return canonical_json(workload), canonical_json(hardware), canonical_json(space)


def trial_data(trial: Any) -> dict[str, Any]:
    """`trial.to_json()`, checked to be a Trial whose fields are plain JSON data."""
    if not isinstance(trial, Trial):
        raise StoreError(
            f"add_trial() needs a Trial, got {type(trial).__name__}; build one with Trial(...) or "
            "Trial.from_json(data)"
        )
    data = trial.to_json()
    dump_trial(data)
    return data


def dump_trial(data: dict[str, Any]) -> str:
    # NaN and Infinity are allowed (a diverged trial's loss is NaN) and round-trip through json.
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"trial {data.get('config')!r} is not plain JSON data: {exc}; convert numpy scalars with "
            "float()/int() and tuples/sets to lists before storing"
        ) from exc


def load_trial(text: str, where: str) -> Trial:
    try:
        return Trial.from_json(json.loads(text))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise StoreError(f"cannot read the trial stored at {where}: {exc}; the store may be damaged") from exc


UNDECODABLE = "\x00undecodable"
"""What the SQLite store reads for text that is not UTF-8 (a damaged page): never valid JSON."""


def readable_trials(rows: Iterable[tuple[Any, str]], where: str) -> list[Trial]:
    """The trials of `(number, JSON text)` rows; damaged records are skipped with one warning (the search
    runs those configs again if it needs them), so a damaged page never stops a run."""
    trials, damaged = [], []
    for number, text in rows:
        try:
            trials.append(load_trial(text, f"{where} #{number}"))
        except StoreError:
            damaged.append(number)
    if damaged:
        warnings.warn(f"AutoScout: skipped {len(damaged)} damaged trial record(s) in {where} (#"
                      + ", #".join(map(str, damaged[:5])) + "); they are not reused", RuntimeWarning, stacklevel=3)
    return trials


def readable_json(text: str, what: str) -> Any | None:
    """`text` decoded, or None with a warning when it is damaged (`what` names it in the warning)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        warnings.warn(f"AutoScout: skipped the damaged {what}; it is not reused", RuntimeWarning, stacklevel=3)
        return None


def winner_text(config: Any, value: Any) -> tuple[str, float]:
    """The winner's config as JSON and its value, checked (a dict and a finite number)."""
    if not isinstance(config, dict):
        raise StoreError(f"set_winner(config=...) needs a dict, got {type(config).__name__}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StoreError(f"set_winner(value=...) needs a finite number, got {value!r}")
    return canonical_json(config), float(value)
