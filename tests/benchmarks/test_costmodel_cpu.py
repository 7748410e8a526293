"""The CPU cost-model validation: result structure, and Spearman/memory figures that follow the data."""

from __future__ import annotations

import csv
import math
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import costmodel_cpu
from benchmarks.replay import load_table

TABLES = Path(__file__).parents[2] / "benchmarks" / "tables"
CNN = TABLES / "cnn_small.csv"


def _rewrite(src: Path, dst: Path, change: Callable[[list[dict[str, str]]], None]) -> Path:
    """Copy a table (CSV and its JSON) to `dst`, letting `change` edit the CSV rows in place."""
    with src.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames or []), list(reader)
    change(rows)
    with dst.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


@pytest.fixture(scope="module")
def cnn_result() -> dict:
    return costmodel_cpu.validate_table(CNN, draws=3, seed=0)


def test_result_structure(cnn_result):
    r = cnn_result
    assert r["table"] == "cnn_small" and r["rows_ok"] == 48 and r["n_calib"] == 3 and r["draws"] == 3
    assert len(r["spearman_draws"]) == len(r["memory_error_draws"]) == 3
    for key in ("spearman_median", "spearman_min", "spearman_uncalibrated", "default_plus"):
        assert key in r
    for value in (*r["spearman_draws"], r["spearman_uncalibrated"], r["default_plus"]["spearman"]):
        assert math.isfinite(value) and -1.0 <= value <= 1.0
    assert r["spearman_min"] == min(r["spearman_draws"]) <= r["spearman_median"]
    assert all(e >= 0 for e in r["memory_error_draws"])
    assert r["pass"] == (r["spearman_median"] >= 0.8 and r["memory_error_median"] <= 0.2)
    # Default + 2: the untuned row first (one process, fp32, no compile, no ckpt, all cores, mbs 16).
    first, *others = r["default_plus"]["configs"]
    assert first == {"strategy": "single", "num_processes": 1, "precision": "32-true", "compile": "off",
                     "activation_checkpointing": False, "micro_batch_size": 16, "num_threads": 2}
    assert len(others) == 2 and len(set(r["default_plus"]["rows"])) == 3


def test_seeded_draws_are_reproducible(cnn_result):
    again = costmodel_cpu.validate_table(CNN, draws=3, seed=0)
    assert again["spearman_draws"] == cnn_result["spearman_draws"]


def test_shuffled_throughput_ranks_far_worse(tmp_path, cnn_result):
    def shuffle(rows: list[dict[str, str]]) -> None:
        values = [row["samples_per_s"] for row in rows]
        random.Random(3).shuffle(values)
        for row, value in zip(rows, values):
            row["samples_per_s"] = value

    shuffled = costmodel_cpu.validate_table(_rewrite(CNN, tmp_path / "cnn_small.csv", shuffle), draws=3, seed=0)
    assert shuffled["spearman_median"] < cnn_result["spearman_median"] - 0.4
    assert abs(shuffled["spearman_uncalibrated"]) < 0.4
    assert not shuffled["pass_spearman"]


def test_figures_follow_the_data_exactly(tmp_path):
    """A table measured as the uncalibrated model predicts scores 1 and 0% before calibration; the
    same throughputs inverted score -1."""
    model = load_table(CNN).cost_model()
    assert model is not None

    def as_predicted(invert: bool) -> Callable[[list[dict[str, str]]], None]:
        def change(rows: list[dict[str, str]]) -> None:
            configs, _, _ = costmodel_cpu._ok_rows(CNN)
            assert len(configs) == len(rows)  # every cnn_small row is ok, so the two line up
            for row, config in zip(rows, configs):
                est = model.estimate(config)
                row["samples_per_s"] = repr(1.0 / est.samples_per_s if invert else est.samples_per_s)
                row["peak_rss_mb"] = repr(est.peak_mem_mb)
        return change

    exact = costmodel_cpu.validate_table(_rewrite(CNN, tmp_path / "exact.csv", as_predicted(False)), draws=1)
    assert exact["spearman_uncalibrated"] == pytest.approx(1.0)
    assert exact["memory_error_uncalibrated"] == pytest.approx(0.0, abs=1e-9)
    inverted = costmodel_cpu.validate_table(_rewrite(CNN, tmp_path / "inverted.csv", as_predicted(True)), draws=1)
    assert inverted["spearman_uncalibrated"] == pytest.approx(-1.0)


def test_validate_all_and_main(tmp_path, capsys):
    shutil.copy(CNN, tmp_path / CNN.name)
    shutil.copy(CNN.with_suffix(".json"), tmp_path / CNN.with_suffix(".json").name)
    (tmp_path / "no_json.csv").write_text("strategy,samples_per_s,status\nsingle,1,ok\n", encoding="utf-8")
    results = costmodel_cpu.validate_all(tmp_path, draws=1)
    assert [r["table"] for r in results] == ["cnn_small"]  # a table without its JSON is skipped
    code = costmodel_cpu.main(["--tables", str(tmp_path), "--draws", "1", "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert "| cnn_small | 48 |" in out and (tmp_path / "out.json").is_file()
    assert code == (0 if results[0]["pass"] else 1)
