"""A trial store held in memory, for tests and offline replay."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from ..trial import Trial
from .base import (
    TrialStore,
    check_fingerprint,
    dump_trial,
    load_trial,
    study_id_for,
    study_texts,
    trial_data,
    winner_text,
)
from .errors import StoreError, UnknownStudyError
from .fingerprint import hardware_key


@dataclass(slots=True)
class _Study:
    id: str
    fingerprint: str
    workload: str
    hardware_key: str
    trials: list[str] = field(default_factory=list)
    """The trials as JSON text, index = number: the same data SQLiteStore keeps."""
    winner: tuple[str, float] | None = None


class InMemoryStore(TrialStore):
    """The `TrialStore` contract without a file; everything is lost on `close()`.

    Data is kept as JSON text, exactly as `SQLiteStore` keeps it, so both behave alike (tuples come
    back as lists, returned trials are copies). Safe to share between threads of one process.

    Example:
        >>> from autoscout_plugin.trial import Trial
        >>> store = InMemoryStore()
        >>> sid = store.open_study("fp", workload={}, hardware={}, space={})
        >>> [store.add_trial(sid, Trial(config={"num_threads": n}, value=float(n))) for n in (1, 2)]
        [0, 1]
        >>> [t.config for t in store.trials(sid)]
        [{'num_threads': 1}, {'num_threads': 2}]
    """

    def __init__(self) -> None:
        self._studies: dict[str, _Study] | None = {}
        self._by_fingerprint: dict[str, str] = {}
        self._lock = threading.Lock()

    def open_study(
        self, fingerprint: str, *, workload: dict[str, Any], hardware: dict[str, Any], space: dict[str, Any]
    ) -> str:
        check_fingerprint(fingerprint)
        workload_text, _, _ = study_texts(workload, hardware, space)
        with self._lock:
            studies = self._open_studies()
            if fingerprint in self._by_fingerprint:
                return self._by_fingerprint[fingerprint]
            study_id = study_id_for(len(studies) + 1)
            studies[study_id] = _Study(study_id, fingerprint, workload_text, hardware_key(hardware))
            self._by_fingerprint[fingerprint] = study_id
            return study_id

    def add_trial(self, study_id: str, trial: Trial) -> int:
        data = trial_data(trial)
        with self._lock:
            study = self._study(study_id)
            number = len(study.trials)
            study.trials.append(dump_trial({**data, "number": number}))
        trial.number = number
        return number

    def trials(self, study_id: str) -> list[Trial]:
        with self._lock:
            texts = list(self._study(study_id).trials)
        return [load_trial(text, f"memory:{study_id}#{number}") for number, text in enumerate(texts)]

    def set_winner(self, study_id: str, config: dict[str, Any], value: float) -> None:
        winner = winner_text(config, value)
        with self._lock:
            self._study(study_id).winner = winner

    def winner(self, fingerprint: str) -> tuple[dict[str, Any], float] | None:
        with self._lock:
            studies = self._open_studies()
            study_id = self._by_fingerprint.get(fingerprint)
            winner = None if study_id is None else studies[study_id].winner
        return None if winner is None else (json.loads(winner[0]), winner[1])

    def close(self) -> None:
        with self._lock:
            self._studies = None

    def _candidates(self, hardware_key: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            studies = list(self._open_studies().values())
        matching = [s for s in studies if s.hardware_key == hardware_key and s.trials]
        return [(s.id, json.loads(s.workload)) for s in matching]

    def _open_studies(self) -> dict[str, _Study]:
        if self._studies is None:
            raise StoreError("this InMemoryStore is closed; create a new InMemoryStore()")
        return self._studies

    def _study(self, study_id: str) -> _Study:
        study = self._open_studies().get(study_id)
        if study is None:
            raise UnknownStudyError(study_id)
        return study
