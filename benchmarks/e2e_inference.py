"""End-to-end inference benchmark: throughput- and latency-optimal serving configs of small causal LMs.

    python -m benchmarks.e2e_inference [--models gpt2,llama] [--trials 8] [--requests 64] [--json OUT]

For each model (built from a config with random weights), `tune_inference` runs twice on the same
synthetic request mix: once for throughput (tokens/s) and once for p99 latency per request. The
table gives each choice, its throughput and p99 against the default settings (batch 1, fp32, sdpa,
dynamic cache, all threads), the tuning time, and whether the two choices differ.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from autoscout_plugin.integrations.inference import tune_inference
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from autoscout_plugin.serving import RequestMix


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=256, n_head=4)).eval()
    if name == "llama":
        return LlamaForCausalLM(LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=32000)).eval()
    raise ValueError(f"unknown model {name!r}; use gpt2 or llama")


def run(name: str, trials: int, mix: RequestMix, include: tuple[str, ...]) -> dict[str, Any]:
    model = build(name)
    out: dict[str, Any] = {"model": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    for objective in ("throughput", "latency_p99"):
        start = time.perf_counter()
        result = tune_inference(model, requests=mix, objective=objective, max_trials=trials, include=include,
                                progress=False)
        chosen, default = result.selection.trial, result.default
        out[objective] = {
            "config": result.best_config, "default_config": default["config"] if default else None,
            "tokens_per_s": chosen["metrics"]["tokens_per_s"] if chosen else None,
            "latency_p99_s": chosen["metrics"]["latency_p99_s"] if chosen else None,
            "default_tokens_per_s": default["metrics"].get("tokens_per_s") if default else None,
            "default_latency_p99_s": default["metrics"].get("latency_p99_s") if default else None,
            "speedup_tokens_per_s": result.speedup("tokens_per_s"),
            "speedup_latency_p99": result.speedup("latency_p99_s"),
            "tuning_s": time.perf_counter() - start, "trials": len(result.trials),
            "failed": sum(t["status"] != "ok" for t in result.trials), "front": [t["config"] for t in result.front]}
    out["differ"] = out["throughput"]["config"] != out["latency_p99"]["config"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gpt2,llama")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--include", default="batch_size,precision,kv_cache,attn_implementation,num_threads",
                        help="knobs to tune (compile is left out by default: see benchmarks/README.md)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    mix = RequestMix(n=args.requests, prompt_len=(16, 64), output_len=32, seed=0)
    rows = [run(name, args.trials, mix, tuple(args.include.split(","))) for name in args.models.split(",")]
    print("| model | objective | chosen config | tok/s (default) | p99 ms (default) | throughput x | p99 x "
          "| tuning s | trials (failed) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for objective in ("throughput", "latency_p99"):
            r = row[objective]
            cfg = ", ".join(f"{k}={v}" for k, v in (r["config"] or {}).items())
            print(f"| {row['model']} ({row['params_m']:.1f}M) | {objective} | {cfg} | {r['tokens_per_s']:.0f} "
                  f"({r['default_tokens_per_s']:.0f}) | {r['latency_p99_s'] * 1e3:.0f} "
                  f"({r['default_latency_p99_s'] * 1e3:.0f}) | {r['speedup_tokens_per_s']:.2f} "
                  f"| {r['speedup_latency_p99']:.2f} | {r['tuning_s']:.0f} | {r['trials']} ({r['failed']}) |")
        print(f"<!-- {row['model']}: throughput and latency choices differ: {row['differ']} -->")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
