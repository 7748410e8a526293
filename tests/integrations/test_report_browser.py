"""The reports of real tuning runs, rendered in headless Chromium at 1280 px as a user opens them: the page
does not overflow sideways, every plot has a real range on its axes, and the verdict on the page is the
verdict in the JSON report and in the terminal.

A Lightning fit of a recurrent model that torch.compile cannot trace (a real dynamo failure among the
trials), and `tune_inference` of a small GPT-2 with the pareto objective."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from autoscout_plugin.integrations.inference import tune_inference
from transformers import GPT2Config, GPT2LMHeadModel

from autoscout_plugin import AutoScoutCallback
from autoscout_plugin.report.html import write_report
from autoscout_plugin.report.result import TuneResult
from autoscout_plugin.serving import RequestMix
from autoscout_plugin.trial import Trial
from tests.browser import PageFacts, open_page, page_facts
from tests.integrations.test_lightning_failures import RecurrentModule

pytestmark = pytest.mark.usefixtures("isolated_run")


def check_page(facts: PageFacts, verdict: str) -> None:
    """What every report must satisfy at 1280 px."""
    assert not facts.console_errors, facts.console_errors
    assert facts.page_width <= facts.viewport_width == 1280, facts.overflow
    assert not facts.overflow, [str(o) for o in facts.overflow]
    assert facts.plots, "the report has no plot"
    for plot in facts.plots:
        for axis, (lo, hi, ticks) in {"x": (plot.x_min, plot.x_max, plot.xticks),
                                      "y": (plot.y_min, plot.y_max, plot.yticks)}.items():
            if lo is None and hi is None:
                continue  # a categorical axis (the bars' labels)
            assert lo is not None and hi is not None and lo < hi, (plot.title, axis, lo, hi)
            assert len(set(ticks)) >= 2, (plot.title, axis, ticks)  # readable, distinct tick labels
        assert plot.width > 200 and plot.height > 100, plot
    assert facts.verdict == " ".join(verdict.split())


@pytest.mark.slow
def test_a_lightning_report_with_a_failed_trial_reads_right_in_chromium(browser, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    pl.seed_everything(0, verbose=False)
    callback = AutoScoutCallback(include=("compile", "num_threads"), max_trials=4, patience=None,
                                 warmup_steps=1, measure_steps=2, confirm_top=2, confirm_rounds=2, progress=False,
                                 report=str(tmp_path / "report"), net_gain=False)  # a 3-step fit, tuned anyway
    trainer = pl.Trainer(max_steps=3, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(RecurrentModule())
    said = capsys.readouterr().err
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    verdict = data["verdict"]["sentence"]
    assert f"AutoScout verdict: {verdict}" in said  # one sentence for the terminal, the JSON and the page
    assert any(t["failure"] == "unsupported" for t in data["trials"])  # the real dynamo failure is in it
    facts = page_facts(browser, tmp_path / "report.html")
    check_page(facts, verdict)
    titles = [p.title for p in facts.plots]
    assert {"Best so far by trial", "Measured effects (two trials, one knob apart)",
            "The cost model's prior (not measured)", "Predicted vs measured"} <= set(titles)


@pytest.mark.slow
def test_an_inference_pareto_report_reads_right_in_chromium(browser, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=500, n_positions=64)).eval()
    result = tune_inference(model, requests=RequestMix(n=6, prompt_len=(4, 8), output_len=3, seed=1), max_trials=4,
                            objective="pareto", include=("batch_size", "kv_cache"), report=str(tmp_path / "inf"),
                            progress=False)
    data = json.loads((tmp_path / "inf.json").read_text(encoding="utf-8"))
    assert data["verdict"] == result.verdict()
    facts = page_facts(browser, tmp_path / "inf.html")
    check_page(facts, data["verdict"])
    assert [p.title for p in facts.plots] == ["Latency / throughput front"]


def test_the_trials_table_sorts_by_the_column_clicked(browser, tmp_path: Path) -> None:
    from tests.test_report_html import NOTES, applied_result

    _, page_path = write_report(applied_result(), tmp_path / "r", notes=NOTES)
    with open_page(browser, page_path) as (page, errors):
        table = page.locator("table.trials")
        def first_column() -> list[str]:
            return table.locator("tbody tr td:first-child").all_inner_texts()

        assert first_column() == ["0", "1", "2", "3", "4", "5", "6"]
        table.locator("th", has_text="samples/s").click()  # ascending: the failed trial (no value) first
        assert first_column() == ["1", "3", "0", "6", "2", "4", "5"]
        table.locator("th", has_text="samples/s").click()  # and back, descending
        assert first_column() == ["5", "4", "2", "6", "0", "3", "1"]
        assert not errors


def test_a_study_of_many_knobs_and_long_errors_still_fits_the_page(browser, tmp_path: Path) -> None:
    """Fourteen knobs varied over 30 trials, long values and long errors: the table cuts cells (whole on
    hover) instead of scrolling sideways."""
    values = {"strategy": ["single", "ddp", "deepspeed_stage_3_offload"], "num_processes": [1, 2, 8],
              "micro_batch_size": [1, 64, 256], "precision": ["32-true", "bf16-mixed", "16-mixed"],
              "compile": ["off", "max-autotune-no-cudagraphs"], "activation_checkpointing": [True, False],
              "num_threads": [1, 16], "num_workers": [0, 8], "bucket_cap_mb": [25, 100],
              "gradient_as_bucket_view": [True, False], "comm_hook": ["none", "fp16_compress"],
              "tensor_parallel_size": [1, 2], "pipeline_parallel_size": [1, 2], "zero_stage": [0, 3]}
    trials = []
    for i in range(30):
        config = {k: v[(i * (j + 1)) % len(v)] for j, (k, v) in enumerate(values.items())}
        ok = i % 4 != 1
        trials.append(Trial(config=config, value=100.0 + 7 * i if ok else None, status="ok" if ok else "oom",
                            error=None if ok else "CUDA out of memory. Tried to allocate 2.00 GiB " * 4, number=i,
                            cost_s=10.0 + i, predicted=120.0 + 3 * i))
    result = TuneResult(best_config=trials[29].config, best_value=trials[29].value, baseline_config=trials[0].config,
                        baseline_value=trials[0].value, trials=trials, importances=dict.fromkeys(values, 1 / 14))
    json_path, page_path = write_report(result, tmp_path / "wide")
    facts = page_facts(browser, page_path)
    check_page(facts, json.loads(json_path.read_text(encoding="utf-8"))["verdict"]["sentence"])
