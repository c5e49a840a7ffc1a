"""The benchmark on the toy preset: well-formed records, the plain-script path, error messages.

Timings on a shared CPU say nothing, so the records are checked for shape
only: every field present, numbers positive and finite, fractions in (0, 1].
"""

import json
import math
import os
import subprocess
import sys

import pytest

from experiments import benchmark
from experiments import run as runner
from rlhf_jax import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMON = ("name", "preset", "shapes", "dtype", "param_dtype", "device_kind", "platform",
          "num_devices", "jax_version", "compile_s", "run_s", "runs")
FIELDS = {
    "train_sft": COMMON + ("tokens_per_s", "model_tflops", "peak_tflops", "mfu"),
    "train_reward": COMMON + ("tokens_per_s", "model_tflops", "peak_tflops", "mfu"),
    "sampler": COMMON + ("prefill_s", "new_tokens_per_s", "decode_tokens_per_s",
                         "decode_ms_per_step", "param_bytes", "kv_bytes_per_step",
                         "copy_gb_per_s", "limit_ms_per_step", "bandwidth_fraction"),
    "ppo_iteration": COMMON + ("rollout_s", "update_s", "outside_s", "outside_fraction",
                               "pipelined_s", "episodes_per_s"),
    "ppo_seeds": COMMON + ("per_seed_s", "speedup", "by_seeds"),
    "matmul_peak": ("name", "preset", "device_kind", "jax_version", "size", "dtype", "run_s",
                    "tflops"),
    "copy_bandwidth": ("name", "preset", "device_kind", "jax_version", "mib", "run_s",
                       "gb_per_s"),
}
FRACTIONS = ("mfu", "bandwidth_fraction", "outside_fraction")


def _bounded(record, field, records):
    """A sampler whose weights and KV cache fit in less than the copy benchmark's buffer reads
    them from cache, so its bandwidth fraction against the copy's DRAM rate may exceed 1."""
    if field != "bandwidth_fraction":
        return True
    copy = next(r for r in records if r["name"] == "copy_bandwidth")
    return record["param_bytes"] + record["kv_bytes_per_step"] >= copy["mib"] * 2**20


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("bench"))
    records = benchmark.run(benchmark.load_preset("toy"), workdir)
    return records, workdir


def test_every_measurement_is_well_formed(toy_run):
    records, _ = toy_run
    assert [r["name"] for r in records] == ["matmul_peak", "copy_bandwidth", *bench.MEASUREMENTS]
    for record in records:
        missing = [f for f in FIELDS[record["name"]] if f not in record]
        assert not missing, (record["name"], missing)
        for field, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert math.isfinite(value) and value > 0, (record["name"], field, value)
        for field in FRACTIONS:
            if field in record and _bounded(record, field, records):
                assert 0 < record[field] <= 1, (record["name"], field, record[field])
        assert record["preset"] == "toy"


def test_records_are_consistent(toy_run):
    records, _ = toy_run
    by_name = {r["name"]: r for r in records}
    sft = by_name["train_sft"]
    assert sft["tokens_per_s"] == pytest.approx(8 * 16 / sft["run_s"])
    assert sft["mfu"] == pytest.approx(
        sft["model_tflops"] / (sft["peak_tflops"] * sft["num_devices"]))
    sampler = by_name["sampler"]
    assert sampler["prefill_s"] < sampler["run_s"]
    assert sampler["bandwidth_fraction"] == pytest.approx(
        sampler["limit_ms_per_step"] / sampler["decode_ms_per_step"])
    ppo = by_name["ppo_iteration"]
    assert ppo["outside_s"] < ppo["run_s"]
    assert ppo["rollout_s"] + ppo["update_s"] <= ppo["run_s"] * (1 + 1e-9)
    assert ppo["episodes_per_s"] == pytest.approx(8 / ppo["run_s"])
    seeded = by_name["ppo_seeds"]
    rows = seeded["by_seeds"]
    assert [r["seeds"] for r in rows] == seeded["shapes"]["seed_counts"] == [1, 2]
    assert rows[0]["speedup"] == pytest.approx(1.0)
    for r in rows:
        assert r["per_seed_s"] == pytest.approx(r["run_s"] / r["seeds"])
        assert r["speedup"] == pytest.approx(rows[0]["run_s"] * r["seeds"] / r["run_s"])
    assert seeded["run_s"] == rows[-1]["run_s"] and seeded["speedup"] == rows[-1]["speedup"]


def test_jsonl_holds_the_records(toy_run):
    records, workdir = toy_run
    with open(os.path.join(workdir, "benchmark.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert lines == records


def test_model_arithmetic_matches_hand_counts():
    cfg = benchmark.models.ModelConfig.from_config(
        benchmark.models.default_model_config(vocab_size=10, num_layers=1, embed_dim=4,
                                              num_heads=2, num_kv_heads=1, head_dim=2,
                                              mlp_dim=8, max_len=16))
    # attention 4*2*(2*2 + 2*1) = 48, mlp 3*4*8 = 96, norms 2*4 + final 4, embedding 40.
    params = 48 + 96 + 8 + 40 + 4
    attention = 12 * 1 * 2 * 2 * 16
    assert bench.lm_train_flops(cfg, 3, 16) == (6 * params + attention) * 3 * 16
    assert bench.scalar_train_flops(cfg, 3, 16) == (
        6 * params + attention - 6 * 40 + 6 * 4) * 3 * 16
    # Prompt 5, 4 new tokens: decode steps read 6, 7, 8 positions, mean 7 = 5 + 4/2.
    assert bench.kv_bytes_per_decode_step(cfg, 3, 5, 4, 2) == 3 * 7 * 2 * 1 * 1 * 2 * 2


def test_time_calls_takes_the_median():
    calls = []
    result = bench.time_calls(lambda: calls.append(1), warmup=2, runs=3)
    assert len(calls) == 6 and len(result["all_s"]) == 3
    assert result["run_s"] == sorted(result["all_s"])[1]


def test_preset_loads_through_the_runner_checks():
    runner.check_command_line([f"--config={ROOT}/configs/bench/toy.py",
                               "--config.bench.runs=2"])
    for name in ("cpu_small", "gpt2_small", "llama_1b", "lab", "lab:32"):
        config = benchmark.load_preset(name)
        assert config.experiment == "benchmark" and config.preset == name
        bench.parse_measurements(config.bench.measurements)
    # lab: the lab protocol's shapes; lab:32 those of before it.
    assert benchmark.load_preset("lab").ppo.max_new_tokens == 96
    assert benchmark.load_preset("lab:32").ppo.max_new_tokens == 32
    with pytest.raises(ValueError, match=r"configs/bench/lab.py:7: expected no argument or"):
        benchmark.load_preset("lab:7")


def _import_with_blocked(blocked):
    code = (
        "import sys\n"
        f"BLOCKED = {tuple(blocked)!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import experiments.benchmark as b\n"
        "for name in ('toy', 'cpu_small', 'gpt2_small', 'llama_1b'):\n"
        "    b.load_preset(name)\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_benchmark_path_needs_no_data_stack():
    done = _import_with_blocked(["tensorflow_datasets", "tensorflow", "grain"])
    assert done.returncode == 0, done.stderr[-2000:]


def test_benchmark_path_needs_no_sentencepiece():
    done = _import_with_blocked(["sentencepiece"])
    assert done.returncode == 0, done.stderr[-2000:]


def test_error_messages(monkeypatch):
    with pytest.raises(ValueError, match=r"bench.measurements='sft,sampler': unknown \['sft'\]"):
        bench.parse_measurements("sft,sampler")
    with pytest.raises(ValueError, match=r"unknown \(empty\)"):
        bench.parse_measurements(" , ")
    with pytest.raises(ValueError, match=r"--preset='gpt3': no configs/bench/gpt3.py; "
                                         r"choices: \['cpu_small', 'gpt2_small'"):
        benchmark.load_preset("gpt3")
    with pytest.raises(ValueError, match=r"bench.runs=0 must be >= 1"):
        bench.time_calls(lambda: None, warmup=0, runs=0)
    with pytest.raises(ValueError, match=r"benchmark 'x': field 'run_s' is nan"):
        bench.check_finite({"name": "x", "run_s": float("nan")})
    config = benchmark.load_preset("toy")
    env = bench.environment()
    with config.unlocked():
        config.bench.sampler_new_tokens = 1
    with pytest.raises(ValueError, match=r"bench.sampler_new_tokens=1 must be >= 2"):
        benchmark.measure_sampler(config, env, {"gb_per_s": 1.0}, None)
    with config.unlocked():
        config.bench.sampler_new_tokens = 4
    same = {"compile_s": 1.0, "run_s": 0.5, "all_s": [0.5]}
    monkeypatch.setattr(bench, "time_calls", lambda *a, **k: same)
    with pytest.raises(ValueError, match=r"sampler: 4 new tokens took 0.5 s, no longer than "
                                         r"1 new token \(0.5 s\)"):
        benchmark.measure_sampler(config, env, {"gb_per_s": 1.0},
                                  benchmark.np.random.default_rng(0))
