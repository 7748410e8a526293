"""Fine-tune a small GPT-2 (built from a config, random weights) with the Hugging Face Trainer on
synthetic tokens, with AutoScout choosing the system configuration first.

    python -m examples.hf_gpt2 --steps 300 --trials 6 --report autoscout-hf

The one AutoScout line is `tune_trainer(trainer, ...)` before `trainer.train()`. Under
`autoscout launch --autoscout` the same script is tuned by the launcher instead (process count,
precision, compile, threads) and `tune_trainer` applies what the launcher chose.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging


class TokenDataset(torch.utils.data.Dataset):
    """`samples` random token sequences (the same for a given seed), each its own label."""

    def __init__(self, samples: int = 512, seq_len: int = 64, vocab: int = 1000, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, vocab, (samples, seq_len), generator=generator)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[index], "labels": self.tokens[index]}


def make_model(n_layer: int = 2, n_embd: int = 64, n_head: int = 2, vocab: int = 1000, seq_len: int = 64,
               seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab, n_positions=seq_len,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def make_trainer(output_dir: str, *, steps: int = 20, batch_size: int = 16, samples: int = 512,
                 model: dict[str, Any] | None = None, callbacks: list[Any] | None = None, **args: Any) -> Trainer:
    """A `Trainer` as a user would write it: `TrainingArguments` defaults except what is given."""
    model_kw = {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab": 1000, "seq_len": 64} | (model or {})
    hf_logging.set_verbosity_error()
    training = TrainingArguments(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=batch_size,
                                 report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(),
                                 disable_tqdm=True, **args)
    data = TokenDataset(samples, model_kw["seq_len"], model_kw["vocab"])
    return Trainer(model=make_model(**model_kw), args=training, train_dataset=data, callbacks=callbacks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of the main run")
    parser.add_argument("--trials", type=int, default=6, help="AutoScout's trial budget")
    parser.add_argument("--batch-size", type=int, default=16, help="per-device batch size you would pick")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--report", default=None, help="write REPORT.json and REPORT.html here")
    parser.add_argument("--output-dir", default="hf-gpt2-out")
    parser.add_argument("--no-tune", action="store_true", help="train with your own settings only")
    parser.add_argument("--no-net-gain", action="store_true",
                        help="spend the whole trial budget, even where the run is too short to win it back")
    parser.add_argument("--keep-progress", action="store_true",
                        help="count the steps of trials that keep the training math as the run's first steps")
    opts = parser.parse_args(argv)
    trainer = make_trainer(opts.output_dir, steps=opts.steps, batch_size=opts.batch_size,
                           model={"n_layer": opts.layers, "n_embd": opts.width, "vocab": opts.vocab})
    if not opts.no_tune:
        from autoscout_plugin.integrations.transformers import tune_trainer

        tune_trainer(trainer, max_trials=opts.trials, report=opts.report, net_gain=not opts.no_net_gain,
                     keep_progress=opts.keep_progress)
    output = trainer.train()
    print(f"trained {output.global_step} steps in {output.metrics['train_runtime']:.1f} s,"
          f" loss {output.training_loss:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
