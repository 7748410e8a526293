"""`tune_inference` on real models: a Hugging Face GPT-2 (`generate`) and plain modules (`forward`)."""

from __future__ import annotations

import copy
import threading
import time

import pytest
import torch
from autoscout_plugin.integrations.inference import (
    TunedModel,
    _configured,
    _Requests,
    _Runner,
    apply_inference,
    evidence,
    tune_inference,
)
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from autoscout_plugin import serving
from autoscout_plugin.serving import InferenceOptions, RequestMix

MIX = RequestMix(n=8, prompt_len=(4, 12), output_len=4, seed=1)


@pytest.fixture(scope="module")
def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, n_positions=64)).eval()


class Counting(nn.Module):
    """A small MLP that counts its calls and can misbehave for some batch sizes."""

    def __init__(self, fail_from: int | None = None, hang_at: int | None = None, batch_dependent: bool = False,
                 width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, 4))
        self.calls = 0
        self.fail_from, self.hang_at, self.batch_dependent = fail_from, hang_at, batch_dependent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._count()
        if self.fail_from is not None and x.shape[0] >= self.fail_from:
            raise RuntimeError(f"cannot serve a batch of {x.shape[0]}")
        if self.hang_at is not None and x.shape[0] == self.hang_at:
            time.sleep(30)
        out = self.net(x)
        return out - out.mean(0, keepdim=True) if self.batch_dependent else out

    @torch.compiler.disable
    def _count(self) -> None:
        """Outside the compiled graph: dynamo guards on a module's int attribute, so counting inside it
        would recompile on every call (and a compiled trial would time compilation)."""
        self.calls += 1


def test_each_generate_knob_is_in_effect_during_its_trial(gpt2) -> None:
    options = InferenceOptions(progress=False)
    reqs = _Requests(gpt2, MIX, None, generator=True)
    runner = _Runner(gpt2, reqs, options)
    threads = torch.get_num_threads()
    for config in ({"batch_size": 1, "attn_implementation": "eager", "kv_cache": "dynamic", "num_threads": 1},
                   {"batch_size": 4, "attn_implementation": "sdpa", "kv_cache": "static", "num_threads": 2},
                   {"batch_size": 2, "attn_implementation": "eager", "kv_cache": "static", "num_threads": 1,
                    "precision": "bf16-true"}):
        outcome = runner.profile(config, None)
        assert outcome.status == "ok", outcome.error
        seen = runner.log[-1]["evidence"]
        for knob in ("attn_implementation", "kv_cache", "num_threads"):
            assert seen[knob] == config[knob], knob
        assert seen["precision"] == config.get("precision", "32-true")
        assert outcome.metrics["requests"] == 8 and outcome.metrics["tokens_per_s"] > 0
    # the user's model is as it was: threads, attention implementation, precision
    assert torch.get_num_threads() == threads and gpt2.config._attn_implementation == "sdpa"
    assert next(gpt2.parameters()).dtype == torch.float32
    # batching is exact here: greedy outputs of batch 4 (left-padded) equal batch 1's
    assert runner.profile({"batch_size": 4, "num_threads": 1}, None).metrics["agreement"] == 1.0


def test_given_prompts_and_the_token_cap_are_what_the_trial_serves(gpt2) -> None:
    prompts = torch.randint(3, 1000, (6, 10))
    reqs = _Requests(gpt2, RequestMix(n=1, output_len=5), prompts, generator=True)
    assert len(reqs) == 6 and all(torch.equal(p, q) for p, q in zip(reqs.prompts, prompts))
    runner = _Runner(gpt2, reqs, InferenceOptions(progress=False))
    free = runner.profile({"batch_size": 4}, None)
    capped = runner.profile({"batch_size": 4, "max_batch_tokens": 30}, None)  # 2 requests of 15 tokens
    assert free.metrics["batches"] == 2 and capped.metrics["batches"] == 3
    assert capped.metrics["agreement"] == 1.0


def test_batching_of_requests_follows_batch_size_and_token_cap(gpt2) -> None:
    reqs = _Requests(gpt2, RequestMix(n=6, prompt_len=10, output_len=6), None, generator=True)
    got, units, out = reqs.run(gpt2, [0, 1, 2], {"batch_size": 3})
    assert units == 18 and [g.numel() for g in got] == [6, 6, 6] and out.sequences.shape[0] == 3
    assert serving.batches(reqs.lengths, 4, max_batch_tokens=32) == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.timeout(300)
def test_compile_is_in_effect_and_its_time_is_cost_not_measurement(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model = Counting().eval()
    x = torch.randn(8, 16)
    runner = _Runner(model, _Requests(model, RequestMix(n=8), x, generator=False), InferenceOptions(progress=False))
    plain = runner.profile({"batch_size": 4, "compile": "off"}, None)
    compiled = runner.profile({"batch_size": 4, "compile": "default"}, None)
    assert runner.log[-1]["evidence"]["compile"] == "default" and runner.log[0]["evidence"]["compile"] == "off"
    assert compiled.status == "ok" and compiled.metrics["agreement"] == 1.0
    # compilation is in the trial's cost, not in its measured batches: compiling takes far longer than
    # running this MLP's two batches, on any machine and however loaded (both slow down together), so
    # the compiled trial costs many plain trials while its batches take a small share of that
    assert compiled.cost_s > 5 * plain.cost_s
    assert compiled.metrics["latency_p99_s"] < compiled.cost_s / 10
    assert not hasattr(model.forward, "_torchdynamo_orig_callable")  # the user's module is not compiled


def test_tune_generate_end_to_end_and_apply(gpt2, tmp_path) -> None:
    before = {k: v.clone() for k, v in gpt2.state_dict().items()}
    result = tune_inference(gpt2, requests=MIX, max_trials=5, include=("batch_size", "kv_cache", "num_threads"),
                            report=str(tmp_path / "inf"), progress=False)
    assert result.kind == "generate" and len(result.trials) == 5
    assert result.default["config"] == {"batch_size": 1, "kv_cache": "dynamic", "num_threads": torch.get_num_threads()}
    for t in result.ok_trials:  # every trial ran with its own settings
        for knob in ("kv_cache", "num_threads"):
            assert t["evidence"][knob] == t["config"][knob]
    assert result.best_config is not None and result.speedup() >= 1.0
    assert result.front and all(t["status"] == "ok" for t in result.front)
    assert (tmp_path / "inf.html").exists() and (tmp_path / "inf.json").exists()
    assert all(torch.equal(before[k], v) for k, v in gpt2.state_dict().items())
    threads = torch.get_num_threads()
    try:  # applying sets the process's threads: put them back for the other tests
        served = copy.deepcopy(gpt2)
        tuned = apply_inference(served, result)
        assert isinstance(tuned, TunedModel) and tuned.batch_size == result.best_config["batch_size"]
        assert torch.get_num_threads() == result.best_config["num_threads"]
        assert tuned.generate_kwargs == result.generate_kwargs()
        out = tuned(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False, pad_token_id=0)
        assert out.shape == (1, 6)
    finally:
        torch.set_num_threads(threads)


def test_latency_and_throughput_objectives_each_choose_their_best_measured_trial() -> None:
    # Which batch size wins depends on the machine's load; that each objective picks the best of what
    # it measured on its own metric does not.
    model = Counting(width=2048).eval()  # wide enough that a batch's time grows with its size
    x = torch.randn(32, 16)
    fast = tune_inference(model, x, requests=RequestMix(n=32), objective="throughput", max_trials=6,
                          include=("batch_size",), progress=False)
    quick = tune_inference(model, x, requests=RequestMix(n=32), objective="latency_p99", max_trials=6,
                           include=("batch_size",), progress=False)
    assert fast.kind == "forward"
    assert len({t["config"]["batch_size"] for t in fast.ok_trials}) > 1
    assert fast.best_config == max(fast.ok_trials, key=lambda t: t["metrics"]["tokens_per_s"])["config"]
    assert quick.best_config == min(quick.ok_trials, key=lambda t: t["metrics"]["latency_p99_s"])["config"]


def test_an_slo_no_config_can_meet_gets_an_answer(gpt2) -> None:
    result = tune_inference(gpt2, requests=MIX, max_trials=2, include=("batch_size",), slo_p99_s=1e-6,
                            progress=False)
    assert result.selection.trial is None and result.best_config is None
    assert "no measured configuration meets the p99 SLO of 0.0 ms" in result.selection.reason
    assert result.selection.closest is not None
    assert result.table().startswith("No choice: no measured configuration meets the p99 SLO")
    with pytest.raises(ValueError, match="no tuned configuration to apply: no measured configuration meets"):
        apply_inference(gpt2, result)


def test_failing_hanging_and_output_changing_trials_are_survived() -> None:
    x = torch.randn(16, 16)
    crashing = Counting(fail_from=4).eval()
    result = tune_inference(crashing, x, requests=RequestMix(n=16), max_trials=5, include=("batch_size",),
                            progress=False)
    statuses = {t["config"]["batch_size"]: t["status"] for t in result.trials}
    assert all(s == "error" for b, s in statuses.items() if b >= 4) and statuses[1] == "ok"
    assert any("cannot serve a batch of" in (t["error"] or "") for t in result.trials)
    assert result.best_config["batch_size"] < 4

    hanging = Counting(hang_at=2).eval()
    result = tune_inference(hanging, x, requests=RequestMix(n=16), max_trials=3, include=("batch_size",),
                            pin={}, trial_timeout_s=2.0, progress=False)
    timed_out = [t for t in result.trials if t["config"]["batch_size"] == 2]
    assert not timed_out or timed_out[0]["status"] == "timeout"

    changing = Counting(batch_dependent=True).eval()  # batch statistics: batching changes the outputs
    result = tune_inference(changing, x, requests=RequestMix(n=16), max_trials=4, include=("batch_size",),
                            progress=False)
    rejected = [t for t in result.trials if t["config"]["batch_size"] > 1 and t["status"] == "invalid"]
    assert rejected and "outputs changed" in rejected[0]["error"]
    assert result.best_config == {"batch_size": 1}


class Polling(nn.Module):
    """A module whose forward waits forever for batches of 2 or more, polling (as a stuck queue does)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while x.shape[0] >= 2:
            time.sleep(0.01)
        return self.net(x)


@pytest.mark.timeout(120)
def test_a_hanging_trial_is_stopped_when_tuning_runs_in_a_worker_thread() -> None:
    box: dict = {}

    def tune() -> None:
        box["result"] = tune_inference(Polling().eval(), torch.randn(8, 16), requests=RequestMix(n=8),
                                       max_trials=3, include=("batch_size",), trial_timeout_s=3.0,
                                       progress=False)

    worker = threading.Thread(target=tune, daemon=True)
    worker.start()
    worker.join(90)
    assert not worker.is_alive(), "tune_inference hung in a worker thread: trial_timeout_s did nothing there"
    statuses = {t["config"]["batch_size"]: t["status"] for t in box["result"].trials}
    assert statuses[1] == "ok" and [s for b, s in statuses.items() if b >= 2] and \
        all(s == "timeout" for b, s in statuses.items() if b >= 2)


def test_the_summary_is_printed_once_after_the_trials(capsys) -> None:
    result = tune_inference(Counting().eval(), torch.randn(8, 16), requests=RequestMix(n=8), max_trials=2,
                            include=("batch_size",))
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.splitlines()
    assert [line.split(":")[0] for line in err[:2]] == ["AutoScout inference trial 0", "AutoScout inference trial 1"]
    assert err[2:] == result.table().splitlines()  # the whole summary, once, led by the verdict
    assert err[2] == result.verdict() and captured.err.count("AutoScout inference (throughput)") == 1


def test_bad_input_fails_before_any_trial(gpt2) -> None:
    model = Counting()
    with pytest.raises(ValueError, match="a plain module needs example_inputs"):
        tune_inference(model, progress=False)
    with pytest.raises(ValueError, match="objective 'speed' is unknown"):
        tune_inference(model, torch.randn(4, 16), objective="speed")
    with pytest.raises(ValueError, match="inference knob 'kv_cache' does not apply to this module"):
        tune_inference(model, torch.randn(4, 16), include=("kv_cache",), progress=False)
    with pytest.raises(TypeError, match="needs a torch.nn.Module, got str"):
        tune_inference("gpt2")
    with pytest.raises(ValueError, match=r"\[requests, prompt\] tensor of token ids"):
        tune_inference(gpt2, torch.randn(2, 5), progress=False)
    assert model.calls == 0


def test_configured_restores_threads_and_attention_after_a_failure(gpt2) -> None:
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), _configured(gpt2, {"num_threads": 1,
                                                                       "attn_implementation": "eager"}) as m:
        assert evidence(m, {})["attn_implementation"] == "eager" and torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == threads and gpt2.config._attn_implementation == "sdpa"


def test_infer_command_builds_a_model_from_a_config_and_tunes_it(tmp_path, capsys) -> None:
    from autoscout_plugin import cli

    rc = cli.main(["infer", "--model-type", "gpt2", "--set", "n_layer=1", "--set", "n_embd=32", "--set", "n_head=2",
                   "--set", "vocab_size=500", "--requests", "6", "--prompt-len", "4:8", "--output-len", "3",
                   "--max-trials", "2", "--include", "batch_size", "--report", str(tmp_path / "r")])
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0 and "AutoScout inference (throughput): 2 trials" in out and "model settings" in out
    # the summary once, on stdout, led by the verdict; the per-trial lines on stderr
    assert (out + captured.err).count("AutoScout inference (throughput)") == 1
    assert out.splitlines()[0].startswith(("Chose batch_size 1 → ", "Kept the default settings: batch_size="))
    assert out.count(out.splitlines()[0]) == 1 and captured.err.count("AutoScout inference trial") == 2
    assert (tmp_path / "r.html").exists()
    assert cli.main(["infer", "--model-type", "gpt2", "--prompt-len", "x:y"]) == 2
    assert "--prompt-len must be N, LOW:HIGH or A,B,C, got 'x:y'" in capsys.readouterr().err
    assert cli.main(["infer", "--requests", "4"]) == 2
    assert "give --model" in capsys.readouterr().err
