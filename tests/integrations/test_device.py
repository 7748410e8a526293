"""Which machine a run describes, and the clock and memory a trial reads, follow the device the user's
run is on. Here (no GPU) the CPU path runs for real; CUDA's side is stood in for by recording what
the wiring asks of `torch.cuda` (a GPU cannot exist here). `tests/gpu/` runs the real thing on a GPU."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from autoscout_plugin.integrations import _lightning_trial, _torch
from autoscout_plugin.integrations import transformers as hf
from autoscout_plugin.integrations._lightning_trial import LightningProbe as Probe
from autoscout_plugin.integrations.transformers import run_trial
from torch import nn

from autoscout_plugin import AutoScoutCallback, loop
from autoscout_plugin.costmodel import detect_cpu
from autoscout_plugin.space.builder import build_space
from autoscout_plugin.trial import Fidelity
from autoscout_plugin.tuning import TrialRequest
from examples.hf_gpt2 import make_trainer
from examples.lightning_gpt2 import GPT2Module

SMALL = {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab": 128, "seq_len": 16}

pytestmark = pytest.mark.usefixtures("isolated_run")  # tests/integrations/conftest.py


class Calls:
    """Records each call's arguments."""

    def __init__(self, result: Any = None) -> None:
        self.args: list[tuple[Any, ...]] = []
        self.result = result

    def __call__(self, *args: Any) -> Any:
        self.args.append(args)
        return self.result


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[str, Calls]:
    """`torch.cuda` answering as one H200 would; every call is recorded."""
    calls = {"props": Calls(SimpleNamespace(total_memory=141_000_000_000, name="NVIDIA H200")),
             "synchronize": Calls(), "reset": Calls(), "reserved": Calls(3_500_000_000), "empty": Calls()}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", calls["props"])
    monkeypatch.setattr(torch.cuda, "synchronize", calls["synchronize"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", calls["reset"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", calls["reserved"])
    monkeypatch.setattr(torch.cuda, "empty_cache", calls["empty"])
    return calls


# ---------------------------------------------------------------- the machine
def test_a_cpu_run_describes_this_cpu() -> None:
    cpu = detect_cpu()
    assert _torch.machine("cpu") == cpu
    assert _torch.machine(nn.Linear(2, 2)) == cpu  # a module: its parameters' device
    assert _torch.machine(None) == cpu


def test_a_cuda_run_describes_its_gpus_and_gets_a_gpu_space(fake_cuda: dict[str, Calls]) -> None:
    hardware = _torch.machine("cuda:1")
    assert fake_cuda["props"].args == [(1,)]  # the run's own device
    assert (hardware.kind, hardware.gpus, hardware.mem_gb, hardware.name, hardware.bf16) == (
        "gpu", 2, 141.0, "NVIDIA H200", True)
    assert hardware.cores == detect_cpu().cores
    space = build_space({"global_batch": 16}, hardware.to_json(),
                        include=["precision", "num_threads", "num_processes", "strategy", "pin_memory"],
                        strategies=["single", "ddp"])
    assert space["precision"].grid() == ["32-true", "bf16-mixed", "16-mixed"]
    assert len(space["num_threads"].grid()) == 1  # threads are not a GPU run's knob
    assert space["num_processes"].grid() == [1, 2]  # one process per GPU, two GPUs
    assert space["pin_memory"].grid() == [False, True]


# ---------------------------------------------------------------- clock and memory
def test_on_a_cpu_the_clock_waits_for_nothing_and_memory_is_the_peak_rss(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cuda(*args: Any) -> None:
        raise AssertionError("torch.cuda used for a CPU run")

    monkeypatch.setattr(torch.cuda, "synchronize", no_cuda)
    monkeypatch.setattr(torch.cuda, "empty_cache", no_cuda)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # on a GPU machine too: no CUDA in use
    _torch.synchronize("cpu")
    _torch.reset_peak_memory("cpu")
    _torch.release_memory(torch.device("cpu"))
    assert _torch.peak_memory_mb("cpu") == pytest.approx(_torch.peak_rss_mb(), rel=0.01)
    before = loop.peak_rss_mb()
    assert loop.peak_memory_mb() >= before  # no CUDA started here: the process's RSS
    assert loop.device_clock() > 0


def test_on_a_gpu_the_clock_waits_for_the_device_and_memory_is_the_devices(fake_cuda: dict[str, Calls]) -> None:
    gpu = torch.device("cuda", 1)
    _torch.synchronize(gpu)
    _torch.reset_peak_memory(gpu)
    assert _torch.peak_memory_mb(gpu) == 3500.0
    _torch.release_memory(gpu)
    assert fake_cuda["synchronize"].args == [(gpu,)]
    assert fake_cuda["reset"].args == [(gpu,)]
    assert fake_cuda["reserved"].args == [(gpu,)]
    assert fake_cuda["empty"].args == [()]
    # A custom loop under the launcher (no torch import in `loop`): the same readings once CUDA is in use.
    loop.device_clock()
    assert len(fake_cuda["synchronize"].args) == 2
    assert loop.peak_memory_mb() == 3500.0


# ---------------------------------------------------------------- the probes read the clock after the device
def test_the_lightning_probe_waits_for_the_device_before_each_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    waits = Calls()
    monkeypatch.setattr(_lightning_trial, "synchronize", waits)
    pl.seed_everything(0, verbose=False)
    probe = Probe(warmup=1, measure=2)
    trainer = pl.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[probe])
    trainer.fit(GPT2Module(**SMALL, batch_size=4, samples=64))
    assert probe.outcome is not None and probe.outcome.status == "ok", probe.outcome
    # train start, then each optimizer step until the trial is decided (3 steps), on the module's device
    assert waits.args == [(torch.device("cpu"),)] * 4
    assert trainer.global_step == 3  # the trial stopped once decided


def test_the_hf_trial_waits_for_the_device_and_releases_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waits, releases = Calls(), Calls()
    monkeypatch.setattr(hf._torch, "synchronize", waits)
    monkeypatch.setattr(hf._torch, "release_memory", releases)
    trainer = make_trainer(str(tmp_path / "out"), samples=64, model=SMALL, batch_size=8)
    outcome = run_trial(trainer, TrialRequest(config={}, fidelity=Fidelity.F2, warmup=1, measure=2, cut_off=None,
                                              timeout_s=600.0, split=None))
    assert outcome.status == "ok", outcome.error
    device = trainer.args.device
    assert waits.args == [(device,)] * 4  # train begin, then 3 optimizer steps
    assert releases.args == [(device,)] * 2  # before the trial (what a failed one left) and after it


def test_the_lightning_callback_describes_the_trainers_device(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def spy(device: Any) -> Any:
        seen.append(device)
        return _torch.machine(device)

    monkeypatch.setattr("autoscout_plugin.integrations.lightning.machine", spy)
    pl.seed_everything(0, verbose=False)
    callback = AutoScoutCallback(max_trials=2, include=("num_threads",), warmup_steps=1, measure_steps=1,
                                 progress=False, patience=None, net_gain=False)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(GPT2Module(**SMALL, batch_size=4, samples=64))
    assert seen == [trainer.strategy.root_device] == [torch.device("cpu")]
    assert callback.result is not None and callback.result.n_trials >= 1
