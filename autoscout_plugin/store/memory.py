"""A trial store held in memory, for tests and offline replay."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..trial import Fidelity, Trial
from .base import (
    MAX_ATTEMPTS,
    Claim,
    TrialStore,
    check_fingerprint,
    check_lease,
    config_key,
    dump_trial,
    load_trial,
    study_id_for,
    study_texts,
    trial_data,
    winner_text,
)
from .errors import StoreError, UnknownStudyError
from .fingerprint import canonical_json, hardware_key


@dataclass(slots=True)
class _Study:
    id: str
    fingerprint: str
    workload: str
    hardware_key: str
    trials: list[str] = field(default_factory=list)
    """The trials as JSON text, index = number: the same data SQLiteStore keeps."""
    winner: tuple[str, float] | None = None
    claims: dict[str, _Held] = field(default_factory=dict)
    """Claims by config key."""


@dataclass(slots=True)
class _Held:
    claim: Claim
    state: str
    heartbeat_s: float
    claimed_s: float

    def live(self, now: float) -> bool:
        return self.state == "running" and now - self.heartbeat_s <= self.claim.lease_s


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
        self._notes: dict[str, str] = {}
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

    def add_trial(self, study_id: str, trial: Trial, *, claim: Claim | None = None) -> int:
        data = trial_data(trial)
        with self._lock:
            study = self._study(study_id)
            number = len(study.trials)
            study.trials.append(dump_trial({**data, "number": number}))
            held = study.claims.get(claim.key) if claim is not None else None
            if held is not None and claim is not None and held.claim.token == claim.token and held.state == "running":
                held.state = "done"
        trial.number = number
        return number

    def trials(self, study_id: str, *, after: int = -1) -> list[Trial]:
        with self._lock:
            texts = list(self._study(study_id).trials)
        return [load_trial(text, f"memory:{study_id}#{number}") for number, text in enumerate(texts) if number > after]

    def claim(self, study_id: str, config: dict[str, Any], *, worker: str, lease_s: float = 30.0,
              limit: int | None = None, after: int = -1) -> Claim | None:
        lease_s = check_lease(lease_s)
        key, text = config_key(config)
        with self._lock:
            study, now = self._study(study_id), time.monotonic()
            held = study.claims.get(key)
            if held is not None and held.live(now):
                return None
            if limit is not None:
                f2 = sum(1 for number, text in enumerate(study.trials)
                         if number > after and json.loads(text).get("fidelity") == Fidelity.F2.value)
                if f2 + sum(1 for h in study.claims.values() if h.state == "running") >= limit:
                    return None
            attempt = 1 if held is None or held.state != "running" else held.claim.attempt + 1
            if attempt > MAX_ATTEMPTS:
                return None
            claim = Claim(study_id, json.loads(text), key, worker, uuid.uuid4().hex, attempt, lease_s)
            study.claims[key] = _Held(claim, "running", now, now)
            return claim

    def heartbeat(self, claim: Claim) -> bool:
        with self._lock:
            held = self._study(claim.study_id).claims.get(claim.key)
            if held is None or held.claim.token != claim.token or held.state != "running":
                return False
            held.heartbeat_s = time.monotonic()
            return True

    def release(self, claim: Claim) -> None:
        with self._lock:
            claims = self._study(claim.study_id).claims
            held = claims.get(claim.key)
            if held is not None and held.claim.token == claim.token and held.state == "running":
                del claims[claim.key]

    def expire(self, claim: Claim) -> None:
        with self._lock:
            held = self._study(claim.study_id).claims.get(claim.key)
            if held is not None and held.claim.token == claim.token and held.state == "running":
                held.heartbeat_s = -float("inf")

    def reclaim_stale(self, study_id: str, *, worker: str, lease_s: float = 30.0) -> Claim | None:
        lease_s = check_lease(lease_s)
        abandoned: list[_Held] = []
        taken = None
        with self._lock:
            study, now = self._study(study_id), time.monotonic()
            stale = sorted((h for h in study.claims.values() if h.state == "running" and not h.live(now)),
                           key=lambda h: h.heartbeat_s)
            for held in stale:
                if held.claim.attempt >= MAX_ATTEMPTS:
                    held.state = "abandoned"
                    abandoned.append(held)
                    continue
                old = held.claim
                taken = Claim(study_id, old.config, old.key, worker, uuid.uuid4().hex, old.attempt + 1, lease_s)
                study.claims[old.key] = _Held(taken, "running", now, now)
                break
        for held in abandoned:
            self.add_trial(study_id, Trial(
                config=dict(held.claim.config), status="error", value=None,
                cost_s=max(0.0, held.heartbeat_s - held.claimed_s), failure="crash",
                error=f"the worker running this config stopped sending heartbeats on all {held.claim.attempt}"
                      f" attempts (last: {held.claim.worker}); it is not offered again"))
        return taken

    def running(self, study_id: str, *, include_stale: bool = False) -> list[Claim]:
        with self._lock:
            study, now = self._study(study_id), time.monotonic()
            return [h.claim for h in sorted(study.claims.values(), key=lambda h: h.claimed_s)
                    if h.live(now) or (include_stale and h.state == "running")]

    def note(self, key: str) -> Any | None:
        with self._lock:
            self._open_studies()
            text = self._notes.get(key)
        return None if text is None else json.loads(text)

    def set_note(self, key: str, value: Any) -> None:
        text = canonical_json(value)
        with self._lock:
            self._open_studies()
            self._notes[key] = text

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
