"""`tune_inference`: tune serving settings of a Hugging Face causal LM (`generate`) or a plain module
(`forward`) on this machine, for throughput, latency, cost, or under a p99 SLO and a memory cap.

Each trial runs the request mix with one configuration: warm-up batches (and compilation) first,
counted as the trial's cost but not measured; then every batch is timed, each request's latency being
its batch's time. Where the change is exact (same precision, greedy decoding) the outputs are
compared with the default configuration's, and a configuration that changes them is rejected. The
user's model is restored after every trial (attention implementation, threads); precision and
compile trials run on a copy.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from autoscout_plugin import validate
from autoscout_plugin.outputs import usable_report
from autoscout_plugin.profiling import TrialOutcome
from autoscout_plugin.profiling.deadline import wall_clock_limit
from autoscout_plugin.report.html import write_inference_report
from autoscout_plugin.serving import (
    InferenceOptions,
    InferenceResult,
    RequestMix,
    batches,
    objective_value,
    pareto_front,
    percentile,
    select,
)
from autoscout_plugin.space import Space
from autoscout_plugin.space.catalogue import make_knob
from autoscout_plugin.tuner import TuneOptions, Tuner

from ._compat import attn_implementation, is_compiled_function
from ._torch import current_rss_mb, no_trace

_DTYPES = {"32-true": torch.float32, "bf16-true": torch.bfloat16, "16-true": torch.float16}
"""Precision (the catalogue's names, as in training: `-true` is weights and math in that type) -> dtype."""


def _is_generator(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return hasattr(model, "generate") and config is not None and not getattr(config, "is_encoder_decoder", False)


def _precision_of(model: nn.Module) -> str:
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    return {v: k for k, v in _DTYPES.items()}.get(dtype, "32-true")


# ------------------------------------------------------------------ the space
def inference_space(model: nn.Module, options: InferenceOptions, n_requests: int) -> Space:
    """The knobs that apply to `model` here, with the user's current settings as defaults."""
    generator = _is_generator(model)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    sizes = [b for b in (1, 2, 4, 8, 16, 32) if b <= max(n_requests, 1)]
    values: dict[str, list[Any]] = {
        "batch_size": sizes,
        "precision": ["32-true", "bf16-true"] + (["16-true"] if torch.cuda.is_available() else []),
        "compile": ["off", "default"],
        "num_threads": sorted({1, max(cores // 2, 1), cores}),
    }
    if generator:
        values["kv_cache"] = ["dynamic", "static"]
        values["attn_implementation"] = ["eager", "sdpa"]
    defaults: dict[str, Any] = {"batch_size": 1, "precision": _precision_of(model), "compile": "off",
                                "num_threads": torch.get_num_threads(), "kv_cache": "dynamic",
                                "attn_implementation": attn_implementation(model) or "sdpa"}
    if "max_batch_tokens" in (options.include or ()):
        values["max_batch_tokens"] = [256, 512, 1024, 2048, 4096]
        defaults["max_batch_tokens"] = 4096
    chosen = list(options.include) if options.include is not None else list(values)
    missing = [k for k in (*chosen, *options.pin) if k not in values]
    if missing:
        raise ValueError(f"inference knob {missing[0]!r} does not apply to this "
                         f"{'generator' if generator else 'module'} on this machine; it has {', '.join(values)}")
    knobs = []
    for name in values:
        if name in options.pin:
            knobs.append(make_knob(name, [options.pin[name]], default=options.pin[name]))
        elif name in chosen:
            vals = list(values[name])
            if defaults[name] not in vals:
                vals.append(defaults[name])
            knobs.append(make_knob(name, vals, default=defaults[name], structural=name != "batch_size"
                                   and name != "num_threads" and name != "max_batch_tokens"))
    return Space(knobs)


# ------------------------------------------------------------------ applying a config
@contextlib.contextmanager
def _configured(model: nn.Module, config: dict[str, Any]) -> Iterator[nn.Module]:
    """`model` set up as `config` says for the block, and put back after: threads and attention
    implementation on the user's model; precision and compile on a copy."""
    threads = torch.get_num_threads()
    attn = attn_implementation(model)
    target = model
    precision = config.get("precision", _precision_of(model))
    compiled = config.get("compile", "off") not in ("off", None, False)
    try:
        if precision != _precision_of(model) or compiled:
            target = copy.deepcopy(model).to(_DTYPES[precision])
        if "attn_implementation" in config and hasattr(target, "set_attn_implementation"):
            target.set_attn_implementation(config["attn_implementation"])
        if compiled:
            target.forward = torch.compile(target.forward, mode=None if config["compile"] == "default"
                                           else config["compile"])
        if "num_threads" in config:
            torch.set_num_threads(int(config["num_threads"]))
        yield target
    finally:
        torch.set_num_threads(threads)
        if attn is not None and hasattr(model, "set_attn_implementation") and attn_implementation(model) != attn:
            model.set_attn_implementation(attn)


def evidence(model: nn.Module, config: dict[str, Any], output: Any = None) -> dict[str, Any]:
    """What is really in effect during a trial (the tests compare it with the config)."""
    compiled = is_compiled_function(model.forward)  # what torch.compile(fn) returns
    seen: dict[str, Any] = {"num_threads": torch.get_num_threads(), "precision": _precision_of(model),
                            "compile": "default" if compiled else "off"}
    if attn_implementation(model) is not None:
        seen["attn_implementation"] = attn_implementation(model)
    cache = getattr(output, "cache", None)  # transformers 5 (`past_key_values` is its deprecated alias)
    if cache is None and output is not None and "past_key_values" in getattr(output, "keys", lambda: ())():
        cache = output["past_key_values"]
    if cache is not None:
        seen["kv_cache"] = "static" if "Static" in type(cache).__name__ else "dynamic"
    return seen


# ------------------------------------------------------------------ running requests
class _Requests:
    """Prompts (token ids, fixed per seed) and their output lengths, or a plain module's inputs."""

    def __init__(self, model: nn.Module, mix: RequestMix | None, example_inputs: Any, generator: bool) -> None:
        self.generator = generator
        if generator:
            vocab = int(getattr(model.config, "vocab_size", 1000))
            if example_inputs is not None:
                ids = example_inputs if isinstance(example_inputs, torch.Tensor) else torch.as_tensor(example_inputs)
                if ids.dim() != 2 or ids.is_floating_point():
                    raise ValueError(f"example_inputs for a generator must be a [requests, prompt] tensor of token "
                                     f"ids, got shape {tuple(ids.shape)} and dtype {ids.dtype}")
                out = mix.requests()[0][1] if mix is not None else 32
                self.prompts = [row for row in ids]
                self.lengths = [(int(row.numel()), out) for row in ids]
            else:
                mix = mix or RequestMix(n=64, prompt_len=(16, 64), output_len=32)
                self.lengths = mix.requests()
                gen = torch.Generator().manual_seed(mix.seed)
                self.prompts = [torch.randint(3, vocab, (p,), generator=gen) for p, _ in self.lengths]
            pad = getattr(model.config, "pad_token_id", None)
            eos = getattr(model.config, "eos_token_id", None)
            valid = [t for t in (pad, eos) if isinstance(t, int) and 0 <= t < vocab]
            self.pad_id = valid[0] if valid else 0  # padded positions are masked out either way
        else:
            if example_inputs is None:
                raise ValueError("a plain module needs example_inputs: a batch tensor (or tuple of tensors) "
                                 "whose first dimension indexes requests")
            self.inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
            if not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in self.inputs):
                raise ValueError("example_inputs must be tensors whose first dimension indexes requests")
            n = int(self.inputs[0].shape[0])
            repeats = max(1, math.ceil((mix.n if mix else 64) / n))
            self.inputs = tuple(t.repeat(repeats, *([1] * (t.dim() - 1))) for t in self.inputs)
            self.lengths = [(1, 1)] * int(self.inputs[0].shape[0])

    def __len__(self) -> int:
        return len(self.lengths)

    def run(self, model: nn.Module, idx: list[int], config: dict[str, Any]) -> tuple[Any, int, Any]:
        """Serve one batch; (outputs per request, units produced, the raw output)."""
        if not self.generator:
            batch = tuple(t[idx] for t in self.inputs)
            dtype = next((p.dtype for p in model.parameters()), torch.float32)
            batch = tuple(t.to(dtype) if t.is_floating_point() else t for t in batch)
            with torch.inference_mode():
                out = model(*batch)
            tensor = out if isinstance(out, torch.Tensor) else (out[0] if isinstance(out, (tuple, list))
                                                                 else getattr(out, "logits", out))
            return [tensor[i].float() for i in range(len(idx))], len(idx), out
        prompts = [self.prompts[i] for i in idx]
        longest = max(p.numel() for p in prompts)
        new = max(self.lengths[i][1] for i in idx)
        ids = torch.full((len(idx), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), longest), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding, as decoder-only generation needs
            ids[row, longest - p.numel():] = p
            mask[row, longest - p.numel():] = 1
        kwargs: dict[str, Any] = {"attention_mask": mask, "max_new_tokens": new, "min_new_tokens": new,
                                  "do_sample": False, "pad_token_id": self.pad_id, "return_dict_in_generate": True}
        if config.get("kv_cache") == "static":
            kwargs["cache_implementation"] = "static"
        with torch.inference_mode():
            out = model.generate(ids, **kwargs)
        tokens = out.sequences[:, longest:]
        per_request = [tokens[row, : self.lengths[i][1]] for row, i in enumerate(idx)]
        return per_request, sum(self.lengths[i][1] for i in idx), out


def _agreement(got: list[Any], reference: list[Any], generator: bool) -> float:
    if generator:
        same = sum(int((a == b).sum()) for a, b in zip(got, reference))
        total = sum(int(b.numel()) for b in reference)
        return same / max(total, 1)
    close = sum(bool(torch.allclose(a, b, rtol=1e-3, atol=1e-4)) for a, b in zip(got, reference))
    return close / max(len(reference), 1)


# ------------------------------------------------------------------ trials
class _Runner:
    def __init__(self, model: nn.Module, requests: _Requests, options: InferenceOptions) -> None:
        self.model, self.requests, self.options = model, requests, options
        self.reference: list[Any] | None = None
        self.reference_precision: str | None = None
        self.baseline: dict[str, float] | None = None
        self.log: list[dict[str, Any]] = []

    def profile(self, config: dict[str, Any], _fidelity: Any) -> TrialOutcome:
        started = time.perf_counter()
        entry: dict[str, Any] = {"config": dict(config), "evidence": {}}
        self.log.append(entry)
        opts, reqs = self.options, self.requests
        groups = batches(reqs.lengths, int(config.get("batch_size", 1)), config.get("max_batch_tokens"))
        latencies: list[float] = []
        outputs: list[Any] = [None] * len(reqs)
        units, busy, rss, raw = 0, 0.0, current_rss_mb(), None
        with wall_clock_limit(opts.trial_timeout_s, "inference trial"), no_trace(), \
                _configured(self.model, config) as target:
            for group in groups[: opts.warmup_batches]:  # compilation and first-call costs: not measured
                reqs.run(target, group, config)
            for group in groups:
                t0 = time.perf_counter()
                got, n, raw = reqs.run(target, group, config)
                dt = time.perf_counter() - t0
                busy += dt
                units += n
                latencies += [dt] * len(group)
                rss = max(rss, current_rss_mb())
                for i, out in zip(group, got):
                    outputs[i] = out
            entry["evidence"] = evidence(target, config, raw)
        metrics = {"tokens_per_s": units / busy, "latency_p50_s": percentile(latencies, 50),
                   "latency_p99_s": percentile(latencies, 99), "peak_mem_mb": rss, "requests": float(len(latencies)),
                   "batches": float(len(groups))}
        cost = time.perf_counter() - started
        if not reqs.generator and any(not bool(torch.isfinite(o).all()) for o in outputs):
            return TrialOutcome(status="nan", error="non-finite outputs", cost_s=cost, metrics=metrics)
        precision = str(config.get("precision"))
        if self.reference is None:
            self.reference, self.reference_precision = outputs, precision
        elif opts.check_outputs and precision == self.reference_precision:
            agreement = _agreement(outputs, self.reference, reqs.generator)
            metrics["agreement"] = agreement
            if agreement < opts.min_agreement:
                return TrialOutcome(status="invalid", cost_s=cost, metrics=metrics,
                                    error=f"outputs changed: {agreement:.1%} agree with the default config's "
                                          f"(< {opts.min_agreement:.0%})")
        if self.baseline is None:
            self.baseline = metrics
        value = objective_value(metrics, opts.objective, baseline=self.baseline, slo_p99_s=opts.slo_p99_s,
                                memory_cap_mb=opts.memory_cap_mb)
        return TrialOutcome(value=value, cost_s=cost, peak_mem_mb=rss, metrics=metrics)

    def evidence_for(self, config: dict[str, Any]) -> dict[str, Any]:
        for i, entry in enumerate(self.log):
            if entry["config"] == config:
                return self.log.pop(i)["evidence"]
        return {}


def tune_inference(model: nn.Module, example_inputs: Any = None, *, requests: RequestMix | None = None,
                   options: InferenceOptions | None = None, **option_values: Any) -> InferenceResult:
    """Tune how `model` serves requests on this machine and return the trials, the choice and the
    latency/throughput front.

    Args:
        model: a Hugging Face causal LM (tuned through `generate`, greedy) or any `nn.Module` (`forward`).
        example_inputs: for a module, a batch (tensor or tuple of tensors; dim 0 indexes requests); for
            a causal LM, optional prompts as a `[requests, prompt_len]` tensor of token ids.
        requests: a `RequestMix` (synthetic prompt/output lengths); default 64 requests, prompts of
            16-64 tokens, 32 new tokens.
        options: `InferenceOptions`, or its fields as keyword arguments (`objective="latency_p99"`,
            `slo_p99_s=0.5`, `memory_cap_mb=...`, `price_per_hour=...`, `max_trials=...`, `include=`,
            `pin=`, `report=`).

    Bad input raises before any trial; a trial that fails (an exception, a timeout, NaN outputs,
    changed outputs) is recorded and skipped. When no configuration meets the SLO, the result says
    so (`result.selection.trial is None`, `result.selection.reason`, `result.selection.closest`).
    """
    if options is None:
        options = InferenceOptions(**option_values)
    elif option_values:
        options = replace(options, **option_values)
    result = _tune(model, example_inputs, requests, options)
    if options.progress:
        print(result.table(), file=sys.stderr)
    return result


def _tune(model: nn.Module, example_inputs: Any, requests: RequestMix | None,
          options: InferenceOptions) -> InferenceResult:
    """`tune_inference` without the closing summary (`autoscout infer` prints it once, on stdout); the
    per-trial lines still go to stderr when `options.progress`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"tune_inference needs a torch.nn.Module, got {type(model).__name__}")
    if requests is not None and not isinstance(requests, RequestMix):
        raise TypeError(f"requests must be a RequestMix, got {type(requests).__name__}")
    generator = _is_generator(model)
    reqs = _Requests(model, requests, example_inputs, generator)
    space = inference_space(model, options, len(reqs))
    runner = _Runner(model, reqs, options)
    report_path = usable_report(options.report) if options.report else None  # before any trial: warns, falls back
    started = time.perf_counter()
    was_training = model.training
    model.eval()

    def report(trial: Any, _tuner: Any) -> None:
        if options.progress:
            m = trial.metrics or {}
            figures = (f"{m.get('tokens_per_s', 0):.1f}/s p99 {m.get('latency_p99_s', 0) * 1e3:.1f} ms"
                       if trial.status == "ok" else trial.error or "")
            print(f"AutoScout inference trial {trial.number}: {trial.config} {trial.status} {figures}",
                  file=sys.stderr)

    try:
        tuner = Tuner(space, runner.profile, TuneOptions(max_trials=options.max_trials, max_seconds=options.max_seconds,
                                                         confirm_top=0, seed=options.seed, patience=None),
                      baseline=space.default(), on_trial=report)
        tuned = tuner.run()
    finally:
        model.train(was_training)
    trials = [{"number": t.number, "config": dict(t.config), "status": t.status, "metrics": dict(t.metrics or {}),
               "cost_s": t.cost_s, "error": t.error, "evidence": runner.evidence_for(dict(t.config))}
              for t in tuned.trials]
    ok = [t for t in trials if t["status"] == "ok"]
    selection = select(ok, options.objective, slo_p99_s=options.slo_p99_s, memory_cap_mb=options.memory_cap_mb,
                       price_per_hour=options.price_per_hour)
    result = InferenceResult(objective=options.objective, trials=trials, default=trials[0] if trials else None,
                             selection=selection, front=pareto_front(ok), options=options.to_json(),
                             tuning_s=time.perf_counter() - started, kind="generate" if generator else "forward")
    if report_path:
        try:
            write_inference_report(result, report_path)
        except OSError as exc:  # checked before the trials; a disk may still fill up since
            warnings.warn(f"AutoScout: could not write the report at {report_path}: {exc}", RuntimeWarning,
                          stacklevel=3)
    return result


class TunedModel:
    """The model set up with a tuned configuration: call it like `model.generate` (causal LMs; the
    tuned KV-cache kind is passed unless overridden) or like the module (`forward`)."""

    def __init__(self, model: nn.Module, config: dict[str, Any], generate_kwargs: dict[str, Any]) -> None:
        self.model, self.config, self.generate_kwargs = model, dict(config), dict(generate_kwargs)
        self.batch_size = int(config.get("batch_size", 1))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            if _is_generator(self.model):
                return self.model.generate(*args, **{**self.generate_kwargs, **kwargs})
            return self.model(*args, **kwargs)


def apply_inference(model: nn.Module, result: InferenceResult | dict[str, Any]) -> TunedModel:
    """Apply a tuned configuration to `model` in place (precision, attention implementation, compiled
    forward, threads) and return a `TunedModel`; `result` is a `tune_inference` result or a config."""
    config = result.best_config if isinstance(result, InferenceResult) else dict(result)
    if config is None:
        reason = result.selection.reason if isinstance(result, InferenceResult) else "no config"
        raise ValueError(f"there is no tuned configuration to apply: {reason}")
    if config.get("precision") in _DTYPES:
        model.to(_DTYPES[config["precision"]])
    if "attn_implementation" in config and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(config["attn_implementation"])
    if config.get("compile", "off") not in ("off", None, False):
        model.forward = torch.compile(model.forward, mode=None if config["compile"] == "default" else config["compile"])
    if "num_threads" in config:
        torch.set_num_threads(int(config["num_threads"]))
    model.eval()
    kwargs = {"cache_implementation": "static"} if config.get("kv_cache") == "static" else {}
    return TunedModel(model, config, kwargs)


# ------------------------------------------------------------------ command line
def _hub_error(model: str, exc: Exception, allow_download: bool) -> ValueError:
    if allow_download or os.path.exists(model):
        return ValueError(f"cannot load --model {model!r}: {exc}")
    return ValueError(f"--model {model!r} is not a local checkpoint directory or config.json that can be read "
                      f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'not found'}); autoscout "
                      "infer reads local files only: give a local path, or add --allow-download to fetch it from "
                      "the Hugging Face Hub")


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """No request to the Hugging Face Hub in the block when `offline` (`HF_HUB_OFFLINE` for the call):
    `local_files_only` alone still lets huggingface_hub fetch its user-agent registry from the Hub."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    saved_env, saved = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def _checked_overrides(config: Any, settings: dict[str, Any], raw: dict[str, str]) -> dict[str, Any]:
    """`--set` values for `config`: each key must be a setting of this config, the value of its type."""
    keys = set(config.to_dict()) | set(getattr(config, "attribute_map", {}) or {})
    valid = sorted(k for k in keys if not k.startswith("_") and k not in validate.LOADER_KEYS)
    kind = getattr(config, "model_type", "") or type(config).__name__
    aliases = dict(getattr(config, "attribute_map", {}) or {})
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in settings.items():
        if key not in valid:
            raise ValueError(f"--set {key}: not a setting of the {kind} config; its settings include "
                             f"{validate.suggest(key, valid, few=12)}")
        same = aliases.get(key, key)
        if same in seen:
            raise ValueError(f"--set {seen[same]} and --set {key} are the same setting of the {kind} config, given"
                             " twice; give it once")
        seen[same] = key
        current = getattr(config, key, None)
        text = raw[key]
        if current is None:
            out[key] = value
        elif isinstance(current, str):
            out[key] = None if value is None else text
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError(f"--set {key} is true or false, got {text!r}")
            out[key] = value
        elif isinstance(current, int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"--set {key} is an integer (now {current}), got {text!r}")
            out[key] = value
        elif isinstance(current, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"--set {key} is a number (now {current}), got {text!r}")
            out[key] = float(value)
        else:
            raise ValueError(f"--set {key} is a {type(current).__name__} ({current!r}), which --set cannot write;"
                             " edit a config.json and pass it with --model")
    return out


def build_model(model: str | None, model_type: str | None, overrides: list[str], *,
                allow_download: bool = False) -> nn.Module:
    """A causal LM from a local checkpoint directory or config.json (`model`; a directory without weights,
    a config.json or a Hub model get random weights), or built with random weights from a config
    (`model_type`), with `key=value` config overrides.

    Only local files are read (`local_files_only`: no network, no token sent) unless `allow_download`,
    which lets `model` name a Hugging Face Hub model (its config is fetched). Each override must be a
    setting of the model's config, given once, with a value of its type (sizes positive); loading
    options such as `trust_remote_code` are refused, and no code from a checkpoint is ever run."""
    from transformers import AutoConfig, AutoModelForCausalLM

    pairs = [validate.config_override(item) for item in overrides]
    settings = validate.unique_keys("--set", pairs)
    raw = {key: item.partition("=")[2].strip() for (key, _), item in zip(pairs, overrides)}
    if model and model_type:
        raise ValueError("give --model or --model-type, not both")
    offline = not allow_download
    with _hub_offline(offline):  # huggingface_hub contacts the Hub even for local_files_only loads
        if model:
            if not os.path.exists(model) and (model.startswith(("/", "./", "../", "~")) or model.endswith(".json")):
                raise ValueError(f"--model {model!r}: no such file or directory; give a local checkpoint directory or "
                                 "config.json")
            try:
                config = AutoConfig.from_pretrained(model, local_files_only=offline, trust_remote_code=False)
            except (OSError, ValueError) as exc:
                raise _hub_error(model, exc, allow_download) from exc
            checked = _checked_overrides(config, settings, raw)
            weights = os.path.isdir(model) and any(n.endswith((".safetensors", ".bin")) for n in os.listdir(model))
            resized = [k for k, v in checked.items() if validate.is_size_key(k) and v != getattr(config, k, None)]
            if weights and resized:
                raise ValueError(f"--set {resized[0]}: changes a size of the weights in {model}, which then no longer"
                                 f" fit; drop it, or pass {os.path.join(model, 'config.json')} as --model to build "
                                 "random weights of the new size")
            for key, value in checked.items():
                setattr(config, key, value)  # as from_pretrained(model, key=value) did
            if weights:
                try:
                    return AutoModelForCausalLM.from_pretrained(model, config=config, local_files_only=True,
                                                                trust_remote_code=False)
                except (OSError, RuntimeError) as exc:
                    raise ValueError(f"cannot load the weights in {model}: {str(exc).splitlines()[0]}") from exc
        elif model_type:
            config = AutoConfig.for_model(model_type, **_checked_overrides(AutoConfig.for_model(model_type), settings,
                                                                           raw))
        else:
            raise ValueError("give --model (a local checkpoint or config) or --model-type (e.g. gpt2, llama)")
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config)


def main(args: Any) -> int:
    """`autoscout infer ...` (see `autoscout infer --help`); the options are checked (`cli.infer_inputs`)
    before the model is built."""
    from autoscout_plugin.cli import infer_inputs

    options, mix = infer_inputs(args)
    model = build_model(args.model, args.model_type, args.set or [],
                        allow_download=bool(getattr(args, "allow_download", False)))
    result = _tune(model, None, mix, options)  # the summary is printed here, once, on stdout
    print(result.table())
    if result.best_config is not None:
        print(f"generate kwargs: {result.generate_kwargs()}; model settings: {result.best_config}")
    return 0 if result.best_config is not None else 1
