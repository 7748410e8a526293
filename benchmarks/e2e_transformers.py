"""End-to-end Hugging Face benchmark: `tune_trainer` plus a main run against the same script with the
`TrainingArguments` defaults.

    python -m benchmarks.e2e_transformers [--models gpt2,bert] [--steps 100] [--trials 8] [--json OUT]

For each model two commands run one after the other, each a fresh process timed from start to exit:
- `default`: `Trainer(args=TrainingArguments(max_steps=N))`: per-device batch 8, fp32, no compile, no
  dataloader workers, every core;
- `autoscout`: the same script with `tune_trainer(trainer, max_trials=T)` (fresh trial store) before
  `trainer.train()`, which then runs the same N steps with the winner.
The main-run seconds come from the script (`train_runtime`), so a longer main run (`--project-s`, 15
minutes by default) is projected from the steady-state speeds and the measured tuning overhead.

`python -m benchmarks.e2e_transformers run --model gpt2 --mode default --steps N` is one such command.

`--launcher` adds the launcher: `accelerate launch examples/hf_gpt2.py --no-tune` (the same GPT-2 shape,
64 tokens) against `autoscout launch --autoscout --autoscout-trials T examples/hf_gpt2.py`, which tunes
the process count, precision, compile and threads by launching trials of the script, then runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = {
    # GPT-2 with its 50k vocabulary (the LM head dominates), 2 layers of width 128, 128 tokens.
    "gpt2": {"kind": "gpt2", "n_layer": 2, "n_embd": 128, "n_head": 4, "vocab": 50257, "seq_len": 128},
    # A BERT sequence classifier: 4 layers of width 256, 128 tokens, 8k vocabulary.
    "bert": {"kind": "bert", "n_layer": 4, "n_embd": 256, "n_head": 4, "vocab": 8192, "seq_len": 128},
}


def model_and_data(model: str) -> tuple[Any, Any]:
    """The model `model` of `MODELS` (random weights, seed 0) and its 2048 synthetic training samples."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from examples.hf_gpt2 import TokenDataset, make_model

    spec = MODELS[model]
    if spec["kind"] == "gpt2":
        net = make_model(spec["n_layer"], spec["n_embd"], spec["n_head"], spec["vocab"], spec["seq_len"])
        return net, TokenDataset(2048, spec["seq_len"], spec["vocab"])
    torch.manual_seed(0)
    net = BertForSequenceClassification(BertConfig(
        vocab_size=spec["vocab"], hidden_size=spec["n_embd"], num_hidden_layers=spec["n_layer"],
        num_attention_heads=spec["n_head"], intermediate_size=4 * spec["n_embd"],
        max_position_embeddings=spec["seq_len"], num_labels=2))
    tokens = TokenDataset(2048, spec["seq_len"], spec["vocab"]).tokens
    return net, [{"input_ids": t, "labels": int(t[0]) % 2} for t in tokens]


def _trainer(model: str, steps: int, work: Path) -> Any:
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    net, data = model_and_data(model)
    args = TrainingArguments(output_dir=str(work / "out"), max_steps=steps, report_to="none", save_strategy="no",
                             disable_tqdm=True, use_cpu=True)
    return Trainer(model=net, args=args, train_dataset=data)


def run(args: argparse.Namespace) -> int:
    """One user script: build, optionally tune, train; print a JSON line with its own timings."""
    work = Path(args.work)
    trainer = _trainer(args.model, args.steps, work)
    report: dict[str, Any] = {}
    if args.mode == "autoscout":
        from autoscout_plugin.integrations.transformers import tune_trainer

        started = time.perf_counter()
        result = tune_trainer(trainer, max_trials=args.trials, store=str(work / "store.sqlite"),
                              report=str(work / "report"))
        report = {"tune_s": time.perf_counter() - started, "trials": result.n_trials,
                  "chosen": result.best_config, "speedup_in_trials": result.speedup}
    output = trainer.train()
    report |= {"train_s": float(output.metrics["train_runtime"]), "steps": output.global_step,
               "batch": trainer.args.per_device_train_batch_size, "accum": trainer.args.gradient_accumulation_steps}
    print("RESULT " + json.dumps(report), flush=True)
    return 0


def _command(model: str, mode: str, steps: int, trials: int, work: Path) -> tuple[float, dict[str, Any], str]:
    cmd = [sys.executable, "-m", "benchmarks.e2e_transformers", "run", "--model", model, "--mode", mode,
           "--steps", str(steps), "--trials", str(trials), "--work", str(work)]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor")}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(lines[-1][len("RESULT "):]), proc.stderr


def measure(model: str, steps: int, trials: int, project_s: float, work: Path) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for mode in ("default", "autoscout"):
        folder = work / f"{model}-{mode}"
        folder.mkdir(parents=True, exist_ok=True)
        wall, report, stderr = _command(model, mode, steps, trials, folder)
        runs[mode] = {"wall_s": round(wall, 1), **report}
        if mode == "autoscout":
            print(stderr[stderr.rfind("AutoScout\n"):] if "AutoScout\n" in stderr else stderr[-1500:], file=sys.stderr)
    default, tuned = runs["default"], runs["autoscout"]
    main_ratio = default["train_s"] / tuned["train_s"]
    # A main run of `project_s` seconds at the default speed, against tuning plus the same work at the winner's.
    overhead = tuned["wall_s"] - default["wall_s"] - (tuned["train_s"] - default["train_s"])
    projected = project_s / (max(overhead, 0.0) + project_s / main_ratio)
    return {"model": model, "steps": steps, "default": default, "autoscout": tuned,
            "main_run_speedup": round(main_ratio, 3), "net_speedup": round(default["wall_s"] / tuned["wall_s"], 3),
            "tuning_overhead_s": round(overhead, 1), f"projected_net_{int(project_s)}s": round(projected, 3)}


def measure_launcher(steps: int, trials: int, project_s: float, work: Path) -> dict[str, Any]:
    """`accelerate launch` of the HF example against `autoscout launch --autoscout` of it, both timed whole."""
    root = Path(__file__).resolve().parents[1]
    spec = MODELS["gpt2"]
    script = [str(root / "examples" / "hf_gpt2.py"), "--steps", str(steps), "--layers", str(spec["n_layer"]),
              "--width", str(spec["n_embd"]), "--vocab", str(spec["vocab"]), "--batch-size", "8",
              "--output-dir", str(work / "launch-out")]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"), "PYTHONPATH": str(root)}
    commands = {
        "default": [sys.executable, "-m", "accelerate.commands.launch", *script, "--no-tune"],
        "autoscout": [sys.executable, "-m", "autoscout_plugin.cli", "launch", "--autoscout", "--autoscout-trials",
                      str(trials), "--autoscout-store", str(work / "launch.sqlite"), *script],
    }
    runs: dict[str, Any] = {}
    for mode, command in commands.items():
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        trained = [line for line in proc.stderr.splitlines() if line.startswith("trained ")]
        runs[mode] = {"wall_s": round(wall, 1), "train_s": float(trained[-1].split(" in ")[1].split(" s")[0])}
        if mode == "autoscout":
            print(proc.stderr[proc.stderr.rfind("AutoScout\n"):], file=sys.stderr)
            applied = [line for line in proc.stderr.splitlines() if line.startswith("applied: ")]
            runs[mode]["applied"] = applied[-1][len("applied: "):] if applied else None
    default, tuned = runs["default"], runs["autoscout"]
    ratio = default["train_s"] / tuned["train_s"]
    overhead = tuned["wall_s"] - default["wall_s"] - (tuned["train_s"] - default["train_s"])
    return {"model": "gpt2 via autoscout launch", "default": default, "autoscout": tuned,
            "main_run_speedup": round(ratio, 3), "net_speedup": round(default["wall_s"] / tuned["wall_s"], 3),
            "tuning_overhead_s": round(overhead, 1),
            f"projected_net_{int(project_s)}s": round(project_s / (max(overhead, 0.0) + project_s / ratio), 3)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        parser = argparse.ArgumentParser(prog="e2e_transformers run")
        parser.add_argument("--model", choices=sorted(MODELS), required=True)
        parser.add_argument("--mode", choices=("default", "autoscout"), required=True)
        parser.add_argument("--steps", type=int, required=True)
        parser.add_argument("--trials", type=int, default=8)
        parser.add_argument("--work", required=True)
        return run(parser.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt2,bert")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--project-s", type=float, default=900.0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--launcher", action="store_true", help="also time `autoscout launch --autoscout`")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="autoscout-e2e-hf-") as tmp:
        for model in models:
            row = measure(model, args.steps, args.trials, args.project_s, Path(tmp))
            results.append(row)
            d, t = row["default"], row["autoscout"]
            print(f"{model}: default {d['wall_s']:.1f} s (train {d['train_s']:.1f} s) | autoscout {t['wall_s']:.1f} s"
                  f" (tune {t['tune_s']:.1f} s, {t['trials']} trials, train {t['train_s']:.1f} s) | main run"
                  f" {row['main_run_speedup']:.2f}x, net {row['net_speedup']:.2f}x, projected over"
                  f" {args.project_s:.0f} s {row[f'projected_net_{int(args.project_s)}s']:.2f}x | chosen"
                  f" {t['chosen']}", flush=True)
        if args.launcher:
            row = measure_launcher(args.steps, args.trials, args.project_s, Path(tmp))
            results.append(row)
            d, t = row["default"], row["autoscout"]
            print(f"launcher: accelerate launch {d['wall_s']:.1f} s (train {d['train_s']:.1f} s) | autoscout launch"
                  f" {t['wall_s']:.1f} s (train {t['train_s']:.1f} s) | main run {row['main_run_speedup']:.2f}x,"
                  f" net {row['net_speedup']:.2f}x, projected {row[f'projected_net_{int(args.project_s)}s']:.2f}x"
                  f" | applied {t['applied']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
