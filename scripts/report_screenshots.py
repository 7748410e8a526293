"""The README's report screenshots, from real tuning runs on this machine, rendered at 1280 px in headless
Chromium (the same driver as the report tests, `tests/browser.py`):

- `docs/report_kept.png`: a Lightning fit whose tuning kept the user's settings;
- `docs/report_applied.png`: a Lightning fit whose tuning applied a winner, with a failed trial among its own
  (the model is a recurrent LM that torch.compile cannot trace: a compile trial fails with a real dynamo
  error);
- `docs/report_inference.png`: `autoscout infer` of a small Qwen2 config with `--objective pareto`.

    python -m scripts.report_screenshots [--out docs]

The two Lightning pictures come from the first runs (over a few search spaces, in order) that kept the
user's settings and that applied a winner: the measurements decide, not this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from autoscout_plugin import AutoScoutCallback, cli
from benchmarks.workloads import RecurrentLM
from examples.lightning_gpt2 import SyntheticTokens
from tests.browser import launch, page_facts, screenshot

VOCAB, SEQ = 512, 64
PREPARE_WORK = 60_000
"""Loop iterations per sample in `PreparedTokens` (a few milliseconds of Python)."""
SPACES = [("compile", "micro_batch_size", "num_threads"), ("compile", "num_workers", "num_threads"),
          ("compile", "num_workers"), ("compile", "num_workers", "num_threads")]


class PreparedTokens(SyntheticTokens):
    """Token sequences that cost some CPU work per sample (as tokenising or augmenting text would): the
    data-loader workers have work to take off the training loop."""

    def __getitem__(self, index: int) -> torch.Tensor:
        checksum = 0
        for i in range(PREPARE_WORK):
            checksum = (checksum * 31 + i) % 1_000_003
        return super().__getitem__(index) + checksum * 0


class Recurrent(pl.LightningModule):
    """A minGRU language model (its scan is a custom operator that torch.compile cannot trace)."""

    def __init__(self, batch_size: int = 16, num_workers: int = 0) -> None:
        super().__init__()
        self.model = RecurrentLM(VOCAB, 128, 2)
        self.batch_size, self.num_workers = batch_size, num_workers

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch[:, :-1])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)

    def train_dataloader(self) -> Any:
        return DataLoader(PreparedTokens(2048, SEQ + 1, VOCAB), batch_size=self.batch_size,
                          num_workers=self.num_workers)


def lightning_report(path: Path, include: tuple[str, ...], trials: int) -> dict[str, Any]:
    pl.seed_everything(0, verbose=False)
    callback = AutoScoutCallback(include=include, max_trials=trials, patience=None, warmup_steps=2, measure_steps=6,
                                 confirm_top=2, confirm_rounds=2, report=str(path))
    trainer = pl.Trainer(max_steps=30, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Recurrent())
    return json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["verdict"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="folder for the PNG files and their reports (default: docs)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="autoscout-shots-"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(work / "inductor"))
    threads = torch.get_num_threads()
    pages: dict[str, Path] = {}
    # Which run keeps the user's settings and which applies a winner is measured, not chosen: the runs go on
    # until one of each is found (the applied one with a failed trial among its own).
    for i, include in enumerate(SPACES):
        os.environ["AUTOSCOUT_STORE"] = str(work / f"run{i}.sqlite")
        page = work / f"run{i}.html"
        verdict = lightning_report(page, include, 8)
        torch.set_num_threads(threads)
        data = json.loads(page.with_suffix(".json").read_text(encoding="utf-8"))
        failed = any(t["status"] != "ok" for t in data["trials"])
        name = "kept" if verdict["decision"] == "kept" else "applied" if failed else None
        print(f"run {i} ({', '.join(include)}): {verdict['sentence']}", file=sys.stderr)
        if name and name not in pages:
            pages[name] = page
        if len(pages) == 2:
            break
    rc = cli.main(["infer", "--model-type", "qwen2", "--set", "num_hidden_layers=2", "--set", "hidden_size=64",
                   "--set", "intermediate_size=128", "--set", "num_attention_heads=4", "--set", "num_key_value_heads=2",
                   "--set", "vocab_size=1000", "--requests", "16", "--prompt-len", "8:32", "--output-len", "8",
                   "--objective", "pareto", "--max-trials", "8", "--report", str(work / "inference")])
    if rc == 0:
        pages["inference"] = work / "inference.html"
    with launch() as browser:
        for name, page in pages.items():
            facts = page_facts(browser, page)
            png = screenshot(page, out / f"report_{name}.png", browser=browser)
            print(f"{png}: {facts.verdict}  (fits 1280 px: {facts.fits})")
    missing = {"kept", "applied", "inference"} - set(pages)
    if missing:
        print(f"no run gave the {', '.join(sorted(missing))} picture this time; run again", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
