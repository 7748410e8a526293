"""What every training integration promises, written once (like the store contract): each adapter's
class below only says how to tune through its public API, how to run the main training by hand, and
how to pin a knob and inject a fault. Every run goes through the real framework: a Lightning `Trainer`,
a Hugging Face `Trainer`, a real `accelerate launch` of a script.

- no trace: the tuned main run is bit for bit the main run with the winner set by hand;
- pinned vs tuned: what the user set stays pinned in every trial; the rest is tuned;
- faults survived: a trial that raises is recorded, and the main run goes on;
- warm start: the same run again reuses the stored winner with zero trials;
- report written: JSON and HTML, with what was pinned, tuned and applied.
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from autoscout_plugin import AutoScoutCallback, tune_trainer
from examples.hf_gpt2 import make_trainer
from examples.lightning_gpt2 import GPT2Module

QUICK = {"warmup_steps": 1, "measure_steps": 2, "progress": False, "patience": None, "confirm_top": 0,
         "net_gain": False}  # these fits are a few steps long: trials run whatever the length
TUNED = ("micro_batch_size", "num_threads")
"""Knobs the contract's runs tune: the user's micro-batch 8 (global batch 8) and the thread count."""


@dataclass
class Run:
    """What a tuned run left: its report (`REPORT.json`) and the weights after the main run."""

    report: dict[str, Any]
    weights: dict[str, torch.Tensor]

    @property
    def applied(self) -> dict[str, Any] | None:
        return self.report["notes"]["applied"]


def _report(tmp_path: Path) -> dict[str, Any]:
    """The run's JSON report: at `tmp_path / "report.json"`, or where AutoScout put it instead when that
    path could not be written (a fallback folder under `tmp_path / "tmp"`, see the output-paths test)."""
    path = tmp_path / "report.json"
    if not path.is_file():
        path = next((tmp_path / "tmp").glob("autoscout-fallback-*/report.json"))
    return json.loads(path.read_text(encoding="utf-8"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert torch.equal(value, b[name]), name


class IntegrationContract:
    """Subclass per adapter; implement `tune` and `by_hand`, and name the knob `pinned` pins."""

    pinned: tuple[str, Any]
    """The knob the user's own setting pins (with `pin=True`), and its value."""

    def tune(self, tmp_path: Path, *, store: Path, include: tuple[str, ...] = TUNED, pin: bool = False,
             fault: bool = False) -> Run:
        """Tune `include` through the public API (report at `tmp_path / "report"`), 2 or 3 trials, then run
        the main training. `pin`: the user's own setting pins `pinned`; `fault`: every micro-batch other than
        the user's 8 raises in its trial."""
        raise NotImplementedError

    def by_hand(self, tmp_path: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The main training without AutoScout, with `config` set by hand: its final weights."""
        raise NotImplementedError

    def test_no_trace_bit_for_bit(self, tmp_path: Path) -> None:
        run = self.tune(tmp_path / "tuned", store=tmp_path / "store.sqlite")
        assert run.applied is not None and run.report["trials"]
        _same(run.weights, self.by_hand(tmp_path / "hand", run.applied))

    def test_pinned_stays_pinned_and_the_rest_is_tuned(self, tmp_path: Path) -> None:
        knob, value = self.pinned
        run = self.tune(tmp_path, store=tmp_path / "store.sqlite", pin=True)
        notes = run.report["notes"]
        assert knob in notes["pinned"] and knob not in notes["tuned"] and set(notes["tuned"]) == set(TUNED)
        assert run.report["trials"] and all(t["config"].get(knob, value) == value for t in run.report["trials"])
        tried = {json.dumps({k: t["config"][k] for k in TUNED}) for t in run.report["trials"]}
        assert len(tried) == len(run.report["trials"]) > 1  # the rest is tuned

    def test_faults_are_recorded_and_survived(self, tmp_path: Path) -> None:
        run = self.tune(tmp_path, store=tmp_path / "store.sqlite", include=("micro_batch_size",), fault=True)
        failed = [t for t in run.report["trials"] if t["status"] != "ok"]
        assert len(failed) == len(run.report["trials"]) - 1 >= 1  # all but the user's own micro-batch
        assert all(t["config"]["micro_batch_size"] != 8 and "injected" in t["error"] for t in failed)
        assert run.applied is not None and run.applied["micro_batch_size"] == 8
        assert run.weights  # the main run went on

    def test_warm_start_reuses_the_winner_with_zero_trials(self, tmp_path: Path) -> None:
        first = self.tune(tmp_path / "a", store=tmp_path / "store.sqlite")
        second = self.tune(tmp_path / "b", store=tmp_path / "store.sqlite")
        assert not first.report["reused"] and first.report["trials"]
        assert second.report["reused"] and second.report["trials"] == []
        assert second.applied == first.applied
        _same(first.weights, second.weights)

    def test_the_report_is_written(self, tmp_path: Path) -> None:
        run = self.tune(tmp_path, store=tmp_path / "store.sqlite")
        assert (tmp_path / "report.html").read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
        notes = run.report["notes"]
        assert set(notes["tuned"]) == set(TUNED) and notes["applied"] == run.applied
        assert run.report["best_config"] is not None and notes["global_batch"] == 8
        assert len(run.report["trials"]) == notes["trials"]

    def test_unusable_output_paths_never_stop_the_run(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp_path / "tmp").mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the fallbacks go
        (tmp_path / "report.json").mkdir()  # a folder where the report file should go
        store = tmp_path / "a-folder"
        store.mkdir()
        with pytest.warns(RuntimeWarning) as caught:
            run = self.tune(tmp_path, store=store)
        said = " | ".join(str(w.message) for w in caught)
        assert f"cannot use the trial store {store} (the trial store path {store} is a directory" in said
        assert f"cannot write the report at {tmp_path / 'report'}" in said
        assert run.report["trials"] and run.applied is not None and run.weights  # tuned, and the main run went on
        assert not any(store.iterdir()) and not any((tmp_path / "report.json").iterdir())  # the user's untouched


# ---------------------------------------------------------------- Lightning
_LIGHTNING = {"n_layer": 1, "n_embd": 32, "n_head": 2, "vocab": 128, "seq_len": 16, "batch_size": 8, "samples": 64}


def _lightning_fit(module: GPT2Module, callbacks: list[Any], **kwargs: Any) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, **kwargs)
    trainer.fit(module)
    return trainer


class _StepOnlyAtMicroBatch8(GPT2Module):
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if batch.shape[0] != 8:
            raise RuntimeError(f"a crash injected for micro-batch {batch.shape[0]}")
        return super().training_step(batch, batch_idx)


@pytest.mark.usefixtures("isolated_run")
class TestLightning(IntegrationContract):
    pinned = ("precision", "bf16-mixed")

    def tune(self, tmp_path: Path, *, store: Path, include: tuple[str, ...] = TUNED, pin: bool = False,
             fault: bool = False) -> Run:
        pl.seed_everything(0, verbose=False)
        module = (_StepOnlyAtMicroBatch8 if fault else GPT2Module)(**_LIGHTNING)
        callback = AutoScoutCallback(include=include, max_trials=3, store=str(store), report=str(tmp_path / "report"),
                                     **QUICK)
        _lightning_fit(module, [callback], **({"precision": "bf16-mixed"} if pin else {}))
        return Run(_report(tmp_path), module.state_dict())

    def by_hand(self, tmp_path: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
        torch.set_num_threads(8)  # whatever the tuning left behind must not matter: set it by hand
        pl.seed_everything(0, verbose=False)
        module = GPT2Module(**(_LIGHTNING | {"batch_size": config["micro_batch_size"]}))
        torch.set_num_threads(config["num_threads"])
        _lightning_fit(module, [], accumulate_grad_batches=8 // config["micro_batch_size"])
        return module.state_dict()


# ---------------------------------------------------------------- Hugging Face Trainer
_HF = {"n_layer": 1, "n_embd": 32, "n_head": 2, "vocab": 128, "seq_len": 16}


class _LossOnlyAtMicroBatch8:
    """A `compute_loss` that raises on a micro-batch of other than 8 rows (a fault of those configs)."""

    def __init__(self, compute_loss: Any) -> None:
        self.compute_loss = compute_loss

    def __call__(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if inputs["input_ids"].shape[0] != 8:
            raise RuntimeError(f"a crash injected for micro-batch {inputs['input_ids'].shape[0]}")
        return self.compute_loss(model, inputs, *args, **kwargs)


@pytest.mark.usefixtures("isolated_run")
class TestTransformers(IntegrationContract):
    pinned = ("precision", "bf16-mixed")

    def tune(self, tmp_path: Path, *, store: Path, include: tuple[str, ...] = TUNED, pin: bool = False,
             fault: bool = False) -> Run:
        torch.manual_seed(0)
        trainer = make_trainer(str(tmp_path / "out"), steps=3, samples=64, model=_HF, batch_size=8,
                               **({"bf16": True} if pin else {}))
        if fault:
            trainer.compute_loss = _LossOnlyAtMicroBatch8(trainer.compute_loss)  # type: ignore[method-assign]
        tune_trainer(trainer, include=list(include), max_trials=3, store=str(store), report=str(tmp_path / "report"),
                     **QUICK)
        trainer.train()
        return Run(_report(tmp_path), trainer.model.state_dict())

    def by_hand(self, tmp_path: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        trainer = make_trainer(str(tmp_path / "out"), steps=3, samples=64, model=_HF,
                               batch_size=config["micro_batch_size"],
                               gradient_accumulation_steps=8 // config["micro_batch_size"])
        torch.set_num_threads(config["num_threads"])
        trainer.train()
        return trainer.model.state_dict()


# ---------------------------------------------------------------- the launcher (`autoscout launch --autoscout`)
SCRIPT = '''
import argparse, os
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import autoscout_plugin as autoscout

parser = argparse.ArgumentParser()
parser.add_argument("--micro-batch", type=int, default=8)
parser.add_argument("--accum", type=int, default=1)
parser.add_argument("--only-micro-batch-8", action="store_true")
args = parser.parse_args()
micro = autoscout.knob("micro_batch_size", args.micro_batch)
accum = autoscout.knob("grad_accum", args.accum)
if args.only_micro_batch_8 and micro != 8:
    raise RuntimeError(f"a crash injected for micro-batch {micro}")
accelerator = Accelerator(gradient_accumulation_steps=accum)
torch.manual_seed(0)
x = torch.randn(256, 16)
y = x @ torch.randn(16, 1)
model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
loader = DataLoader(TensorDataset(x, y), batch_size=micro, shuffle=False, drop_last=True)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
steps = 0
for xb, yb in loader:
    with accelerator.accumulate(model):
        loss = nn.functional.mse_loss(model(xb), yb)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    if accelerator.sync_gradients:
        steps += 1
        autoscout.step(loss=loss.item())
        if steps >= 6:
            break
if os.environ.get("CONTRACT_SAVE") and (autoscout.launch_spec() or {}).get("mode") != "trial":
    torch.save(accelerator.unwrap_model(model).state_dict(), os.environ["CONTRACT_SAVE"])
'''


@pytest.mark.slow
@pytest.mark.timeout(600)
class TestLauncher(IntegrationContract):
    pinned = ("precision", "bf16-mixed")

    @pytest.fixture(autouse=True)
    def _environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no accelerate config file of the machine's user
        for name in ("AUTOSCOUT_LAUNCH", "AUTOSCOUT_DECLARED", "OMP_NUM_THREADS", "AUTOSCOUT_STORE"):
            monkeypatch.delenv(name, raising=False)

    @staticmethod
    def _script(tmp_path: Path) -> Path:
        path = tmp_path.parent / "train.py"  # one script for the runs of a test: the same job
        if not path.exists():
            path.write_text(textwrap.dedent(SCRIPT), encoding="utf-8")
        return path

    def tune(self, tmp_path: Path, *, store: Path, include: tuple[str, ...] = TUNED, pin: bool = False,
             fault: bool = False) -> Run:
        from autoscout_plugin.integrations.accelerate import main

        tmp_path.mkdir(parents=True, exist_ok=True)
        weights = tmp_path / "weights.pt"
        argv = ["--autoscout", "--autoscout-trials", "2", "--autoscout-confirm", "0", "--autoscout-warmup", "1",
                "--autoscout-measure", "2", "--autoscout-include", ",".join(include), "--autoscout-store", str(store),
                "--autoscout-report", str(tmp_path / "report"), "--num_processes", "1",
                *(["--mixed_precision", "bf16"] if pin else []), str(self._script(tmp_path)),
                *(["--only-micro-batch-8"] if fault else [])]
        with pytest.MonkeyPatch.context() as env:
            env.setenv("CONTRACT_SAVE", str(weights))  # not an argument: the job stays the same job
            assert main(argv) == 0
        return Run(_report(tmp_path), torch.load(weights))

    def by_hand(self, tmp_path: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
        from autoscout_plugin.integrations.accelerate import main

        tmp_path.mkdir(parents=True, exist_ok=True)
        weights = tmp_path / "weights.pt"
        argv = ["--num_processes", "1", "--num_cpu_threads_per_process", str(config["num_threads"]),
                str(self._script(tmp_path)), "--micro-batch", str(config["micro_batch_size"]),
                "--accum", str(8 // config["micro_batch_size"])]
        with pytest.MonkeyPatch.context() as env:
            env.setenv("CONTRACT_SAVE", str(weights))
            assert main(argv) == 0  # plain `accelerate launch`
        return torch.load(weights)


def test_every_adapter_applies_every_ddp_knob_of_the_catalogue() -> None:
    """A DDP knob is one catalogue entry (`KnobSpec.ddp_kwarg`): every training adapter takes it from there."""
    from autoscout_plugin.integrations import lightning, transformers
    from autoscout_plugin.integrations._accelerate_args import SCRIPT_KNOBS

    from autoscout_plugin.space.catalogue import CATALOGUE, DDP_KWARGS

    assert DDP_KWARGS == {"ddp_bucket_cap_mb": "bucket_cap_mb", "ddp_static_graph": "static_graph",
                          "ddp_bucket_view": "gradient_as_bucket_view"}
    for name in DDP_KWARGS:
        assert name in lightning.KNOBS and name in transformers.KNOBS and name in SCRIPT_KNOBS
        assert CATALOGUE[name].grid and CATALOGUE[name].parent == "strategy"
    assert SCRIPT_KNOBS["ddp_bucket_view"] is bool and SCRIPT_KNOBS["ddp_bucket_cap_mb"] is float
