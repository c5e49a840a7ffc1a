"""The lab experiments end to end at a toy size: pretrain, resume after SIGKILL, SFT."""

import glob
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
SMALL_LAB = ["--config.lab.prompts.train_per_family=8", "--config.lab.prompts.probe_per_family=4"]
REWARD = ["--config=configs/lab/reward.py:length", *SMALL_LAB, "--config.num_steps=6",
          "--config.eval_every=6", "--config.checkpoint_every=6", "--config.log_every=2",
          "--config.optim.warmup_steps=1", "--config.batch_size=16",
          "--config.data.pairs_per_prompt=1", "--config.lab.protocol.max_new_tokens=8",
          "--config.analysis.best_of_n=(1,2)",
          "--config.num_members=2"]
PPO = ["--config=configs/lab/ppo.py", *SMALL_LAB, "--config.num_steps=6",
       "--config.eval_every=3", "--config.checkpoint_every=2", "--config.ppo.rollout_batch_size=16",
       "--config.lab.protocol.max_new_tokens=8"]
SFT = ["--config=configs/lab/sft.py", "--config.num_steps=8", "--config.eval_every=8",
       "--config.log_every=4", "--config.optim.warmup_steps=2", "--config.batch_size=8",
       "--config.lab.protocol.max_new_tokens=12"]


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


def _kill_once_checkpointed(cmd, workdir, step):
    """Starts ``cmd`` and SIGKILLs it as soon as ``workdir`` holds the step-``step`` checkpoint."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not os.path.isdir(os.path.join(workdir, "checkpoints", str(step))):
        assert proc.poll() is None and time.time() - t0 < 300
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


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
    _kill_once_checkpointed(_cmd(killed, PRETRAIN, data), killed, step=8)
    _run(killed, PRETRAIN, data)
    (s1, p1), (s2, p2) = _final_params(str(root / "pretrain")), _final_params(killed)
    assert s1 == s2 == 24
    jax.tree.map(np.testing.assert_array_equal, p1, p2)
    assert [r["step"] for r in read_metrics(killed)] == [
        r["step"] for r in read_metrics(str(root / "pretrain"))]


@pytest.fixture(scope="module")
def sft_dir(dirs):
    root, data = dirs
    out = _run(str(root / "sft"), [*SFT, f"--config.init_from={root / 'pretrain'}"], data)
    assert "init_from" in out.stdout
    return str(root / "sft")


@pytest.fixture(scope="module")
def reward_dir(dirs, sft_dir):
    root, data = dirs
    _run(str(root / "reward"), [*REWARD, f"--config.init_from={sft_dir}"], data)
    return str(root / "reward")


def test_sft_from_pretrain_logs_probes(sft_dir):
    sft = sft_dir
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


def test_recall_of_base_and_sft(dirs, sft_dir, tmp_path):
    root, _ = dirs
    out = subprocess.run(
        [sys.executable, "-m", "experiments.run", "--config=configs/lab/recall.py",
         f"--workdir={tmp_path / 'recall'}", "--config.lab.protocol.max_new_tokens=6",
         f"--config.checkpoints={root / 'pretrain'},{sft_dir}"],
        cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / "recall" / "recall.json") as f:
        result = json.load(f)
    assert result["num_facts"] == 68
    assert sorted(result["checkpoints"]) == sorted(
        os.path.abspath(p) for p in (str(root / "pretrain"), sft_dir))
    for row in result["checkpoints"].values():
        assert sorted(row) == ["chat", "chat_frame", "chat_led", "faq", "statement"]
        assert all(0.0 <= v <= 1.0 for v in row.values())
    empty = subprocess.run(
        [sys.executable, "-m", "experiments.run", "--config=configs/lab/recall.py",
         f"--workdir={tmp_path / 'empty'}"], cwd=ROOT, capture_output=True, text=True)
    assert empty.returncode != 0
    assert "config.checkpoints must name one or more run workdirs" in empty.stderr


def test_sft_without_tokenizer_is_a_clear_error(tmp_path):
    out = subprocess.run(_cmd(str(tmp_path / "w"), SFT, str(tmp_path / "d")), cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "SFT needs a tokenizer: set config.init_from" in out.stderr


def test_reward_from_sft_writes_accuracies_and_analysis(reward_dir):
    records = read_metrics(reward_dir)
    last = records[-1]
    assert last["step"] == 6
    for name in ("train/loss", "eval/accuracy", "eval/gold_accuracy", "eval/member_accuracy",
                 "analysis/length_correlation", "analysis/sycophancy_gap", "analysis/bon2_gold"):
        assert name in last, name
    analysis = json.load(open(os.path.join(reward_dir, "report", "reward_analysis.json")))
    assert [row["n"] for row in analysis["best_of_n"]] == [1, 2]
    assert analysis["panel"]["panel"]["preset"] == "length"
    # The normaliser was fitted at the last step and saved with the checkpoint.
    import orbax.checkpoint as ocp

    norm = ocp.StandardCheckpointer().restore(os.path.join(reward_dir, "checkpoints", "6",
                                                           "norm"))
    assert np.all(np.asarray(norm["gain"]) != 1.0)


def _ppo_cmd(workdir, dirs, sft_dir, reward_dir):
    _, data = dirs
    return _cmd(workdir, [*PPO, f"--config.init_from={sft_dir}",
                          f"--config.reward_from={reward_dir}"], data)


@pytest.fixture(scope="module")
def ppo_dir(dirs, sft_dir, reward_dir):
    ref = str(dirs[0] / "ppo")
    out = subprocess.run(_ppo_cmd(ref, dirs, sft_dir, reward_dir), cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return ref


def test_ppo_metrics_and_bitwise_resume_after_sigkill(dirs, sft_dir, reward_dir, ppo_dir):
    root, _ = dirs
    ref = ppo_dir
    records = read_metrics(ref)
    per_iteration = [r for r in records if "ppo/kl_coef" in r]
    assert [r["step"] for r in per_iteration] == list(range(1, 7))
    for name in ("ppo/reward", "ppo/kl", "ppo/kl_coef", "ppo/entropy", "ppo/clipfrac",
                 "ppo/approxkl", "ppo/value_loss", "ppo/explained_variance",
                 "ppo/response_length"):
        assert name in per_iteration[-1], name
    evals = [r for r in records if "eval/gold_reward" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert evals[0]["eval/kl"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at start
    for name in ("eval/proxy_reward", "eval/kl", "eval/sycophancy_rate", "eval/format_rate"):
        assert name in evals[-1], name

    killed = str(root / "ppo_killed")
    _kill_once_checkpointed(_ppo_cmd(killed, dirs, sft_dir, reward_dir), killed, step=2)
    out = subprocess.run(_ppo_cmd(killed, dirs, sft_dir, reward_dir), cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "resumed" in out.stdout, out.stderr[-3000:]
    import orbax.checkpoint as ocp

    for item in ("policy", "value", "kl_coef", "rng"):
        a = ocp.StandardCheckpointer().restore(os.path.join(ref, "checkpoints", "6", item))
        b = ocp.StandardCheckpointer().restore(os.path.join(killed, "checkpoints", "6", item))
        jax.tree.map(np.testing.assert_array_equal, a, b)
    assert checkpoint.read_meta(ref) == checkpoint.read_meta(killed)


def test_ppo_needs_both_workdirs(tmp_path):
    out = subprocess.run(_cmd(str(tmp_path / "w"), PPO, str(tmp_path / "d")), cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "PPO needs config.init_from (an SFT workdir) and config.reward_from" in out.stderr


def _restore_item(workdir, step, item):
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                           item))


def test_ppo_over_seeds_equals_one_seed_runs_and_resumes_bitwise_after_sigkill(
        dirs, sft_dir, reward_dir, ppo_dir):
    root, data = dirs

    def cmd(workdir):  # seed 0 is ppo_dir's run (config.seed 0), seed 1 another
        return _cmd(workdir, ["--config=configs/lab/ppo_seeds.py", *PPO[1:],
                              "--config.seeds=(0,1)", f"--config.init_from={sft_dir}",
                              f"--config.reward_from={reward_dir}"], data)

    ref = str(root / "ppo_seeds")
    out = subprocess.run(cmd(ref), cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    records = read_metrics(ref)
    assert [r["step"] for r in records if "seed1/ppo/kl_coef" in r] == list(range(1, 7))
    assert [r["step"] for r in records if "seed1/eval/gold_reward" in r] == [0, 3, 6]
    one_seed = {r["step"]: r for r in read_metrics(ppo_dir)}
    for r in records:
        for name, value in r.items():
            if name.startswith("seed0/"):
                want = one_seed[r["step"]][name[len("seed0/"):]]
                assert value == pytest.approx(want, rel=1e-4, abs=1e-4), name
    stacked, single = _restore_item(ref, 6, "policy"), _restore_item(ppo_dir, 6, "policy")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b, atol=1e-4), stacked, single)
    assert any(np.abs(a[0] - a[1]).max() > 1e-4 for a in jax.tree.leaves(stacked))
    assert os.path.getsize(os.path.join(ref, "seed1", "samples.jsonl")) > 0

    killed = str(root / "ppo_seeds_killed")
    _kill_once_checkpointed(cmd(killed), killed, step=2)
    out = subprocess.run(cmd(killed), cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "resumed" in out.stdout, out.stderr[-3000:]
    for item in ("policy", "value", "policy_opt", "kl_coef", "rng", "step"):
        jax.tree.map(np.testing.assert_array_equal, _restore_item(ref, 6, item),
                     _restore_item(killed, 6, item))
    assert checkpoint.read_meta(ref) == checkpoint.read_meta(killed)
    assert read_metrics(ref) == read_metrics(killed)


GRPO = ["--config.ppo.advantage=grpo", "--config.ppo.group_size=4", "--config.ppo.kl_in_loss=True",
        "--config.ppo.kl_estimator=k3"]


def test_grpo_has_no_value_model_and_resumes_bitwise_after_sigkill(dirs, sft_dir, reward_dir):
    root, data = dirs

    def cmd(workdir):
        return _ppo_cmd(workdir, dirs, sft_dir, reward_dir) + GRPO

    ref = str(root / "grpo")
    out = subprocess.run(cmd(ref), cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no value model (grpo, 4 samples per prompt)" in out.stdout
    per_iteration = [r for r in read_metrics(ref) if "ppo/kl_coef" in r]
    assert [r["step"] for r in per_iteration] == list(range(1, 7))
    last = per_iteration[-1]
    for name in ("ppo/group_return_std", "ppo/flat_group_fraction", "ppo/kl_loss",
                 "ppo/policy_loss"):
        assert name in last, name
    assert "ppo/value_loss" not in last and "ppo/explained_variance" not in last
    assert last["ppo/non_score_reward"] == 0.0  # the KL is in the loss, not the reward
    evals = [r for r in read_metrics(ref) if "eval/gold_reward" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert evals[0]["eval/kl"] == pytest.approx(0.0, abs=1e-4)
    assert not os.path.exists(os.path.join(ref, "checkpoints", "6", "value"))

    killed = str(root / "grpo_killed")
    _kill_once_checkpointed(cmd(killed), killed, step=2)
    out = subprocess.run(cmd(killed), cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "resumed" in out.stdout, out.stderr[-3000:]
    import orbax.checkpoint as ocp

    for item in ("policy", "policy_opt", "kl_coef", "rng"):
        a = ocp.StandardCheckpointer().restore(os.path.join(ref, "checkpoints", "6", item))
        b = ocp.StandardCheckpointer().restore(os.path.join(killed, "checkpoints", "6", item))
        jax.tree.map(np.testing.assert_array_equal, a, b)
    assert checkpoint.read_meta(ref) == checkpoint.read_meta(killed)


DPO = ["--config=configs/lab/dpo.py:length", *SMALL_LAB, "--config.num_steps=6",
       "--config.eval_every=3", "--config.checkpoint_every=2", "--config.batch_size=8",
       "--config.optim.warmup_steps=1", "--config.data.pairs_per_prompt=1",
       "--config.lab.protocol.max_new_tokens=8"]


def test_dpo_reads_the_reward_labels_and_resumes_bitwise_after_sigkill(dirs, sft_dir,
                                                                        reward_dir):
    root, data = dirs
    labelled = sorted(glob.glob(os.path.join(data, "lab_*", "lab_preferences_*")))

    def cmd(workdir):
        return _cmd(workdir, [*DPO, f"--config.init_from={sft_dir}"], data)

    ref = str(root / "dpo")
    out = subprocess.run(cmd(ref), cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(glob.glob(os.path.join(data, "lab_*", "lab_preferences_*"))) == labelled
    evals = [r for r in read_metrics(ref) if "pairs/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert evals[0]["pairs/loss"] == pytest.approx(np.log(2.0), abs=1e-5)  # policy = reference
    assert "eval/format_rate" in evals[-1] and "pairs/gold_accuracy" in evals[-1]

    killed = str(root / "dpo_killed")
    _kill_once_checkpointed(cmd(killed), killed, step=2)
    out = subprocess.run(cmd(killed), cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "resumed" in out.stdout, out.stderr[-3000:]
    import orbax.checkpoint as ocp

    for item in ("params", "opt_state"):
        a = ocp.StandardCheckpointer().restore(os.path.join(ref, "checkpoints", "6", item))
        b = ocp.StandardCheckpointer().restore(os.path.join(killed, "checkpoints", "6", item))
        jax.tree.map(np.testing.assert_array_equal, a, b)
    assert read_metrics(ref) == read_metrics(killed)
