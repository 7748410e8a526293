from __future__ import annotations

import hashlib
import json

import pytest

from autoscout_plugin.store import StoreError, fingerprint, hardware_key, similarity

WORKLOAD = {"task": "train", "family": "transformer", "arch": "decoder", "n_layer": 2, "d_model": 200,
            "n_head": 2, "vocab": 8192, "seq_len": 64, "global_batch": 64}
HARDWARE = {"kind": "cpu", "cores": 2, "mem_gb": 24, "bf16": True}
SPACE = {"knobs": [{"name": "num_threads", "kind": "int", "choices": [1, 2]}]}


def test_fingerprint_is_the_documented_sha256_prefix() -> None:
    text = json.dumps({"workload": WORKLOAD, "hardware": HARDWARE, "space": SPACE},
                      sort_keys=True, separators=(",", ":"))
    expected = hashlib.sha256(text.encode()).hexdigest()[:24]
    assert fingerprint(WORKLOAD, HARDWARE, SPACE) == expected


def test_fingerprint_ignores_key_order() -> None:
    reordered = dict(reversed(list(WORKLOAD.items())))
    assert list(reordered) != list(WORKLOAD)
    assert fingerprint(reordered, HARDWARE, SPACE) == fingerprint(WORKLOAD, HARDWARE, SPACE)


@pytest.mark.parametrize("part", ["workload", "hardware", "space"])
def test_fingerprint_changes_with_each_part(part: str) -> None:
    parts = {"workload": WORKLOAD, "hardware": HARDWARE, "space": SPACE}
    changed = {**parts, part: {**parts[part], "extra": 1}}
    assert fingerprint(**changed) != fingerprint(**parts)


def test_fingerprint_does_not_mix_up_the_parts() -> None:
    assert fingerprint({"a": 1}, {}, {}) != fingerprint({}, {"a": 1}, {})


@pytest.mark.parametrize("bad", [{1, 2}, object(), float("nan")])
def test_fingerprint_rejects_non_json_data(bad: object) -> None:
    with pytest.raises(StoreError, match="plain JSON"):
        fingerprint({"x": bad}, HARDWARE, SPACE)


def test_hardware_key_ignores_order_and_sees_changes() -> None:
    assert hardware_key({"cores": 2, "kind": "cpu"}) == hardware_key({"kind": "cpu", "cores": 2})
    assert hardware_key({"kind": "cpu", "cores": 2}) != hardware_key({"kind": "cpu", "cores": 4})


def test_similarity_of_equal_workloads_is_one() -> None:
    assert similarity(WORKLOAD, dict(WORKLOAD)) == 1.0
    assert similarity({}, {}) == 1.0


def test_similarity_is_symmetric_and_bounded() -> None:
    others = [{**WORKLOAD, "d_model": 400}, {**WORKLOAD, "family": "cnn"}, {"family": "mlp", "n_params": 5},
              {**WORKLOAD, "task": "infer", "vocab": 10**7}, {}]
    for other in others:
        s = similarity(WORKLOAD, other)
        assert 0.0 <= s <= 1.0
        assert s == pytest.approx(similarity(other, WORKLOAD))


def test_similarity_uses_a_log_scale() -> None:
    small = similarity({"d_model": 100}, {"d_model": 200})
    large = similarity({"d_model": 1000}, {"d_model": 2000})
    assert small == pytest.approx(large) == pytest.approx(0.75)
    assert similarity({"d_model": 100}, {"d_model": 1600}) == 0.0


def test_similarity_decreases_with_size_distance() -> None:
    near = similarity(WORKLOAD, {**WORKLOAD, "n_layer": 3})
    far = similarity(WORKLOAD, {**WORKLOAD, "n_layer": 12})
    assert 1.0 > near > far


def test_a_different_family_falls_below_the_warm_start_threshold() -> None:
    assert similarity(WORKLOAD, {**WORKLOAD, "family": "cnn"}) < 0.5
    assert similarity(WORKLOAD, {**WORKLOAD, "d_model": 400}) >= 0.5


def test_finetune_is_closer_to_train_than_inference_is() -> None:
    finetune = similarity(WORKLOAD, {**WORKLOAD, "task": "finetune"})
    infer = similarity(WORKLOAD, {**WORKLOAD, "task": "infer"})
    assert 1.0 > finetune > infer


def test_missing_fields_use_workload_defaults_and_one_sided_sizes_count_half() -> None:
    assert similarity({"family": "mlp"}, {"family": "mlp", "task": "train", "arch": "decoder"}) == 1.0
    assert similarity({"d_model": 128}, {"d_model": 128, "n_layer": 4}) == pytest.approx(0.75)
    assert similarity({"d_model": 128, "n_layer": True}, {"d_model": 128, "n_layer": "4"}) == 1.0
