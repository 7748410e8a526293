"""`tune_trainer` with real Hugging Face Trainers on CPU: every knob in effect in its trial, the winner in
effect in the main run, no trace (bit-exact against the hand-set winner), faults survived, warm start,
and clear errors for bad options."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from autoscout_plugin.integrations import transformers as hf
from autoscout_plugin.integrations.transformers import arguments_for, run_trial, tune_trainer
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from autoscout_plugin.batch import BatchSplit, BatchSplitError
from autoscout_plugin.store import SQLiteStore
from autoscout_plugin.trial import Fidelity
from autoscout_plugin.tuning import TrialRequest
from examples.hf_gpt2 import TokenDataset, make_trainer

SMALL = {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab": 128, "seq_len": 16}
QUICK = {"warmup_steps": 1, "measure_steps": 2, "progress": False, "patience": None,
         "net_gain": False}  # these runs are a few steps long: trials run whatever the length (test_net_gain.py)


pytestmark = pytest.mark.usefixtures("isolated_run")  # tests/integrations/conftest.py


def request(config: dict[str, Any], *, global_batch: int = 8, warmup: int = 1, measure: int = 2) -> TrialRequest:
    """The tuning flow's request for one trial of `config` on a one-process run."""
    split = BatchSplit.of(global_batch, micro_batch=int(config.get("micro_batch_size", 8)))
    return TrialRequest(config=config, fidelity=Fidelity.F2, warmup=warmup, measure=measure, cut_off=None,
                        timeout_s=600.0, split=split)


def small(tmp_path: Path, **kwargs: Any) -> Trainer:
    return make_trainer(str(tmp_path / "out"), samples=128, model=SMALL, **({"batch_size": 8} | kwargs))


class Seen(TrainerCallback):
    """A user's callback: counts what reaches it (trials must not)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("step")

    def on_log(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("log")


def record_forward(trainer: Trainer) -> list[dict[str, Any]]:
    """What the main run's forward passes really ran with."""
    seen: list[dict[str, Any]] = []

    def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append({"rows": int(ids.shape[0]), "autocast": torch.is_autocast_enabled("cpu"),
                     "dtype": torch.get_autocast_dtype("cpu"), "threads": torch.get_num_threads()})

    trainer.model.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


# ---------------------------------------------------------------- each knob in effect in its trial
@pytest.mark.parametrize("config", [
    {"precision": "bf16-mixed"}, {"micro_batch_size": 4}, {"num_workers": 1}, {"activation_checkpointing": True},
    {"num_threads": 1},
])
def test_each_knob_is_in_effect_during_its_trial(tmp_path: Path, config: dict[str, Any]) -> None:
    trainer = small(tmp_path)
    outcome = run_trial(trainer, request(config))
    assert outcome.status == "ok", outcome.error
    assert outcome.value and outcome.value > 0


@pytest.mark.slow
@pytest.mark.timeout(900)  # about a minute of compiling on a quiet 2-core machine; minutes on a loaded one
def test_compile_trial_really_compiles(tmp_path: Path) -> None:
    outcome = run_trial(small(tmp_path), request({"compile": "default", "precision": "32-true"}, measure=1))
    assert outcome.status == "ok", outcome.error


def test_a_setting_that_silently_does_not_apply_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The accelerate pitfall: a prepared flag left set and no rebuilt Accelerator run fp32 and uncompiled."""
    trainer = small(tmp_path)

    def stale(trial: Trainer, config: Any = None) -> None:  # a rebuilt Accelerator, the prepared flag left set
        trial._train_batch_size = trial.args.train_batch_size
        trial.create_accelerator_and_postprocess()
        trial.model._is_accelerate_prepared = True

    monkeypatch.setattr(hf, "_rebuild_accelerator", stale)
    outcome = run_trial(trainer, request({"precision": "bf16-mixed"}, measure=1))
    assert outcome.status == "error"
    assert "setting not in effect" in (outcome.error or "") and "precision=bf16-mixed" in (outcome.error or "")


def test_arguments_keep_the_global_batch_and_reject_a_split_that_does_not_divide(tmp_path: Path) -> None:
    args = small(tmp_path, gradient_accumulation_steps=2).args  # global batch 16
    split = hf.describe(small(tmp_path, gradient_accumulation_steps=2)).split
    assert split == BatchSplit(16, 8, 2, 1)
    new = arguments_for(args, {"micro_batch_size": 4, "precision": "bf16-mixed"},
                        split.for_config({"micro_batch_size": 4}))
    assert (new.per_device_train_batch_size, new.gradient_accumulation_steps, new.bf16) == (4, 4, True)
    assert new.mixed_precision == "bf16" and args.bf16 is False  # re-derived; the user's object untouched
    with pytest.raises(BatchSplitError, match="micro_batch 3 x processes 1 = 3 does not divide the global batch 16"):
        split.for_config({"micro_batch_size": 3})


# ---------------------------------------------------------------- the main run and no trace
def test_winner_is_in_effect_in_the_main_run(tmp_path: Path) -> None:
    trainer = small(tmp_path, steps=3)
    result = tune_trainer(trainer, include=["micro_batch_size"], pin={"precision": "bf16-mixed"}, max_trials=3,
                          **QUICK)
    best = result.best_config
    assert best is not None and best["precision"] == "bf16-mixed"
    seen = record_forward(trainer)
    trainer.train()
    assert seen and {s["rows"] for s in seen} == {best["micro_batch_size"]}
    assert all(s["autocast"] and s["dtype"] == torch.bfloat16 for s in seen)
    assert trainer.args.gradient_accumulation_steps * best["micro_batch_size"] == 8


def test_no_trace_bit_exact_against_the_hand_set_winner(tmp_path: Path) -> None:
    user = Seen()
    tuned = small(tmp_path / "a", steps=4, callbacks=[user], logging_steps=1)
    before = {k: v.clone() for k, v in tuned.model.state_dict().items()}
    rng = torch.random.get_rng_state()
    result = tune_trainer(tuned, include=["micro_batch_size", "num_workers"], pin={"precision": "bf16-mixed"},
                          max_trials=4, **QUICK)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in tuned.model.state_dict().items())
    assert user.events == []  # the user's callbacks (and reporting ones) heard nothing of the trials
    assert not (tmp_path / "a" / "out").exists() or not any((tmp_path / "a" / "out").iterdir())
    best = result.best_config
    assert best is not None
    tuned.train()
    assert user.events.count("step") == 4
    # Built after the tuned run: constructing TrainingArguments resets accelerate's global state, which
    # changes a Trainer built before it (an HF quirk, tuning or not).
    by_hand = small(tmp_path / "b", steps=4, logging_steps=1, batch_size=best["micro_batch_size"],
                    gradient_accumulation_steps=8 // best["micro_batch_size"],
                    dataloader_num_workers=best["num_workers"], bf16=True)
    by_hand.train()
    for (name, a), b in zip(tuned.model.state_dict().items(), by_hand.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(tuned.optimizer.state.values(), by_hand.optimizer.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    assert tuned.state.global_step == by_hand.state.global_step == 4


# ---------------------------------------------------------------- faults
class Fragile(nn.Module):
    """A model that fails by micro-batch size: 2 crashes, 4 runs out of memory (simulated: no GPU here),
    8 gives a NaN loss, 1 hangs (for an hour: far past any trial limit). 16 trains."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(128, 16)
        self.head = nn.Linear(16, 128)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = input_ids.shape[0]
        if rows == 2:
            raise RuntimeError("shape mismatch in a custom kernel")
        if rows == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if rows == 1:
            import time

            time.sleep(3600)
        logits = self.head(self.embed(input_ids))
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return {"loss": loss * float("nan") if rows == 8 else loss, "logits": logits}


def fragile_trainer(tmp_path: Path, batch_size: int = 16) -> Trainer:
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=batch_size, max_steps=2,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    return Trainer(model=Fragile(), args=args, train_dataset=TokenDataset(64, 16, 128))


# A trial that does not hang takes well under a second on a quiet machine: the limit leaves it room on a
# slow, loaded one, and still stops the one that hangs.
FAULT_TIMEOUT_S = 15


def test_each_fault_is_recorded_and_survived(tmp_path: Path) -> None:
    trainer = fragile_trainer(tmp_path, batch_size=16)
    result = tune_trainer(trainer, include=["micro_batch_size"], max_trials=5, trial_timeout_s=FAULT_TIMEOUT_S,
                          confirm_top=0, **QUICK)
    status = {t.config["micro_batch_size"]: t.status for t in result.trials}
    assert status == {16: "ok", 8: "nan", 4: "oom", 2: "error", 1: "timeout"}
    assert result.best_config is not None and result.best_config["micro_batch_size"] == 16
    assert trainer.train().global_step == 2  # the main run goes on


def test_when_every_trial_fails_training_keeps_the_users_settings(tmp_path: Path) -> None:
    trainer = fragile_trainer(tmp_path, batch_size=8)
    with pytest.warns(RuntimeWarning, match="every trial failed"):
        result = tune_trainer(trainer, include=["micro_batch_size"], max_trials=4, trial_timeout_s=FAULT_TIMEOUT_S,
                              confirm_top=0, **QUICK)
    assert result.best_config is None and {t.status for t in result.trials} == {"nan", "oom", "error", "timeout"}
    assert trainer.args.per_device_train_batch_size == 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert trainer.train().global_step == 2


# ---------------------------------------------------------------- warm start, report
def test_warm_start_reuses_the_stored_winner_with_zero_trials(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = tune_trainer(small(tmp_path), include=["micro_batch_size", "num_threads"], max_trials=3,
                         report=str(tmp_path / "report"), **QUICK)
    assert first.n_trials >= 3 and not first.reused
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.html").exists()
    again = small(tmp_path)
    second = tune_trainer(again, include=["micro_batch_size", "num_threads"], max_trials=3, **QUICK)
    assert second.reused and second.n_trials == 0 and second.best_config == first.best_config
    assert again.args.per_device_train_batch_size == first.best_config["micro_batch_size"]
    assert "reused the stored winner" in capsys.readouterr().err


# ---------------------------------------------------------------- bad options
@pytest.mark.parametrize(("kwargs", "args", "message"), [
    ({"include": ["strategy"]}, {}, "strategy and process count are chosen at launch: use `autoscout launch"),
    ({"include": ["precision"]}, {"bf16": True}, r"pinned by TrainingArguments\(bf16=True\)"),
    ({"include": ["pin_memory"]}, {}, "cannot tune 'pin_memory'"),
    ({"include": ["num_workers"]}, {"dataloader_num_workers": 1}, "pinned by TrainingArguments"),
    ({"include": ["no_such_knob"]}, {}, "unknown knob 'no_such_knob'"),
    ({"max_trials": 0}, {}, "max_trials must be >= 1"),
])
def test_bad_options_fail_before_any_trial(tmp_path: Path, kwargs: dict[str, Any], args: dict[str, Any],
                                          message: str) -> None:
    trainer = small(tmp_path, **args)
    with pytest.raises(ValueError, match=message):
        tune_trainer(trainer, **kwargs)


def test_not_a_trainer_and_no_dataset_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="needs a transformers.Trainer, got Module"):
        tune_trainer(nn.Module())  # type: ignore[arg-type]
    trainer = small(tmp_path)
    trainer.train_dataset = None
    with pytest.raises(ValueError, match="no train_dataset"):
        tune_trainer(trainer)


# ---------------------------------------------------------------- two processes (gloo)
DDP_SCRIPT = '''
import json, os, sys
from examples.hf_gpt2 import make_trainer
from autoscout_plugin.integrations.transformers import tune_trainer
out = sys.argv[1]
trainer = make_trainer(out + "/run", samples=128, model={"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab": 128,
                       "seq_len": 16}, steps=3, batch_size=4)
result = tune_trainer(trainer, include=["micro_batch_size", "ddp_bucket_cap_mb", "ddp_static_graph"], max_trials=4,
                      warmup_steps=1, measure_steps=2, progress=False, patience=None, net_gain=False,
                      store=out + "/store.sqlite", pin={"ddp_bucket_view": True})
rows = []
trainer.model.transformer.register_forward_pre_hook(
    lambda m, a, k: rows.append(int((a[0] if a else k["input_ids"]).shape[0])), with_kwargs=True)
steps = trainer.train().global_step
json.dump({"best": result.best_config, "trials": result.n_trials, "rows": sorted(set(rows)), "steps": steps,
           "world": trainer.args.world_size, "accum": trainer.args.gradient_accumulation_steps,
           "bucket": trainer.model_wrapped.bucket_bytes_cap, "static": trainer.model_wrapped.static_graph,
           "view": trainer.model_wrapped.gradient_as_bucket_view,
           "statuses": sorted({t.status for t in result.trials})},
          open(f"{out}/rank{os.environ['RANK']}.json", "w"))
import torch.distributed
torch.distributed.destroy_process_group()
'''


# With torch 2.13 and gloo, about 1 exit in 15 aborts at interpreter shutdown, after the script's last line
# and after `destroy_process_group()` ("terminate called without an active exception", SIGABRT on one
# rank). A plain HF DDP script without AutoScout does the same. What these tests check is done by then, so
# the scripts end without the C++ teardown.
_EPILOGUE = """
import os as _os, sys as _sys
_sys.stdout.flush()
_sys.stderr.flush()
_os._exit(0)
"""


def _torchrun(tmp_path: Path, source: str, prefix: str = "rank", timeout: int = 280) -> list[dict[str, Any]]:
    """Run `source` as a script on two gloo processes; each rank's JSON file `{prefix}{rank}.json`."""
    import os
    import subprocess
    import sys

    script = tmp_path / f"{prefix}_script.py"
    script.write_text(source + _EPILOGUE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"{prefix}{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_ddp_tunes_on_rank_0_and_every_rank_applies_the_winner(tmp_path: Path) -> None:
    ranks = _torchrun(tmp_path, DDP_SCRIPT)
    assert ranks[0]["best"] == ranks[1]["best"] and ranks[0]["trials"] == ranks[1]["trials"] >= 3
    best = ranks[0]["best"]
    for seen in ranks:
        assert seen["world"] == 2 and seen["steps"] == 3
        assert seen["rows"] == [best["micro_batch_size"]]
        assert seen["accum"] * best["micro_batch_size"] * 2 == 8
        assert seen["bucket"] == int(best["ddp_bucket_cap_mb"] * 1024 * 1024)
        assert seen["static"] == best["ddp_static_graph"]
        # `ddp_bucket_view` (pinned on: not DDP's default) ran in every trial, its evidence checked, and in the run
        assert best["ddp_bucket_view"] is True and seen["view"] is True and seen["statuses"] == ["ok"]


PROBE_SCRIPT = '''
import json, os, sys
from types import SimpleNamespace
import torch.distributed as dist
from autoscout_plugin.integrations._hf_probe import HFProbe as _Probe
dist.init_process_group("gloo")
rank, out = dist.get_rank(), {}


def run(name, probe, nan_at=None):
    control = SimpleNamespace(should_training_stop=False)
    probe.on_train_begin(None, None, control)
    for step in range(1, 7):
        probe.nan = nan_at is not None and step >= nan_at
        probe.on_step_end(None, SimpleNamespace(global_step=step), control)
        if control.should_training_stop:
            break
    o = probe.outcome
    out[name] = {"step": step, "status": o.status, "error": o.error, "cut": (o.metrics or {}).get("cut_short")}


# rank 1 alone sees a non-finite loss at step 2
run("nan", _Probe(1, 3, 8, cut_off=None, compiling=False), nan_at=2 if rank == 1 else None)
# rank 0 alone is below its cut-off during warm-up (its clock, not rank 1's)
run("cut_off", _Probe(1, 3, 8, cut_off=1e15 if rank == 0 else None, compiling=False))
# no disagreement: both measure to the end
run("done", _Probe(1, 3, 8, cut_off=None, compiling=False))
json.dump(out, open(f"{sys.argv[1]}/probe{rank}.json", "w"))
dist.destroy_process_group()
'''


@pytest.mark.timeout(240)
def test_ranks_agree_on_when_a_trial_ends(tmp_path: Path) -> None:
    """A rank that ended a trial alone (its own NaN, its own clock under the cut-off) would leave the other
    waiting in a gradient all-reduce it never joins: gloo fails with a collective mismatch. The verdicts
    are reduced over a real two-process gloo group, so both stop at the same step."""
    r0, r1 = _torchrun(tmp_path, PROBE_SCRIPT, prefix="probe", timeout=200)  # about 10 s on a quiet machine
    assert r0["nan"]["step"] == r1["nan"]["step"] == 2
    assert r1["nan"]["status"] == r0["nan"]["status"] == "nan" and "another rank" in r0["nan"]["error"]
    assert r0["cut_off"]["step"] == r1["cut_off"]["step"] == 1
    assert r0["cut_off"]["status"] == r1["cut_off"]["status"] == "ok"
    assert r0["cut_off"]["cut"] == r1["cut_off"]["cut"] == 1.0
    assert r0["done"] == r1["done"] and r0["done"]["step"] == 4 and r0["done"]["cut"] is None


OOM_SCRIPT = '''
import json, os, sys
import torch.distributed
from examples.hf_gpt2 import make_trainer
from autoscout_plugin.integrations.transformers import tune_trainer
out = sys.argv[1]
trainer = make_trainer(out + "/run", samples=128, model={"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab": 128,
                       "seq_len": 16}, steps=3, batch_size=4)


def out_of_memory(module, args, kwargs):  # every rank, as data-parallel ranks run the same shapes
    if int((args[0] if args else kwargs["input_ids"]).shape[0]) == 2:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


trainer.model.transformer.register_forward_pre_hook(out_of_memory, with_kwargs=True)
result = tune_trainer(trainer, include=["micro_batch_size"], max_trials=3, warmup_steps=1, measure_steps=1,
                      progress=False, patience=None, net_gain=False, store=out + "/store.sqlite")
steps = trainer.train().global_step
json.dump({"statuses": {str(t.config["micro_batch_size"]): t.status for t in result.trials},
           "best": result.best_config, "steps": steps}, open(f"{out}/rank{os.environ['RANK']}.json", "w"))
torch.distributed.destroy_process_group()
'''


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_out_of_memory_trial_on_every_rank_is_recorded_and_skipped(tmp_path: Path) -> None:
    ranks = _torchrun(tmp_path, OOM_SCRIPT)
    assert ranks[0]["statuses"].get("2") == "oom", ranks[0]["statuses"]
    assert ranks[0]["best"] == ranks[1]["best"] and ranks[0]["best"]["micro_batch_size"] != 2
    assert ranks[0]["steps"] == ranks[1]["steps"] == 3


ONE_RANK_SCRIPT = '''
import json, os, sys
import torch, torch.distributed
from examples.hf_gpt2 import make_trainer
from autoscout_plugin.integrations.transformers import tune_trainer
out, rank = sys.argv[1], int(os.environ["RANK"])
trainer = make_trainer(out + "/run", samples=128, model={"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab": 128,
                       "seq_len": 16}, steps=3, batch_size=4)
rows = [0]


def forward(module, args, kwargs):
    rows[0] = int((args[0] if args else kwargs["input_ids"]).shape[0])
    if rank == 1 and rows[0] == 2:  # rank 1 alone crashes in a forward (its first, without gradient sync)
        raise RuntimeError("a crash on rank 1 only")


trainer.model.transformer.register_forward_pre_hook(forward, with_kwargs=True)
adamw_step = torch.optim.AdamW.step


def step(self, *args, **kwargs):  # rank 0 alone runs out of memory in the optimizer step
    if rank == 0 and rows[0] == 1:
        raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
    return adamw_step(self, *args, **kwargs)


torch.optim.AdamW.step = step
result = tune_trainer(trainer, include=["micro_batch_size"], max_trials=3, warmup_steps=1, measure_steps=1,
                      progress=False, patience=None, net_gain=False, store=out + "/store.sqlite")
torch.optim.AdamW.step = adamw_step
steps = trainer.train().global_step
json.dump({"trials": {str(t.config["micro_batch_size"]): [t.status, t.error] for t in result.trials},
           "best": result.best_config, "steps": steps}, open(f"{out}/rank{rank}.json", "w"))
torch.distributed.destroy_process_group()
'''


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_trial_that_fails_on_one_rank_only_is_recorded_and_survived(tmp_path: Path) -> None:
    """Without the ranks' meetings, the healthy rank waits in a gradient all-reduce (or the step's
    verdict) that the failed one never joins, until the process group's 30-minute timeout."""
    ranks = _torchrun(tmp_path, ONE_RANK_SCRIPT, timeout=240)
    for seen in ranks:
        assert seen["trials"]["2"] == ["error", "rank 1: RuntimeError: a crash on rank 1 only"], seen["trials"]
        assert seen["trials"]["1"][0] == "oom" and "out of memory" in seen["trials"]["1"][1]
        assert seen["trials"]["4"] == ["ok", None]
        assert seen["best"]["micro_batch_size"] == 4 and seen["steps"] == 3


# ---------------------------------------------------------------- under `autoscout launch --autoscout`
def test_under_the_launcher_tune_trainer_applies_its_config_without_trials(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from autoscout_plugin.loop import LAUNCH_ENV

    monkeypatch.setenv(LAUNCH_ENV, json.dumps({"mode": "apply", "config": {"micro_batch_size": 2, "grad_accum": 4,
                                                                            "num_workers": 1}}))
    trainer = small(tmp_path)
    result = tune_trainer(trainer, max_trials=3)
    assert result.n_trials == 0 and result.best_config["micro_batch_size"] == 2
    args = trainer.args
    assert args.per_device_train_batch_size == 2 and args.gradient_accumulation_steps == 4
    assert args.dataloader_num_workers == 1
    seen = record_forward(trainer)
    trainer.train()
    assert {s["rows"] for s in seen} == {2}


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_a_launcher_trial_of_an_hf_script_reports_its_speed(tmp_path: Path) -> None:
    import os
    import sys

    from autoscout_plugin.loop import LAUNCH_ENV
    from autoscout_plugin.profiling import run_subprocess_trial

    root = Path(__file__).resolve().parents[2]
    spec = {"mode": "trial", "config": {"micro_batch_size": 4, "grad_accum": 4}, "warmup": 1, "measure": 2}
    env = {**os.environ, LAUNCH_ENV: json.dumps(spec), "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "examples.hf_gpt2", "--steps", "20", "--layers", "1", "--width", "32",
               "--vocab", "256", "--output-dir", str(tmp_path / "out")]
    outcome = run_subprocess_trial(command, timeout_s=150, env=env, cwd=str(root))
    assert outcome.status == "ok", outcome.error
    assert outcome.value and outcome.value > 0 and outcome.metrics.get("step_s")


@pytest.mark.slow
@pytest.mark.timeout(900)  # about a minute on a quiet 2-core machine
def test_the_launcher_tunes_an_hf_trainer_script_across_process_counts(tmp_path: Path) -> None:
    """`autoscout launch --autoscout` on the HF example: trial 0 learns the Trainer's knobs, a two-process
    DDP trial runs the same script, and the real run follows."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "autoscout_plugin.cli", "launch", "--autoscout", "--autoscout-trials", "3",
               "--autoscout-include", "num_processes,micro_batch_size", "--autoscout-store",
               str(tmp_path / "store.sqlite"), "--autoscout-warmup", "1", "--autoscout-measure", "2",
               "--autoscout-confirm", "0", "--autoscout-no-net-gain", str(root / "examples" / "hf_gpt2.py"), "--steps",
               "6", "--batch-size", "2",
               "--layers", "1", "--width", "32", "--vocab", "256", "--output-dir", str(tmp_path / "out")]
    proc = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True,
                          timeout=800, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if " F2 ok " in line]
    assert any("num_processes=1" in line for line in lines) and any("num_processes=2" in line for line in lines)
    # Global batch 2: one process with micro-batch 2 (trial 0, the Trainer's own) or 1, two with 1: all three run.
    assert len(lines) == 3 and "micro_batch_size=2 num_processes=1" in lines[0]
    assert "real run:" in proc.stderr and "trained 6 steps" in proc.stderr
    # tune_trainer described the model to the launcher, whose cost model screens with it (and reuses it)
    with SQLiteStore(tmp_path / "store.sqlite") as store:  # kept in the store, as a note per job
        (entry,) = store.notes().values()
    assert not (tmp_path / "store.sqlite.launch.json").exists()
    assert entry["workload"]["family"] == "transformer"
    assert (entry["workload"]["n_layer"], entry["workload"]["d_model"], entry["workload"]["vocab"]) == (1, 32, 256)
