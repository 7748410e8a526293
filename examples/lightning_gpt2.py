"""The main job: a Lightning GPT-2 run tuned by AutoScout, on this CPU.

    python -m examples.lightning_gpt2 [--steps 300] [--trials 8] [--report autoscout_report]

GPT-2 built from a config (2 layers, d_model 128, its 50k vocabulary; no weights are downloaded),
trained on synthetic tokens with AdamW. The only AutoScout line is the callback: it measures your
settings first, tunes the rest (micro-batch size with gradient accumulation keeping the global batch,
threads, precision, compile, activation checkpointing, DDP with two processes), and applies the
winner before the main fit. A winner with another process count re-runs this script with it. Run it
again and the stored winner is reused with zero trials.

`--no-autoscout` runs the same fit without the callback (the baseline of the end-to-end benchmark);
`--set knob=value,...` runs it with a config set by hand (for the no-trace comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from autoscout_plugin import AutoScoutCallback


class SyntheticTokens(Dataset):
    """`n` fixed random token sequences (seeded, so every run sees the same data)."""

    def __init__(self, n: int, seq_len: int, vocab: int, seed: int = 1234) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, vocab, (n, seq_len), generator=generator)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.tokens[index]


class GPT2Module(pl.LightningModule):
    """A GPT-2 language model from a config, with its own synthetic training data."""

    def __init__(self, n_layer: int = 2, n_embd: int = 128, n_head: int = 2, vocab: int = 50257,
                 seq_len: int = 128, batch_size: int = 8, lr: float = 3e-4, samples: int = 512,
                 nan_at_step: int | None = None, fail_if: str | None = None, hang_if: str | None = None) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.save_hyperparameters()
        config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=seq_len, vocab_size=vocab,
                            use_cache=False)
        self.model = GPT2LMHeadModel(config)
        self.batch_size = batch_size
        self.lr = lr
        self.steps_seen = 0
        self.ddp_seen: dict[str, Any] = {}
        """Under DDP, the arguments of the DistributedDataParallel the fit runs (for the summary)."""

    def _faulty(self, rule: str | None, batch: torch.Tensor) -> bool:
        """Test hooks: `rule` is `micro_batch_size=N`, `threads=N`, `world=N` or `trial_world=N` (in an
        AutoScout trial only); true when this run matches."""
        if not rule:
            return False
        knob, value = rule.split("=")
        return (knob == "micro_batch_size" and batch.shape[0] == int(value)) or (
            knob == "threads" and torch.get_num_threads() == int(value)) or (
            knob == "world" and self.trainer.world_size == int(value)) or (
            knob == "trial_world" and self.trainer.world_size == int(value)
            and not any(isinstance(c, AutoScoutCallback) for c in self.trainer.callbacks))

    def on_train_start(self) -> None:
        wrapped = self.trainer.strategy.model
        if hasattr(wrapped, "gradient_as_bucket_view"):
            self.ddp_seen = {k: getattr(wrapped, k) for k in ("gradient_as_bucket_view", "static_graph",
                                                               "bucket_bytes_cap")}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self._faulty(self.hparams.fail_if, batch):
            raise RuntimeError("a crash injected for this config")
        if self._faulty(self.hparams.hang_if, batch):
            time.sleep(3600)
        self.steps_seen += 1
        loss = self.model(input_ids=batch, labels=batch).loss
        if self.hparams.nan_at_step is not None and self.global_step >= self.hparams.nan_at_step:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> DataLoader:
        data = SyntheticTokens(self.hparams.samples, self.hparams.seq_len, self.hparams.vocab)
        return DataLoader(data, batch_size=self.batch_size, shuffle=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of the main fit")
    parser.add_argument("--trials", type=int, default=8, help="AutoScout's trial budget")
    parser.add_argument("--report", default="autoscout_report", help="report path (JSON + HTML)")
    parser.add_argument("--store", default=None,
                        help="trial store: an SQLite file or a postgresql:// URL (default: ~/.cache/autoscout)")
    parser.add_argument("--no-autoscout", action="store_true", help="run without the callback")
    parser.add_argument("--no-net-gain", action="store_true",
                        help="spend the whole trial budget, even where the fit is too short to win it back")
    parser.add_argument("--no-relaunch", action="store_true", help="never re-run the script; recommend instead")
    parser.add_argument("--include", default=None, help="comma-separated knobs to tune (default: all)")
    parser.add_argument("--set", default=None, help="knob=value,... set by hand (no tuning)")
    parser.add_argument("--devices", type=int, default=None, help="pass devices (and strategy=ddp) explicitly")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--measure-steps", type=int, default=4)
    parser.add_argument("--trial-timeout", type=float, default=600.0)
    parser.add_argument("--parallel", type=int, default=1, help="trials at once (re-runs of this script)")
    parser.add_argument("--executor", default=None, help="where parallel trials run: local, ray[:ADDRESS], slurm[:...]")
    parser.add_argument("--fail-if", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hang-if", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--nan-at-step", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--weights-out", default=None, help="save the trained weights here (rank 0)")
    parser.add_argument("--summary-out", default=None, help="write timing and the applied config as JSON")
    return parser.parse_args(argv)


def _hand_set(spec: str, model: GPT2Module, trainer_kwargs: dict[str, Any], global_batch: int) -> None:
    """Apply `knob=value,...` the way a user would by hand."""
    for item in spec.split(","):
        knob, value = item.split("=")
        if knob == "micro_batch_size":
            model.batch_size = int(value)
            trainer_kwargs["accumulate_grad_batches"] = global_batch // int(value)
        elif knob == "num_threads":
            torch.set_num_threads(int(value))
        elif knob == "precision":
            trainer_kwargs["precision"] = value
        else:
            raise SystemExit(f"--set does not know {knob!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pl.seed_everything(0, verbose=False)
    model = GPT2Module(n_layer=args.layers, n_embd=args.embd, vocab=args.vocab, seq_len=args.seq_len,
                       batch_size=args.batch_size, nan_at_step=args.nan_at_step, fail_if=args.fail_if,
                       hang_if=args.hang_if)
    callbacks: list[pl.Callback] = []
    autoscout = None
    if not args.no_autoscout and not args.set:
        autoscout = AutoScoutCallback(
            max_trials=args.trials, report=args.report, store=args.store, relaunch=not args.no_relaunch,
            include=tuple(args.include.split(",")) if args.include else None, warmup_steps=args.warmup_steps,
            measure_steps=args.measure_steps, trial_timeout_s=args.trial_timeout, parallel=args.parallel,
            executor=args.executor, net_gain=not args.no_net_gain)
        callbacks.append(autoscout)
    kwargs: dict[str, Any] = {"max_steps": args.steps, "logger": False, "enable_checkpointing": False,
                              "enable_progress_bar": False, "enable_model_summary": False}
    if args.devices:
        kwargs.update(strategy="ddp", devices=args.devices, accelerator="cpu")
    if args.set:
        _hand_set(args.set, model, kwargs, args.batch_size)
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    start = time.perf_counter()
    trainer.fit(model)
    fit_s = time.perf_counter() - start
    ddp = model.ddp_seen
    if trainer.is_global_zero:
        if args.weights_out:
            torch.save(model.state_dict(), args.weights_out)
        summary = {"fit_s": fit_s, "global_step": trainer.global_step, "steps_seen": model.steps_seen,
                   "accumulate_grad_batches": trainer.accumulate_grad_batches, "batch_size": model.batch_size,
                   "precision": str(trainer.precision), "world_size": trainer.world_size,
                   "num_threads": torch.get_num_threads(), "ddp": ddp,
                   "report": autoscout.report if autoscout else None}
        print(json.dumps({k: v for k, v in summary.items() if k != "report"}, default=str), file=sys.stderr)
    else:
        summary = {"global_step": trainer.global_step, "accumulate_grad_batches": trainer.accumulate_grad_batches,
                   "batch_size": model.batch_size, "num_threads": torch.get_num_threads(), "ddp": ddp}
    if args.summary_out:
        suffix = "" if trainer.is_global_zero else f".rank{trainer.global_rank}"
        with open(args.summary_out + suffix, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
