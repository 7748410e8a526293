"""The GPU-cluster model, the layout enumeration, calibration and `autoscout plan`."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from autoscout_plugin import cli
from autoscout_plugin.costmodel.catalogue import gpu
from autoscout_plugin.costmodel.cluster import (
    ClusterEfficiency,
    ClusterModel,
    Layout,
    LayoutError,
    calibrate_cluster,
    enumerate_layouts,
    rank_layouts,
)
from autoscout_plugin.costmodel.plan import plan
from autoscout_plugin.costmodel.presets import gpt, preset


@pytest.fixture(scope="module")
def gpt175() -> ClusterModel:
    return ClusterModel(preset("gpt3-175b"), gpu("a100-80gb"), 1024, global_batch=1536)


# ------------------------------------------------------------------ layouts and their errors
def test_layout_parse_round_trip_and_errors() -> None:
    lay = Layout.parse("tp=4, pp=4, cp=1, vp=20, mbs=1, precision=fp8, sharding=zero1, recompute=selective, sp=0")
    assert (lay.tp, lay.pp, lay.vp, lay.precision, lay.sharding, lay.recompute, lay.sequence_parallel) == (
        4, 4, 20, "fp8", "zero1", "selective", False)
    with pytest.raises(LayoutError, match="layout tp must be an integer >= 1, got 0"):
        Layout(tp=0)
    with pytest.raises(LayoutError, match="cannot read layout item 'xx=1'"):
        Layout.parse("tp=2,xx=1")
    with pytest.raises(LayoutError, match="layout pp must be a positive integer, got 'two'"):
        Layout.parse("pp=two")
    with pytest.raises(LayoutError, match="vp=2 needs pipeline stages"):
        Layout(vp=2)
    with pytest.raises(LayoutError, match="sharding=zero3 does not combine with pp=2"):
        Layout(pp=2, sharding="zero3")
    with pytest.raises(LayoutError, match="precision 'int8'"):
        Layout(precision="int8")


@pytest.mark.parametrize(("layout", "message"), [
    (Layout(tp=5), r"tp\*pp\*cp = 5\*1\*1 = 5 does not divide the 1024 GPUs"),
    (Layout(tp=8, pp=64), r"pp\*vp = 64\*1 does not split the 96 layers"),
    (Layout(tp=8, pp=8, vp=5), r"pp\*vp = 8\*5 does not split the 96 layers: it must divide them, or divide 96 \+ 2"),
    (Layout(tp=8, pp=8, mbs=5), r"global batch 1536 is not a multiple of dp\*mbs = 16\*5"),
    (Layout(tp=8, pp=8, precision="fp8"), "a100-80gb has no 'fp8' math"),
    (Layout(tp=8, pp=8, cp=3), r"tp\*pp\*cp = 8\*8\*3 = 192 does not divide"),
])
def test_layouts_that_do_not_divide_the_model_get_named_errors(gpt175: ClusterModel, layout: Layout,
                                                               message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        gpt175.evaluate(layout)


def test_head_sequence_and_data_parallel_errors() -> None:
    model = ClusterModel(gpt(4, 4096, 32, seq_len=2046), gpu("h100-sxm"), 64, global_batch=64)
    with pytest.raises(LayoutError, match="tp=64 does not divide the 32 attention heads"):
        model.evaluate(Layout(tp=64))
    with pytest.raises(LayoutError, match="cp=2: the sequence of 2046 tokens"):
        model.evaluate(Layout(tp=8, cp=2))
    with pytest.raises(LayoutError, match="sharding=zero1 needs data parallelism"):
        ClusterModel(gpt(8, 4096, 32), gpu("h100-sxm"), 64, global_batch=64).evaluate(
            Layout(tp=8, pp=8, sharding="zero1"))
    gqa = ClusterModel(gpt(4, 768, 12, n_kv_head=4), gpu("h100-sxm"), 6, global_batch=6)
    with pytest.raises(LayoutError, match="tp=6 and the 4 key/value heads do not divide one another"):
        gqa.evaluate(Layout(tp=6))
    assert gqa.evaluate(Layout(tp=2)).dp == 3


def test_model_construction_errors() -> None:
    with pytest.raises(ValueError, match="GPU count must be >= 1, got 0"):
        ClusterModel(preset("gpt3-5b"), gpu("h100"), 0, global_batch=8)
    with pytest.raises(ValueError, match="global batch"):
        ClusterModel(preset("gpt3-5b"), gpu("h100"), 8)
    from autoscout_plugin.costmodel.workload import Workload
    with pytest.raises(ValueError, match="needs a transformer workload"):
        ClusterModel(Workload(family="cnn", n_params=10), gpu("h100"), 8, global_batch=8)
    with pytest.raises(ValueError, match=r"gradient bucket must be > 0 MB .*got 0"):
        ClusterModel(preset("gpt3-5b"), gpu("h100"), 8, global_batch=8, bucket_mb=0)


# ------------------------------------------------------------------ what the model predicts
def test_the_published_175b_layout_fits_and_runs_near_its_published_speed(gpt175: ClusterModel) -> None:
    est = gpt175.evaluate(Layout(tp=8, pp=8, vp=2, mbs=1, recompute="full"))
    assert est.dp == 16 and est.micro_batches == 96 and est.fits
    assert est.step_s == pytest.approx(sum(est.breakdown.values()), rel=0.02)
    assert est.tokens_per_s_per_gpu * 1024 * est.step_s == pytest.approx(1536 * 2048)
    assert 0.25 < est.mfu < 0.65
    assert est.hardware_tflops_per_gpu > est.model_tflops_per_gpu  # the recomputed forward


def test_each_knob_moves_the_prediction_the_way_physics_says(gpt175: ClusterModel) -> None:
    base = Layout(tp=8, pp=8, mbs=1, recompute="full")
    ev = gpt175.evaluate
    # interleaving shrinks the bubble
    assert ev(replace(base, vp=2)).breakdown["pp_bubble_s"] < ev(base).breakdown["pp_bubble_s"]
    # recomputation costs time and saves activation memory
    none = ev(replace(base, recompute="none"))
    assert none.step_s < ev(base).step_s and none.memory_gb["activations"] > ev(base).memory_gb["activations"]
    # the distributed optimizer shards the optimizer states
    assert ev(replace(base, sharding="zero1")).memory_gb["states"] < ev(base).memory_gb["states"]
    # fp8 runs faster than bf16 on Hopper
    h100 = ClusterModel(preset("gpt3-175b"), gpu("h100-sxm"), 1024, global_batch=1536)
    assert h100.evaluate(replace(base, precision="fp8")).step_s < h100.evaluate(base).step_s
    # torch.compile fuses the elementwise work: faster, never slower
    assert ev(replace(base, compile=True)).step_s < ev(base).step_s
    assert Layout.parse("tp=8,pp=8,compile=1").compile
    # a slower inter-node link costs data-parallel time
    slow = gpt175.with_efficiency(ClusterEfficiency(comm_scale=0.25))
    assert slow.evaluate(base).breakdown["dp_comm_s"] > ev(base).breakdown["dp_comm_s"]
    # data-parallel reduction: overlapped with the backward (PyTorch DDP) beats after it (Megatron's
    # local DDP); after it, one call over the whole buffer pays the latency once, buckets pay it per bucket
    dp_layout = Layout(tp=8, mbs=8, precision="fp16", recompute="full", sequence_parallel=False)
    w18 = gpt(40, 6144, 48)

    def dp_s(overlap: float, bucket_mb: float) -> float:
        model = ClusterModel(w18, gpu("a100-80gb"), 256, global_batch=1024, bucket_mb=bucket_mb,
                             efficiency=ClusterEfficiency(dp_overlap=overlap), fp32_grads=True)
        return model.evaluate(dp_layout).breakdown["dp_comm_s"]

    assert dp_s(0.8, 25.0) < dp_s(0.0, math.inf) < dp_s(0.0, 25.0)
    # a tensor group whose span does not divide the 8-GPU node (tp=6: ranks 6-11) straddles two nodes
    m96 = ClusterModel(preset("gpt3-175b"), gpu("h100-sxm"), 96, global_batch=1152)
    assert m96._link(1, 4).name == m96.acc.intra.name and m96._link(1, 6).name == m96.acc.inter.name
    assert m96._link(1, 6).bytes_per_s == 2 * m96.acc.inter.bytes_per_s  # 2 of its ranks on the smaller side
    assert m96.evaluate(Layout(tp=6, pp=4)).breakdown["tp_comm_s"] > 2 * m96.evaluate(
        Layout(tp=8, pp=4)).breakdown["tp_comm_s"]
    # tensor parallelism across nodes is far slower than inside one
    wide = ClusterModel(gpt(8, 16384, 128), gpu("a100-80gb"), 32, global_batch=32)
    assert wide.evaluate(Layout(tp=16)).breakdown["tp_comm_s"] > 3 * wide.evaluate(Layout(tp=8, pp=2)).breakdown[
        "tp_comm_s"]


def test_memory_decides_what_fits() -> None:
    # 70B parameters x 16 bytes of Adam state = 1.1 TB: eight 80 GB GPUs cannot hold it, 32 can
    eight = ClusterModel(preset("llama2-70b"), gpu("a100-80gb"), 8, global_batch=64)
    assert not any(est.fits for est in rank_layouts(eight, enumerate_layouts(eight)))
    model = ClusterModel(preset("llama2-70b"), gpu("a100-80gb"), 32, global_batch=64)
    assert not model.evaluate(Layout(tp=1, mbs=1, sharding="zero1")).fits
    est = model.evaluate(Layout(tp=8, mbs=1, recompute="full"))
    assert est.peak_mem_gb == pytest.approx(sum(v for k, v in est.memory_gb.items() if k != "peak"))
    ranked = rank_layouts(model, enumerate_layouts(model))
    assert ranked[0].fits and all(not e.fits for e in ranked[sum(e.fits for e in ranked):])


def test_a_pipeline_split_with_one_fewer_layer_on_the_first_and_last_stages() -> None:
    # Llama 3 405B's 126 layers on 16 stages (Dubey et al. 2024): stages of 7, 8, ..., 8, 7 layers
    def model(n_layer: int) -> ClusterModel:
        return ClusterModel(replace(preset("llama3-70b"), n_layer=n_layer), gpu("h100-sxm"), 256, global_batch=256)

    layout = Layout(tp=8, pp=16, mbs=1, sharding="zero1")
    uneven, even = model(126).evaluate(layout), model(128).evaluate(layout)
    # the even split's last stage (8 layers + the 128k-vocabulary head, heavier than a layer) paces its
    # pipeline; taking a layer off it gains more than the 2 layers' share of the work
    assert uneven.step_s < even.step_s * 126 / 128
    # the first stage holds 7 layers' activations of the micro-batches in flight, not 8
    assert uneven.memory_gb["activations"] == pytest.approx(even.memory_gb["activations"] * 7 / 8, rel=0.02)
    assert any(lay.pp == 16 for lay in enumerate_layouts(model(126), shardings=("zero1",)))
    assert not any(lay.pp == 16 for lay in enumerate_layouts(model(125), shardings=("zero1",)))


def test_enumeration_yields_only_valid_layouts_ranked_best_first(gpt175: ClusterModel) -> None:
    layouts = list(enumerate_layouts(gpt175))
    assert len(layouts) > 4000
    for lay in layouts[::97]:
        dp, micro = gpt175.check(lay)
        assert lay.tp * lay.pp * lay.cp * dp == 1024 and micro * dp * lay.mbs == 1536
    ranked = rank_layouts(gpt175, layouts[:500])
    speeds = [e.tokens_per_s_per_gpu for e in ranked if e.fits]
    assert speeds == sorted(speeds, reverse=True)


def test_megatrons_layout_ranks_near_the_top_for_the_1t_model() -> None:
    # Narayanan et al. 2021, Table 1: 1T parameters on 3072 A100s ran tp=8, pp=64
    model = ClusterModel(gpt(128, 25600, 160), gpu("a100-80gb"), 3072, global_batch=3072,
                         efficiency=ClusterEfficiency(dp_overlap=0.0), flash_attention=False, fp32_grads=True)
    ranked = rank_layouts(model, enumerate_layouts(model, precisions=("fp16",), shardings=("none",),
                                                   recomputes=("full",), cp_values=(1,)))
    order: list[tuple[int, int]] = []
    for est in ranked:
        if (est.layout.tp, est.layout.pp) not in order:
            order.append((est.layout.tp, est.layout.pp))
    assert (8, 64) in order[:5]
    published = model.evaluate(Layout(tp=8, pp=64, mbs=1, precision="fp16", recompute="full", sequence_parallel=False))
    assert published.hardware_tflops_per_gpu == pytest.approx(163, rel=0.2)


def test_calibration_recovers_a_hidden_efficiency() -> None:
    model = ClusterModel(preset("gpt3-5b"), gpu("h100-sxm"), 16, global_batch=256)
    truth = model.with_efficiency(ClusterEfficiency(gemm_scale=0.7, comm_scale=0.5))
    layouts = [Layout(tp=2, mbs=2, sharding="zero1"), Layout(tp=8, pp=2, mbs=1), Layout(mbs=4, sharding="zero3")]
    measured = [(lay, truth.evaluate(lay).tokens_per_s_per_gpu) for lay in layouts]
    fitted = calibrate_cluster(model, measured)
    assert fitted.eff.gemm_scale == pytest.approx(0.7, rel=0.1)
    check = Layout(tp=4, pp=2, mbs=2)
    before = abs(model.evaluate(check).tokens_per_s_per_gpu / truth.evaluate(check).tokens_per_s_per_gpu - 1)
    after = abs(fitted.evaluate(check).tokens_per_s_per_gpu / truth.evaluate(check).tokens_per_s_per_gpu - 1)
    assert after < before / 3
    with pytest.raises(ValueError, match="positive number, got 0"):
        calibrate_cluster(model, [(layouts[0], 0.0)])


# ------------------------------------------------------------------ autoscout plan
def test_plan_command_writes_the_json_the_issue_asks_for(tmp_path, capsys) -> None:
    out = tmp_path / "plan.json"
    rc = cli.main(["plan", "--model", "llama2-7b", "--gpu", "h100-sxm", "--gpus", "16", "--global-batch", "64",
                   "--seq-len", "4096", "--layout", "tp=2,pp=2,mbs=1", "--json", str(out), "--top", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "llama2-7b: 6.74B parameters" in text and "the given layout:" in text
    data = json.loads(out.read_text())
    assert data["gpus"] == 16 and data["chosen"]["tp"] == 2 and data["chosen"]["rank"] >= 1
    rows = data["layouts"]
    assert len(rows) > 100
    for key in ("tp", "pp", "cp", "vp", "dp", "mbs", "precision", "tokens_per_s_per_gpu", "model_tflops_per_gpu",
                "peak_mem_gb", "fits"):
        assert key in rows[0]
    assert rows[0]["tokens_per_s_per_gpu"] >= max(r["tokens_per_s_per_gpu"] for r in rows if r["fits"])


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "gpt5", "--gpu", "h100", "--gpus", "8", "--global-batch", "8"], "unknown model preset 'gpt5'"),
    (["--model", "gpt3-5b", "--gpu", "tpu", "--gpus", "8", "--global-batch", "8"], "unknown GPU 'tpu'"),
    (["--model", "gpt3-5b", "--gpu", "h100", "--gpus", "7", "--global-batch", "128"],
     "no layout of 24 layers and 32 heads fits 7 GPUs"),
    (["--model", "gpt3-5b", "--gpu", "h100", "--gpus", "8", "--global-batch", "8", "--layout", "tp=3"],
     r"tp\*pp\*cp = 3\*1\*1 = 3 does not divide the 8 GPUs"),
    (["--model", "gpt3-5b", "--gpu", "h100", "--gpus", "8", "--global-batch", "8", "--layout", "pp=5"],
     "does not divide"),
    (["--model", "gpt3-5b", "--gpu", "a100", "--gpus", "8", "--global-batch", "8", "--precision", "fp8"],
     "a100-40gb has no 'fp8' math"),
    (["--model", "gpt3-5b", "--gpu", "h100", "--gpus", "0", "--global-batch", "8"],
     "--gpus must be an integer from 1 to 1048576, got 0"),
])
def test_plan_errors_are_clear(capsys, args: list[str], message: str) -> None:
    assert cli.main(["plan", *args]) == 2
    err = capsys.readouterr().err
    assert "autoscout: error:" in err
    import re
    assert re.search(message, err), err


def test_plan_ranks_ten_thousand_layouts(gpt175: ClusterModel) -> None:
    result = plan("gpt3-175b", "a100-80gb", 1024, global_batch=1536, shardings=("none", "zero1", "zero3"))
    assert len(result.ranked) > 4000 and result.ranked[0].fits
    # the speed claim (10,000 layouts in under a second) is measured in benchmarks/costmodel_validation.py
    assert result.seconds < 30
