"""One contract suite; every TrialStore implementation subclasses it (Optuna style)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin.store import (
    MAX_ATTEMPTS,
    InMemoryStore,
    PostgresStore,
    SQLiteStore,
    StoreError,
    TrialStore,
    UnknownStudyError,
    fingerprint,
)
from autoscout_plugin.trial import Fidelity, Trial

HARDWARE = {"kind": "cpu", "cores": 2, "mem_gb": 24, "bf16": True}
GPT = {"task": "train", "family": "transformer", "n_layer": 2, "d_model": 128, "vocab": 8192,
       "seq_len": 64, "global_batch": 64}
SPACE: dict[str, Any] = {"knobs": ["num_threads", "precision"]}


def open_study(store: TrialStore, workload: dict[str, Any] = GPT, hardware: dict[str, Any] = HARDWARE,
               space: dict[str, Any] = SPACE) -> str:
    return store.open_study(fingerprint(workload, hardware, space), workload=workload, hardware=hardware,
                            space=space)


def full_trial() -> Trial:
    return Trial(config={"strategy": "ddp", "num_processes": 2, "ddp_bucket_cap_mb": 12.5, "pin_memory": True,
                         "precision": "bf16-mixed", "nested": {"a": [1, 2]}},
                 status="ok", value=123.25, cost_s=8.5, fidelity=Fidelity.F3, predicted=110.0,
                 peak_mem_mb=2048.5, error=None, metrics={"step_s": 0.125, "loss": 3.5})


def failed_trial() -> Trial:
    return Trial(config={"micro_batch_size": 512}, status="oom", value=None, cost_s=3.0,
                 fidelity=Fidelity.F2, error="CUDA out of memory: tried to allocate 2.0 GiB")


class StoreContract:
    """The tests; subclasses provide the `store` fixture."""

    @pytest.fixture
    def store(self) -> Iterator[TrialStore]:
        raise NotImplementedError

    def test_open_study_returns_the_same_id_for_the_same_fingerprint(self, store: TrialStore) -> None:
        first = open_study(store)
        assert isinstance(first, str) and first
        again = store.open_study(fingerprint(GPT, HARDWARE, SPACE), workload={}, hardware={}, space={})
        assert again == first

    def test_different_fingerprints_get_different_studies(self, store: TrialStore) -> None:
        ids = {open_study(store), open_study(store, workload={**GPT, "n_layer": 4}),
               open_study(store, hardware={**HARDWARE, "cores": 4})}
        assert len(ids) == 3

    def test_numbers_count_from_zero_per_study_and_are_set_on_the_trial(self, store: TrialStore) -> None:
        a, b = open_study(store), open_study(store, workload={**GPT, "n_layer": 4})
        trial = Trial(config={"num_threads": 1}, value=1.0, number=42)
        assert store.add_trial(a, trial) == 0
        assert trial.number == 0
        numbers = [store.add_trial(a, Trial(config={"num_threads": 2}, value=2.0)) for _ in range(3)]
        assert numbers == [1, 2, 3]
        assert store.add_trial(b, Trial(config={"num_threads": 1}, value=1.0)) == 0

    def test_trials_come_back_ordered_by_number(self, store: TrialStore) -> None:
        study = open_study(store)
        values = [5.0, 1.0, 9.0, 3.0, 7.0]
        for v in values:
            store.add_trial(study, Trial(config={"num_threads": int(v)}, value=v))
        trials = store.trials(study)
        assert [t.number for t in trials] == [0, 1, 2, 3, 4]
        assert [t.value for t in trials] == values

    def test_every_trial_field_round_trips(self, store: TrialStore) -> None:
        study = open_study(store)
        originals = [full_trial(), failed_trial()]
        originals += [Trial(config={"compile": "off"}, value=1.0, fidelity=f) for f in Fidelity]
        for trial in originals:
            store.add_trial(study, trial)
        loaded = store.trials(study)
        assert [t.to_json() for t in loaded] == [t.to_json() for t in originals]
        assert [t.fidelity for t in loaded][-4:] == list(Fidelity)
        assert all(isinstance(t.fidelity, Fidelity) for t in loaded)
        oom = loaded[1]
        assert (oom.status, oom.value, oom.ok) == ("oom", None, False)
        assert oom.error == "CUDA out of memory: tried to allocate 2.0 GiB"

    def test_a_nan_metric_round_trips(self, store: TrialStore) -> None:
        study = open_study(store)
        store.add_trial(study, Trial(config={}, status="nan", metrics={"loss": math.nan, "step_s": math.inf}))
        (loaded,) = store.trials(study)
        assert loaded.status == "nan" and loaded.value is None
        assert math.isnan(loaded.metrics["loss"]) and loaded.metrics["step_s"] == math.inf

    def test_returned_trials_are_copies(self, store: TrialStore) -> None:
        study = open_study(store)
        store.add_trial(study, full_trial())
        store.trials(study)[0].config["strategy"] = "fsdp"
        assert store.trials(study)[0].config["strategy"] == "ddp"

    def test_a_trial_that_is_not_json_is_refused_and_takes_no_number(self, store: TrialStore) -> None:
        study = open_study(store)
        with pytest.raises(StoreError, match="not plain JSON"):
            store.add_trial(study, Trial(config={"num_threads": object()}, value=1.0))
        with pytest.raises(StoreError, match="needs a Trial"):
            store.add_trial(study, {"config": {}})  # type: ignore[arg-type]
        assert store.trials(study) == []
        assert store.add_trial(study, Trial(config={}, value=1.0)) == 0

    def test_winner_is_stored_per_fingerprint_and_replaced(self, store: TrialStore) -> None:
        fp = fingerprint(GPT, HARDWARE, SPACE)
        study = open_study(store)
        assert store.winner(fp) is None
        store.set_winner(study, {"num_threads": 2, "precision": "bf16-mixed"}, 50.5)
        assert store.winner(fp) == ({"num_threads": 2, "precision": "bf16-mixed"}, 50.5)
        store.set_winner(study, {"num_threads": 1}, 60)
        config, value = store.winner(fp) or ({}, 0.0)
        assert (config, value, type(value)) == ({"num_threads": 1}, 60.0, float)
        assert store.winner("0" * 24) is None

    @pytest.mark.parametrize("value", [math.nan, math.inf, "fast", True])
    def test_set_winner_refuses_a_value_that_is_not_a_finite_number(self, store: TrialStore,
                                                                    value: Any) -> None:
        study = open_study(store)
        with pytest.raises(StoreError, match="finite number"):
            store.set_winner(study, {"num_threads": 1}, value)
        assert store.winner(fingerprint(GPT, HARDWARE, SPACE)) is None

    def test_similar_finds_alike_workloads_on_the_same_hardware_best_first(self, store: TrialStore) -> None:
        close, closer, other_family = {**GPT, "n_layer": 4}, {**GPT, "n_layer": 3}, {**GPT, "family": "cnn"}
        ids = {}
        for name, workload, hardware in [("close", close, HARDWARE), ("closer", closer, HARDWARE),
                                         ("other_family", other_family, HARDWARE),
                                         ("other_hw", GPT, {**HARDWARE, "cores": 4}),
                                         ("empty", GPT, HARDWARE)]:
            ids[name] = open_study(store, workload=workload, hardware=hardware,
                                   space={"tag": name})
            if name != "empty":
                store.add_trial(ids[name], Trial(config={}, value=1.0))
        found = store.similar(GPT, HARDWARE)
        assert [sid for sid, _ in found] == [ids["closer"], ids["close"]]
        assert 1.0 > found[0][1] > found[1][1] >= 0.5
        assert store.similar(GPT, HARDWARE, exclude=ids["closer"]) == found[1:]
        assert store.similar(GPT, HARDWARE, limit=1) == found[:1]
        assert store.similar(GPT, HARDWARE, min_similarity=found[0][1]) == found[:1]
        low = [sid for sid, _ in store.similar(GPT, HARDWARE, min_similarity=0.0, limit=10)]
        assert low == [ids["closer"], ids["close"], ids["other_family"]]
        assert store.similar(GPT, {**HARDWARE, "cores": 4}) == [(ids["other_hw"], 1.0)]

    def test_similar_refuses_a_negative_limit(self, store: TrialStore) -> None:
        with pytest.raises(StoreError, match="limit"):
            store.similar(GPT, HARDWARE, limit=-1)

    def test_unknown_study_ids_raise_an_error_naming_them(self, store: TrialStore) -> None:
        open_study(store)
        calls = [lambda: store.add_trial("study-999", Trial(config={}, value=1.0)),
                 lambda: store.trials("study-999"),
                 lambda: store.set_winner("study-999", {}, 1.0)]
        for call in calls:
            with pytest.raises(UnknownStudyError, match="study-999") as info:
                call()
            assert isinstance(info.value, StoreError) and isinstance(info.value, ValueError)

    def test_open_study_checks_its_arguments(self, store: TrialStore) -> None:
        with pytest.raises(StoreError, match="non-empty string"):
            store.open_study("", workload=GPT, hardware=HARDWARE, space=SPACE)
        with pytest.raises(StoreError, match="needs a dict"):
            store.open_study("fp", workload=GPT, hardware="cpu", space=SPACE)  # type: ignore[arg-type]

    def test_context_manager_closes_and_a_closed_store_refuses_calls(self, store: TrialStore) -> None:
        with store as entered:
            assert entered is store
            study = open_study(store)
        with pytest.raises(StoreError, match="closed"):
            store.trials(study)
        with pytest.raises(StoreError, match="closed"):
            open_study(store)
        store.close()  # idempotent

    def test_trials_after_a_number_are_the_ones_added_since(self, store: TrialStore) -> None:
        study = open_study(store)
        for n in range(4):
            store.add_trial(study, Trial(config={"n": n}, value=float(n)))
        assert [t.number for t in store.trials(study, after=1)] == [2, 3]
        assert store.trials(study, after=3) == []

    def test_a_claimed_config_goes_to_one_worker_until_its_result_is_in(self, store: TrialStore) -> None:
        study = open_study(store)
        claim = store.claim(study, {"num_threads": 2, "precision": "bf16"}, worker="w1")
        assert claim is not None and (claim.worker, claim.attempt) == ("w1", 1)
        assert store.claim(study, {"precision": "bf16", "num_threads": 2}, worker="w2") is None  # key order
        assert store.claim(study, {"num_threads": 4, "precision": "bf16"}, worker="w2") is not None
        assert [c.worker for c in store.running(study)] == ["w1", "w2"]
        assert store.heartbeat(claim)
        number = store.add_trial(study, Trial(config=claim.config, value=5.0), claim=claim)
        assert number == 0 and [c.worker for c in store.running(study)] == ["w2"]
        again = store.claim(study, claim.config, worker="w3")  # measured again later (a confirmation)
        assert again is not None and again.attempt == 1
        store.release(again)
        assert store.claim(study, claim.config, worker="w4") is not None

    def test_a_stale_claim_is_offered_again_once_and_a_late_result_is_recorded(self, store: TrialStore) -> None:
        study = open_study(store)
        first = store.claim(study, {"micro_batch_size": 8}, worker="dies", lease_s=0.2)
        assert first is not None
        assert store.reclaim_stale(study, worker="w2") is None  # still within its lease
        time.sleep(0.5)
        assert store.running(study) == []
        second = store.reclaim_stale(study, worker="w2", lease_s=0.2)
        assert second is not None and (second.config, second.attempt, second.worker) == ({"micro_batch_size": 8}, 2,
                                                                                        "w2")
        assert not store.heartbeat(first)  # the first worker lost it
        late = store.add_trial(study, Trial(config=first.config, value=1.0), claim=first)  # recorded, no error
        assert late == 0 and [c.worker for c in store.running(study)] == ["w2"]
        time.sleep(0.5)  # the second worker stops too: recorded as a crash, never offered a third time
        assert MAX_ATTEMPTS == 2 and store.reclaim_stale(study, worker="w3") is None
        trials = store.trials(study)
        assert [(t.number, t.status, t.failure) for t in trials] == [(0, "ok", None), (1, "error", "crash")]
        assert "heartbeat" in (trials[1].error or "") and trials[1].config == {"micro_batch_size": 8}
        assert store.claim(study, {"micro_batch_size": 8}, worker="w4") is not None  # a fresh start later is fine

    def test_claims_check_their_arguments(self, store: TrialStore) -> None:
        study = open_study(store)
        with pytest.raises(StoreError, match="lease_s"):
            store.claim(study, {"a": 1}, worker="w", lease_s=0)
        with pytest.raises(StoreError, match="needs a dict"):
            store.claim(study, [1, 2], worker="w")  # type: ignore[arg-type]
        with pytest.raises(UnknownStudyError):
            store.claim("study-999", {"a": 1}, worker="w")

    def test_notes_keep_json_by_key(self, store: TrialStore) -> None:
        assert store.note("job-1") is None
        store.set_note("job-1", {"declared": {"precision": "bf16"}, "script": "train.py"})
        store.set_note("job-1", {"declared": {}, "script": "train.py"})
        assert store.note("job-1") == {"declared": {}, "script": "train.py"}


class TestInMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[TrialStore]:
        with InMemoryStore() as store:
            yield store


class PersistentStoreContract(StoreContract):
    """Stores that outlive their process; subclasses provide `reopen`: a new store on the same data."""

    @pytest.fixture
    def reopen(self) -> Callable[[], TrialStore]:
        raise NotImplementedError

    def test_everything_survives_reopening(self, reopen: Callable[[], TrialStore]) -> None:
        with reopen() as store:
            study = open_study(store)
            store.add_trial(study, full_trial())
            store.add_trial(study, failed_trial())
            store.set_winner(study, {"num_threads": 2}, 9.5)
            store.set_note("job", {"declared": {"precision": "bf16"}})
        with reopen() as store:
            assert open_study(store) == study
            assert [t.to_json() for t in store.trials(study)] == [full_trial().to_json() | {"number": 0},
                                                                  failed_trial().to_json() | {"number": 1}]
            assert store.winner(fingerprint(GPT, HARDWARE, SPACE)) == ({"num_threads": 2}, 9.5)
            assert [sid for sid, _ in store.similar(GPT, HARDWARE)] == [study]
            assert store.note("job") == {"declared": {"precision": "bf16"}}


class TestSQLiteStore(PersistentStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[TrialStore]:
        with SQLiteStore(tmp_path / "trials.sqlite") as store:
            yield store

    @pytest.fixture
    def reopen(self, tmp_path: Path) -> Callable[[], TrialStore]:
        return lambda: SQLiteStore(tmp_path / "deep" / "er" / "trials.sqlite")  # its folders are created


class TestPostgresStore(PersistentStoreContract):
    """The same contract on a real PostgreSQL server (tests/conftest.py starts it; under CI it must run)."""

    @pytest.fixture
    def store(self, postgres_url: str) -> Iterator[TrialStore]:
        with PostgresStore(postgres_url) as store:
            yield store

    @pytest.fixture
    def reopen(self, postgres_url: str) -> Callable[[], TrialStore]:
        return lambda: PostgresStore(postgres_url)
