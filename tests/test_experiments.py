"""The lab experiments end to end at a toy size: pretrain, resume after SIGKILL, SFT."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rlhf_jax import checkpoint
from rlhf_jax.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = ["--config=configs/lab/pretrain.py", "--config.num_steps=24",
            "--config.eval_every=12", "--config.checkpoint_every=8", "--config.log_every=4",
            "--config.optim.warmup_steps=4", "--config.batch_size=8"]
SFT = ["--config=configs/lab/sft.py", "--config.num_steps=8", "--config.eval_every=8",
       "--config.log_every=4", "--config.optim.warmup_steps=2", "--config.batch_size=8",
       "--config.eval.max_new_tokens=12"]


def _cmd(workdir, args, data_dir):
    return [sys.executable, "-m", "experiments.run", f"--workdir={workdir}", *args,
            f"--config.data.data_dir={data_dir}"]


def _run(workdir, args, data_dir):
    out = subprocess.run(_cmd(workdir, args, data_dir), cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    data = str(root / "data")
    _run(str(root / "pretrain"), PRETRAIN, data)
    return root, data


def _final_params(workdir):
    meta_dir = os.path.join(workdir, "checkpoints")
    step = max(int(d) for d in os.listdir(meta_dir) if d.isdigit())
    path = os.path.join(meta_dir, str(step), "params")
    import orbax.checkpoint as ocp

    return step, ocp.StandardCheckpointer().restore(path)


def test_pretrain_writes_metrics_and_loss_falls(dirs):
    root, _ = dirs
    records = read_metrics(str(root / "pretrain"))
    train = [r["train/loss"] for r in records if "train/loss" in r]
    assert [r["step"] for r in records if "eval/loss" in r] == [12, 24]
    assert train[-1] < 0.7 * train[0]
    assert os.path.exists(root / "pretrain" / "tokenizer.model")
    samples = [json.loads(line) for line in open(root / "pretrain" / "samples.jsonl")]
    assert {s["step"] for s in samples} == {12, 24} and all("sample" in s for s in samples)


def test_pretrain_resumes_bitwise_after_sigkill(dirs):
    root, data = dirs
    killed = str(root / "killed")
    proc = subprocess.Popen(_cmd(killed, PRETRAIN, data), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not os.path.isdir(os.path.join(killed, "checkpoints", "8")):
        assert proc.poll() is None and time.time() - t0 < 300
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _run(killed, PRETRAIN, data)
    (s1, p1), (s2, p2) = _final_params(str(root / "pretrain")), _final_params(killed)
    assert s1 == s2 == 24
    jax.tree.map(np.testing.assert_array_equal, p1, p2)
    assert [r["step"] for r in read_metrics(killed)] == [
        r["step"] for r in read_metrics(str(root / "pretrain"))]


def test_sft_from_pretrain_logs_probes(dirs):
    root, data = dirs
    sft = str(root / "sft")
    out = _run(sft, [*SFT, f"--config.init_from={root / 'pretrain'}"], data)
    assert "init_from" in out.stdout
    records = read_metrics(sft)
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [0, 8]  # step 0 scores the base model
    for name in ("eval/format_rate", "eval/accuracy_easy", "eval/gold_reward",
                 "eval/mean_length", "eval/covered/gold_reward"):
        assert name in evals[-1], name
    assert "train/loss" in records[-1]
    assert evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    # The SFT params really started from the pretrained ones: a restore of step 8 works.
    assert checkpoint.read_meta(sft)["data"]["position"] >= 0


def test_sft_without_tokenizer_is_a_clear_error(tmp_path):
    out = subprocess.run(_cmd(str(tmp_path / "w"), SFT, str(tmp_path / "d")), cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "SFT needs a tokenizer: set config.init_from" in out.stderr
