"""AutoScoutCallback with real Lightning Trainers on CPU: in-process trials here (pytest has no
script to re-run, so strategy and process count are pinned); the subprocess tier, relaunch and
two-process DDP run the example script in `test_lightning_scripts.py`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from autoscout_plugin.integrations._torch import is_checkpointed, no_trace
from autoscout_plugin.integrations.lightning import trial_tier

from autoscout_plugin import AutoScoutCallback, AutoScoutOptions
from autoscout_plugin.store import SQLiteStore
from examples.lightning_gpt2 import GPT2Module

SMALL = {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab": 128, "seq_len": 16, "batch_size": 8, "samples": 64}
QUICK = {"warmup_steps": 1, "measure_steps": 2, "progress": False, "patience": None,
         "net_gain": False}  # these fits are a few steps long: trials run whatever the length (test_net_gain.py)


pytestmark = pytest.mark.usefixtures("isolated_run")  # tests/integrations/conftest.py


SEEN: list[dict[str, Any]] = []


class Recording(GPT2Module):
    """Records, in a module-level list (instance state is restored after each trial), what each
    training step really ran with."""

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        SEEN.append({"batch": int(batch.shape[0]), "threads": torch.get_num_threads(),
                     "autocast": torch.is_autocast_enabled("cpu"), "checkpointed": is_checkpointed(self.model),
                     "accumulate": self.trainer.accumulate_grad_batches})
        return super().training_step(batch, batch_idx)


def trainer(callback: AutoScoutCallback | None = None, steps: int = 3, **kwargs: Any) -> pl.Trainer:
    base = {"max_steps": steps, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
            "enable_model_summary": False, "accelerator": "cpu"}
    return pl.Trainer(callbacks=[callback] if callback else [], **(base | kwargs))


def make(cls: type[GPT2Module] = GPT2Module, **overrides: Any) -> GPT2Module:
    pl.seed_everything(0, verbose=False)
    return cls(**(SMALL | overrides))


# ---------------------------------------------------------------- bad options
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"include": ("micro_batchsize",)}, "unknown knob 'micro_batchsize'"),
    ({"max_trials": 0}, "max_trials must be >= 1"),
    ({"max_trials": None}, "no budget"),
    ({"max_seconds": -5}, "max_seconds must be a positive"),
    ({"include": ("num_threads",), "pin": {"num_threads": 1}}, "pinned to 1 and also listed in include"),
    ({"objective": "loss"}, "unknown objective 'loss'"),
    ({"measure_steps": 0}, "measure_steps must be an integer >= 1"),
    ({"include": "num_threads"}, "must be a list of knob names"),
    ({"cut_below": 1.5}, "cut_below must be a fraction between 0 and 1"),
])
def test_bad_options_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AutoScoutCallback(**kwargs)


def test_a_knob_pinned_by_the_trainer_listed_as_tunable_fails_before_any_trial() -> None:
    model = make(Recording)
    SEEN.clear()
    callback = AutoScoutCallback(include=("precision", "num_threads"), **QUICK)
    pinned = r"'precision' is listed in include but pinned by Trainer\(precision='bf16-mixed'\)"
    with pytest.raises(ValueError, match=pinned):
        trainer(callback, precision="bf16-mixed").fit(model)
    assert SEEN == []  # not one step ran


def test_a_knob_the_module_cannot_change_is_refused() -> None:
    class NoBatchAttr(GPT2Module):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            del self.batch_size
            self._fixed = 8

        def train_dataloader(self) -> Any:
            from torch.utils.data import DataLoader

            from examples.lightning_gpt2 import SyntheticTokens
            return DataLoader(SyntheticTokens(64, 16, 128), batch_size=self._fixed)

    model = make(NoBatchAttr)
    model.hparams.pop("batch_size")
    with pytest.raises(ValueError, match="cannot tune 'micro_batch_size': neither the LightningModule"):
        trainer(AutoScoutCallback(include=("micro_batch_size",), **QUICK)).fit(model)


def test_max_fraction_without_a_known_run_length_is_a_clear_error() -> None:
    callback = AutoScoutCallback(max_trials=None, max_fraction=0.1, include=("num_threads",), **QUICK)
    with pytest.raises(ValueError, match="max_fraction=0.1 needs the length of the main run"):
        trainer(callback, steps=-1, max_epochs=-1).fit(make())


# ---------------------------------------------------------------- tiers and knobs in effect
def test_trial_tier_by_what_changes() -> None:
    current = {"strategy": "single", "num_processes": 1, "num_threads": 2, "compile": "off",
               "activation_checkpointing": False, "micro_batch_size": 8}
    assert trial_tier({**current, "num_threads": 1, "micro_batch_size": 4}, current) == "inplace"
    assert trial_tier({**current, "activation_checkpointing": True}, current) == "copy"
    assert trial_tier({**current, "compile": "default"}, current) == "copy"
    assert trial_tier({**current, "strategy": "ddp", "num_processes": 2}, current) == "subprocess"


def test_every_knob_is_in_effect_during_its_trial_and_the_winner_in_the_main_fit(tmp_path: Path) -> None:
    model = make(Recording)
    SEEN.clear()
    callback = AutoScoutCallback(include=("micro_batch_size", "num_threads", "precision",
                                          "activation_checkpointing"), max_trials=8, confirm_top=0,
                                 report=str(tmp_path / "report"), cut_below=None, **QUICK)
    fit = trainer(callback, steps=4)
    fit.fit(model)
    result = callback.result
    assert result is not None and result.n_trials == 8
    by_config = [t for t in result.trials if t.ok]
    assert len(by_config) >= 6
    # Each trial's steps ran with its config: batch size, threads, autocast and checkpointing.
    offset = 0
    for t in result.trials:
        steps = 1 + int(t.metrics["timed_steps"])  # warm-up + timed optimizer steps, of `accumulate` micro-batches
        assert 2 <= t.metrics["timed_steps"] <= 6  # at least measure_steps, at most 3x: timed until known to 5%
        accumulate = 8 // t.config["micro_batch_size"]
        mine = SEEN[offset: offset + steps * accumulate]
        offset += steps * accumulate
        assert {s["batch"] for s in mine} == {t.config["micro_batch_size"]}, t.config
        assert {s["threads"] for s in mine} == {t.config["num_threads"]}
        assert {s["autocast"] for s in mine} == {t.config["precision"] == "bf16-mixed"}
        assert {s["checkpointed"] for s in mine} == {t.config["activation_checkpointing"]}
        assert {s["accumulate"] for s in mine} == {accumulate}
        assert t.metrics["tier"] == (1 if t.config["activation_checkpointing"] else 0)
    # The main fit ran with the winner, keeping the global batch.
    main = SEEN[offset:]
    best = result.best_config
    assert main and {s["batch"] for s in main} == {best["micro_batch_size"]}
    assert fit.accumulate_grad_batches * best["micro_batch_size"] == 8
    assert {s["threads"] for s in main} == {best["num_threads"]}
    assert {s["checkpointed"] for s in main} == {best["activation_checkpointing"]}
    assert str(fit.precision) == best["precision"]
    assert fit.global_step == 4
    # The report: JSON and an HTML page with its five plots and the JSON's verdict; pinned, tuned and applied knobs.
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["best_config"] == best and data["notes"]["applied"] == best
    assert set(data["notes"]["tuned"]) == {"micro_batch_size", "num_threads", "precision", "activation_checkpointing"}
    assert "strategy" in data["notes"]["pinned"]
    page = (tmp_path / "report.html").read_text()
    assert page.count('<svg class="plot"') == 5 and "Predicted vs measured" in page
    assert "The cost model&#x27;s prior (not measured)" in page
    assert f"<p id='verdict' class='verdict {data['verdict']['decision']}'>{data['verdict']['sentence']}</p>" in page


@pytest.mark.timeout(900)  # about a minute of compiling on a quiet 2-core machine; minutes on a loaded one
def test_compile_trial_runs_compiled_on_a_copy(tmp_path: Path) -> None:
    model = make(Recording)
    callback = AutoScoutCallback(include=("compile",), pin={"num_threads": 2}, max_trials=2, confirm_top=0, **QUICK)
    trainer(callback, steps=1).fit(model)
    compiled = [t for t in callback.result.trials if t.config["compile"] == "default"]
    assert compiled and compiled[0].metrics["tier"] == 1
    assert compiled[0].ok, compiled[0].error
    if callback.result.best_config["compile"] == "off":
        assert getattr(model.model, "_compiled_call_impl", None) is None  # the copy was compiled, not the model


# ---------------------------------------------------------------- no trace
def _state(model: torch.nn.Module, fit: pl.Trainer) -> dict[str, Any]:
    optimizer = fit.optimizers[0].state_dict()
    return {"weights": {k: v.clone() for k, v in model.state_dict().items()}, "optimizer": optimizer,
            "rng": torch.get_rng_state().clone(), "step": fit.global_step}


def test_no_trace_bit_exact_against_the_winner_set_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A temp folder of the test's own: the machine's shared one also holds what other work running
    # meanwhile creates (another run's trial files), which are no leftovers of this run.
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))
    model = make()
    callback = AutoScoutCallback(include=("micro_batch_size", "num_threads"), max_trials=4, **QUICK)
    tuned_fit = trainer(callback, steps=5)
    tuned_fit.fit(model)
    tuned = _state(model, tuned_fit)
    best = callback.result.best_config
    assert callback.result.n_trials >= 4

    torch.set_num_threads(8)  # whatever the tuning left behind must not matter: set it by hand
    hand = make(batch_size=best["micro_batch_size"])
    torch.set_num_threads(best["num_threads"])
    hand_fit = trainer(None, steps=5, accumulate_grad_batches=8 // best["micro_batch_size"])
    hand_fit.fit(hand)
    by_hand = _state(hand, hand_fit)

    assert tuned["step"] == by_hand["step"] == 5
    for name, value in tuned["weights"].items():
        assert torch.equal(value, by_hand["weights"][name]), name
    for key, state in tuned["optimizer"]["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(by_hand["optimizer"]["state"][key][field]))
    assert torch.equal(tuned["rng"], by_hand["rng"])
    assert model.steps_seen == hand.steps_seen == 5 * (8 // best["micro_batch_size"])
    assert tempfile.gettempdir() == str(temp)
    assert [n for n in os.listdir(temp) if n.startswith("autoscout")] == []


def test_no_trace_restores_module_state_in_place() -> None:
    model = make()
    params = list(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with no_trace(model):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        model.steps_seen = 99
        model.extra = [1]
    assert list(model.parameters()) == params  # the same Parameter objects
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.steps_seen == 0 and not hasattr(model, "extra")


# ---------------------------------------------------------------- faults
def test_a_crash_a_nan_and_a_hang_are_recorded_and_survived() -> None:
    # The hang is an hour's sleep; the trials that do not hang take about a second on a quiet machine, so
    # the limit leaves them room on a slow, loaded one and still stops the hanging ones.
    model = make(fail_if="micro_batch_size=4", hang_if="threads=1")
    callback = AutoScoutCallback(include=("micro_batch_size", "num_threads"), max_trials=6, trial_timeout_s=15,
                                 confirm_top=0, **QUICK)
    fit = trainer(callback, steps=2)
    fit.fit(model)
    statuses = {(t.config["micro_batch_size"], t.config["num_threads"]): t.status for t in callback.result.trials}
    assert all(s == "error" for (mbs, threads), s in statuses.items() if mbs == 4 and threads == 2)
    assert all(s == "timeout" for (mbs, threads), s in statuses.items() if threads == 1 and mbs != 4)
    assert any(s == "ok" for s in statuses.values())
    best = callback.result.best_config
    assert best["num_threads"] == 2 and best["micro_batch_size"] != 4
    assert fit.global_step == 2


def test_all_trials_failing_keeps_the_users_settings_with_a_warning() -> None:
    model = make(nan_at_step=0)
    callback = AutoScoutCallback(include=("micro_batch_size",), max_trials=3, **QUICK)
    fit = trainer(callback, steps=1)
    with pytest.warns(RuntimeWarning, match="every trial failed; the main fit uses your own settings"):
        fit.fit(model)
    assert {t.status for t in callback.result.trials} == {"nan"}
    assert model.batch_size == 8 and fit.accumulate_grad_batches == 1
    assert fit.global_step == 1  # the main fit still ran


def test_an_out_of_memory_trial_is_recorded_as_oom() -> None:
    class OutOfMemoryAt2(GPT2Module):  # no real OOM is possible here: the error torch raises is simulated
        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            if batch.shape[0] == 8 and torch.get_num_threads() == 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().training_step(batch, batch_idx)

    model = make(OutOfMemoryAt2)
    # Every config of the space (micro-batch 1, 2, 4, 8 x 1 or 2 threads on 2 cores): whichever order the
    # search takes, which follows the speeds this machine measures, the failing one is among them.
    callback = AutoScoutCallback(include=("micro_batch_size", "num_threads"), max_trials=8, confirm_top=0, **QUICK)
    trainer(callback, steps=1).fit(model)
    ooms = [t for t in callback.result.trials if t.status == "oom"]
    assert ooms and all((t.config["micro_batch_size"], t.config["num_threads"]) == (8, 1) for t in ooms)


# ---------------------------------------------------------------- warm start
def test_a_second_run_reuses_the_stored_winner_with_zero_trials(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "warm.sqlite")
    first = AutoScoutCallback(include=("micro_batch_size", "num_threads"), max_trials=3, store=store, **QUICK)
    trainer(first, steps=1).fit(make())
    assert first.result.n_trials >= 3 and not first.result.reused
    second = AutoScoutCallback(include=("micro_batch_size", "num_threads"), max_trials=3, store=store, **QUICK)
    model = make()
    fit = trainer(second, steps=1)
    fit.fit(model)
    assert second.result.reused and second.result.n_trials == 0
    assert second.result.best_config == first.result.best_config
    assert model.batch_size == first.result.best_config["micro_batch_size"]
    assert "reused the stored winner" in capsys.readouterr().err
    with SQLiteStore(store) as db:
        assert db.winner(first.result.fingerprint) is not None


def test_hyperparameters_are_logged(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    callback = AutoScoutCallback(include=("num_threads",), max_trials=2, **QUICK)
    trainer(callback, steps=1, logger=CSVLogger(tmp_path)).fit(make())
    hparams = (tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text()
    assert "autoscout/num_threads" in hparams and "autoscout/accumulate_grad_batches" in hparams


def test_options_object_and_keywords_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either an AutoScoutOptions or keyword options"):
        AutoScoutCallback(AutoScoutOptions(), max_trials=3)


def test_knobs_set_in_the_trainer_stay_pinned_and_the_rest_is_tuned(tmp_path: Path) -> None:
    model = make(Recording)
    SEEN.clear()
    callback = AutoScoutCallback(max_trials=3, pin={"num_threads": 1}, report=str(tmp_path / "r"),
                                 include=("micro_batch_size", "activation_checkpointing"), **QUICK)
    fit = trainer(callback, steps=1, precision="bf16-mixed")
    fit.fit(model)
    configs = [t.config for t in callback.result.trials]
    assert all(c["precision"] == "bf16-mixed" and c["num_threads"] == 1 for c in configs)
    assert all(s["autocast"] for s in SEEN)
    notes = json.loads((tmp_path / "r.json").read_text())["notes"]
    assert notes["pinned"]["precision"] == "Trainer(precision='bf16-mixed')"
    assert notes["pinned"]["num_threads"] == "AutoScoutOptions.pin"
    assert "precision" not in notes["tuned"] and "micro_batch_size" in notes["tuned"]
    assert str(fit.precision) == "bf16-mixed"


def test_there_is_no_script_to_rerun_under_pytest_and_strategies_get_catalogue_names() -> None:
    from autoscout_plugin.integrations.lightning import _strategy_name, script_command
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    assert script_command() is None
    assert _strategy_name(DDPStrategy()) == "ddp"
    assert _strategy_name(SingleDeviceStrategy("cpu")) == "single"
    assert _strategy_name(object()) == "object"


def test_a_clearly_losing_trial_is_cut_short() -> None:
    # Slow by construction, on any machine: every step sleeps, ten times longer with one thread, so the
    # sleeps decide the ratio even when the machine is loaded and the model's own step time swells.
    fast_s, slow_s = 0.3, 3.0

    class SlowWithOneThread(GPT2Module):
        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            import time

            time.sleep(slow_s if torch.get_num_threads() == 1 else fast_s)
            return super().training_step(batch, batch_idx)

    model = make(SlowWithOneThread)
    options = QUICK | {"warmup_steps": 2, "measure_steps": 6}
    callback = AutoScoutCallback(include=("num_threads",), max_trials=2, confirm_top=0, **options)
    trainer(callback, steps=1).fit(model)
    baseline, slow = callback.result.trials
    assert baseline.config["num_threads"] == 2 and "cut_short" not in baseline.metrics
    assert slow.config["num_threads"] == 1 and slow.ok and slow.metrics.get("cut_short") == 1.0, slow
    assert slow.value < 0.5 * baseline.value
    assert slow.cost_s < 8 * slow_s  # cut after its first timed step: 3 sleeps, not all 8
    assert callback.result.best_config["num_threads"] == 2
