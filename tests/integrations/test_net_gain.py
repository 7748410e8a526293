"""Tuning that pays for itself, with real frameworks: a job too short to win back any tuning runs untouched
(Lightning, the Hugging Face Trainer, the launcher), its length read from `max_steps` or from epochs x
batches, and after the main run the job's realised net speed-up in the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from autoscout_plugin.integrations.accelerate import main as launch
from autoscout_plugin.integrations.transformers import planned_steps, tune_trainer

from autoscout_plugin import AutoScoutCallback
from autoscout_plugin.trial import Fidelity
from examples.hf_gpt2 import make_trainer
from examples.lightning_gpt2 import GPT2Module

SMALL = {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab": 128, "seq_len": 16, "batch_size": 8, "samples": 64}

pytestmark = pytest.mark.usefixtures("isolated_run")  # tests/integrations/conftest.py


def _fit(callback: AutoScoutCallback | None, **kwargs: Any) -> tuple[pl.Trainer, GPT2Module]:
    pl.seed_everything(0, verbose=False)
    model = GPT2Module(**SMALL)
    base = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
            "enable_model_summary": False, "accelerator": "cpu"}
    trainer = pl.Trainer(callbacks=[callback] if callback else [], **(base | kwargs))
    trainer.fit(model)
    return trainer, model


def _autoscout_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "AutoScout" in line]


@pytest.mark.parametrize("length", [{"max_steps": 12}, {"max_steps": -1, "max_epochs": 2}])
def test_a_short_lightning_fit_is_not_tuned_and_trains_exactly_as_without_autoscout(
        length: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    callback = AutoScoutCallback(report=str(tmp_path / "report"))
    trainer, model = _fit(callback, **length)
    err = capsys.readouterr().err
    steps = 12 if "max_epochs" not in length else 2 * (SMALL["samples"] // SMALL["batch_size"])  # 2 epochs of 8
    assert _autoscout_lines(err) == [
        f"AutoScout: the main run ({steps} steps) is too short for tuning to pay for itself: the smallest study runs"
        f" 36 steps of trials and could save at most {steps // 2} steps; the main fit uses your settings untouched."]
    assert callback.result is not None and callback.result.n_trials == 0 and trainer.global_step == steps
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["verdict"]["decision"] == "kept" and "too short" in saved["verdict"]["sentence"]
    _, plain = _fit(None, **length)  # the same fit without the callback: the same weights, bit for bit
    for (name, mine), theirs in zip(model.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_search_trials_time_until_their_speed_is_known_and_confirmations_time_exactly_their_steps(
        tmp_path: Path) -> None:
    # A precision no trial reaches: the user's config (no best to beat yet) times on to its most steps; a
    # candidate stops there or as soon as it is clearly beside the best; a confirmation round times exactly
    # measure_steps. The main fit still runs its own max_steps.
    common = {"include": ("num_threads", "micro_batch_size"), "warmup_steps": 1, "measure_steps": 2,
              "net_gain": False, "max_trials": 3, "confirm_top": 1, "confirm_rounds": 1, "patience": None,
              "progress": False, "store": str(tmp_path / "trials.sqlite")}
    callback = AutoScoutCallback(**common, measure_precision=1e-6, max_measure_steps=5)
    trainer, _ = _fit(callback, max_steps=40)
    assert callback.result is not None and trainer.global_step == 40
    timed = [(t.fidelity, t.metrics.get("timed_steps"), bool(t.metrics.get("cut_short")))
             for t in callback.result.trials if t.ok]
    assert timed[0] == (Fidelity.F2, 5.0, False)  # the user's config: to its most
    assert all(2 <= steps <= 5 for fidelity, steps, cut in timed if fidelity == Fidelity.F2 and not cut), timed
    assert [steps for fidelity, steps, _ in timed if fidelity == Fidelity.F3] in ([], [2.0, 2.0]), timed
    exact = AutoScoutCallback(**{**common, "store": str(tmp_path / "exact.sqlite")}, measure_precision=None)
    _fit(exact, max_steps=40)
    assert exact.result is not None
    assert {t.metrics.get("timed_steps") for t in exact.result.trials
            if t.ok and not t.metrics.get("cut_short")} == {2.0}


def test_a_lightning_fit_long_enough_is_tuned_and_reports_its_realised_net(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    callback = AutoScoutCallback(report=str(tmp_path / "report"), include=("num_threads", "micro_batch_size"),
                                 warmup_steps=1, measure_steps=2, progress=False)
    trainer, _ = _fit(callback, max_steps=300)
    err = capsys.readouterr().err
    result = callback.result
    assert result is not None and result.n_trials >= 1 and result.net["samples"] == 300 * SMALL["batch_size"]
    net = callback.report["net"]
    assert "estimated job time" in err and net["estimated"] > 0 and not net["assumed"]
    realised = net["realised"]
    assert realised["steps"] == trainer.global_step == 300 and realised["main_run_s"] > 0
    assert realised["net"] == pytest.approx(realised["default_run_s"] / (realised["tuning_s"] + realised["main_run_s"]))
    assert "tuning included" in err
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["notes"]["net"]["realised"]["steps"] == 300
    assert "Job time, tuning included" in (tmp_path / "report.html").read_text()


def test_the_hf_length_comes_from_max_steps_or_from_epochs(tmp_path: Path) -> None:
    by_steps = make_trainer(str(tmp_path / "a"), steps=40, batch_size=16, samples=100)
    assert planned_steps(by_steps, 16) == 40
    by_epochs = make_trainer(str(tmp_path / "b"), steps=-1, batch_size=16, samples=100, num_train_epochs=3)
    assert planned_steps(by_epochs, 16) == 3 * 7  # 100 samples in batches of 16: 7 steps an epoch
    by_epochs.args.dataloader_drop_last = True
    assert planned_steps(by_epochs, 16) == 3 * 6


@pytest.mark.timeout(300)
def test_a_short_hf_training_is_not_tuned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainer = make_trainer(str(tmp_path / "out"), steps=-1, batch_size=16, samples=64, num_train_epochs=2)
    result = tune_trainer(trainer)
    err = capsys.readouterr().err
    assert result.n_trials == 0 and "the main run (8 steps) is too short" in err
    assert _autoscout_lines(err)[-1].endswith("training uses your settings untouched.")
    assert trainer.train().global_step == 8


SCRIPT = """
import json, sys, time
import autoscout_plugin as autoscout
batch = autoscout.knob("micro_batch_size", 8)
spec = autoscout.launch_spec() or {}
for _ in range(int(sys.argv[2])):
    time.sleep(0.01)
    autoscout.step()
open(sys.argv[1], "a").write(json.dumps({"mode": spec.get("mode")}) + "\\n")
"""


@pytest.mark.timeout(300)
def test_a_short_launch_runs_untouched_and_a_bad_length_is_refused(tmp_path: Path,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    script, out = tmp_path / "train.py", tmp_path / "runs.jsonl"
    script.write_text(SCRIPT)
    assert launch(["--autoscout", "--autoscout-steps", "30", "--num_machines", "1", str(script), str(out), "30"]) == 0
    err = capfd.readouterr().err
    assert "AutoScout: the main run (30 steps) is too short for tuning to pay for itself" in err
    assert [json.loads(line)["mode"] for line in out.read_text().splitlines()] == [None]  # the real run only
    assert launch(["--autoscout", "--autoscout-steps", "0", str(script), str(out), "3"]) == 2
    assert "--autoscout-steps 0: give a positive number of optimizer steps" in capfd.readouterr().err
